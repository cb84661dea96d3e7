"""The dashboard's listening socket and the addresses it is known by; no web framework imported here.

Kept apart from ``server`` so the control plane can bind the dashboard's port (and announce its
URL) without loading uvicorn and FastAPI (see ``lazy``).
"""

from __future__ import annotations

import socket

from fastworker.protocol.addresses import parse_http_address


def parse_address(address: str) -> tuple[str, int]:
    """Split the dashboard's ``HOST:PORT`` (an ``http://`` prefix and ``[v6]`` brackets accepted).

    Raises:
        ValueError: not ``HOST:PORT``, another scheme, a path, or a port outside 0..65535.
    """
    return parse_http_address(address, "dashboard")


def bind(host: str, port: int) -> socket.socket:
    """A listening TCP socket on host:port (the OS picks the port for 0).

    Raises:
        OSError: the address cannot be bound (in use, not local, ...).
    """
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.create_server((host, port), family=family, backlog=128)
    sock.set_inheritable(False)
    return sock


def bound_address(sock: socket.socket) -> str:
    """The socket's real ``HOST:PORT`` (wildcards stay wildcards: this is what it listens on, not a URL)."""
    host, port = sock.getsockname()[:2]
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


def local_url(sock: socket.socket) -> str:
    """Where to browse the socket from this machine (a wildcard bind is reached over loopback)."""
    host, port = sock.getsockname()[:2]
    if host in ("0.0.0.0", "::"):
        host = "127.0.0.1" if host == "0.0.0.0" else "::1"
    shown = f"[{host}]" if ":" in host else host
    return f"http://{shown}:{port}"
