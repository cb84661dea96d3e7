"""Where tasks inside a FastWorker daemon submit by default: the control plane that runs them.

A task fans out as in Celery (``add.delay_sync(x, 1)``, ``await add.delay(x, 1)``) with nothing to
set up: the control plane and the subworker call :func:`set_home` at start and hand it to their
child processes, and typed calls that have no client of their own (none made current, no process
default; see :mod:`fastworker.client.handles`) then use a client of that control plane, with the
daemon's secret and TLS settings. ``FASTWORKER_CONTROL_PLANE`` is not consulted there: its default,
``127.0.0.1:5550``, could be another control plane altogether.
"""

from __future__ import annotations

import sys
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

if TYPE_CHECKING:  # loaded on first use, not with the package
    import asyncio

    from fastworker.client._async import Client
    from fastworker.client.tls import TlsFiles
    from fastworker.protocol.auth import Secret

__all__ = ["Home", "close_home_clients", "home", "home_client", "set_home"]


@dataclass(frozen=True)
class Home:
    """The control plane a daemon's tasks submit to: its discovery address, secret and TLS files."""

    address: str
    secret: Secret | None = field(default=None, repr=False)
    tls: TlsFiles | None = None


_home: Home | None = None
#: The async clients of the home control plane, one per event loop that asked (a Client is bound to one).
_clients: dict[asyncio.AbstractEventLoop, Client] = {}


def set_home(place: Home | None) -> None:
    """Make tasks in this process submit to ``place`` by default (None: back to the environment's control plane)."""
    global _home
    _home = place
    from fastworker.client.handles import _close_environment_sync_client

    _close_environment_sync_client()  # made for the previous home, or from the environment


def home() -> Home | None:
    """The control plane tasks in this process submit to by default, if :func:`set_home` set one."""
    return _home


def home_client() -> Client | None:
    """The home control plane's client for the running event loop, made on first use (None: no home, or no loop)."""
    place = _home
    if place is None:
        return None
    try:
        loop = _running_loop()
    except RuntimeError:
        return None
    client = _clients.get(loop)
    if client is None:
        from fastworker.client._async import Client

        client = _clients[loop] = Client(place.address, secret=place.secret, tls=place.tls)
    return client


async def close_home_clients() -> None:
    """Close the home control plane's client of the running loop, if one was made (a daemon, as it stops)."""
    client = _clients.pop(_running_loop(), None)
    if client is not None:
        await client.aclose()


def _running_loop() -> asyncio.AbstractEventLoop:
    """The running event loop (RuntimeError: none), without importing asyncio where nothing did."""
    module = sys.modules.get("asyncio")
    if module is None:
        raise RuntimeError("no running event loop")
    loop: asyncio.AbstractEventLoop = module.get_running_loop()
    return loop
