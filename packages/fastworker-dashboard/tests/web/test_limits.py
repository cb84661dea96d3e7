"""Flow-control limits on the dashboard: the overview's live Limits panel, its form, and ``/api/limits``."""

from __future__ import annotations

import asyncio
import json
import re
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import replace

import httpx
import pytest
from starlette.requests import Request
from web_fakes import SAME_ORIGIN, FakeAdminClient, csrf_token

from fastworker.client import ProtocolError, TaskLimits
from fastworker.client.jsonshape import limits_json, task_limits_json
from fastworker.client.limits import UNSET
from fastworker.dashboard.web.app import create_app
from fastworker.dashboard.web.deps import DashboardState
from fastworker.dashboard.web.routes.stream import make_panel_renderer, panel_events

MakeClient = Callable[..., Awaitable[httpx.AsyncClient]]


async def set_by_form(client: httpx.AsyncClient, **fields: str) -> httpx.Response:
    return await client.post("/limits", data={"csrf": csrf_token(client), "next": "/", **fields}, headers=SAME_ORIGIN)


def limit_row(html: str, name: str) -> str:
    match = re.search(rf'<tr data-limit-name="{re.escape(name)}".*?</tr>', html, re.S)
    assert match is not None, f"no limits row for {name}"
    return match.group(0)


# ---------------------------------------------------------------------------------------- the page


async def test_the_overview_lists_each_limited_name_with_what_it_holds_back(web: httpx.AsyncClient) -> None:
    html = (await web.get("/")).text
    assert 'id="panel-limits"' in html
    row = limit_row(html, "app.slow")
    assert 'data-overridden="false"' in row and "definition" in row
    for text in ("10/s", "burst 1", "2/2", ">2<", ">3<", "9.0"):  # rate, burst, running/max, running, waiting, now
        assert text in row, text
    assert 'data-action="clear-limits"' not in row  # nothing set at run time to clear
    # The form to change them, with the task names to choose from
    assert 'id="limits-form"' in html and 'action="/limits"' in html
    assert '<option value="app.add">' in html and '<option value="app.slow">' in html


async def test_with_nothing_limited_the_panel_says_so(web: httpx.AsyncClient, fake: FakeAdminClient) -> None:
    fake.limit_state.clear()
    html = (await web.get("/")).text
    assert "No task has a rate or concurrency limit." in html and 'id="limits-table"' not in html
    assert 'id="limits-form"' in html  # a limit can still be set


async def test_names_are_escaped_in_the_panel(web: httpx.AsyncClient, fake: FakeAdminClient) -> None:
    name = "<script>x</script>"
    fake.limit_state[name] = TaskLimits(name, None, 1, overridden=True)
    html = (await web.get("/")).text
    assert "<script>x</script>" not in html and "&lt;script&gt;x&lt;/script&gt;" in html


async def test_limits_that_cannot_be_read_leave_the_rest_of_the_overview_alone(
    web: httpx.AsyncClient, fake: FakeAdminClient, monkeypatch: pytest.MonkeyPatch
) -> None:
    async def refuse() -> list[TaskLimits]:
        raise ProtocolError("bad reply from the control plane: envelope has no body")

    monkeypatch.setattr(fake, "limits", refuse)
    response = await web.get("/")
    assert response.status_code == 200 and 'data-worker-id="w1"' in response.text
    assert "Limits unavailable: bad reply from the control plane" in response.text


# ---------------------------------------------------------------------------------------- the form


async def test_the_form_sets_limits_and_the_overview_lists_them_as_set_at_run_time(
    web: httpx.AsyncClient, fake: FakeAdminClient
) -> None:
    response = await set_by_form(web, name="app.add", rate_limit="5/s", max_concurrency="2")
    assert response.status_code == 303 and response.headers["location"] == "/"
    assert fake.limit_calls == [("app.add", {"rate_limit": "5/s", "max_concurrency": 2, "clear": False})]
    html = (await web.get("/")).text
    assert "limits of app.add: rate 5/s, concurrency 2 (set at run time)" in html
    row = limit_row(html, "app.add")
    assert 'data-overridden="true"' in row and "set at run time" in row and "5/s" in row
    assert 'data-action="clear-limits"' in row
    # Its Clear button posts the name with clear=1: back to the definition (no limits: no longer listed)
    await set_by_form(web, name="app.add", clear="1")
    assert fake.limit_calls[-1] == ("app.add", {"rate_limit": UNSET, "max_concurrency": UNSET, "clear": True})
    html = (await web.get("/")).text
    assert "limits of app.add: no rate limit, no concurrency limit" in html
    assert 'data-limit-name="app.add"' not in html


@pytest.mark.parametrize(
    ("fields", "expected"),
    [
        ({"rate_limit": "none"}, {"rate_limit": None, "max_concurrency": UNSET, "clear": False}),
        ({"max_concurrency": " None "}, {"rate_limit": UNSET, "max_concurrency": None, "clear": False}),
        (
            {"rate_limit": "120/m", "max_concurrency": ""},
            {"rate_limit": "120/m", "max_concurrency": UNSET, "clear": False},
        ),
        ({"clear": "1", "max_concurrency": "4"}, {"rate_limit": UNSET, "max_concurrency": 4, "clear": True}),
    ],
)
async def test_empty_fields_keep_and_none_removes(
    web: httpx.AsyncClient, fake: FakeAdminClient, fields: dict[str, str], expected: dict[str, object]
) -> None:
    assert (await set_by_form(web, name="app.slow", **fields)).status_code == 303
    assert fake.limit_calls == [("app.slow", expected)]


@pytest.mark.parametrize(
    ("fields", "message"),
    [
        ({"name": "app.add", "rate_limit": "fast"}, "limits of app.add not changed: rate must be N/s, N/m or N/h"),
        ({"name": "app.add", "rate_limit": "0/s"}, "not &#39;0/s&#39;"),
        ({"name": "app.add", "max_concurrency": "0"}, "concurrency must be a whole number from 1, or none, not 0"),
        ({"name": "app.add", "max_concurrency": "two"}, "not &#39;two&#39;"),
        ({"name": "app.add"}, "limits of app.add not changed: give a rate, a concurrency or clear"),
        ({"name": " ", "rate_limit": "1/s"}, "limits not changed: name a task"),
    ],
)
async def test_bad_input_is_an_error_flash_naming_it_and_nothing_is_sent(
    web: httpx.AsyncClient, fake: FakeAdminClient, fields: dict[str, str], message: str
) -> None:
    assert (await set_by_form(web, **fields)).status_code == 303
    html = (await web.get("/")).text
    assert "flash-error" in html and message in html
    assert fake.calls["set_limits"] == 0


async def test_an_unknown_task_name_is_an_error_flash(web: httpx.AsyncClient) -> None:
    await set_by_form(web, name="no.such", rate_limit="1/s")
    html = (await web.get("/")).text
    assert "flash-error" in html and "unknown task &#39;no.such&#39;" in html


async def test_read_only_shows_no_form_and_no_clear_button(make_client: MakeClient, fake: FakeAdminClient) -> None:
    fake.limit_state["app.add"] = TaskLimits("app.add", "5/s", None, burst=1, overridden=True)
    client = await make_client(read_only=True)
    html = (await client.get("/")).text
    assert 'data-limit-name="app.add"' in html
    assert 'id="limits-form"' not in html and "clear-limits" not in html


async def test_the_form_needs_the_password_when_one_is_set(make_client: MakeClient, fake: FakeAdminClient) -> None:
    client = await make_client(secret="s3cret")
    assert (await set_by_form(client, name="app.add", rate_limit="1/s")).status_code == 403
    assert (await set_by_form(client, name="app.add", rate_limit="1/s", secret="s3cret")).status_code == 303
    assert fake.calls["set_limits"] == 1


# ------------------------------------------------------------------------------------------ the API


async def test_api_limits_is_the_cli_shape(web: httpx.AsyncClient, fake: FakeAdminClient) -> None:
    response = await web.get("/api/limits")
    assert response.status_code == 200
    assert response.json() == limits_json(await fake.limits())
    assert list(response.json()[0]) == ["name", "rate_limit", "max_concurrency", "running", "waiting"] + [
        "current_rate",
        "burst",
        "overridden",
    ]


async def test_api_set_limits_takes_a_json_object_and_answers_the_limits_now(
    web: httpx.AsyncClient, fake: FakeAdminClient
) -> None:
    response = await web.post("/api/limits/app.add", json={"rate_limit": "5/s", "max_concurrency": None})
    assert response.status_code == 200
    assert response.json() == task_limits_json(fake.limit_state["app.add"])
    assert response.json()["rate_limit"] == "5/s" and response.json()["overridden"] is True
    assert fake.limit_calls == [("app.add", {"rate_limit": "5/s", "max_concurrency": None, "clear": False})]
    cleared = await web.post("/api/limits/app.add", json={"clear": True})
    assert cleared.status_code == 200 and cleared.json()["rate_limit"] is None


@pytest.mark.parametrize(
    ("body", "status", "detail"),
    [
        ({}, 422, "give a rate, a concurrency or clear"),
        ({"rate_limit": "5/d"}, 422, "'5/d'"),
        ({"rate_limit": 5}, 422, "rate_limit must be a string"),
        ({"max_concurrency": 0}, 422, "not 0"),
        ({"max_concurrency": "3"}, 422, "not '3'"),
        ({"max_concurrency": True}, 422, "not True"),
        ({"clear": "yes"}, 422, "clear must be true or false"),
        ({"rate": "5/s"}, 422, "unknown field 'rate'"),
        ([1], 422, "expected a JSON object"),
    ],
)
async def test_api_bad_bodies_answer_422_naming_the_value(
    web: httpx.AsyncClient, fake: FakeAdminClient, body: object, status: int, detail: str
) -> None:
    response = await web.post("/api/limits/app.add", json=body)
    assert response.status_code == status and detail in response.json()["detail"]
    assert fake.calls["set_limits"] == 0


async def test_api_set_limits_refuses_non_json_bodies_and_unknown_names(web: httpx.AsyncClient) -> None:
    form = await web.post("/api/limits/app.add", data={"rate_limit": "5/s"})
    assert form.status_code == 422 and "application/json" in form.json()["detail"]
    broken = await web.post("/api/limits/app.add", content=b"{nope", headers={"content-type": "application/json"})
    assert broken.status_code == 422 and "not JSON" in broken.json()["detail"]
    assert (await web.post("/api/limits/app.add")).status_code == 422  # no body: nothing to change
    unknown = await web.post("/api/limits/no.such", json={"rate_limit": "1/s"})
    assert unknown.status_code == 404 and "no.such" in unknown.json()["detail"]


async def test_api_set_limits_needs_the_secret_header(make_client: MakeClient, fake: FakeAdminClient) -> None:
    client = await make_client(secret="s3cret")
    assert (await client.post("/api/limits/app.add", json={"max_concurrency": 1})).status_code == 401
    accepted = await client.post(
        "/api/limits/app.add", json={"max_concurrency": 1}, headers={"X-FastWorker-Secret": "s3cret"}
    )
    assert accepted.status_code == 200 and fake.calls["set_limits"] == 1
    assert (await client.get("/api/limits")).status_code == 401  # reads need it too
    assert (await client.get("/api/limits", headers={"X-FastWorker-Secret": "s3cret"})).status_code == 200


# ----------------------------------------------------------------------------------------- live


@pytest.fixture
async def state(fake: FakeAdminClient) -> AsyncIterator[DashboardState]:
    app = create_app(control_plane="tcp://127.0.0.1:5550", client=fake, refresh_interval=0.05)
    async with app.router.lifespan_context(app):
        yield app.state.dashboard


async def test_the_limits_panel_refreshes_live(state: DashboardState, fake: FakeAdminClient) -> None:
    request = Request({"type": "http", "method": "GET", "path": "/stream", "query_string": b"", "headers": []})
    events = panel_events(state.feed, make_panel_renderer(state, request))
    try:
        html = await _panel(events, "panel-limits", "app.slow")
        assert 'data-limit-name="app.slow"' in html
        fake.limit_state["app.slow"] = replace(fake.limit_state["app.slow"], waiting=42)
        later = await _panel(events, "panel-limits", ">42<")
        assert limit_row(later, "app.slow").count(">42<") == 1
    finally:
        await events.aclose()


async def test_the_live_panel_says_when_the_limits_cannot_be_read(
    state: DashboardState, fake: FakeAdminClient, monkeypatch: pytest.MonkeyPatch
) -> None:
    async def refuse() -> list[TaskLimits]:
        raise ProtocolError("no limits here")

    monkeypatch.setattr(fake, "limits", refuse)
    request = Request({"type": "http", "method": "GET", "path": "/stream", "query_string": b"", "headers": []})
    events = panel_events(state.feed, make_panel_renderer(state, request))
    try:
        assert "Limits unavailable: no limits here" in await _panel(events, "panel-limits", "unavailable")
        assert state.feed.snapshot is not None and state.feed.snapshot.error is None  # the rest is fresh
    finally:
        await events.aclose()


async def _panel(events: AsyncIterator[str], wanted: str, containing: str) -> str:
    async with asyncio.timeout(10):
        async for message in events:
            if message.startswith("event: panel"):
                payload = json.loads(message.split("data: ", 1)[1])
                if payload["id"] == wanted and containing in payload["html"]:
                    return str(payload["html"])
    raise AssertionError(f"the stream ended before {wanted} showed {containing!r}")


class RotatingSecret:
    """A SecretSource the test rotates (as SecretFiles does when its files change)."""

    def __init__(self, *secrets: str) -> None:
        self.current = secrets

    def secrets(self) -> tuple[str, ...]:
        return self.current


async def test_with_a_rotating_secret_as_password_every_secret_in_force_is_accepted_and_a_dropped_one_refused(
    make_client: MakeClient, fake: FakeAdminClient
) -> None:
    rotating = RotatingSecret("new", "old")  # step 2 of a rotation: sealing with "new", "old" still accepted
    client = await make_client(secret=rotating)
    for password in ("new", "old"):
        accepted = await client.post(
            "/api/limits/app.add", json={"max_concurrency": 1}, headers={"X-FastWorker-Secret": password}
        )
        assert accepted.status_code == 200, password
    rotating.current = ("new",)  # step 3: the old one is dropped
    refused = await client.post(
        "/api/limits/app.add", json={"max_concurrency": 1}, headers={"X-FastWorker-Secret": "old"}
    )
    assert refused.status_code == 401 and fake.calls["set_limits"] == 2
