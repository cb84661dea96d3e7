"""What one dashboard instance was started with: its control plane, password, read-only switch, Host names and CSRF token."""

from __future__ import annotations

import hashlib
import hmac
import secrets
from dataclasses import dataclass, field

from fastworker.dashboard.web.hosts import HostAllowList
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
    """

    control_plane: str
    password: Secret | None = field(default=None, repr=False)
    read_only: bool = False
    csrf_token: str = field(default_factory=lambda: secrets.token_urlsafe(32), repr=False)
    refresh_interval: float = 1.0
    hosts: HostAllowList = field(default_factory=HostAllowList)

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

    def session_token(self) -> str:
        """The login cookie's value: derived from the password and this instance, so the password never sits in a cookie."""
        passwords = self.passwords()
        key = (passwords[0] if passwords else "").encode()
        return hmac.new(key, b"fastworker-dashboard-session:" + self.csrf_token.encode(), hashlib.sha256).hexdigest()
