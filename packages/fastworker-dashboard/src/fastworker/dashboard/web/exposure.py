"""Refuses to serve an unprotected dashboard beyond this machine: a non-loopback bind needs a password or ``--dashboard-insecure``.

Anyone who reaches an unprotected dashboard can read every task's arguments and results and
cancel, retry, purge or drain at will, so binding past loopback without a password is a mistake
unless the operator says otherwise (a trusted network, a protecting proxy in front).
"""

from __future__ import annotations

import ipaddress
import socket


class UnprotectedDashboard(Exception):
    """A non-loopback bind with neither secret nor password, and no ``--dashboard-insecure``."""


def is_loopback(host: str) -> bool:
    """True when ``host`` only reaches this machine: ``localhost``, 127.0.0.0/8, ``::1``, or a name resolving only to them.

    A wildcard (``0.0.0.0``, ``::``) is every interface, so not loopback; a name that does not
    resolve counts as not loopback.
    """
    name = host.strip().strip("[]").lower()
    if name in ("localhost", "localhost."):
        return True
    try:
        return ipaddress.ip_address(name).is_loopback
    except ValueError:
        pass
    if not name:
        return False
    try:
        infos = socket.getaddrinfo(name, None, proto=socket.IPPROTO_TCP)
    except OSError:
        return False
    addresses = {info[4][0] for info in infos}
    return bool(addresses) and all(ipaddress.ip_address(str(a).split("%")[0]).is_loopback for a in addresses)


def refuse_unprotected(host: str, port: int, *, protected: bool, insecure: bool) -> bool:
    """Check a bind before it happens; returns True when the dashboard will be reachable from other hosts.

    Raises:
        UnprotectedDashboard: ``host`` is not loopback, ``protected`` is False and ``insecure`` is False;
            the message names the address and the ways out.
    """
    if is_loopback(host):
        return False
    if not protected and not insecure:
        shown = f"[{host}]" if ":" in host else host
        raise UnprotectedDashboard(
            f"refusing to serve the web dashboard on {shown}:{port}, which is not a loopback address, without a "
            "password: anyone who reaches it could read task arguments and cancel, retry or purge tasks. Set a "
            "secret (--secret / --secret-file) or --dashboard-password / --dashboard-password-file, bind "
            "127.0.0.1, or pass --dashboard-insecure to serve it unprotected anyway"
        )
    return True
