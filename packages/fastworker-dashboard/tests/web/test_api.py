"""The JSON read API: the same data as the pages, JSON-safe whatever the payloads hold."""

from __future__ import annotations

import decimal

import httpx
from web_fakes import NOW, FakeAdminClient, make_task

from fastworker.client import TaskState

FAILED_ID = "ffffffff-0000-4000-8000-000000000001"


async def test_overview_holds_stats_queues_and_workers(web: httpx.AsyncClient) -> None:
    data = (await web.get("/api/overview")).json()
    assert data["stats"]["submitted"] == 12
    assert [q["priority"] for q in data["queues"]] == ["critical", "high", "normal", "low"]
    assert data["workers"][0]["worker_id"] == "w1"


async def test_single_resources(web: httpx.AsyncClient) -> None:
    assert (await web.get("/api/stats")).json()["uptime"] == 3725.0
    assert len((await web.get("/api/queues")).json()) == 4
    assert (await web.get("/api/workers")).json()[0]["capacity"] == 4
    assert (await web.get("/api/registered-tasks")).json()[0]["name"] == "app.add"


async def test_tasks_take_the_same_filters_as_the_page(web: httpx.AsyncClient) -> None:
    data = (await web.get("/api/tasks?state=FAILURE&limit=10")).json()
    assert data["total"] == 1 and data["limit"] == 10 and data["offset"] == 0
    (task,) = data["tasks"]
    assert list(task)[0] == "id"
    assert task["id"] == FAILED_ID and task["state"] == "FAILURE" and task["priority"] == "normal"
    assert task["error"]["type"] == "RuntimeError"


async def test_task_detail_includes_arguments_and_timings(web: httpx.AsyncClient, fake: FakeAdminClient) -> None:
    odd = make_task("c" * 8 + "-0000-4000-8000-000000000001", result=(b"\x00\xff", decimal.Decimal("1.5")))
    fake.add(odd, args=[(1, 2), b"raw"], kwargs={"when": NOW})
    data = (await web.get(f"/api/tasks/{odd.id}")).json()
    assert data["args"] == [[1, 2], "cmF3"]  # bytes as base64, as fastworker --json
    assert data["kwargs"] == {"when": NOW}
    assert data["result"] == ["AP8=", "1.5"]
    assert data["wait_time"] == 0.5 and data["run_time"] == 0.75


async def test_task_detail_says_when_a_scheduled_task_is_due_and_when_it_expires(
    web: httpx.AsyncClient, fake: FakeAdminClient
) -> None:
    # An operator saw a scheduled task's eta but not when it would end CANCELLED (Expired) instead
    scheduled = make_task("d" * 8 + "-0000-4000-8000-000000000001", state=TaskState.SCHEDULED, started_at=None)
    fake.add(scheduled, eta=NOW + 600, expires=NOW + 300)
    data = (await web.get(f"/api/tasks/{scheduled.id}")).json()
    assert (data["eta"], data["expires"]) == (NOW + 600, NOW + 300)
    assert (await web.get(f"/api/tasks/{FAILED_ID}")).json()["expires"] is None  # none: null


async def test_limit_is_capped_at_500(web: httpx.AsyncClient) -> None:
    assert (await web.get("/api/tasks?limit=100000")).json()["limit"] == 500


async def test_healthz(web: httpx.AsyncClient, fake: FakeAdminClient) -> None:
    assert (await web.get("/healthz")).json()["status"] == "ok"
    fake.unavailable = True
    assert (await web.get("/healthz")).status_code == 503
