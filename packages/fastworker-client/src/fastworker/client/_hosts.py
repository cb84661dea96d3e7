"""Which ``Host`` names a loopback HTTP listener answers to, and which origins are its own: one rule.

Private, shared by FastWorker's own distributions only (the web dashboard, and the daemons' small
listener for ``/healthz`` and ``/metrics``; see ``SHARED_INTERNALS`` in ``scripts/check_layout.py``).
A page on ``attacker.example`` whose name is re-pointed at 127.0.0.1 reaches a loopback listener
from the victim's browser, but its requests still say ``Host: attacker.example``: so a request must
name a host the listener serves, at its port: the bound address, the loopback names, the address
the connection arrived on, this machine's names for a wildcard bind, and the names given
(``--dashboard-host``). A request without a ``Host``, or with a malformed one, is not one of ours.
"""

from __future__ import annotations

import socket
from dataclasses import dataclass, field
from urllib.parse import urlsplit

from fastworker.client.dashboardflags import canonical_name as _canonical
from fastworker.client.dashboardflags import split_host

#: Names every dashboard answers to (with the served port).
LOOPBACK_NAMES = frozenset({"localhost", "127.0.0.1", "::1"})
#: Bind hosts that mean "every interface".
WILDCARD_HOSTS = frozenset({"0.0.0.0", "::", ""})
#: Default ports of the schemes an Origin may carry.
_DEFAULT_PORTS = {"http": 80, "https": 443}


def machine_names() -> set[str]:
    """This machine's host name and fully qualified name (lower case), allowed for a wildcard bind."""
    names = {socket.gethostname().lower()}
    try:
        names.add(socket.getfqdn().lower())
    except OSError:
        pass
    return {n.rstrip(".") for n in names if n}


@dataclass(frozen=True)
class HostAllowList:
    """The names this dashboard serves.

    Args:
        bind_host: The host it was told to bind (a name, an IP, or a wildcard); None when unknown.
        extra: ``--dashboard-host`` values: ``name`` (any port) or ``name:port`` (that port only).
    """

    bind_host: str | None = None
    extra: tuple[str, ...] = ()
    _fixed: frozenset[str] = field(init=False, repr=False)
    _any_port: frozenset[str] = field(init=False, repr=False)
    _exact: frozenset[tuple[str, int]] = field(init=False, repr=False)

    def __post_init__(self) -> None:
        fixed = set(LOOPBACK_NAMES)
        if self.bind_host is not None:
            bound = self.bind_host.strip().strip("[]").lower()
            if bound in WILDCARD_HOSTS:
                fixed |= machine_names()
            else:
                fixed.add(_canonical(bound))
        any_port: set[str] = set()
        exact: set[tuple[str, int]] = set()
        for value in self.extra:
            parsed = split_host(value)
            if parsed is None:
                raise ValueError(f"--dashboard-host {value!r} is not a host name (NAME or NAME:PORT)")
            name, port = parsed
            if port is None:
                any_port.add(_canonical(name))
            else:
                exact.add((_canonical(name), port))
        object.__setattr__(self, "_fixed", frozenset(_canonical(n) for n in fixed))
        object.__setattr__(self, "_any_port", frozenset(any_port))
        object.__setattr__(self, "_exact", frozenset(exact))

    def allows(self, name: str, port: int | None, served: tuple[str, int | None] | None, *, strict: bool) -> bool:
        """True when ``name:port`` is one of ours.

        Args:
            name: The host name asked for (lower case, no brackets).
            port: Its port; None when it named none.
            served: The (address, port) the connection arrived on (ASGI ``scope["server"]``).
            strict: Origins: a port-less fixed name means the scheme's default port, which must be
                the served one. Hosts (``strict=False``) may leave the port out.
        """
        name = _canonical(name)
        if name in self._any_port:
            return True
        if port is not None and (name, port) in self._exact:
            return True
        served_name, served_port = served if served is not None else (None, None)
        fixed = name in self._fixed or (served_name is not None and name == _canonical(str(served_name).lower()))
        if not fixed:
            return False
        if port is None:
            return not strict
        return served_port is None or port == served_port

    def allows_host_header(self, value: str, served: tuple[str, int | None] | None) -> bool:
        """True when a ``Host`` header names this dashboard (an IPv6 address in it only in brackets, as HTTP says)."""
        if value.count(":") > 1 and not value.lstrip().startswith("["):
            return False
        parsed = split_host(value)
        return parsed is not None and self.allows(*parsed, served, strict=False)

    def allows_origin(self, origin: str, served: tuple[str, int | None] | None) -> bool:
        """True when an ``Origin`` (or a Referer's origin) is this dashboard: http(s) and an allowed host and port."""
        parts = urlsplit(origin)
        if parts.scheme not in _DEFAULT_PORTS or not parts.netloc:
            return False
        parsed = split_host(parts.netloc)
        if parsed is None:
            return False
        name, port = parsed
        # An origin leaves its scheme's default port out: compare it as if spelled out.
        return self.allows(name, port if port is not None else _DEFAULT_PORTS[parts.scheme], served, strict=True)
