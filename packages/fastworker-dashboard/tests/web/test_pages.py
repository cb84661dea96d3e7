"""Server-rendered pages: content, navigation, escaping of everything user-supplied, filters and pagination."""

from __future__ import annotations

import re

import httpx
from web_fakes import NOW, FakeAdminClient, make_task

from fastworker.client import TaskError, TaskState

SCRIPT = "<script>alert('x')</script>"


async def test_overview_lists_worker_ids_counters_queues_and_recent_tasks(
    web: httpx.AsyncClient, fake: FakeAdminClient
) -> None:
    response = await web.get("/")
    assert response.status_code == 200
    html = response.text
    assert 'data-worker-id="w1"' in html
    assert 'data-counter="submitted">12<' in html
    for level in ("critical", "high", "normal", "low"):
        assert f'data-priority="{level}"' in html
    for task_id in fake.tasks_by_id:
        assert f'data-task-id="{task_id}"' in html
    assert '<svg class="sparkline"' in html
    assert "75% hit rate" in html


async def test_every_page_links_to_tasks_in_the_nav(web: httpx.AsyncClient, fake: FakeAdminClient) -> None:
    task_id = next(iter(fake.tasks_by_id))
    for path in ("/", "/tasks", f"/tasks/{task_id}", "/workers", "/tasks/unknown-id"):
        html = (await web.get(path)).text
        assert re.search(r'<a href="/tasks"[^>]*>Tasks</a>', html), path
        assert '<a href="/workers"' in html and '<a href="/"' in html


async def test_pages_carry_the_live_stream_url_and_the_auto_refresh_switch(web: httpx.AsyncClient) -> None:
    html = (await web.get("/tasks?state=FAILURE")).text
    assert 'data-stream="/stream?view=tasks&amp;state=FAILURE"' in html
    assert 'id="live-toggle"' in html
    assert '<script src="/static/dashboard.js' in html


async def test_markup_in_task_names_args_results_tracebacks_and_worker_ids_is_escaped(
    web: httpx.AsyncClient, fake: FakeAdminClient
) -> None:
    # Given a task whose name, arguments, error and traceback all carry markup, on a worker with markup in its id
    evil = make_task(
        "e" * 8 + "-0000-4000-8000-000000000001",
        name=f"app.{SCRIPT}",
        state=TaskState.FAILURE,
        worker=f"w{SCRIPT}",
        error=TaskError(f"Err{SCRIPT}", f"message {SCRIPT}", f"Traceback\n  {SCRIPT}\n"),
        queued_at=NOW + 100,
    )
    fake.add(evil, args=[SCRIPT], kwargs={"html": SCRIPT})
    fake.worker_list[0]["worker_id"] = f"w{SCRIPT}"
    fake.worker_list[0]["task_names"] = [SCRIPT]
    # When every page renders
    pages = [await web.get(p) for p in ("/", "/tasks", f"/tasks/{evil.id}", "/workers", f"/tasks?search={SCRIPT}")]
    # Then no markup got through, and it is shown as text
    for response in pages:
        assert response.status_code == 200, response.url
        assert "<script>alert" not in response.text, response.url
    detail = pages[2].text
    assert "&lt;script&gt;alert(&#39;x&#39;)&lt;/script&gt;" in detail
    assert "Traceback" in detail and 'id="task-traceback"' in detail


async def test_success_detail_shows_args_kwargs_result_and_timings(
    web: httpx.AsyncClient, fake: FakeAdminClient
) -> None:
    task_id = "a" * 8 + "-0000-4000-8000-000000000001"
    html = (await web.get(f"/tasks/{task_id}")).text
    assert 'id="task-args"' in html and "1,\n  2" in html
    assert 'id="task-result">3<' in html
    assert 'id="wait-time">500 ms<' in html
    assert 'id="run-time">750 ms<' in html
    assert 'data-action="cancel"' not in html  # final: nothing to cancel
    assert 'data-action="retry"' not in html  # SUCCESS cannot be retried


async def test_a_result_this_dashboard_cannot_decode_is_said_not_shown_nor_downloaded_as_null(
    web: httpx.AsyncClient, fake: FakeAdminClient
) -> None:
    # A pickled result read without pickle: the page showed placeholder text as the result
    task_id = "a" * 8 + "-0000-4000-8000-00000000000f"
    fake.add(make_task(task_id, result=None, result_error="pickle payloads are refused"))
    html = (await web.get(f"/tasks/{task_id}")).text
    assert 'id="task-result-error">Result cannot be shown: pickle payloads are refused<' in html
    assert 'id="task-result"' not in html
    download = await web.get(f"/tasks/{task_id}/result")
    assert download.status_code == 502 and f"the result of task {task_id} cannot be decoded here" in download.text


async def test_only_a_successful_task_s_result_downloads_others_are_a_409_naming_their_state(
    web: httpx.AsyncClient, fake: FakeAdminClient
) -> None:
    # A failed or waiting task was downloaded as `null`, the same as a task that returned None.
    returned_none = "b" * 8 + "-0000-4000-8000-000000000001"
    fake.add(make_task(returned_none, result=None))
    download = await web.get(f"/tasks/{returned_none}/result")
    assert download.status_code == 200 and download.json() is None
    for number, state in enumerate((TaskState.FAILURE, TaskState.PENDING, TaskState.RUNNING, TaskState.CANCELLED), 2):
        task_id = "b" * 8 + f"-0000-4000-8000-00000000000{number}"
        fake.add(make_task(task_id, state=state))
        refused = await web.get(f"/tasks/{task_id}/result")
        assert refused.status_code == 409, state
        assert refused.headers["content-type"].startswith("text/html")
        assert f"Task {task_id} is {state.value}: only a task in SUCCESS has a result to download." in refused.text


async def test_a_scheduled_task_s_page_shows_when_it_is_due_and_when_it_expires(
    web: httpx.AsyncClient, fake: FakeAdminClient
) -> None:
    # An operator saw a scheduled task's eta but not when it would end CANCELLED (Expired) instead
    scheduled = make_task("d" * 8 + "-0000-4000-8000-000000000001", state=TaskState.SCHEDULED, started_at=None)
    fake.add(scheduled, eta=NOW + 600, expires=NOW + 300)
    html = (await web.get(f"/tasks/{scheduled.id}")).text
    assert "2023-11-14 22:23:20.000 UTC" in html  # the eta
    assert re.search(r'<dt>Expires</dt><dd id="task-expires"[^>]*>2023-11-14 22:18:20\.000 UTC<', html), html
    plain = (await web.get("/tasks/" + "a" * 8 + "-0000-4000-8000-000000000001")).text
    assert 'id="task-expires"' not in plain  # no expiry: no row


async def test_failed_task_detail_shows_error_traceback_and_a_retry_button(
    web: httpx.AsyncClient, fake: FakeAdminClient
) -> None:
    task_id = "f" * 8 + "-0000-4000-8000-000000000001"
    html = (await web.get(f"/tasks/{task_id}")).text
    assert 'id="error-type">RuntimeError<' in html
    assert "RuntimeError: boom" in html
    assert 'data-action="retry"' in html


async def test_unknown_task_gives_a_404_page(web: httpx.AsyncClient) -> None:
    response = await web.get("/tasks/does-not-exist")
    assert response.status_code == 404
    assert "Task not found" in response.text and "does-not-exist" in response.text


async def test_a_workflow_id_where_a_task_id_goes_leads_to_the_workflow(
    web: httpx.AsyncClient, fake: FakeAdminClient
) -> None:
    fake.add_workflow("wf-1", [make_task("c" * 8 + "-0000-4000-8000-000000000009")])
    page = await web.get("/tasks/wf-1")
    assert page.status_code == 303 and page.headers["location"] == "/workflows/wf-1"
    api = await web.get("/api/tasks/wf-1")
    assert api.status_code == 404 and "It is a workflow id: /api/workflows/wf-1" in api.json()["detail"]
    assert "workflow id" not in (await web.get("/api/tasks/nothing-at-all")).json()["detail"]


async def test_unknown_path_gives_an_html_404_page(web: httpx.AsyncClient) -> None:
    response = await web.get("/nope")
    assert response.status_code == 404
    assert "Page not found" in response.text


async def test_task_filters_reach_the_client_and_stay_in_the_form(
    web: httpx.AsyncClient, fake: FakeAdminClient
) -> None:
    html = (
        await web.get("/tasks?state=FAILURE&state=CANCELLED&priority=normal&worker=w1&search=fff&name=app.fail")
    ).text
    assert 'data-task-id="ffffffff-0000-4000-8000-000000000001"' in html
    assert 'data-task-id="aaaaaaaa' not in html
    assert 'value="FAILURE" checked' in html and 'value="CANCELLED" checked' in html
    assert 'value="SUCCESS" checked' not in html
    assert '<option value="normal" selected>' in html
    assert 'value="fff"' in html


async def test_pagination_shows_totals_and_prev_next_links(web: httpx.AsyncClient, fake: FakeAdminClient) -> None:
    for i in range(7):
        fake.add(make_task(f"{i:08d}-0000-4000-8000-000000000000", queued_at=NOW + 1000 + i))
    first = (await web.get("/tasks?limit=4")).text
    assert "Showing 1–4 of 10 tasks" in first
    assert 'rel="next" href="/tasks?offset=4&amp;limit=4"' in first
    assert 'rel="prev"' not in first
    second = (await web.get("/tasks?limit=4&offset=8")).text
    assert "Showing 9–10 of 10 tasks" in second
    assert 'rel="prev" href="/tasks?offset=4&amp;limit=4"' in second
    assert 'rel="next"' not in second
    past = (await web.get("/tasks?limit=4&offset=6000")).text  # said "Showing 0–6,000 of 10 tasks"
    assert "No tasks on this page: the offset is past the last of 10 tasks" in past
    assert "Showing" not in past


async def test_bad_filter_values_answer_400(web: httpx.AsyncClient) -> None:
    assert (await web.get("/tasks?state=BOGUS")).status_code == 400
    assert (await web.get("/tasks?priority=urgent")).status_code == 400
    assert (await web.get("/tasks?offset=-1")).status_code == 400
    assert (await web.get("/tasks?limit=abc")).status_code == 400


async def test_task_rows_offer_cancel_or_retry_where_they_apply(web: httpx.AsyncClient) -> None:
    html = (await web.get("/tasks")).text
    rows = dict(re.findall(r'<tr data-task-id="([^"]+)" data-state="[^"]+">(.*?)</tr>', html, re.S))
    assert 'data-action="cancel"' in rows["bbbbbbbb-0000-4000-8000-000000000001"]  # RUNNING
    assert 'data-action="retry"' in rows["ffffffff-0000-4000-8000-000000000001"]  # FAILURE
    assert "data-action" not in rows["aaaaaaaa-0000-4000-8000-000000000001"]  # SUCCESS


async def test_workers_page_shows_load_memory_and_a_drain_button(web: httpx.AsyncClient) -> None:
    html = (await web.get("/workers")).text
    assert 'data-worker-id="w1"' in html
    assert "1/4" in html and 'class="w-25"' in html
    assert "50.0 MiB" in html
    assert 'data-action="drain"' in html
    assert "4242" in html
    assert '<td class="queues"><span class="tag">default</span><span class="tag">reports</span></td>' in html


async def test_control_plane_unavailable_gives_a_503_page(web: httpx.AsyncClient, fake: FakeAdminClient) -> None:
    fake.unavailable = True
    response = await web.get("/")
    assert response.status_code == 503
    assert "Control plane unavailable" in response.text
    assert 'data-reload="5"' in response.text


async def test_responses_carry_security_headers(web: httpx.AsyncClient) -> None:
    response = await web.get("/")
    assert "script-src 'self'" in response.headers["content-security-policy"]
    assert response.headers["x-frame-options"] == "DENY"
    assert response.headers["x-content-type-options"] == "nosniff"


async def test_static_assets_are_served(web: httpx.AsyncClient) -> None:
    assert (await web.get("/static/dashboard.css")).status_code == 200
    assert "EventSource" in (await web.get("/static/dashboard.js")).text


async def test_control_characters_and_bidi_overrides_from_tasks_show_as_escapes_on_every_page(
    web: httpx.AsyncClient, fake: FakeAdminClient
) -> None:
    # A right-to-left override would reorder what follows it on the page ("Trojan Source"), a NUL or
    # an escape sequence reach whoever copies the text: escaped HTML is not enough.
    sneaky = "name\u202eevil\x00\x1b[31m"
    evil = make_task(
        "e" * 8 + "-0000-4000-8000-000000000002",
        name=f"app.{sneaky}",
        state=TaskState.FAILURE,
        error=TaskError(f"Err{sneaky}", f"message {sneaky}", f"Traceback\n  {sneaky}\n"),
        queued_at=NOW + 100,
    )
    fake.add(evil, args=[sneaky], kwargs={})
    for path in ("/", "/tasks", f"/tasks/{evil.id}"):
        html = (await web.get(path)).text
        assert "\u202e" not in html and "\x00" not in html and "\x1b" not in html, path
        assert "name\\u202eevil\\x00\\x1b[31m" in html, path
