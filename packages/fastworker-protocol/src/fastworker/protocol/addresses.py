"""Builds and parses nng endpoint URLs so that every process formats addresses the same way."""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass
from urllib.parse import urlsplit

_SCHEMES = ("tcp", "tls+tcp", "ipc", "inproc")


@dataclass(frozen=True)
class Address:
    """A parsed nng endpoint: ``tcp://HOST:PORT``, ``tls+tcp://HOST:PORT``, ``ipc://PATH``, ``inproc://NAME``."""

    scheme: str
    host: str
    port: int | None = None

    @property
    def url(self) -> str:
        """The address as an nng URL."""
        if self.port is None:
            return f"{self.scheme}://{self.host}"
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"{self.scheme}://{host}:{self.port}"

    def with_port(self, port: int) -> Address:
        """The same address with another port (e.g. the one a port-0 listener got)."""
        return Address(self.scheme, self.host, port)

    def with_host(self, host: str) -> Address:
        """The same address with another host (e.g. the one remote peers can reach)."""
        return Address(self.scheme, host, self.port)

    def is_loopback(self) -> bool:
        """True when only this machine can reach the address."""
        if self.scheme in ("ipc", "inproc"):
            return True
        if self.host == "localhost":
            return True
        try:
            return ipaddress.ip_address(self.host).is_loopback
        except ValueError:
            return False


def parse_address(url: str) -> Address:
    """Parse an nng URL.

    Raises:
        ValueError: the URL has no known scheme, or a TCP URL lacks a valid host and port.
    """
    scheme, sep, rest = url.partition("://")
    if not sep or scheme not in _SCHEMES:
        raise ValueError(f"unsupported address {url!r}: expected one of {', '.join(s + '://' for s in _SCHEMES)}")
    if scheme in ("ipc", "inproc"):
        if not rest:
            raise ValueError(f"address {url!r} has no path")
        return Address(scheme, rest)
    host, colon, port_text = rest.rpartition(":")
    if not colon or not host:
        raise ValueError(f"address {url!r} needs HOST:PORT")
    if host.startswith("[") or host.endswith("]"):
        if not (host.startswith("[") and host.endswith("]")) or ":" not in host:
            raise ValueError(f"address {url!r}: unbalanced [ ] (an IPv6 host goes in brackets: tcp://[::1]:5550)")
        host = host[1:-1]
    elif ":" in host:
        raise ValueError(f"address {url!r}: put an IPv6 host in brackets, e.g. tcp://[::1]:5550")
    if not host.strip() or any(c.isspace() for c in host) or "/" in host:
        raise ValueError(f"address {url!r} has no valid host")
    # ASCII digits only: int() also takes " 5550", "+5550" and other scripts' digits, which nng refuses later.
    if not (port_text.isascii() and port_text.isdigit()):
        raise ValueError(f"address {url!r} has a non-numeric port")
    port = int(port_text)
    if port > 65535:
        raise ValueError(f"address {url!r} has a port out of range")
    return Address(scheme, host, port)


def parse_http_address(address: str, what: str = "HTTP listener") -> tuple[str, int]:
    """Split an HTTP listener's ``HOST:PORT`` (an ``http://`` prefix and ``[v6]`` brackets accepted) into host and port.

    Raises:
        ValueError: not ``HOST:PORT``, another scheme, a path, or a port outside 0..65535.
    """
    text = address.strip()
    if not text:
        raise ValueError(f"{what} address is empty: expected HOST:PORT, e.g. 127.0.0.1:8080")
    if "://" in text:
        parts = urlsplit(text)
        if parts.scheme != "http":
            raise ValueError(f"{what} address {address!r}: only http:// is supported (or plain HOST:PORT)")
        if parts.path not in ("", "/") or parts.query or parts.fragment:
            raise ValueError(f"{what} address {address!r} must not have a path or query: expected HOST:PORT")
        text = parts.netloc
    host, sep, port_text = text.rpartition(":")
    if not sep or not host or not port_text:
        raise ValueError(f"{what} address {address!r} is not HOST:PORT (e.g. 127.0.0.1:8080)")
    if host.startswith("["):
        if not host.endswith("]"):
            raise ValueError(f"{what} address {address!r}: unbalanced [ ] around an IPv6 host")
        host = host[1:-1]
    elif ":" in host:
        raise ValueError(f"{what} address {address!r}: put an IPv6 host in brackets, e.g. [::1]:8080")
    if not port_text.isdigit():
        raise ValueError(f"{what} address {address!r}: port {port_text!r} is not a number")
    port = int(port_text)
    if port > 65535:
        raise ValueError(f"{what} address {address!r}: port {port} is out of range 0..65535")
    return host, port
