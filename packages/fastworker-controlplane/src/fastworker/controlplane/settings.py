"""The control plane's settings: one frozen dataclass, filled from flags, then env vars, then defaults."""

from __future__ import annotations

import ipaddress
import re
from dataclasses import dataclass, field

from fastworker.client._readyfile import check_ready_file
from fastworker.client.cpus import available_cpus
from fastworker.client.tls import TlsFiles
from fastworker.protocol.addresses import parse_address, parse_http_address
from fastworker.protocol.auth import Secret
from fastworker.protocol.queues import DEFAULT_QUEUE
from fastworker.worker.bounds import MAX_CONCURRENCY, POOLS

#: Default addresses (docs/reference.md).
DEFAULT_DISCOVERY_ADDRESS = "tcp://127.0.0.1:5550"
DEFAULT_CLIENT_ADDRESS = "tcp://127.0.0.1:5551"
DEFAULT_DISPATCH_ADDRESS = "tcp://127.0.0.1:5552"
DEFAULT_DASHBOARD_ADDRESS = "127.0.0.1:8080"
DEFAULT_METRICS_ADDRESS = "127.0.0.1:5553"
#: Largest --local-concurrency: as for a subworker's --concurrency (each slot is a thread or a child).
MAX_LOCAL_CONCURRENCY = MAX_CONCURRENCY
#: Largest --max-frame-size (1 GiB): what nng's receive limit and the journal's batches take.
MAX_FRAME_SIZE_LIMIT = 1 << 30


#: A DNS name or an IPv4 address, as peers dial it (letters, digits, hyphens and underscores, dot-separated).
_HOST_NAME = re.compile(
    r"[A-Za-z0-9_](?:[A-Za-z0-9_-]{0,61}[A-Za-z0-9_])?(?:\.[A-Za-z0-9_](?:[A-Za-z0-9_-]{0,61}[A-Za-z0-9_])?)*\.?"
)


@dataclass(frozen=True)
class ControlPlaneSettings:
    """Everything the daemon needs to run; see ``fastworker-controlplane --help`` for each field."""

    task_modules: tuple[str, ...] = ()
    discovery_address: str = DEFAULT_DISCOVERY_ADDRESS
    client_address: str = DEFAULT_CLIENT_ADDRESS
    dispatch_address: str = DEFAULT_DISPATCH_ADDRESS
    dashboard_address: str = DEFAULT_DASHBOARD_ADDRESS
    no_dashboard: bool = False
    #: HOST:PORT of the plain-HTTP listener for /metrics and /healthz.
    metrics_address: str = DEFAULT_METRICS_ADDRESS
    no_metrics: bool = False
    dashboard_read_only: bool = False
    #: Password for the dashboard's reads, actions and /login (None: the secret).
    dashboard_password: str | None = field(default=None, repr=False)
    #: Extra Host names the dashboard answers to (NAME or NAME:PORT); other Hosts get 400.
    dashboard_hosts: tuple[str, ...] = ()
    #: Serve the dashboard on a non-loopback address even with neither secret nor password.
    dashboard_insecure: bool = False
    #: Shared secret: with it, every frame on every channel is sealed and checked (protocol.auth).
    secret: Secret | None = field(default=None, repr=False)
    #: TLS on every channel: this certificate and key; with a CA, peers need certificates it signed.
    tls_cert: str | None = None
    tls_key: str | None = None
    tls_ca: str | None = None
    advertise_host: str | None = None
    local_concurrency: int = field(default_factory=available_cpus)
    #: Where this process's own sync tasks run: "threads" of it (fast; a task that crashes its
    #: process takes the control plane with it) or "processes", children (isolated, slower).
    local_pool: str = "threads"
    #: The named queues this process's own slots take tasks from.
    queues: tuple[str, ...] = (DEFAULT_QUEUE,)
    result_cache_size: int = 10_000
    #: Bound on the memory of the result cache, in MiB (estimated from payload sizes).
    result_cache_mb: int = 512
    #: Connections each listening socket (clients, workers) accepts at once.
    max_connections: int = 1024
    #: Of those, connections from one peer address (so one host cannot lock the others out).
    max_connections_per_peer: int = 256
    #: Seconds a connection may stay open without sending a valid (authenticated) request.
    idle_connection_timeout: float = 10.0
    #: Most tasks one subworker may hold at once (running plus prefetched): bounds a worker that claims
    #: absurd capacity, and caps its registered capacity.
    max_worker_tasks: int = 1024
    result_ttl: float = 3600.0
    max_queue: int = 0
    #: Write-ahead journal file: tasks, state changes and results survive a restart or a crash (None: off).
    journal: str | None = None
    heartbeat_interval: float = 1.0
    heartbeat_timeout: float = 5.0
    drain_timeout: float = 30.0
    announce_interval: float = 0.25
    max_frame_size: int = 16 * 1024 * 1024
    allow_pickle: bool = False
    misfire_policy: str = "run_once"
    ready_file: str | None = None
    log_level: str = "INFO"

    def __post_init__(self) -> None:
        checks = [
            (
                0 <= self.local_concurrency <= MAX_LOCAL_CONCURRENCY,
                f"--local-concurrency must be 0..{MAX_LOCAL_CONCURRENCY:,}, got {self.local_concurrency!r}",
            ),
            (self.local_pool in POOLS, f"--local-pool must be one of {', '.join(POOLS)}, not {self.local_pool!r}"),
            (bool(self.queues), "--queues must name at least one queue"),
            (self.result_cache_size >= 1, f"--result-cache-size must be at least 1, got {self.result_cache_size!r}"),
            (self.result_cache_mb >= 1, f"--result-cache-mb must be at least 1, got {self.result_cache_mb!r}"),
            (self.max_connections >= 1, f"--max-connections must be at least 1, got {self.max_connections!r}"),
            (
                self.max_connections_per_peer >= 1,
                f"--max-connections-per-peer must be at least 1, got {self.max_connections_per_peer!r}",
            ),
            (
                self.idle_connection_timeout > 0,
                f"--idle-connection-timeout must be positive, got {self.idle_connection_timeout!r}",
            ),
            (self.max_worker_tasks >= 1, f"--max-worker-tasks must be at least 1, got {self.max_worker_tasks!r}"),
            (self.result_ttl > 0, f"--result-ttl must be positive, got {self.result_ttl!r}"),
            (self.max_queue >= 0, f"--max-queue must be 0 (unbounded) or more, got {self.max_queue!r}"),
            (self.heartbeat_interval > 0, f"--heartbeat-interval must be positive, got {self.heartbeat_interval!r}"),
            (
                self.heartbeat_timeout > self.heartbeat_interval,
                f"--heartbeat-timeout must exceed --heartbeat-interval ({self.heartbeat_timeout!r} <= {self.heartbeat_interval!r})",
            ),
            (self.drain_timeout >= 0, f"--drain-timeout cannot be negative, got {self.drain_timeout!r}"),
            (self.announce_interval > 0, f"--announce-interval must be positive, got {self.announce_interval!r}"),
            (
                1024 <= self.max_frame_size <= MAX_FRAME_SIZE_LIMIT,
                f"--max-frame-size must be 1024..{MAX_FRAME_SIZE_LIMIT:,} bytes, got {self.max_frame_size!r}",
            ),
            (
                self.misfire_policy in ("run_once", "skip", "run_all"),
                f"--misfire-policy: run_once, skip or run_all, got {self.misfire_policy!r}",
            ),
        ]
        for ok, message in checks:
            if not ok:
                raise ValueError(message)
        for flag, address in (
            ("--discovery-address", self.discovery_address),
            ("--client-address", self.client_address),
            ("--dispatch-address", self.dispatch_address),
        ):
            try:
                parsed = parse_address(address)
            except ValueError as exc:
                raise ValueError(f"{flag}: {exc}") from None
            if parsed.scheme == "tls+tcp" and not (self.tls_cert and self.tls_key):
                # Without them the listener starts, and no peer ever completes a handshake.
                raise ValueError(f"{flag} {address} listens with TLS: give --tls-cert and --tls-key")
        if self.advertise_host is not None:
            object.__setattr__(self, "advertise_host", advertised_host(self.advertise_host))
        for flag, http_address, off in (
            ("--dashboard-address", self.dashboard_address, self.no_dashboard),
            ("--metrics-address", self.metrics_address, self.no_metrics),
        ):
            if not off:
                try:
                    parse_http_address(http_address, flag[2:].removesuffix("-address"))
                except ValueError as exc:
                    raise ValueError(f"{flag}: {exc}") from None
        check_ready_file(self.ready_file)
        if self.tls_ca and not self.tls_cert:
            raise ValueError("--tls-ca needs --tls-cert and --tls-key (it checks the peers of a TLS listener)")
        self.tls  # noqa: B018 - checks the files exist and come in pairs

    @property
    def tls(self) -> TlsFiles | None:
        """The TLS files, when every channel is to use TLS."""
        if not (self.tls_cert or self.tls_key):
            return None
        return TlsFiles(ca=self.tls_ca, cert=self.tls_cert, key=self.tls_key)


def advertised_host(host: str) -> str:
    """``--advertise-host`` checked: a host name or an IP address (an IPv6 one with or without brackets).

    Raises:
        ValueError: a port, a path, spaces, or anything else no peer could dial, naming the value.
    """
    bare = host[1:-1] if host.startswith("[") and host.endswith("]") else host
    if ":" in bare:
        try:
            ipaddress.IPv6Address(bare)
        except ValueError:
            raise ValueError(f"--advertise-host {host!r}: a host name or IP address, without a port") from None
        return bare
    if not _HOST_NAME.fullmatch(bare):
        raise ValueError(f"--advertise-host {host!r}: not a host name or IP address")
    return bare
