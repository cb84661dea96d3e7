"""TLS for every channel: nng's ``tls+tcp://`` transport configured from PEM files.

A control plane given a certificate and key listens on ``tls+tcp://`` on all three addresses; a
``tcp://`` address it was given is upgraded, and its announcements name the TLS addresses, so
clients and workers follow. Dialing a ``tls+tcp://`` address requires the CA bundle that signed the
control plane's certificate (``--tls-ca`` / ``FASTWORKER_TLS_CA``), and the certificate must name
the host that peers dial (a DNS or IP subject alternative name). A control plane given a CA too
requires client certificates signed by it (mutual TLS); peers then pass their own certificate and
key. The shared secret (``protocol.auth``) still authenticates every frame inside the tunnel.
"""

from __future__ import annotations

import os
import ssl
from collections.abc import Mapping
from dataclasses import dataclass

import pynng

from fastworker.protocol.addresses import parse_address

#: Address schemes that use TLS.
TLS_SCHEMES = frozenset({"tls+tcp", "tls+tcp4", "tls+tcp6"})


def is_tls(address: str) -> bool:
    """True for a ``tls+tcp://`` address."""
    return address.split("://", 1)[0] in TLS_SCHEMES


def tls_address(address: str) -> str:
    """The TLS form of a TCP address (``tcp://h:p`` -> ``tls+tcp://h:p``); other addresses unchanged."""
    scheme, sep, rest = address.partition("://")
    if sep and scheme in ("tcp", "tcp4", "tcp6"):
        return f"tls+{scheme}://{rest}"
    return address


@dataclass(frozen=True)
class TlsFiles:
    """PEM files for TLS: the CA bundle that verifies the peer, and this side's certificate and key."""

    ca: str | None = None
    cert: str | None = None
    key: str | None = None
    #: Verify the peer's certificate when dialing. Only a control plane's own in-process dashboard,
    #: which dials this very process over loopback, turns it off.
    verify: bool = True

    def __post_init__(self) -> None:
        if bool(self.cert) != bool(self.key):
            raise ValueError("TLS: give both a certificate and its key, or neither")
        for label, path in (("CA bundle", self.ca), ("certificate", self.cert), ("key", self.key)):
            if path and not os.path.isfile(path):
                raise ValueError(f"TLS {label} {path!r} is not a readable file")
        _check_pem(self.ca, self.cert, self.key)

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None) -> TlsFiles | None:
        """``FASTWORKER_TLS_CA``, ``FASTWORKER_TLS_CERT`` and ``FASTWORKER_TLS_KEY``, or None if none is set."""
        env = os.environ if environ is None else environ
        ca, cert, key = (env.get(f"FASTWORKER_TLS_{name}") or None for name in ("CA", "CERT", "KEY"))
        if not (ca or cert or key):
            return None
        return cls(ca=ca, cert=cert, key=key)

    @property
    def serves(self) -> bool:
        """True when this side can listen with TLS (it has a certificate and key)."""
        return bool(self.cert and self.key)

    def server_config(self) -> pynng.TLSConfig:
        """The listener side: this certificate; with a CA, peers must present a certificate it signed."""
        if not self.serves:
            raise ValueError("TLS: a listener needs --tls-cert and --tls-key")
        assert self.cert is not None and self.key is not None
        with open(self.cert) as cert, open(self.key) as key:
            own_cert, own_key = cert.read(), key.read()
        config = pynng.TLSConfig(
            pynng.TLSConfig.MODE_SERVER,
            own_cert_string=own_cert,
            own_key_string=own_key,
            ca_files=[self.ca] if self.ca else None,
        )
        config.set_auth_mode(pynng.TLSConfig.AUTH_MODE_REQUIRED if self.ca else pynng.TLSConfig.AUTH_MODE_NONE)
        return config

    def client_config(self, address: str) -> pynng.TLSConfig:
        """The dialing side for one address: verify the peer against the CA and the dialed host name."""
        if not self.ca and self.verify:
            raise ValueError(f"TLS: dialing {address} needs the CA bundle (--tls-ca / FASTWORKER_TLS_CA)")
        own_cert = own_key = None
        if self.serves:
            assert self.cert is not None and self.key is not None
            with open(self.cert) as cert, open(self.key) as key:
                own_cert, own_key = cert.read(), key.read()
        config = pynng.TLSConfig(
            pynng.TLSConfig.MODE_CLIENT,
            server_name=parse_address(address).host or None,
            ca_files=[self.ca] if self.ca else None,
            own_cert_string=own_cert,
            own_key_string=own_key,
        )
        # Set explicitly: pynng skips a falsy auth_mode argument, and AUTH_MODE_NONE is 0.
        config.set_auth_mode(pynng.TLSConfig.AUTH_MODE_REQUIRED if self.verify else pynng.TLSConfig.AUTH_MODE_NONE)
        return config


def _check_pem(ca: str | None, cert: str | None, key: str | None) -> None:
    """Raise ValueError naming the file when the CA bundle, the certificate or its key is unusable.

    nng reports these only as "Cryptographic error" when a socket starts, naming no file, and a
    listener accepts a certificate with another certificate's key; Python's ssl module reads the
    same PEM files and tells which one is wrong.
    """
    for label, path in (("CA bundle", ca), ("certificate", cert)):
        if path:
            try:
                ssl.create_default_context(cafile=path)
            except (ssl.SSLError, ValueError) as exc:
                raise ValueError(f"TLS {label} {path!r} holds no usable PEM certificate ({exc})") from None
    if cert and key:
        context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        try:
            # A password callback: an encrypted key fails here (nng is given no password) instead of
            # OpenSSL prompting on the terminal.
            context.load_cert_chain(cert, key, password=lambda: b"")
        except (ssl.SSLError, ValueError) as exc:
            if getattr(exc, "reason", None) == "KEY_VALUES_MISMATCH":
                raise ValueError(f"TLS key {key!r} is not the key of certificate {cert!r}") from None
            raise ValueError(
                f"TLS key {key!r} is not a usable PEM private key (an encrypted key needs decrypting first): {exc}"
            ) from None


def configure_dial(sock: pynng.Socket, address: str, tls: TlsFiles | None) -> None:
    """Prepare a socket to dial address: TLS settings for a ``tls+tcp://`` address (clear error without them)."""
    if not is_tls(address):
        return
    if tls is None:
        raise ValueError(f"{address} uses TLS: give the CA bundle (--tls-ca / FASTWORKER_TLS_CA)")
    sock.tls_config = tls.client_config(address)
