"""Maps failures to answers: JSON with a status code under ``/api/``, an HTML error page everywhere else.

TaskNotFound and WorkflowNotFound -> 404, ControlPlaneUnavailable -> 503, a bad query or priority -> 400 (422 in the
API), a refused action -> 403, too many wrong passwords -> 429, a request the control plane refused -> 409, other control-plane
errors -> 502.
"""

from __future__ import annotations

import logging
from urllib.parse import quote, urlencode, urlsplit

from fastapi import FastAPI, Request
from starlette.exceptions import HTTPException
from starlette.responses import JSONResponse, RedirectResponse, Response

from fastworker.client import ClientError, ControlPlaneUnavailable, FastworkerError, TaskNotFound
from fastworker.dashboard.web.deps import get_state
from fastworker.dashboard.web.forms import FormError
from fastworker.dashboard.web.query import BadQuery
from fastworker.dashboard.web.security import SECRET_HEADER, ActionDenied, LoginNeeded, LoginThrottled, safe_next
from fastworker.dashboard.web.views import page_context

logger = logging.getLogger(__name__)


#: Paths answered for programs, not people: their errors are JSON.
_MACHINE_PATHS = ("/api/", "/metrics", "/healthz", "/stream")


def is_api(request: Request) -> bool:
    """True for paths read by programs (the JSON API, metrics, health, the live stream)."""
    return request.url.path.startswith(_MACHINE_PATHS)


def error_response(request: Request, status: int, title: str, message: str, *, login_hint: bool = False) -> Response:
    """The error as JSON (``{"detail": message}``) for the API, else as the HTML error page."""
    if is_api(request):
        return JSONResponse({"detail": message}, status_code=status)
    state = get_state(request)
    context = {
        **page_context(
            state.config, request, page_name="error", next_url=_return_to(request), stream_url="", title=title
        ),
        "status": status,
        "message": message,
        "login_hint": login_hint,
        "reload": status == 503,
    }
    return state.renderer.page(request, "error.html", context, status_code=status)


def _return_to(request: Request) -> str:
    """Where "log in" and similar links lead back to: this page for a GET, the page the form was on for a POST."""
    if request.method == "GET":
        query = request.url.query
        return request.url.path + (f"?{query}" if query else "")
    referer = urlsplit(request.headers.get("referer", ""))
    return safe_next(referer.path + (f"?{referer.query}" if referer.query else ""))


class WorkflowNotFound(Exception):
    """The control plane does not know a workflow id (the client reports it as TaskNotFound, naming the id)."""

    def __init__(self, workflow_id: str) -> None:
        super().__init__(f"workflow {workflow_id} is not known to the control plane")
        self.workflow_id = workflow_id


async def _workflow_not_found(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, WorkflowNotFound)
    return error_response(
        request,
        404,
        "Workflow not found",
        f"No workflow {exc.workflow_id} is known to the control plane (never seen, or its steps were forgotten).",
    )


async def _task_not_found(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, TaskNotFound)
    message = f"No task {exc.task_id} is known to the control plane."
    if exc.what == "task" and await _is_workflow(request, exc.task_id):
        where = f"/workflows/{quote(exc.task_id, safe='')}"
        if request.method == "GET" and not is_api(request) and request.url.path.startswith("/tasks/"):
            return RedirectResponse(where, status_code=303)  # a workflow id where a task id was expected
        message += f" It is a workflow id: {'/api' if is_api(request) else ''}{where} shows that workflow."
    return error_response(request, 404, "Task not found", message)


async def _is_workflow(request: Request, maybe_id: str) -> bool:
    """Whether an id no task is known by is a workflow's (for the hint; False when that cannot be told)."""
    try:
        await get_state(request).client.workflow(maybe_id)
    except FastworkerError:
        return False
    return True


async def _unavailable(request: Request, exc: Exception) -> Response:
    control_plane = get_state(request).config.control_plane
    return error_response(
        request, 503, "Control plane unavailable", f"The control plane at {control_plane} did not answer: {exc}"
    )


async def _bad_query(request: Request, exc: Exception) -> Response:
    status = 422 if is_api(request) else 400
    return error_response(request, status, "Bad request", str(exc))


async def _bad_form(request: Request, exc: Exception) -> Response:
    return error_response(request, 400, "Bad request", str(exc))


async def _denied(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, ActionDenied)
    return error_response(request, 403, "Action refused", exc.message, login_hint=exc.login_hint)


async def _login_needed(request: Request, exc: Exception) -> Response:
    """Programs get 401; a browser goes to /login and comes back to this page."""
    if is_api(request):
        assert isinstance(exc, LoginNeeded)
        detail = exc.detail or f"this dashboard needs its password: log in, or send it in the {SECRET_HEADER} header"
        return JSONResponse(
            {"detail": detail},
            status_code=401,
            headers={"WWW-Authenticate": f'FastWorker-Secret header="{SECRET_HEADER}"'},
        )
    return RedirectResponse(f"/login?{urlencode({'next': _return_to(request)})}", status_code=303)


async def _throttled(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, LoginThrottled)
    response = error_response(request, 429, "Too many attempts", exc.message)
    response.headers["Retry-After"] = str(exc.retry_after)
    return response


async def _refused(request: Request, exc: Exception) -> Response:
    return error_response(request, 409, "Refused by the control plane", str(exc))


async def _control_plane_error(request: Request, exc: Exception) -> Response:
    logger.warning("control plane error on %s: %s", request.url.path, exc)
    return error_response(request, 502, "Control plane error", f"{type(exc).__name__}: {exc}")


async def _http_error(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, HTTPException)
    if is_api(request) or exc.status_code < 400:
        return JSONResponse({"detail": exc.detail}, status_code=exc.status_code, headers=exc.headers)
    title = "Page not found" if exc.status_code == 404 else "Request failed"
    return error_response(request, exc.status_code, title, str(exc.detail))


def install_error_handlers(app: FastAPI) -> None:
    """Register the mappings above on ``app`` (more specific exception types win)."""
    app.add_exception_handler(HTTPException, _http_error)
    app.add_exception_handler(TaskNotFound, _task_not_found)
    app.add_exception_handler(WorkflowNotFound, _workflow_not_found)
    app.add_exception_handler(ControlPlaneUnavailable, _unavailable)
    app.add_exception_handler(BadQuery, _bad_query)
    app.add_exception_handler(FormError, _bad_form)
    app.add_exception_handler(ActionDenied, _denied)
    app.add_exception_handler(LoginThrottled, _throttled)
    app.add_exception_handler(LoginNeeded, _login_needed)
    app.add_exception_handler(ClientError, _refused)
    app.add_exception_handler(FastworkerError, _control_plane_error)
