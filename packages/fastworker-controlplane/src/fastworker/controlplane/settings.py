"""The control plane's settings: one frozen dataclass, filled from flags, then env vars, then defaults."""

from __future__ import annotations

import os
from dataclasses import dataclass, field

#: Default addresses (SPEC).
DEFAULT_DISCOVERY_ADDRESS = "tcp://127.0.0.1:5550"
DEFAULT_CLIENT_ADDRESS = "tcp://127.0.0.1:5551"
DEFAULT_DISPATCH_ADDRESS = "tcp://127.0.0.1:5552"
DEFAULT_DASHBOARD_ADDRESS = "127.0.0.1:8080"


@dataclass(frozen=True)
class ControlPlaneSettings:
    """Everything the daemon needs to run; see ``fastworker-controlplane --help`` for each field."""

    task_modules: tuple[str, ...] = ()
    discovery_address: str = DEFAULT_DISCOVERY_ADDRESS
    client_address: str = DEFAULT_CLIENT_ADDRESS
    dispatch_address: str = DEFAULT_DISPATCH_ADDRESS
    dashboard_address: str = DEFAULT_DASHBOARD_ADDRESS
    no_dashboard: bool = False
    dashboard_read_only: bool = False
    advertise_host: str | None = None
    local_concurrency: int = field(default_factory=lambda: os.cpu_count() or 1)
    result_cache_size: int = 10_000
    result_ttl: float = 3600.0
    max_queue: int = 0
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
            (self.local_concurrency >= 0, "--local-concurrency must be 0 or more"),
            (self.result_cache_size >= 1, "--result-cache-size must be at least 1"),
            (self.result_ttl > 0, "--result-ttl must be positive"),
            (self.max_queue >= 0, "--max-queue must be 0 (unbounded) or more"),
            (self.heartbeat_interval > 0, "--heartbeat-interval must be positive"),
            (self.heartbeat_timeout > self.heartbeat_interval, "--heartbeat-timeout must exceed --heartbeat-interval"),
            (self.drain_timeout >= 0, "--drain-timeout cannot be negative"),
            (self.announce_interval > 0, "--announce-interval must be positive"),
            (self.max_frame_size >= 1024, "--max-frame-size must be at least 1024 bytes"),
            (self.misfire_policy in ("run_once", "skip", "run_all"), "--misfire-policy: run_once, skip or run_all"),
        ]
        for ok, message in checks:
            if not ok:
                raise ValueError(message)
