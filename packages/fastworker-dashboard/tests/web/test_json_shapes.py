"""One JSON shape per object: ``fastworker --json`` and ``/api`` print the same data the same way.

Both use ``fastworker.client.jsonshape``; here the CLI runs against the same fake admin client as the app.
"""

from __future__ import annotations

import asyncio
import decimal
import json
import uuid
from typing import Any

import httpx
import pytest
from web_fakes import NOW, FakeAdminClient, make_task

from fastworker.client import TaskState, cli, jsonshape
from fastworker.dashboard.web import serialize

FAILED_ID = "ffffffff-0000-4000-8000-000000000001"
ODD_ID = "c" * 8 + "-0000-4000-8000-000000000001"


@pytest.fixture
def run_cli(fake: FakeAdminClient, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> Any:
    """``await run_cli(*argv)``: ``fastworker --json ARGV`` against ``fake``, as (exit code, parsed output)."""

    class Connected:
        def __init__(self, *args: Any, **kwargs: Any) -> None:
            pass

        async def __aenter__(self) -> FakeAdminClient:
            return fake

        async def __aexit__(self, *exc_info: object) -> None:
            pass

    monkeypatch.setattr(cli, "Client", Connected)
    monkeypatch.delenv("FASTWORKER_SECRET_FILE", raising=False)
    capsys.readouterr()

    async def run(*argv: str) -> tuple[int, Any]:
        code = await asyncio.to_thread(cli.main, [*argv, "--json"])  # main runs its own event loop
        return code, json.loads(capsys.readouterr().out)

    return run


def test_the_dashboard_serializes_with_the_client_s_shapes() -> None:
    for name in (
        "jsonable",
        "task_json",
        "page_json",
        "detail_json",
        "cancel_json",
        "stats_json",
        "queues_json",
        "limits_json",
        "task_limits_json",
        "workflow_json",
        "workflow_cancel_json",
    ):
        assert getattr(serialize, name) is getattr(jsonshape, name), name


async def test_reads_print_the_same_json_from_the_cli_and_the_api(
    web: httpx.AsyncClient, fake: FakeAdminClient, run_cli: Any
) -> None:
    odd = make_task(ODD_ID, result=(b"\x00\xff", decimal.Decimal("1.5"), uuid.UUID(int=7)))
    fake.add(odd, args=[(1, 2), b"raw"], kwargs={"when": NOW, "price": decimal.Decimal("9.99")})
    pairs = [
        (["stats"], "/api/stats"),
        (["queues"], "/api/queues"),
        (["workers"], "/api/workers"),
        (["limits"], "/api/limits"),
        (["tasks"], "/api/registered-tasks"),
        (["list", "--state", "failure", "--limit", "10"], "/api/tasks?state=FAILURE&limit=10"),
        (["list", "--search", "cccc", "--limit", "5", "--offset", "0"], "/api/tasks?search=cccc&limit=5"),
        (["inspect", ODD_ID], f"/api/tasks/{ODD_ID}"),
        (["inspect", FAILED_ID], f"/api/tasks/{FAILED_ID}"),
    ]
    for argv, path in pairs:
        code, printed = await run_cli(*argv)
        response = await web.get(path)
        assert code == 0 and response.status_code == 200, argv
        assert printed == response.json(), argv


async def test_actions_print_the_same_json_from_the_cli_and_the_api(web: httpx.AsyncClient, run_cli: Any) -> None:
    pairs = [
        (["cancel", FAILED_ID], f"/api/tasks/{FAILED_ID}/cancel"),  # already final: not cancelled
        (["purge", "low"], "/api/queues/low/purge"),
        (["pause", "low"], "/api/queues/low/pause"),
        (["resume", "low"], "/api/queues/low/resume"),
        (["drain", "w1"], "/api/workers/w1/drain"),
    ]
    for argv, path in pairs:
        _, printed = await run_cli(*argv)
        response = await web.post(path)
        assert response.status_code == 200, argv
        assert printed == response.json(), argv
    assert printed == {"worker_id": "w1", "draining": True}


async def test_a_retry_prints_the_task_as_it_is_now_from_the_cli_and_the_api(
    web: httpx.AsyncClient, fake: FakeAdminClient, run_cli: Any
) -> None:
    failed = await fake.status(FAILED_ID)
    code, printed = await run_cli("retry", FAILED_ID)
    fake.add(failed)  # failed again, for the API's retry
    response = await web.post(f"/api/tasks/{FAILED_ID}/retry")
    assert code == 0 and response.status_code == 200
    assert printed == response.json()
    assert (printed["id"], printed["state"], printed["error"]) == (FAILED_ID, "PENDING", None)


async def test_a_limits_change_prints_the_same_json_from_the_cli_and_the_api(
    web: httpx.AsyncClient, fake: FakeAdminClient, run_cli: Any
) -> None:
    code, printed = await run_cli("limit", "app.add", "--rate", "5/s", "--concurrency", "none")
    response = await web.post("/api/limits/app.add", json={"rate_limit": "5/s", "max_concurrency": None})
    assert code == 0 and response.status_code == 200
    assert printed == response.json()
    assert printed["name"] == "app.add" and printed["rate_limit"] == "5/s" and printed["overridden"] is True


async def test_a_workflow_and_its_cancel_print_the_same_json_from_the_cli_and_the_api(
    web: httpx.AsyncClient, fake: FakeAdminClient, run_cli: Any
) -> None:
    first = make_task("d" * 8 + "-0000-4000-8000-000000000001", result=b"\x00")
    second = make_task("d" * 8 + "-0000-4000-8000-000000000002", state=TaskState.RUNNING, depends_on=(first.id,))
    fake.add_workflow("wf-shapes", [first, second])
    code, printed = await run_cli("workflow", "wf-shapes")
    response = await web.get("/api/workflows/wf-shapes")
    assert code == 0 and response.status_code == 200
    assert printed == response.json()
    assert printed["steps"][1]["depends_on"] == [first.id] and printed["steps"][1]["workflow_id"] == "wf-shapes"
    code, printed = await run_cli("workflow", "wf-shapes", "--cancel")
    assert code == 0 and printed == {"id": "wf-shapes", "cancelled": 1}
    response = await web.post("/api/workflows/wf-shapes/cancel")
    assert response.json() == {"id": "wf-shapes", "cancelled": 0}
