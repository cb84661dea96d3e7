"""A small private network of namespaces for multi-host tests: one host per namespace, joined by a switch.

``Lab`` makes a "switch" namespace holding a bridge and, for each host, a namespace with its own
IP in a /24 that exists only inside these namespaces (nothing here is routed to or from the
machine's own network), joined to the bridge by a veth pair. Cutting a host's link sets its port
on the switch down, as if its cable were pulled. Daemons start inside a host with ``ip netns exec``
(which execs in place, so a pid is the daemon's own and is what teardown stops). Every name
carries a tag unique to this run, and ``close`` deletes the namespaces even after a failure.
"""

from __future__ import annotations

import os
import random
import subprocess
import sys
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from fwsec_support import TASK_MODULES, child_env

from fastworker.controlplane.testing import RunningControlPlane, RunningWorker, stop_process, wait_for_ready_file

#: The test subnet's first two octets; the third is random per run (each run has its own namespaces anyway).
SUBNET_PREFIX = "10.213"


class NetnsError(RuntimeError):
    """An ``ip`` command failed: the multi-host tests need root and iproute2 with netns and veth."""


def ip(*args: str) -> None:
    """Run ``ip ARGS`` (bounded); raise NetnsError with its stderr if it fails."""
    done = subprocess.run(["ip", *args], capture_output=True, text=True, timeout=10, check=False)
    if done.returncode != 0:
        raise NetnsError(f"`ip {' '.join(args)}` failed ({done.returncode}): {done.stderr.strip()}")


@dataclass
class Host:
    """One namespace on the lab network: its name, its IP, and its port on the switch."""

    name: str
    namespace: str
    address: str
    switch_port: str


@dataclass
class Lab:
    """The switch namespace and the hosts joined to it; ``close()`` removes them all."""

    tag: str
    subnet: str
    switch: str
    hosts: dict[str, Host] = field(default_factory=dict)

    @classmethod
    def create(cls, names: Sequence[str]) -> Lab:
        """A switch and one host per name, addresses ``.1``, ``.2``, ... in name order."""
        rng = random.Random()
        tag = f"{os.getpid() % 100_000:05d}{rng.randrange(100):02d}"
        subnet = f"{SUBNET_PREFIX}.{rng.randrange(1, 255)}"
        lab = cls(tag, subnet, f"fwmh{tag}sw")
        try:
            ip("netns", "add", lab.switch)
            ip("-n", lab.switch, "link", "add", "br0", "type", "bridge")
            ip("-n", lab.switch, "link", "set", "br0", "up")
            for index, name in enumerate(names, start=1):
                lab.add_host(name, index)
        except BaseException:
            lab.close()
            raise
        return lab

    def add_host(self, name: str, index: int) -> Host:
        host = Host(name, f"fwmh{self.tag}{name}", f"{self.subnet}.{index}", f"p{index}")
        self.hosts[name] = host
        ip("netns", "add", host.namespace)
        # Created inside the switch, the other end moved straight into the host: no name ever
        # appears in this machine's own namespace.
        ip("-n", self.switch, "link", "add", host.switch_port, "type", "veth", "peer", "name", "eth0", "netns",
           host.namespace)  # fmt: skip
        ip("-n", self.switch, "link", "set", host.switch_port, "master", "br0")
        ip("-n", self.switch, "link", "set", host.switch_port, "up")
        ip("-n", host.namespace, "addr", "add", f"{host.address}/24", "dev", "eth0")
        ip("-n", host.namespace, "link", "set", "eth0", "up")
        ip("-n", host.namespace, "link", "set", "lo", "up")
        return host

    def cut(self, name: str) -> None:
        """Pull the host's cable: its switch port goes down (its own side just loses carrier)."""
        ip("-n", self.switch, "link", "set", self.hosts[name].switch_port, "down")

    def restore(self, name: str) -> None:
        ip("-n", self.switch, "link", "set", self.hosts[name].switch_port, "up")

    def close(self) -> None:
        """Delete every namespace (the veth pairs go with them); never raises."""
        for namespace in [*(h.namespace for h in self.hosts.values()), self.switch]:
            subprocess.run(["ip", "netns", "del", namespace], capture_output=True, timeout=10, check=False)


# ------------------------------------------------------------------------------------------ TLS


def openssl(*args: str, cwd: Path) -> None:
    subprocess.run(["openssl", *args], cwd=cwd, check=True, capture_output=True, timeout=30)


def make_pki(folder: Path, server_ip: str) -> tuple[Path, Path, Path]:
    """A CA and a control-plane certificate for ``server_ip`` (as tests/integration/test_tls.py makes them).

    Returns (CA bundle, certificate, key).
    """
    folder.mkdir(parents=True, exist_ok=True)
    ec = ("-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes")
    openssl(
        "req", "-x509", *ec, "-keyout", "ca.key", "-out", "ca.pem", "-days", "2", "-subj", "/CN=fwmh-ca", cwd=folder
    )
    openssl("req", *ec, "-keyout", "cp.key", "-out", "cp.csr", "-subj", "/CN=controlplane", cwd=folder)
    (folder / "cp.ext").write_text(f"subjectAltName=IP:{server_ip}\n")
    openssl("x509", "-req", "-in", "cp.csr", "-CA", "ca.pem", "-CAkey", "ca.key", "-CAcreateserial", "-out", "cp.pem",
            "-days", "2", "-extfile", "cp.ext", cwd=folder)  # fmt: skip
    return folder / "ca.pem", folder / "cp.pem", folder / "cp.key"


# -------------------------------------------------------------------------------------- daemons


def daemon_env(extra: Mapping[str, str]) -> dict[str, str]:
    """This process's environment without FASTWORKER_* variables, plus the suite's PYTHONPATH and ``extra``."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("FASTWORKER_")}
    env.update(child_env())
    env.update(extra)
    return env


def _launch(namespace: str, argv: Sequence[str], env: Mapping[str, str], log_path: Path) -> subprocess.Popen[bytes]:
    with open(log_path, "ab") as log:
        return subprocess.Popen(
            ["ip", "netns", "exec", namespace, *argv], stdout=log, stderr=subprocess.STDOUT, env=dict(env)
        )


def start_controlplane(
    host: Host,
    folder: Path,
    *,
    ports: tuple[int, int, int] = (0, 0, 0),
    flags: Sequence[str] = (),
    env: Mapping[str, str],
    ready_timeout: float = 30.0,
) -> RunningControlPlane:
    """A control plane in ``host``'s namespace, bound on every interface there, advertising the host's IP.

    ``ports`` (discovery, client, dispatch): 0 lets the OS choose; a restart passes the first run's.
    ``.discovery`` is the address peers dial (the host's IP); ``.client``/``.dispatch`` are the bound ones.
    """
    stamp = time.monotonic_ns()
    ready = folder / f"cp-ready-{stamp}.json"
    log_path = folder / f"cp-{stamp}.log"
    discovery, client, dispatch = (f"tcp://0.0.0.0:{port}" for port in ports)
    argv = [sys.executable, "-m", "fastworker.controlplane", "--discovery-address", discovery]
    argv += ["--client-address", client, "--dispatch-address", dispatch, "--advertise-host", host.address]
    argv += ["--no-dashboard", "--metrics-address", "127.0.0.1:0", "--ready-file", str(ready)]
    argv += ["--task-modules", *TASK_MODULES, *flags]
    process = _launch(host.namespace, argv, env, log_path)
    try:
        info = wait_for_ready_file(ready, process, log_path, ready_timeout)
    except BaseException:
        stop_process(process)
        raise
    assert info["pid"] == process.pid, "ip netns exec did not exec the control plane in place"
    bound = str(info["discovery"])
    scheme, _, rest = bound.partition("://")
    return RunningControlPlane(
        process=process,
        log_path=log_path,
        argv=argv,
        discovery=f"{scheme}://{host.address}:{rest.rpartition(':')[2]}",
        client=str(info["client"]),
        dispatch=str(info["dispatch"]),
    )


def port_of(address: str) -> int:
    return int(address.rpartition(":")[2])


def start_worker(
    host: Host,
    folder: Path,
    discovery: str,
    worker_id: str,
    *,
    flags: Sequence[str] = (),
    env: Mapping[str, str],
    ready_timeout: float = 30.0,
) -> RunningWorker:
    """A subworker in ``host``'s namespace; ``FWSEC_WORKER_ID`` tells its tasks who runs them."""
    stamp = time.monotonic_ns()
    ready = folder / f"{worker_id}-ready-{stamp}.json"
    log_path = folder / f"{worker_id}-{stamp}.log"
    argv = [sys.executable, "-m", "fastworker.worker", "--control-plane", discovery, "--worker-id", worker_id]
    argv += ["--task-modules", *TASK_MODULES, "--ready-file", str(ready), *flags]
    process = _launch(host.namespace, argv, {**env, "FWSEC_WORKER_ID": worker_id}, log_path)
    try:
        info = wait_for_ready_file(ready, process, log_path, ready_timeout)
    except BaseException:
        stop_process(process)
        raise
    assert info["pid"] == process.pid, "ip netns exec did not exec the worker in place"
    return RunningWorker(process=process, log_path=log_path, argv=argv, worker_id=worker_id)
