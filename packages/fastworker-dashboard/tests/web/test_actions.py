"""Actions from forms and the JSON API: effects, flash messages, CSRF and origin checks, read-only mode, the secret."""

from __future__ import annotations

from collections.abc import Awaitable, Callable

import httpx
import pytest
from web_fakes import SAME_ORIGIN, FakeAdminClient, csrf_token

from fastworker.client import TaskState
from fastworker.dashboard.web.flash import FLASH_COOKIE

RUNNING_ID = "bbbbbbbb-0000-4000-8000-000000000001"
FAILED_ID = "ffffffff-0000-4000-8000-000000000001"

FORM_ACTIONS = [
    f"/tasks/{RUNNING_ID}/cancel",
    f"/tasks/{FAILED_ID}/retry",
    "/queues/high/purge",
    "/queues/high/pause",
    "/queues/high/resume",
    "/workers/w1/drain",
    "/limits",
    "/workflows/9f9f9f9f-0000-4000-8000-00000000000a/cancel",
]
#: The API's paths: the form's under /api, but a limits change names its task in the path.
API_ACTIONS = ["/api" + path for path in FORM_ACTIONS if path != "/limits"] + ["/api/limits/app.add"]
ACTION_METHODS = ("cancel", "retry", "purge", "pause", "resume", "drain_worker", "set_limits", "cancel_workflow")

MakeClient = Callable[..., Awaitable[httpx.AsyncClient]]


async def post_form(client: httpx.AsyncClient, path: str, **fields: str) -> httpx.Response:
    data = {"csrf": csrf_token(client), "next": "/tasks", **fields}
    return await client.post(path, data=data, headers=SAME_ORIGIN)


async def test_cancel_redirects_back_with_a_flash_message_that_the_next_page_shows(
    web: httpx.AsyncClient, fake: FakeAdminClient
) -> None:
    response = await post_form(web, f"/tasks/{RUNNING_ID}/cancel")
    assert response.status_code == 303
    assert response.headers["location"] == "/tasks"
    assert fake.tasks_by_id[RUNNING_ID].state is TaskState.CANCELLED
    page = await web.get("/tasks")
    assert f"cancelled {RUNNING_ID} (was RUNNING)" in page.text
    assert FLASH_COOKIE not in web.cookies  # shown once


async def test_retry_flash_names_the_new_state(web: httpx.AsyncClient, fake: FakeAdminClient) -> None:
    await post_form(web, f"/tasks/{FAILED_ID}/retry")
    assert fake.tasks_by_id[FAILED_ID].state is TaskState.PENDING
    assert f"retried {FAILED_ID}: PENDING" in (await web.get("/tasks")).text


async def test_retry_refused_by_the_control_plane_is_an_error_flash(web: httpx.AsyncClient) -> None:
    response = await post_form(web, f"/tasks/{RUNNING_ID}/retry")
    assert response.status_code == 303
    html = (await web.get("/tasks")).text
    assert "flash-error" in html and "only FAILURE or CANCELLED" in html


async def test_purge_pause_resume_and_drain_report_their_effect(web: httpx.AsyncClient, fake: FakeAdminClient) -> None:
    fake.queue_state["low"]["depth"] = 12
    await post_form(web, "/queues/low/purge")
    assert "purged 12 low tasks from every queue" in (await web.get("/")).text
    await post_form(web, "/queues/low/pause")
    html = (await web.get("/")).text
    assert "low level paused in every queue" in html and 'data-priority="low" data-paused="true"' in html
    await post_form(web, "/queues/low/resume")
    assert "low level resumed in every queue" in (await web.get("/")).text
    await post_form(web, "/workers/w1/drain")
    assert "draining worker w1" in (await web.get("/")).text
    await post_form(web, "/workers/nobody/drain")
    assert "no worker nobody is connected" in (await web.get("/")).text


async def test_redirect_target_stays_on_this_site(web: httpx.AsyncClient) -> None:
    for target in ("https://evil.example/", "//evil.example/x", "javascript:alert(1)"):
        response = await post_form(web, "/queues/low/pause", next=target)
        assert response.headers["location"] == "/"


@pytest.mark.parametrize("path", FORM_ACTIONS)
async def test_form_actions_need_the_csrf_token(web: httpx.AsyncClient, fake: FakeAdminClient, path: str) -> None:
    response = await web.post(path, data={"next": "/"}, headers=SAME_ORIGIN)
    assert response.status_code == 403
    assert "CSRF" in response.text
    assert not any(fake.calls[m] for m in ACTION_METHODS)


async def test_cross_origin_posts_are_refused(web: httpx.AsyncClient, fake: FakeAdminClient) -> None:
    data = {"csrf": csrf_token(web)}
    for headers in ({"origin": "https://evil.example"}, {"origin": "null"}, {"referer": "https://evil.example/page"}):
        assert (await web.post("/queues/low/purge", data=data, headers=headers)).status_code == 403
        assert (await web.post("/api/queues/low/purge", headers=headers)).status_code == 403
    assert fake.calls["purge"] == 0


async def test_read_only_hides_every_action_button(make_client: MakeClient) -> None:
    client = await make_client(read_only=True)
    for path in ("/", "/tasks", f"/tasks/{RUNNING_ID}", f"/tasks/{FAILED_ID}", "/workers"):
        html = (await client.get(path)).text
        assert 'method="post"' not in html, path
        assert "data-action=" not in html, path
    assert "read-only" in (await client.get("/")).text


@pytest.mark.parametrize("path", FORM_ACTIONS + API_ACTIONS)
async def test_read_only_refuses_every_action_with_403(
    make_client: MakeClient, fake: FakeAdminClient, path: str
) -> None:
    client = await make_client(read_only=True)
    response = await post_form(client, path)
    assert response.status_code == 403
    assert "read-only" in response.text
    assert not any(fake.calls[m] for m in ACTION_METHODS)


async def test_secret_is_required_for_form_actions(make_client: MakeClient, fake: FakeAdminClient) -> None:
    client = await make_client(secret="s3cret")
    # Without it: 403 with a clear message and a way to log in
    missing = await post_form(client, "/queues/low/pause")
    assert missing.status_code == 403
    assert "need the control plane secret" in missing.text and "/login?next=" in missing.text
    wrong = await post_form(client, "/queues/low/pause", secret="nope")
    assert wrong.status_code == 403
    assert fake.calls["pause"] == 0
    # With it in the form: done
    right = await post_form(client, "/queues/low/pause", secret="s3cret")
    assert right.status_code == 303
    assert fake.calls["pause"] == 1


async def test_login_sets_a_session_cookie_that_authorizes_actions(
    make_client: MakeClient, fake: FakeAdminClient
) -> None:
    client = await make_client(secret="s3cret")
    to_login = await client.get("/workers?x=1")  # a page: to /login, and back once logged in
    assert to_login.status_code == 303 and to_login.headers["location"] == "/login?next=%2Fworkers%3Fx%3D1"
    assert ">Log in</a>" in (await client.get("/login")).text
    refused = await client.post(
        "/login", data={"csrf": csrf_token(client), "secret": "bad", "next": "/"}, headers=SAME_ORIGIN
    )
    assert refused.status_code == 403 and "wrong secret" in refused.text
    accepted = await client.post(
        "/login", data={"csrf": csrf_token(client), "secret": "s3cret", "next": "/workers"}, headers=SAME_ORIGIN
    )
    assert accepted.status_code == 303 and accepted.headers["location"] == "/workers"
    assert "s3cret" not in accepted.headers["set-cookie"]
    assert (await client.get("/workers")).status_code == 200
    assert (await post_form(client, "/workers/w1/drain")).status_code == 303
    assert fake.calls["drain_worker"] == 1
    await client.post("/logout", data={"next": "/"}, headers=SAME_ORIGIN)
    assert (await post_form(client, "/workers/w1/drain")).status_code == 403
    assert (await client.get("/workers")).status_code == 303


async def test_each_login_gets_its_own_token_and_logout_revokes_a_copy_of_it(make_client: MakeClient) -> None:
    # Every login got one token derived from the password, and a logout only cleared the browser's cookie
    client = await make_client(secret="s3cret")
    form = {"csrf": csrf_token(client), "secret": "s3cret", "next": "/"}

    async def log_in_once() -> str:
        response = await client.post("/login", data=form, headers=SAME_ORIGIN)
        assert response.status_code == 303
        return str(client.cookies.get("fastworker_session"))

    first, second = await log_in_once(), await log_in_once()
    assert first != second and len(first) >= 40

    async def read_with(token: str) -> int:
        client.cookies.set("fastworker_session", token)  # as a copy of the cookie elsewhere would
        return (await client.get("/api/stats")).status_code

    assert await read_with(second) == 200
    await client.post("/logout", data={"next": "/"}, headers=SAME_ORIGIN)  # the browser that holds `second`
    assert await read_with(second) == 401  # a copy of the logged-out cookie is dead too
    assert await read_with(first) == 200  # another login goes on


async def test_secret_is_required_for_api_actions_in_the_header(make_client: MakeClient, fake: FakeAdminClient) -> None:
    client = await make_client(secret="s3cret")
    assert (await client.post("/api/queues/low/pause")).status_code == 401
    assert (await client.post("/api/queues/low/pause", headers={"X-FastWorker-Secret": "nope"})).status_code == 401
    response = await client.post("/api/queues/low/pause", headers={"X-FastWorker-Secret": "s3cret"})
    assert response.status_code == 200
    assert response.json() == {"priority": "low", "paused": True}
    # Reads need it too: task arguments and results are what the secret protects.
    assert (await client.get("/api/stats")).status_code == 401
    assert (await client.get("/api/stats", headers={"X-FastWorker-Secret": "nope"})).status_code == 401
    assert (await client.get("/api/stats", headers={"X-FastWorker-Secret": "s3cret"})).status_code == 200
    assert (await client.get("/healthz")).status_code == 200 and (await client.get("/metrics")).status_code == 200


async def test_api_actions_answer_json(web: httpx.AsyncClient, fake: FakeAdminClient) -> None:
    cancel = await web.post(f"/api/tasks/{RUNNING_ID}/cancel")
    cancelled = cancel.json()
    assert list(cancelled)[0] == "id" and cancelled["id"] == RUNNING_ID and "state" in cancelled
    assert (cancelled["cancelled"], cancelled["previous_state"]) == (True, "RUNNING")
    retry = (await web.post(f"/api/tasks/{RUNNING_ID}/retry")).json()
    assert list(retry)[:3] == ["id", "name", "state"] and (retry["id"], retry["state"]) == (RUNNING_ID, "PENDING")
    fake.queue_state["critical"]["depth"] = 3
    assert (await web.post("/api/queues/CRITICAL/purge")).json() == {"priority": "critical", "purged": 3}
    assert (await web.post("/api/queues/high/resume")).json() == {"priority": "high", "paused": False}
    assert (await web.post("/api/workers/w1/drain")).json() == {"worker_id": "w1", "draining": True}


async def test_api_errors_have_status_codes(web: httpx.AsyncClient, fake: FakeAdminClient) -> None:
    missing = await web.post("/api/tasks/nope/cancel")
    assert missing.status_code == 404 and "nope" in missing.json()["detail"]
    assert (await web.get("/api/tasks/nope")).status_code == 404
    assert (await web.post("/api/queues/urgent/pause")).status_code == 422
    assert (await web.get("/api/tasks?state=BOGUS")).status_code == 422
    assert (await web.post("/api/workers/nobody/drain")).status_code == 404
    assert (await web.post(f"/api/tasks/{RUNNING_ID}/retry")).status_code == 409  # RUNNING cannot be retried
    fake.unavailable = True
    unavailable = await web.get("/api/overview")
    assert unavailable.status_code == 503 and "did not answer" in unavailable.json()["detail"]
