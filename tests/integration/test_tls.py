"""TLS on every channel (nng's tls+tcp transport), one-way and mutual, with certificates made by openssl."""

from __future__ import annotations

import subprocess
import urllib.request
from pathlib import Path
from typing import Any

import pytest

from fastworker.client import ControlPlaneUnavailable, SyncClient
from fastworker.client.tls import TlsFiles

SECRET = "tls-and-a-secret"


def openssl(*args: str, cwd: Path) -> None:
    subprocess.run(["openssl", *args], cwd=cwd, check=True, capture_output=True, timeout=30)


def issue(folder: Path, name: str, ca: str, subject_alt_names: str) -> None:
    """A P-256 key and a certificate for it signed by the CA ``ca`` (files ``name.key``, ``name.pem``)."""
    openssl("req", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes", "-keyout", f"{name}.key",
            "-out", f"{name}.csr", "-subj", f"/CN={name}", cwd=folder)  # fmt: skip
    (folder / f"{name}.ext").write_text(f"subjectAltName={subject_alt_names}\n")
    openssl("x509", "-req", "-in", f"{name}.csr", "-CA", f"{ca}.pem", "-CAkey", f"{ca}.key", "-CAcreateserial",
            "-out", f"{name}.pem", "-days", "2", "-extfile", f"{name}.ext", cwd=folder)  # fmt: skip


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A CA, a control-plane certificate for 127.0.0.1/localhost, a client certificate, and a rogue CA."""
    folder = tmp_path_factory.mktemp("pki")
    for ca in ("ca", "rogue-ca"):
        openssl("req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes", "-keyout",
                f"{ca}.key", "-out", f"{ca}.pem", "-days", "2", "-subj", f"/CN={ca}", cwd=folder)  # fmt: skip
    issue(folder, "controlplane", "ca", "DNS:localhost,IP:127.0.0.1")
    issue(folder, "client", "ca", "DNS:client")
    issue(folder, "rogue", "rogue-ca", "DNS:rogue")
    return folder


def tls_flags(pki: Path, *, mutual: bool = False) -> list[str]:
    flags = ["--tls-cert", str(pki / "controlplane.pem"), "--tls-key", str(pki / "controlplane.key")]
    return [*flags, "--tls-ca", str(pki / "ca.pem")] if mutual else flags


def test_every_channel_uses_tls_and_clients_workers_and_the_dashboard_work_over_it(
    start_cp_for_workers: Any, start_worker: Any, pki: Path
) -> None:
    control_plane = start_cp_for_workers(*tls_flags(pki), "--secret", SECRET, dashboard=True)
    for address in (control_plane.discovery, control_plane.client, control_plane.dispatch):
        assert address.startswith("tls+tcp://127.0.0.1:")
    start_worker(control_plane, "tls-worker", "--secret", SECRET, "--tls-ca", str(pki / "ca.pem"), concurrency=2)

    with SyncClient(control_plane.discovery, secret=SECRET, tls=TlsFiles(ca=str(pki / "ca.pem"))) as client:
        assert client.submit("fwtests_worker.whoami", timeout=10) == "tls-worker"
        ids = client.delay_many([("fwtests_worker.sleep_for", (0,), {}) for _ in range(100)])
        assert client.results(ids, timeout=20) == ["tls-worker"] * 100

    assert control_plane.dashboard is not None  # its own client reached the control plane over TLS
    overview = urllib.request.Request(control_plane.dashboard + "/", headers={"X-FastWorker-Secret": SECRET})
    with urllib.request.urlopen(overview, timeout=10) as page:
        assert "tls-worker" in page.read().decode()


def test_a_peer_that_cannot_verify_the_control_plane_never_connects(start_cp_for_workers: Any, pki: Path) -> None:
    control_plane = start_cp_for_workers(*tls_flags(pki))
    with pytest.raises(ValueError, match="give the CA bundle"):
        with SyncClient(control_plane.discovery, connect_timeout=2) as client:
            client.workers()
    rogue = TlsFiles(ca=str(pki / "rogue-ca.pem"))
    with pytest.raises(ControlPlaneUnavailable, match="or the TLS handshake failed"):
        with SyncClient(control_plane.discovery, tls=rogue, connect_timeout=2) as client:
            client.workers()
    plain = control_plane.discovery.replace("tls+tcp://", "tcp://")
    with pytest.raises(ControlPlaneUnavailable, match=r"or requires TLS \(dial tls\+tcp:// with a CA bundle\)"):
        with SyncClient(plain, connect_timeout=2) as client:
            client.workers()


def test_mutual_tls_requires_a_client_certificate_signed_by_the_ca(start_cp_for_workers: Any, pki: Path) -> None:
    control_plane = start_cp_for_workers(*tls_flags(pki, mutual=True))
    ca = str(pki / "ca.pem")
    for refused in (
        TlsFiles(ca=ca),
        TlsFiles(ca=ca, cert=str(pki / "rogue.pem"), key=str(pki / "rogue.key")),
    ):
        with pytest.raises(ControlPlaneUnavailable):
            with SyncClient(control_plane.discovery, tls=refused, connect_timeout=2) as client:
                client.workers()
    trusted = TlsFiles(ca=ca, cert=str(pki / "client.pem"), key=str(pki / "client.key"))
    with SyncClient(control_plane.discovery, tls=trusted) as client:
        assert client.workers() == []
