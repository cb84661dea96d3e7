"""Named queues in the web dashboard: one group per queue, the "no worker serves it" marker, level actions, metrics."""

from __future__ import annotations

import asyncio
import html as htmllib
import json
import re

import httpx
from test_live import WAIT, stream_request
from test_metrics import parse
from web_fakes import SAME_ORIGIN, FakeAdminClient, csrf_token, make_task, queue_levels

from fastworker.client import TaskState
from fastworker.dashboard.web.app import create_app
from fastworker.dashboard.web.routes.stream import make_panel_renderer, panel_events

ROW = re.compile(r'<tr data-queue="([^"]*)" data-priority="([^"]*)" data-paused="([^"]*)">')
GROUP = re.compile(r'<tbody class="queue-group" data-queue="([^"]*)" data-servers="([^"]*)" data-unserved="([^"]*)">')


def two_queues(fake: FakeAdminClient) -> None:
    """ "default" (served, 2 normal waiting), "reports" (nothing serves it: 3 normal, 1 low wait), "idle" (served, empty)."""
    fake.queue_state["normal"]["depth"] = 2
    fake.queue_state["normal"]["oldest_age"] = 1.0
    fake.other_queues = [*queue_levels("idle", 2), *queue_levels("reports", 0, normal=3, low=1)]
    fake.other_queues.sort(key=lambda q: q["queue"])  # the control plane lists the others by name


def queue_panel(page: str) -> str:
    return page.split('id="panel-queues"', 1)[1].split("</table>", 1)[0]


async def test_only_the_default_queue_looks_as_before(web: httpx.AsyncClient) -> None:
    panel = queue_panel((await web.get("/")).text)
    assert [(q, p) for q, p, _ in ROW.findall(panel)] == [
        ("default", "critical"),
        ("default", "high"),
        ("default", "normal"),
        ("default", "low"),
    ]
    assert "queue-head" not in panel and "no worker" not in panel
    assert 'class="pill pill-ok">running<' in panel


async def test_several_queues_show_one_group_each_with_the_unserved_marker(
    web: httpx.AsyncClient, fake: FakeAdminClient
) -> None:
    two_queues(fake)
    page = (await web.get("/")).text
    panel = queue_panel(page)
    assert GROUP.findall(panel) == [("default", "1", "false"), ("idle", "2", "false"), ("reports", "0", "true")]
    # Every level of "default"; of the others only the levels tasks wait in (none for "idle")
    assert [(q, p) for q, p, _ in ROW.findall(panel)] == [
        ("default", "critical"),
        ("default", "high"),
        ("default", "normal"),
        ("default", "low"),
        ("reports", "normal"),
        ("reports", "low"),
    ]
    reports = panel.split('data-queue="reports"', 1)[1]
    assert "no worker serves this queue" in reports and "4 waiting" in reports
    assert reports.count('<span class="pill pill-warn">no worker</span>') == 2  # its rows' dispatch state
    assert 'class="depth-value">3<' in reports and "7.5 s" in reports
    idle = panel.split('data-queue="idle"', 1)[1].split("</tbody>", 1)[0]
    assert "served by 2" in idle and "nothing waiting" in idle
    assert "served by 1" in panel.split('data-queue="idle"', 1)[0]
    assert "act on a priority level in every queue" in page
    assert 'style="' not in panel  # the CSP allows no inline style: widths are classes


async def test_level_actions_say_they_act_in_every_queue_with_the_level_total(
    web: httpx.AsyncClient, fake: FakeAdminClient
) -> None:
    two_queues(fake)
    panel = htmllib.unescape(queue_panel((await web.get("/")).text))
    assert "Pause the normal level in every queue?" in panel
    # 2 in "default" plus 3 in "reports", on the "reports" row as on the "default" one
    assert panel.count("Purge the normal level in every queue? All 5 waiting normal task(s) will be cancelled.") == 2
    data = {"csrf": csrf_token(web), "next": "/"}
    assert (await web.post("/queues/normal/purge", data=data, headers=SAME_ORIGIN)).status_code == 303
    assert "purged 5 normal tasks from every queue" in (await web.get("/")).text
    await web.post("/queues/low/pause", data=data, headers=SAME_ORIGIN)
    panel = queue_panel((await web.get("/")).text)
    assert ("reports", "low", "true") in ROW.findall(panel) and ("default", "low", "true") in ROW.findall(panel)
    assert '<span class="pill pill-warn">paused</span>' in panel.split('data-queue="reports"', 1)[1]


async def test_read_only_dashboard_shows_the_groups_without_actions(make_client, fake: FakeAdminClient) -> None:
    two_queues(fake)
    client = await make_client(read_only=True)
    panel = queue_panel((await client.get("/")).text)
    assert "no worker serves this queue" in panel and 'colspan="4"' in panel and "data-action" not in panel


async def test_api_queues_lists_every_queue_and_level_as_the_client_returns_them(
    web: httpx.AsyncClient, fake: FakeAdminClient
) -> None:
    two_queues(fake)
    listed = (await web.get("/api/queues")).json()
    assert len(listed) == 12
    assert listed[0] == {
        "queue": "default",
        "priority": "critical",
        "depth": 0,
        "oldest_age": 0.0,
        "paused": False,
        "servers": 1,
    }
    assert [(q["queue"], q["depth"]) for q in listed if q["priority"] == "normal"] == [
        ("default", 2),
        ("idle", 0),
        ("reports", 3),
    ]
    assert (await web.get("/api/overview")).json()["queues"] == listed


async def test_metrics_sum_levels_across_queues_and_export_each_queue(
    web: httpx.AsyncClient, fake: FakeAdminClient
) -> None:
    two_queues(fake)
    helps, types, samples = parse((await web.get("/metrics")).text)
    values = {(name, tuple(sorted(labels.items()))): value for name, labels, value in samples}
    # One sample per level, summed over the queues (duplicate series would be invalid exposition)
    depth = [(labels["priority"], value) for name, labels, value in samples if name == "fastworker_queue_depth"]
    assert depth == [("critical", 0), ("high", 0), ("normal", 5), ("low", 1)]
    assert values[("fastworker_queue_oldest_age_seconds", (("priority", "normal"),))] == 7.5
    assert values[("fastworker_named_queue_depth", (("priority", "normal"), ("queue", "reports")))] == 3
    assert values[("fastworker_named_queue_depth", (("priority", "normal"), ("queue", "default")))] == 2
    assert values[("fastworker_named_queue_oldest_age_seconds", (("priority", "low"), ("queue", "reports")))] == 7.5
    assert values[("fastworker_named_queue_servers", (("queue", "reports"),))] == 0
    assert values[("fastworker_named_queue_servers", (("queue", "idle"),))] == 2
    assert values[("fastworker_named_queue_servers", (("queue", "default"),))] == 1
    assert types["fastworker_named_queue_servers"] == "gauge" and "fastworker_named_queue_depth" in helps


async def test_task_page_shows_its_queue_and_whether_anything_serves_it(
    web: httpx.AsyncClient, fake: FakeAdminClient
) -> None:
    two_queues(fake)
    waiting = fake.add(make_task("c" * 8 + "-0000-4000-8000-000000000001", state=TaskState.PENDING, queue="reports"))
    done = fake.add(make_task("d" * 8 + "-0000-4000-8000-000000000001", queue="reports"))
    here = fake.add(make_task("e" * 8 + "-0000-4000-8000-000000000001", state=TaskState.PENDING))
    page = (await web.get(f"/tasks/{waiting.id}")).text
    assert '<span id="task-queue" class="mono">reports</span>' in page and 'id="task-queue-unserved"' in page
    page = (await web.get(f"/tasks/{done.id}")).text
    assert 'id="task-queue" class="mono">reports<' in page and "task-queue-unserved" not in page
    page = (await web.get(f"/tasks/{here.id}")).text
    assert 'id="task-queue" class="mono">default<' in page and "task-queue-unserved" not in page
    assert (await web.head(f"/tasks/{waiting.id}")).status_code == 200


async def test_live_panels_show_the_groups_and_the_waiting_tasks_marker(fake: FakeAdminClient) -> None:
    two_queues(fake)
    waiting = fake.add(make_task("c" * 8 + "-0000-4000-8000-000000000001", state=TaskState.PENDING, queue="reports"))
    app = create_app(control_plane="tcp://127.0.0.1:5550", client=fake, refresh_interval=0.05)
    async with app.router.lifespan_context(app):
        state = app.state.dashboard
        for query, panel, marker in (
            ("view=overview", "panel-queues", 'data-unserved="true"'),
            (f"view=task&id={waiting.id}", "panel-task", 'id="task-queue-unserved"'),
        ):
            events = panel_events(state.feed, make_panel_renderer(state, stream_request(state, query)))
            try:
                async with asyncio.timeout(WAIT):
                    async for message in events:
                        if message.startswith("event: panel"):
                            payload = json.loads(message.split("data: ", 1)[1])
                            if payload["id"] == panel:
                                assert marker in payload["html"], query
                                break
            finally:
                await events.aclose()
