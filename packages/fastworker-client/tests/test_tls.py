"""TLS settings: address upgrades, file checks, and where the env vars lead."""

from __future__ import annotations

import subprocess
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


@pytest.fixture(scope="module")
def pems(tmp_path_factory: pytest.TempPathFactory) -> dict[str, str]:
    """Two self-signed certificates with their keys (a, b) and a file that is not PEM, made by openssl."""
    folder = tmp_path_factory.mktemp("pems")
    for name in ("a", "b"):
        subprocess.run(
            ["openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes",
             "-keyout", f"{name}.key", "-out", f"{name}.pem", "-days", "2", "-subj", f"/CN={name}"],
            cwd=folder, check=True, capture_output=True, timeout=30,
        )  # fmt: skip
    (folder / "garbage.pem").write_text("not really a certificate")
    return {path.name: str(path) for path in folder.iterdir()}


def test_files_must_exist_and_a_certificate_comes_with_its_key(pems: dict[str, str], tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="both a certificate and its key"):
        TlsFiles(cert=pems["a.pem"])
    with pytest.raises(ValueError, match="not a readable file"):
        TlsFiles(ca=str(tmp_path / "missing.pem"))
    assert TlsFiles(ca=pems["a.pem"]).serves is False
    assert TlsFiles(cert=pems["a.pem"], key=pems["a.key"]).serves is True
    with pytest.raises(ValueError, match="needs --tls-cert"):
        TlsFiles(ca=pems["a.pem"]).server_config()


@pytest.mark.parametrize(
    ("files", "message"),
    [
        ({"ca": "garbage.pem"}, r"TLS CA bundle '.*garbage\.pem' holds no usable PEM certificate"),
        ({"cert": "garbage.pem", "key": "a.key"}, r"TLS certificate '.*garbage\.pem' holds no usable PEM certificate"),
        ({"cert": "a.pem", "key": "garbage.pem"}, r"TLS key '.*garbage\.pem' is not a usable PEM private key"),
        ({"cert": "a.pem", "key": "b.key"}, r"TLS key '.*b\.key' is not the key of certificate '.*a\.pem'"),
    ],
    ids=["ca-not-pem", "cert-not-pem", "key-not-pem", "key-of-another-cert"],
)
def test_unusable_pem_files_are_refused_at_once_naming_the_file(
    pems: dict[str, str], files: dict[str, str], message: str
) -> None:
    # nng said only "Cryptographic error" when a socket started, and served a certificate with another's key
    with pytest.raises(ValueError, match=message):
        TlsFiles(**{field: pems[name] for field, name in files.items()})


def test_the_env_vars_give_the_files_and_nothing_set_means_no_tls(pems: dict[str, str]) -> None:
    assert TlsFiles.from_env({}) is None
    assert TlsFiles.from_env({"FASTWORKER_TLS_CA": pems["a.pem"]}) == TlsFiles(ca=pems["a.pem"])


def test_dialing_a_tls_address_without_a_ca_is_a_clear_error_and_plain_addresses_need_nothing() -> None:
    with pynng.Req0() as sock:
        configure_dial(sock, "tcp://127.0.0.1:1", None)
        with pytest.raises(ValueError, match="give the CA bundle"):
            configure_dial(sock, "tls+tcp://127.0.0.1:1", None)
        with pytest.raises(ValueError, match="needs the CA bundle"):
            configure_dial(sock, "tls+tcp://127.0.0.1:1", TlsFiles())
