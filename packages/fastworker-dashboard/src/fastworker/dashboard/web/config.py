"""What one dashboard instance was started with: its control plane, password, read-only switch, Host names and CSRF token."""

from __future__ import annotations

import hashlib
import hmac
import secrets
from dataclasses import dataclass, field

from fastworker.dashboard.web.hosts import HostAllowList
from fastworker.dashboard.web.sessions import LoginSessions
from fastworker.protocol.auth import Secret


@dataclass(frozen=True)
class DashboardConfig:
    """Settings of one dashboard app, fixed when the app is created.

    Args:
        control_plane: The discovery address the dashboard reads from (shown in the page footer).
        password: When set, every action needs it (form login cookie or ``X-FastWorker-Secret``);
            ``--dashboard-password``, else the control plane's secret: while that rotates, each
            secret in force is accepted and logins last until the sealing secret changes.
        read_only: No action buttons are rendered and every action answers 403.
        csrf_token: Random per app instance; every action form carries it.
        refresh_interval: Seconds between live snapshots (and the least time between two redraws).
        hosts: The ``Host`` names (and origins) this dashboard answers to.
        sessions: The browser logins open now.
    """

    control_plane: str
    password: Secret | None = field(default=None, repr=False)
    read_only: bool = False
    csrf_token: str = field(default_factory=lambda: secrets.token_urlsafe(32), repr=False)
    refresh_interval: float = 1.0
    hosts: HostAllowList = field(default_factory=HostAllowList)
    #: The browser logins open now (each login its own token; mutable, shared by the app's requests).
    sessions: LoginSessions = field(default_factory=LoginSessions, repr=False, compare=False)

    @property
    def secret_required(self) -> bool:
        """True when actions need the password (templates call it that: users know it as the secret)."""
        return bool(self.password)

    def passwords(self) -> tuple[str, ...]:
        """The passwords accepted now: the one set, or every secret in force of a rotating secret."""
        password = self.password
        if not password:
            return ()
        return (password,) if isinstance(password, str) else tuple(password.secrets())

    def session_key(self) -> str:
        """What a login is bound to: derived from the password in force and this instance (a new password ends logins)."""
        passwords = self.passwords()
        key = (passwords[0] if passwords else "").encode()
        return hmac.new(key, b"fastworker-dashboard-session:" + self.csrf_token.encode(), hashlib.sha256).hexdigest()
