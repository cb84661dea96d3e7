"""The workflow page: steps indented under what they wait for, links, states, live refresh, the cancel action, the API."""

from __future__ import annotations

import asyncio
import dataclasses
import json
import re
from collections.abc import Awaitable, Callable

import httpx
from starlette.requests import Request
from web_fakes import NOW, SAME_ORIGIN, FakeAdminClient, csrf_token, make_task

from fastworker.client import TaskError, TaskInfo, TaskState
from fastworker.client.jsonshape import workflow_json
from fastworker.dashboard.web.app import create_app
from fastworker.dashboard.web.routes.stream import make_panel_renderer, panel_events

WORKFLOW_ID = "9f9f9f9f-0000-4000-8000-00000000000a"
SCRIPT = "<script>alert('x')</script>"

MakeClient = Callable[..., Awaitable[httpx.AsyncClient]]


def step(index: int, state: TaskState, *depends_on: str, **changes: object) -> TaskInfo:
    return make_task(
        f"{index:08d}-1111-4000-8000-000000000000", state=state, depends_on=depends_on, queued_at=NOW - 100, **changes
    )


#: chord(group(chain(fetch, parse), fetch), merge) while parse runs: merge waits for two steps.
FETCH = step(1, TaskState.SUCCESS, name="wf.fetch")
PARSE = step(2, TaskState.RUNNING, FETCH.id, name="wf.parse")
OTHER = step(3, TaskState.FAILURE, name="wf.fetch", error=TaskError("KeyError", "no such page", "tb"))
MERGE = step(4, TaskState.PENDING, PARSE.id, OTHER.id, name=f"wf.{SCRIPT}", started_at=None)


def add_workflow(fake: FakeAdminClient) -> list[TaskInfo]:
    return fake.add_workflow(WORKFLOW_ID, [FETCH, PARSE, OTHER, MERGE])


def steps_in_page(html: str) -> list[tuple[str, str, str]]:
    """(task id, state, depth) of each step, in the order the page lists them."""
    return re.findall(r'<li class="workflow-step" data-task-id="([^"]+)" data-state="(\w+)" data-depth="(\d+)"', html)


async def test_the_workflow_page_lists_each_step_under_what_it_waits_for_with_its_state(
    web: httpx.AsyncClient, fake: FakeAdminClient
) -> None:
    add_workflow(fake)
    response = await web.get(f"/workflows/{WORKFLOW_ID}")
    assert response.status_code == 200
    html = response.text
    assert steps_in_page(html) == [
        (FETCH.id, "SUCCESS", "0"),
        (PARSE.id, "RUNNING", "1"),
        (OTHER.id, "FAILURE", "0"),
        (MERGE.id, "PENDING", "1"),  # once, under the last of its two dependencies
    ]
    for info in (FETCH, PARSE, OTHER, MERGE):
        assert f'href="/tasks/{info.id}"' in html
    assert 'id="workflow-state"><span class="badge state-running" data-state="RUNNING">' in html
    assert "after 2 steps" in html and '<span class="error-type" title="no such page">KeyError</span>' in html
    assert 'data-state="SUCCESS" data-count="1"' in html and "4 steps:" in html
    assert "<script>alert" not in html and "&lt;script&gt;" in html  # names are text
    assert 'data-stream="/stream?view=workflow&amp;id=' + WORKFLOW_ID in html
    assert 'data-action="cancel-workflow"' in html


async def test_a_task_page_links_to_its_workflow_and_to_what_it_depends_on(
    web: httpx.AsyncClient, fake: FakeAdminClient
) -> None:
    add_workflow(fake)
    html = (await web.get(f"/tasks/{MERGE.id}")).text
    assert f'id="task-workflow" href="/workflows/{WORKFLOW_ID}"' in html
    depends = re.search(r'<dd id="task-depends-on">(.*?)</dd>', html)
    assert depends is not None
    assert re.findall(r'href="/tasks/([^"]+)"', depends.group(1)) == [PARSE.id, OTHER.id]
    plain = (await web.get("/tasks/aaaaaaaa-0000-4000-8000-000000000001")).text
    assert "task-workflow" not in plain and "task-depends-on" not in plain


async def test_an_unknown_workflow_is_a_404_page_and_a_404_in_the_api(web: httpx.AsyncClient) -> None:
    page = await web.get("/workflows/nope")
    assert page.status_code == 404
    assert "Workflow not found" in page.text and "No workflow nope is known" in page.text
    api = await web.get("/api/workflows/nope")
    assert api.status_code == 404 and "workflow nope" in api.json()["detail"]
    cancel = await web.post("/api/workflows/nope/cancel")
    assert cancel.status_code == 404


async def test_the_api_answers_in_the_shared_workflow_shape(web: httpx.AsyncClient, fake: FakeAdminClient) -> None:
    add_workflow(fake)
    response = await web.get(f"/api/workflows/{WORKFLOW_ID}")
    assert response.status_code == 200
    data = response.json()
    assert data == workflow_json(await fake.workflow(WORKFLOW_ID))
    assert [s["id"] for s in data["steps"]] == [FETCH.id, PARSE.id, OTHER.id, MERGE.id]
    assert data["steps"][3]["depends_on"] == [PARSE.id, OTHER.id]


async def test_cancel_workflow_cancels_its_waiting_and_running_steps_and_says_how_many(
    web: httpx.AsyncClient, fake: FakeAdminClient
) -> None:
    add_workflow(fake)
    data = {"csrf": csrf_token(web), "next": f"/workflows/{WORKFLOW_ID}"}
    response = await web.post(f"/workflows/{WORKFLOW_ID}/cancel", data=data, headers=SAME_ORIGIN)
    assert response.status_code == 303 and response.headers["location"] == f"/workflows/{WORKFLOW_ID}"
    assert fake.tasks_by_id[PARSE.id].state is TaskState.CANCELLED
    assert fake.tasks_by_id[MERGE.id].state is TaskState.CANCELLED
    html = (await web.get(f"/workflows/{WORKFLOW_ID}")).text
    assert f"cancelled 2 steps of workflow {WORKFLOW_ID}" in html
    assert 'data-action="cancel-workflow"' not in html  # every step is final now
    again = await web.post(f"/workflows/{WORKFLOW_ID}/cancel", data=data, headers=SAME_ORIGIN)
    assert again.status_code == 303
    assert "nothing cancelled" in (await web.get(f"/workflows/{WORKFLOW_ID}")).text
    api = await web.post(f"/api/workflows/{WORKFLOW_ID}/cancel")
    assert api.json() == {"id": WORKFLOW_ID, "cancelled": 0}


async def test_cancel_workflow_is_protected_like_every_action(make_client: MakeClient, fake: FakeAdminClient) -> None:
    add_workflow(fake)
    path = f"/workflows/{WORKFLOW_ID}/cancel"
    read_only = await make_client(read_only=True)
    assert 'data-action="cancel-workflow"' not in (await read_only.get(f"/workflows/{WORKFLOW_ID}")).text
    assert (await read_only.post(path, data={"csrf": csrf_token(read_only)}, headers=SAME_ORIGIN)).status_code == 403
    assert (await read_only.post("/api" + path)).status_code == 403
    guarded = await make_client(secret="s3cret")
    assert (await guarded.post(path, data={"next": "/"}, headers=SAME_ORIGIN)).status_code == 403  # no CSRF token
    evil = {"csrf": csrf_token(guarded), "secret": "s3cret"}
    assert (await guarded.post(path, data=evil, headers={"origin": "https://evil.example"})).status_code == 403
    assert (await guarded.post(path, data={"csrf": csrf_token(guarded)}, headers=SAME_ORIGIN)).status_code == 403
    assert (await guarded.post("/api" + path)).status_code == 401  # the password would help
    assert fake.calls["cancel_workflow"] == 0
    allowed = await guarded.post("/api" + path, headers={"X-FastWorker-Secret": "s3cret"})
    assert allowed.status_code == 200 and allowed.json() == {"id": WORKFLOW_ID, "cancelled": 2}


async def test_the_live_stream_redraws_the_workflow_panel(fake: FakeAdminClient) -> None:
    add_workflow(fake)
    app = create_app(control_plane="tcp://127.0.0.1:5550", client=fake, refresh_interval=0.05)
    async with app.router.lifespan_context(app):
        state = app.state.dashboard

        def request(query: str) -> Request:
            scope = {"type": "http", "method": "GET", "path": "/stream", "query_string": query.encode(), "headers": []}
            return Request(scope)

        render = make_panel_renderer(state, request(f"view=workflow&id={WORKFLOW_ID}"))
        panels = await render()
        assert [s[1] for s in steps_in_page(panels["panel-workflow"])] == ["SUCCESS", "RUNNING", "FAILURE", "PENDING"]
        gone = await make_panel_renderer(state, request("view=workflow&id=gone"))()
        assert list(gone) == ["panel-status"] and "workflow gone is no longer known" in gone["panel-status"]

        # A step that changes is pushed without a reload
        events = panel_events(state.feed, render)
        finished = f'data-task-id="{PARSE.id}" data-state="SUCCESS"'
        try:
            async with asyncio.timeout(10):
                async for message in events:
                    if not message.startswith("event: panel"):
                        continue
                    payload = json.loads(message.split("data: ", 1)[1])
                    if payload["id"] != "panel-workflow":
                        continue
                    if finished in payload["html"]:
                        break
                    fake.add(dataclasses.replace(fake.tasks_by_id[PARSE.id], state=TaskState.SUCCESS))
        finally:
            await events.aclose()
