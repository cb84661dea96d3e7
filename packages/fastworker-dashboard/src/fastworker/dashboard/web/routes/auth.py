"""``/login`` and ``/logout``: trade the dashboard password for a session cookie that lets a browser read and act (throttled per address)."""

from __future__ import annotations

from fastapi import APIRouter, Request
from starlette.responses import HTMLResponse, RedirectResponse, Response

from fastworker.dashboard.web.deps import StateDep
from fastworker.dashboard.web.flash import Flash, set_flash
from fastworker.dashboard.web.forms import read_form
from fastworker.dashboard.web.security import (
    SESSION_COOKIE,
    ActionDenied,
    check_csrf,
    check_password,
    check_same_origin,
    safe_next,
)
from fastworker.dashboard.web.views import page_context

router = APIRouter()


@router.get("/login", response_class=HTMLResponse)
async def login_form(request: Request, state: StateDep) -> Response:
    """The password form (only when a password is configured)."""
    target = safe_next(request.query_params.get("next"))
    if not state.config.secret_required:
        response = RedirectResponse(target, status_code=303)
        set_flash(response, Flash("this dashboard needs no secret", "info"))
        return response
    context = {
        **page_context(state.config, request, page_name="login", next_url=target, stream_url="", title="Log in"),
    }
    return state.renderer.page(request, "login.html", context)


@router.post("/login")
async def login(request: Request, state: StateDep) -> RedirectResponse:
    """Check the password (constant-time, throttled per client address) and set the session cookie.

    Raises:
        ActionDenied: cross-origin, stale form, read-only dashboard, or wrong password.
        LoginThrottled: too many wrong passwords from this address lately (429).
    """
    form = await read_form(request)
    config = state.config
    check_same_origin(config, request)
    check_csrf(config, form)
    if not config.secret_required or not check_password(config, state.throttle, request, form.get("secret")):
        raise ActionDenied("wrong secret", login_hint=config.secret_required)
    response = RedirectResponse(safe_next(form.get("next")), status_code=303)
    token = config.sessions.open(config.session_key())
    response.set_cookie(SESSION_COOKIE, token, httponly=True, samesite="strict", path="/")
    set_flash(response, Flash("logged in" if config.read_only else "logged in: actions are enabled"))
    return response


@router.post("/logout")
async def logout(request: Request, state: StateDep) -> RedirectResponse:
    """End the login: the token is forgotten here (a copy of the cookie no longer works) and in the browser."""
    form = await read_form(request)
    check_same_origin(state.config, request)
    state.config.sessions.close(request.cookies.get(SESSION_COOKIE))
    response = RedirectResponse(safe_next(form.get("next")), status_code=303)
    response.delete_cookie(SESSION_COOKIE, path="/")
    set_flash(response, Flash("logged out", "info"))
    return response
