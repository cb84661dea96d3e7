"""Task progress on the web dashboard: a bar with the count, the message and an ETA; ``progress`` in ``/api``."""

from __future__ import annotations

import re
import time
from dataclasses import replace
from typing import Any

import httpx
from web_fakes import NOW, FakeAdminClient, make_task

from fastworker.client import Progress, TaskInfo, TaskState
from fastworker.dashboard.web.formatting import progress_eta, progress_percent

RUNNING_ID = "9" * 8 + "-0000-4000-8000-000000000001"
SCRIPT = "<script>alert('x')</script>"


def running(progress: Progress, **changes: Any) -> TaskInfo:
    fields: dict[str, Any] = {
        "name": "app.render",
        "started_at": time.time() - 10,
        "finished_at": None,
        "queued_at": NOW + 500,
        "progress": progress,
    }
    fields.update(changes)
    return make_task(RUNNING_ID, state=TaskState.RUNNING, **fields)


async def test_a_running_task_shows_a_bar_with_its_count_message_and_eta_on_every_page(
    web: httpx.AsyncClient, fake: FakeAdminClient
) -> None:
    fake.add(running(Progress(3, 10, "rendering pages", reported_at=time.time())))
    for path in ("/", "/tasks", f"/tasks/{RUNNING_ID}"):
        html = (await web.get(path)).text
        assert 'role="progressbar"' in html and 'aria-valuenow="3"' in html and 'aria-valuemax="10"' in html, path
        assert 'class="w-30"' in html, path
        assert "3 / 10 · 30%" in html and "rendering pages" in html, path
        assert re.search(r'class="progress-eta">about \d', html), path  # 3 of 10 in 10 s: about 23 s left
    detail = (await web.get(f"/tasks/{RUNNING_ID}")).text
    assert 'id="task-progress"' in detail


async def test_progress_without_a_total_shows_the_count_and_no_eta_and_messages_are_escaped(
    web: httpx.AsyncClient, fake: FakeAdminClient
) -> None:
    fake.add(running(Progress(42, None, SCRIPT, reported_at=time.time())))
    html = (await web.get(f"/tasks/{RUNNING_ID}")).text
    assert "progress-unknown" in html and 'aria-valuenow="42"' in html and "aria-valuemax" not in html
    assert "progress-eta" not in html
    assert "<script>alert" not in html and "&lt;script&gt;" in html


async def test_tasks_without_progress_show_no_bar(web: httpx.AsyncClient, fake: FakeAdminClient) -> None:
    for path in ("/", "/tasks", f"/tasks/{next(iter(fake.tasks_by_id))}"):
        assert 'role="progressbar"' not in (await web.get(path)).text


async def test_the_api_gives_progress_as_done_total_message(web: httpx.AsyncClient, fake: FakeAdminClient) -> None:
    fake.add(running(Progress(3, 10, "rendering", reported_at=time.time())))
    data = (await web.get(f"/api/tasks/{RUNNING_ID}")).json()
    assert data["progress"] == {"done": 3, "total": 10, "message": "rendering"}
    listed = (await web.get("/api/tasks")).json()["tasks"]
    assert [t["progress"] for t in listed if t["id"] == RUNNING_ID] == [
        {"done": 3, "total": 10, "message": "rendering"}
    ]
    assert all(t["progress"] is None for t in listed if t["id"] != RUNNING_ID)


def test_eta_is_for_running_tasks_with_a_known_total_and_some_progress() -> None:
    task = running(Progress(5, 10, "", reported_at=1_000.0), started_at=990.0)
    assert progress_eta(task, now=1_000.0) == "about 10.0 s left"  # 5 of 10 took 10 s
    assert progress_eta(task, now=1_010.0) == "about 20.0 s left"  # no news for 10 s: slower than thought
    assert progress_eta(replace(task, progress=Progress(999, 1_000, "", reported_at=1_000.0)), now=1_000.0) == (
        "almost done"
    )
    assert progress_eta(replace(task, state=TaskState.SUCCESS), now=1_000.0) == ""
    assert progress_eta(replace(task, progress=Progress(0, 10, "", reported_at=1_000.0)), now=1_000.0) == ""
    assert progress_percent(Progress(1, 4)) == 25.0 and progress_percent(Progress(1)) is None
    assert progress_percent(None) is None
