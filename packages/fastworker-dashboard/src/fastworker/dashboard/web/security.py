"""Who may act: read-only mode, same-origin checks, the per-app CSRF token and the shared secret.

Reads stay open (the dashboard binds loopback by default); every action goes through
:func:`authorize_form_action` (HTML forms) or :func:`authorize_api_action` (JSON API).
"""

from __future__ import annotations

import hmac
from collections.abc import Mapping
from urllib.parse import urlsplit

from starlette.requests import Request

from fastworker.dashboard.web.config import DashboardConfig

#: The cookie a successful /login sets (an HMAC of the secret, never the secret itself).
SESSION_COOKIE = "fastworker_session"
#: The header API callers put the secret in.
SECRET_HEADER = "X-FastWorker-Secret"


class ActionDenied(Exception):
    """An action was refused (403); ``message`` says why and what to do about it."""

    def __init__(self, message: str, *, login_hint: bool = False) -> None:
        super().__init__(message)
        self.message = message
        #: True when logging in with the secret would help.
        self.login_hint = login_hint


def _equal(given: str | None, expected: str) -> bool:
    return given is not None and hmac.compare_digest(given.encode(), expected.encode())


def secret_matches(config: DashboardConfig, presented: str | None) -> bool:
    """True when no secret is configured, or ``presented`` equals it (constant-time)."""
    if not config.secret:
        return True
    return _equal(presented, config.secret)


def is_logged_in(config: DashboardConfig, request: Request) -> bool:
    """True when no secret is configured or the request carries a valid session cookie."""
    if not config.secret:
        return True
    return _equal(request.cookies.get(SESSION_COOKIE), config.session_token())


def check_same_origin(request: Request) -> None:
    """Refuse cross-site requests: Origin (or, without it, Referer) must name this host when present.

    Raises:
        ActionDenied: the request comes from another origin.
    """
    host = request.headers.get("host", "")
    origin = request.headers.get("origin")
    if origin is not None:
        if origin == "null" or urlsplit(origin).netloc != host:
            raise ActionDenied(f"cross-origin request refused (Origin {origin!r} is not this dashboard)")
        return
    referer = request.headers.get("referer")
    if referer and urlsplit(referer).netloc != host:
        raise ActionDenied("cross-origin request refused (Referer is not this dashboard)")


def check_csrf(config: DashboardConfig, form: Mapping[str, str]) -> None:
    """Require the per-app token in a form (constant-time).

    Raises:
        ActionDenied: the token is missing or from another dashboard instance.
    """
    if not _equal(form.get("csrf"), config.csrf_token):
        raise ActionDenied("the form's CSRF token is missing or stale: reload the page and try again")


def _check_writable(config: DashboardConfig) -> None:
    if config.read_only:
        raise ActionDenied("this dashboard is read-only: actions are disabled")


def authorize_form_action(config: DashboardConfig, request: Request, form: Mapping[str, str]) -> None:
    """Check an HTML form action: writable, same origin, CSRF token, and the secret when one is configured.

    The secret comes from the login cookie or a ``secret`` form field.

    Raises:
        ActionDenied: any check failed.
    """
    _check_writable(config)
    check_same_origin(request)
    check_csrf(config, form)
    if config.secret and not (is_logged_in(config, request) or secret_matches(config, form.get("secret"))):
        raise ActionDenied("actions on this dashboard need the control plane secret: log in first", login_hint=True)


def authorize_api_action(config: DashboardConfig, request: Request) -> None:
    """Check a JSON API action: writable, same origin, and the ``X-FastWorker-Secret`` header when a secret is set.

    Raises:
        ActionDenied: any check failed.
    """
    _check_writable(config)
    check_same_origin(request)
    if config.secret and not secret_matches(config, request.headers.get(SECRET_HEADER)):
        raise ActionDenied(f"actions need the control plane secret in the {SECRET_HEADER} header")


def safe_next(value: str | None, default: str = "/") -> str:
    """A redirect target limited to this site's paths (no scheme, no host, no ``//``), else ``default``."""
    if not value or not value.startswith("/") or value.startswith("//") or "\\" in value:
        return default
    parts = urlsplit(value)
    if parts.scheme or parts.netloc:
        return default
    return value
