"""Browser logins: a random token per login, known only to this process, ended by logout or after a day.

A token derived from the password alone would be the same for every login and outlive a logout:
a leaked cookie could then be revoked only by changing the password. Each login gets its own
token instead; a logout forgets it, and so does a change of the password it was given for.
"""

from __future__ import annotations

import hmac
import secrets
import time
from collections import OrderedDict
from collections.abc import Callable

#: Seconds a login lasts (the cookie is a session cookie: a closed browser forgets it sooner).
SESSION_TTL = 24 * 3600.0
#: Most logins kept at once; the oldest is forgotten first.
MAX_SESSIONS = 10_000


class LoginSessions:
    """The open logins of one dashboard: token -> (expiry, the password key it was opened with)."""

    def __init__(
        self, *, ttl: float = SESSION_TTL, limit: int = MAX_SESSIONS, clock: Callable[[], float] = time.monotonic
    ) -> None:
        self._ttl = ttl
        self._limit = limit
        self._clock = clock
        self._open: OrderedDict[str, tuple[float, str]] = OrderedDict()

    def __len__(self) -> int:
        return len(self._open)

    def open(self, key: str) -> str:
        """A new login's token, valid while ``key`` (from the password in force) stays the same."""
        now = self._clock()
        while self._open and (len(self._open) >= self._limit or next(iter(self._open.values()))[0] <= now):
            self._open.popitem(last=False)  # oldest first: expired ones, or the oldest when full
        token = secrets.token_urlsafe(32)
        self._open[token] = (now + self._ttl, key)
        return token

    def valid(self, token: str | None, key: str) -> bool:
        """True for an open, unexpired login opened under ``key``; an expired or stale one is forgotten."""
        entry = self._open.get(token) if token else None
        if entry is None:
            return False
        expires, opened_with = entry
        if self._clock() >= expires or not hmac.compare_digest(opened_with, key):
            del self._open[token]  # type: ignore[arg-type]
            return False
        return True

    def close(self, token: str | None) -> None:
        """Forget a login (logout)."""
        if token:
            self._open.pop(token, None)
