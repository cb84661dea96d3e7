"""Which ``Host`` names the dashboard answers to, and which origins may act: the DNS-rebinding defence.

A page on ``attacker.example`` whose name is re-pointed at 127.0.0.1 reaches the dashboard from
the victim's browser, but its requests still say ``Host: attacker.example``. So every request must
name a host this dashboard serves: the bound address, the loopback names, the address the
connection arrived on (an IP literal is only sent by a browser that was pointed at that very IP),
this machine's names for a wildcard bind, and the ``--dashboard-host`` values. Anything else gets
a short 400 before any route (pages, ``/api``, ``/metrics``, ``/stream``, static files, actions) runs.

The same list decides whether an ``Origin``/``Referer`` is "us" for the CSRF check: what we serve,
never whatever ``Host`` the request claims. The rule itself (:class:`HostAllowList`) is shared
with the daemons' ``/healthz`` and ``/metrics`` listener.
"""

from __future__ import annotations

import logging

from starlette.responses import PlainTextResponse
from starlette.types import ASGIApp, Receive, Scope, Send

from fastworker.client._hosts import HostAllowList
from fastworker.dashboard.web.ratelog import RateLimitedLog

__all__ = ["HostAllowList", "TrustedHosts", "served_address"]

logger = logging.getLogger(__name__)

_refusals = RateLimitedLog(logger, per_minute=6)


def served_address(scope: Scope) -> tuple[str, int | None] | None:
    """The (local address, port) an ASGI connection arrived on, when the server says."""
    server = scope.get("server")
    if not server:
        return None
    host, port = server[0], server[1] if len(server) > 1 else None
    return (str(host), int(port) if port is not None else None)


def _header(scope: Scope, name: bytes) -> str | None:
    for key, value in scope.get("headers", ()):
        if key.lower() == name:
            return str(value.decode("latin-1"))
    return None


class TrustedHosts:
    """ASGI middleware: a request whose ``Host`` is not on the allow-list gets 400 and reaches no route."""

    def __init__(self, app: ASGIApp, allow: HostAllowList) -> None:
        self.app = app
        self.allow = allow

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        """Refuse a foreign ``Host`` (HTTP only; lifespan passes through)."""
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        host = _header(scope, b"host")
        if host is not None and self.allow.allows_host_header(host, served_address(scope)):
            await self.app(scope, receive, send)
            return
        _refusals.warning(
            "refused a request for Host %r (not a name this dashboard serves; add it with --dashboard-host)",
            host,
        )
        refusal = PlainTextResponse(
            "refused: this Host is not one this dashboard serves\n", 400, headers={"cache-control": "no-store"}
        )
        await refusal(scope, receive, send)
