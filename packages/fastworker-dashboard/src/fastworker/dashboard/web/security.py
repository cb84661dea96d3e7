"""Who may read and act: the dashboard password, read-only mode, same-origin checks and the per-app CSRF token.

With a password (the control plane's secret unless a separate one is set), every read (pages,
the JSON API, the live stream, downloads) needs it too, through :func:`authorize_read`: task
arguments and results are what the secret protects on the wire, and a dashboard bound beyond
loopback is allowed only with a password. ``/login``, ``/healthz``, ``/metrics`` (counts, for
probes and scrapers) and static files stay open. Every action goes through
:func:`authorize_form_action` (HTML forms) or :func:`authorize_api_action` (JSON API), and every
password check through :func:`check_password`, which the login throttle guards.
"""

from __future__ import annotations

import hmac
import logging
from collections.abc import Mapping
from urllib.parse import urlsplit

from starlette.requests import Request

from fastworker.dashboard.web.config import DashboardConfig
from fastworker.dashboard.web.hosts import served_address
from fastworker.dashboard.web.ratelog import RateLimitedLog
from fastworker.dashboard.web.throttle import LoginThrottle

logger = logging.getLogger(__name__)

#: The cookie a successful /login sets: a random token of that login (never the password).
SESSION_COOKIE = "fastworker_session"
#: The header API callers put the password in.
SECRET_HEADER = "X-FastWorker-Secret"

_failures_log = RateLimitedLog(logger, per_minute=10)


class ActionDenied(Exception):
    """An action was refused (403); ``message`` says why and what to do about it."""

    def __init__(self, message: str, *, login_hint: bool = False) -> None:
        super().__init__(message)
        self.message = message
        #: True when logging in with the password would help.
        self.login_hint = login_hint


class LoginNeeded(Exception):
    """A read without the password (401 for programs; pages redirect to /login and come back).

    ``detail``, when given, is what a program is told instead of the default (an API action, which
    only the header authorizes: logging in would not help it).
    """

    def __init__(self, detail: str = "") -> None:
        super().__init__(detail)
        self.detail = detail


class LoginThrottled(ActionDenied):
    """Too many wrong passwords from this address (429): ``retry_after`` says when it may try again."""

    def __init__(self, retry_after: float) -> None:
        self.retry_after = max(1, int(retry_after + 0.999))
        super().__init__(f"too many wrong passwords from your address: try again in {self.retry_after} s")


def _equal(given: str | None, expected: str) -> bool:
    return given is not None and hmac.compare_digest(given.encode(), expected.encode())


def client_address(request: Request) -> str:
    """The peer address the throttle counts (proxies' forwarding headers are not trusted)."""
    return request.client.host if request.client is not None else "unknown"


def check_password(config: DashboardConfig, throttle: LoginThrottle, request: Request, presented: str | None) -> bool:
    """True when ``presented`` is the password (constant-time); failures are counted, throttled and logged.

    Raises:
        LoginThrottled: this address failed too often recently; the password was not looked at.
    """
    if not config.password:
        return True
    if not presented:
        return False  # no password given is not a guess: a probe or a forgotten header locks nobody out
    address = client_address(request)
    wait = throttle.wait_left(address)
    if wait > 0:
        raise LoginThrottled(wait)
    if any(_equal(presented, password) for password in config.passwords()):
        throttle.succeeded(address)
        return True
    failures, wait = throttle.failed(address)
    _failures_log.warning(
        "dashboard: wrong password from %s on %s (%d in a row; next try allowed in %.0f s)",
        address,
        request.url.path,
        failures,
        wait,
    )
    return False


def is_logged_in(config: DashboardConfig, request: Request) -> bool:
    """True when no password is configured or the request carries a valid session cookie."""
    if not config.password:
        return True
    return config.sessions.valid(request.cookies.get(SESSION_COOKIE), config.session_key())


def authorize_read(config: DashboardConfig, throttle: LoginThrottle, request: Request) -> None:
    """Let a read through when no password is set, the browser logged in, or ``X-FastWorker-Secret`` holds it.

    Only GET (and HEAD, answered as GET) is checked here: actions check the password themselves,
    a form's ``secret`` field included.

    Raises:
        LoginNeeded: neither cookie nor header, or a wrong header.
        LoginThrottled: this address sent wrong passwords too often lately.
    """
    if not config.password or request.method != "GET" or is_logged_in(config, request):
        return
    presented = request.headers.get(SECRET_HEADER)
    if presented is not None and check_password(config, throttle, request, presented):
        return
    raise LoginNeeded()


def check_same_origin(config: DashboardConfig, request: Request) -> None:
    """Refuse cross-site requests: Origin (or, without it, Referer) must be this dashboard when present.

    "This dashboard" is the Host allow-list (what we serve), never the request's own ``Host``,
    which a rebinding page chooses.

    Raises:
        ActionDenied: the request comes from another origin.
    """
    served = served_address(request.scope)
    origin = request.headers.get("origin")
    if origin is not None:
        if origin == "null" or not config.hosts.allows_origin(origin, served):
            raise ActionDenied(f"cross-origin request refused (Origin {origin!r} is not this dashboard)")
        return
    referer = request.headers.get("referer")
    if referer and not config.hosts.allows_origin(referer, served):
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


def authorize_form_action(
    config: DashboardConfig, throttle: LoginThrottle, request: Request, form: Mapping[str, str]
) -> None:
    """Check an HTML form action: writable, same origin, CSRF token, and the password when one is configured.

    The password comes from the login cookie or a ``secret`` form field.

    Raises:
        ActionDenied: any check failed (LoginThrottled after too many wrong passwords).
    """
    _check_writable(config)
    check_same_origin(config, request)
    check_csrf(config, form)
    if not config.password or is_logged_in(config, request):
        return
    if not check_password(config, throttle, request, form.get("secret")):
        raise ActionDenied(
            "actions on this dashboard need the control plane secret (or its dashboard password): log in first",
            login_hint=True,
        )


def authorize_api_action(config: DashboardConfig, throttle: LoginThrottle, request: Request) -> None:
    """Check a JSON API action: writable, same origin, and the ``X-FastWorker-Secret`` header when a password is set.

    Raises:
        ActionDenied: read-only, or cross-origin (LoginThrottled after too many wrong passwords).
        LoginNeeded: the header is missing or wrong: ``401``, as for a read (``403`` says that the
            password would not help).
    """
    _check_writable(config)
    check_same_origin(config, request)
    if config.password and not check_password(config, throttle, request, request.headers.get(SECRET_HEADER)):
        raise LoginNeeded(
            f"actions need the control plane secret (or the dashboard password) in the {SECRET_HEADER} header"
            + (": that one is not it" if request.headers.get(SECRET_HEADER) else "")
        )


def safe_next(value: str | None, default: str = "/") -> str:
    """A redirect target limited to this site's paths (no scheme, no host, no ``//``), else ``default``."""
    if not value or not value.startswith("/") or value.startswith("//") or "\\" in value:
        return default
    parts = urlsplit(value)
    if parts.scheme or parts.netloc:
        return default
    return value
