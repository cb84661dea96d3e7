"""HEAD is answered wherever GET is, with GET's status and headers and no body (issue 17).

The routes are read from ``app.routes``: a GET route added later without a sample URL here fails
``test_every_get_route_has_a_sample``, so none can be forgotten. The live stream never ends by
itself; its HEAD must still answer at once (bounded here).
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable

import fastapi.routing
import httpx
import pytest
from fastapi import FastAPI
from starlette.routing import Mount
from web_fakes import FakeAdminClient, log_in, make_task

from fastworker.client import TaskState

MakeClient = Callable[..., Awaitable[httpx.AsyncClient]]

TASK_ID = "aaaaaaaa-0000-4000-8000-000000000001"  # in the fake: SUCCESS, args [1, 2]
WORKFLOW_ID = "9f9f9f9f-0000-4000-8000-00000000000b"
#: One concrete URL per GET route (or mount), by the route's path.
SAMPLES = {
    "/": "/",
    "/tasks": "/tasks?state=SUCCESS",
    "/tasks/{task_id}": f"/tasks/{TASK_ID}",
    "/tasks/{task_id}/args": f"/tasks/{TASK_ID}/args",
    "/tasks/{task_id}/result": f"/tasks/{TASK_ID}/result",
    "/workflows/{workflow_id}": f"/workflows/{WORKFLOW_ID}",
    "/workers": "/workers",
    "/login": "/login?next=/workers",
    "/metrics": "/metrics",
    "/healthz": "/healthz",
    "/api/overview": "/api/overview",
    "/api/stats": "/api/stats",
    "/api/queues": "/api/queues",
    "/api/workers": "/api/workers",
    "/api/registered-tasks": "/api/registered-tasks",
    "/api/tasks": "/api/tasks?limit=5",
    "/api/tasks/{task_id}": f"/api/tasks/{TASK_ID}",
    "/api/workflows/{workflow_id}": f"/api/workflows/{WORKFLOW_ID}",
    "/api/limits": "/api/limits",
    "/api/openapi.json": "/api/openapi.json",
    "/static": "/static/dashboard.css",
}
#: Routes whose GET never ends (checked by HEAD alone).
STREAMING = {"/stream": "/stream?view=overview"}
#: Answers that are not 200: they must be the same for HEAD too.
ERRORS = [
    "/tasks/no-such-task",  # the 404 page
    "/api/tasks/no-such-task",  # a JSON 404
    "/workflows/no-such-workflow",
    "/no-such-page",  # no route at all
    "/tasks?priority=urgent",  # a bad filter: 400
    "/stream?view=nonsense",  # a refused stream: 400, before it starts
    "/queues/low/pause",  # POST only: GET and HEAD are both 405
    "/static/no-such-file.css",
]


def get_routes(app: FastAPI) -> set[str]:
    """The path of every route that answers GET, and of every mount (static files)."""
    # Newer FastAPI keeps each included router as one nested entry of app.routes; this walks into them.
    iter_route_contexts = getattr(fastapi.routing, "iter_route_contexts", None)
    routes = list(iter_route_contexts(app.routes)) if iter_route_contexts else app.routes
    paths = set()
    for route in routes:
        original = getattr(route, "original_route", route)
        if isinstance(original, Mount) or "GET" in (getattr(route, "methods", None) or ()):
            paths.add(route.path)
    return paths


@pytest.fixture
async def web(make_client: MakeClient, fake: FakeAdminClient) -> httpx.AsyncClient:
    """A dashboard with a password (so ``/login`` is a page), logged in, and a workflow to show."""
    fake.add_workflow(WORKFLOW_ID, [make_task("c" * 8 + "-0000-4000-8000-000000000001", state=TaskState.RUNNING)])
    return log_in(await make_client(password="pw"))


async def test_every_get_route_has_a_sample(web: httpx.AsyncClient) -> None:
    assert get_routes(web.app) == set(SAMPLES) | set(STREAMING)  # type: ignore[attr-defined]


@pytest.mark.parametrize("url", [*SAMPLES.values(), *ERRORS])
async def test_head_answers_like_get_without_a_body(web: httpx.AsyncClient, url: str) -> None:
    got = await web.get(url)
    head = await web.head(url)
    assert head.status_code == got.status_code, url
    assert head.content == b"", url
    # Pages show ages ("0.5 s ago") that can change between the two requests, and their length with them.
    same = {name: value for name, value in got.headers.items() if name != "content-length"}
    assert {name: value for name, value in head.headers.items() if name != "content-length"} == same, url
    assert ("content-length" in head.headers) == ("content-length" in got.headers), url
    if url in SAMPLES.values():
        assert got.status_code == 200 and got.content, url


async def test_head_of_the_live_stream_answers_at_once_and_ends_the_stream(web: httpx.AsyncClient) -> None:
    async with asyncio.timeout(10):  # a GET would never end
        head = await web.head(STREAMING["/stream"])
    assert head.status_code == 200 and head.content == b""
    assert head.headers["content-type"].startswith("text/event-stream")
    assert head.headers["cache-control"] == "no-cache"
    assert "content-security-policy" in head.headers
    # The stream's viewer left with the answer: the shared feed has nobody to poll for.
    feed = web.app.state.dashboard.feed  # type: ignore[attr-defined]
    assert feed.viewers == 0


#: What a dashboard with a password shows without it: logging in, health and metrics (for probes
#: and scrapers), the API's schema and the static files.
OPEN_WITHOUT_PASSWORD = {"/login", "/metrics", "/healthz", "/api/openapi.json", "/static"}


@pytest.mark.parametrize("route", sorted({**SAMPLES, **STREAMING}))
async def test_with_a_password_every_other_read_needs_it(
    make_client: MakeClient, fake: FakeAdminClient, route: str
) -> None:
    fake.add_workflow(WORKFLOW_ID, [make_task("c" * 8 + "-0000-4000-8000-000000000001", state=TaskState.RUNNING)])
    client = await make_client(password="pw")
    url = {**SAMPLES, **STREAMING}[route]
    response = await client.get(url)
    if route in OPEN_WITHOUT_PASSWORD:
        assert response.status_code == 200, url
    elif route.startswith(("/api/", "/stream")):
        assert response.status_code == 401, url
        assert "X-FastWorker-Secret" in response.json()["detail"]
        assert "aaaaaaaa" not in response.text
    else:
        assert response.status_code == 303, url
        assert response.headers["location"].startswith("/login?next=%2F"), url
    if route not in OPEN_WITHOUT_PASSWORD and route not in STREAMING:
        assert (await client.get(url, headers={"X-FastWorker-Secret": "pw"})).status_code == 200, url


async def test_a_read_only_dashboard_with_a_password_lets_a_browser_log_in_to_read(make_client: MakeClient) -> None:
    client = await make_client(password="pw", read_only=True)
    assert (await client.get("/workers")).status_code == 303
    form = {"csrf": str(client.app.state.dashboard.config.csrf_token), "secret": "pw", "next": "/workers"}  # type: ignore[attr-defined]
    logged_in = await client.post("/login", data=form, headers={"origin": "http://testserver"})
    assert logged_in.status_code == 303 and logged_in.headers["location"] == "/workers"
    page = await client.get("/workers")
    assert page.status_code == 200 and "read-only" in page.text and "Log out" in page.text
