"""What one dashboard instance was started with: its control plane, secret, read-only switch and CSRF token."""

from __future__ import annotations

import hashlib
import hmac
import secrets
from dataclasses import dataclass, field


@dataclass(frozen=True)
class DashboardConfig:
    """Settings of one dashboard app, fixed when the app is created.

    Args:
        control_plane: The discovery address the dashboard reads from (shown in the page footer).
        secret: When set, every action needs it (form login cookie or ``X-FastWorker-Secret``).
        read_only: No action buttons are rendered and every action answers 403.
        csrf_token: Random per app instance; every action form carries it.
        refresh_interval: Seconds between live snapshots (and the least time between two redraws).
    """

    control_plane: str
    secret: str | None = None
    read_only: bool = False
    csrf_token: str = field(default_factory=lambda: secrets.token_urlsafe(32))
    refresh_interval: float = 1.0

    @property
    def secret_required(self) -> bool:
        """True when actions need the secret."""
        return bool(self.secret)

    def session_token(self) -> str:
        """The login cookie's value: derived from the secret and this instance, so the secret never sits in a cookie."""
        key = (self.secret or "").encode()
        return hmac.new(key, b"fastworker-dashboard-session:" + self.csrf_token.encode(), hashlib.sha256).hexdigest()
