"""TLS settings: address upgrades, file checks, and where the env vars lead."""

from __future__ import annotations

from pathlib import Path

import pynng
import pytest

from fastworker.client.tls import TlsFiles, configure_dial, is_tls, tls_address


def test_tcp_addresses_are_upgraded_and_others_left_alone() -> None:
    assert tls_address("tcp://127.0.0.1:5550") == "tls+tcp://127.0.0.1:5550"
    assert tls_address("tcp6://[::1]:5550") == "tls+tcp6://[::1]:5550"
    for unchanged in ("tls+tcp://h:1", "ipc:///tmp/x", "inproc://x"):
        assert tls_address(unchanged) == unchanged
    assert is_tls("tls+tcp://h:1") and not is_tls("tcp://h:1")


def test_files_must_exist_and_a_certificate_comes_with_its_key(tmp_path: Path) -> None:
    pem = tmp_path / "x.pem"
    pem.write_text("not really a certificate")
    with pytest.raises(ValueError, match="both a certificate and its key"):
        TlsFiles(cert=str(pem))
    with pytest.raises(ValueError, match="not a readable file"):
        TlsFiles(ca=str(tmp_path / "missing.pem"))
    assert TlsFiles(ca=str(pem)).serves is False
    assert TlsFiles(cert=str(pem), key=str(pem)).serves is True
    with pytest.raises(ValueError, match="needs --tls-cert"):
        TlsFiles(ca=str(pem)).server_config()


def test_the_env_vars_give_the_files_and_nothing_set_means_no_tls(tmp_path: Path) -> None:
    pem = tmp_path / "ca.pem"
    pem.write_text("x")
    assert TlsFiles.from_env({}) is None
    assert TlsFiles.from_env({"FASTWORKER_TLS_CA": str(pem)}) == TlsFiles(ca=str(pem))


def test_dialing_a_tls_address_without_a_ca_is_a_clear_error_and_plain_addresses_need_nothing() -> None:
    with pynng.Req0() as sock:
        configure_dial(sock, "tcp://127.0.0.1:1", None)
        with pytest.raises(ValueError, match="give the CA bundle"):
            configure_dial(sock, "tls+tcp://127.0.0.1:1", None)
        with pytest.raises(ValueError, match="needs the CA bundle"):
            configure_dial(sock, "tls+tcp://127.0.0.1:1", TlsFiles())
