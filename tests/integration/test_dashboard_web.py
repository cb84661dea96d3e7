"""The web dashboard in a real browser (Playwright driving Debian's chromium) against a real control plane.

The control plane serves the dashboard in-process (``start_controlplane(dashboard=True)``) and runs
nothing itself; one subworker ``w1`` runs ``fwtests_dashboard_tasks``. The test submits through a
``SyncClient`` (Playwright's sync API cannot run inside an event loop) and watches the pages: live
updates must arrive without a reload, and every action goes through its confirm dialog. Every wait
is bounded. Screenshots land in ``test-artifacts/dashboard/`` under the repository root.
"""

from __future__ import annotations

import re
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from playwright.sync_api import Browser, Page, expect

from fastworker.client import SyncClient, TaskInfo, TaskState, chain, signature
from fastworker.controlplane.testing import RunningControlPlane, RunningWorker

TESTS_DIR = Path(__file__).resolve().parent
REPO_ROOT = TESTS_DIR.parent.parent
ARTIFACTS = REPO_ROOT / "test-artifacts" / "dashboard"
TASK_MODULES = ("fwtests_dashboard_tasks",)
WAIT = 15.0  # seconds; generous for a small, noisy machine
WAIT_MS = WAIT * 1000
MARKUP_NAME = 'fwdash.<b id="fwdash-bold">markup</b>&amp;<script>window.fwdashXss = 1</script>'


@pytest.fixture(scope="module")
def cluster(
    tmp_path_factory: pytest.TempPathFactory, one_worker_cluster: Any
) -> Iterator[tuple[RunningControlPlane, RunningWorker]]:
    """A control plane serving the dashboard and running nothing itself, plus one subworker ``w1``."""
    workdir = tmp_path_factory.mktemp("dashboard-web")
    with one_worker_cluster(workdir, task_modules=TASK_MODULES, concurrency=2, dashboard=True) as pair:
        yield pair


@pytest.fixture(scope="module")
def client(cluster: tuple[RunningControlPlane, RunningWorker]) -> Iterator[SyncClient]:
    with SyncClient(cluster[0].discovery) as sync_client:
        yield sync_client


@pytest.fixture
def page(chromium: Browser, dashboard_url: str) -> Iterator[Page]:
    """A fresh browser page on the dashboard that accepts every confirm() dialog (and records them)."""
    context = chromium.new_context(base_url=dashboard_url, viewport={"width": 1400, "height": 1000})
    context.set_default_timeout(WAIT_MS)
    browser_page = context.new_page()
    dialogs: list[str] = []

    def accept(dialog: object) -> None:
        dialogs.append(dialog.message)  # type: ignore[attr-defined]
        dialog.accept()  # type: ignore[attr-defined]

    browser_page.on("dialog", accept)
    browser_page.dialogs = dialogs  # type: ignore[attr-defined]
    try:
        yield browser_page
    finally:
        context.close()


def wait_for_state(client: SyncClient, task_id: str, state: TaskState) -> TaskInfo:
    deadline = time.monotonic() + WAIT
    info = client.status(task_id)
    while info.state is not state:
        if time.monotonic() > deadline:
            pytest.fail(f"task {task_id} did not reach {state} within {WAIT:g} s (last: {info.state})")
        time.sleep(0.05)
        info = client.status(task_id)
    return info


def wait_until_live(page: Page) -> None:
    """Wait until the page's live stream is connected, and mark the page so that a reload would show."""
    expect(page.locator("body")).to_have_attribute("data-live", "live")
    page.evaluate("window.fwdashNoReload = 'still here'")


def assert_not_reloaded(page: Page) -> None:
    assert page.evaluate("window.fwdashNoReload") == "still here", "the page was reloaded"


def shot(page: Page, name: str) -> None:
    page.screenshot(path=str(ARTIFACTS / f"{name}.png"), full_page=True)


def test_overview_lists_the_worker_and_the_queue_depths(page: Page) -> None:
    page.goto("/")
    expect(page.locator('#panel-workers tr[data-worker-id="w1"]')).to_be_visible()
    for level in ("critical", "high", "normal", "low"):
        expect(page.locator(f'#queues-table tr[data-priority="{level}"] .depth-value')).to_have_text(
            re.compile(r"^\d+$")
        )
    expect(page.get_by_role("link", name="Tasks", exact=True)).to_be_visible()
    shot(page, "overview")


def test_a_task_submitted_elsewhere_appears_live_on_the_overview_and_the_tasks_page(
    page: Page, client: SyncClient
) -> None:
    page.goto("/")
    wait_until_live(page)
    task_id = client.delay("fwdash.add", 2, 3)
    expect(page.locator(f'#panel-recent tr[data-task-id="{task_id}"]')).to_be_visible()
    expect(page.locator(f'#panel-recent tr[data-task-id="{task_id}"]')).to_have_attribute("data-state", "SUCCESS")
    assert_not_reloaded(page)

    page.goto("/tasks")
    wait_until_live(page)
    second = client.delay("fwdash.add", 4, 5)
    row = page.locator(f'#panel-tasks tr[data-task-id="{second}"]')
    expect(row).to_be_visible()
    expect(row).to_have_attribute("data-state", "SUCCESS")
    assert_not_reloaded(page)
    shot(page, "tasks")


def test_keyboard_focus_stays_on_its_control_while_live_updates_redraw_the_panel(
    page: Page, client: SyncClient
) -> None:
    # Given the overview, live, with keyboard focus on the "Succeeded" counter (a link in a live panel)
    page.goto("/")
    wait_until_live(page)
    succeeded = page.locator('#panel-counters a[href="/tasks?state=SUCCESS"]')
    succeeded.focus()
    before = page.locator('[data-counter="succeeded"]').inner_text()

    # When tasks finish, and the panel is redrawn with the new counts
    client.wait_many([client.delay("fwdash.add", i, 1) for i in range(3)], timeout=WAIT)
    expect(page.locator('[data-counter="succeeded"]')).not_to_have_text(before)

    # Then the focus is on the same counter in the new panel, not dropped to the page body,
    # and Tab goes on to the next counter
    assert page.evaluate("document.activeElement.getAttribute('href')") == "/tasks?state=SUCCESS"
    page.keyboard.press("Tab")
    assert page.evaluate("document.activeElement.getAttribute('href')") == "/tasks?state=FAILURE"
    assert_not_reloaded(page)


def test_cancel_button_cancels_a_running_task(page: Page, client: SyncClient) -> None:
    task_id = client.delay("fwdash.sleep", 60)
    wait_for_state(client, task_id, TaskState.RUNNING)
    page.goto(f"/tasks/{task_id}")
    expect(page.locator("#task-state .badge")).to_have_text("RUNNING")
    page.locator('button[data-action="cancel"]').click()
    expect(page.locator("#flash")).to_contain_text(f"cancelled {task_id}")
    expect(page.locator("#task-state .badge")).to_have_text("CANCELLED")
    assert any("Cancel task" in message for message in page.dialogs)  # type: ignore[attr-defined]
    assert client.status(task_id).state is TaskState.CANCELLED
    shot(page, "task-cancelled")


def test_failed_task_shows_its_traceback_and_retry_requeues_it(page: Page, client: SyncClient) -> None:
    task_id = client.delay("fwdash.fail", "kaboom")
    wait_for_state(client, task_id, TaskState.FAILURE)
    page.goto(f"/tasks/{task_id}")
    expect(page.locator("#error-type")).to_have_text("RuntimeError")
    expect(page.locator("#task-traceback")).to_contain_text("Traceback")
    expect(page.locator("#task-traceback")).to_contain_text("fwdash failure: kaboom")
    shot(page, "task-failed")
    page.locator('button[data-action="retry"]').click()
    expect(page.locator("#flash")).to_contain_text(re.compile(rf"retried {task_id}: (PENDING|RUNNING)"))
    wait_until_live(page)
    # It runs again (and fails again): the live panel shows the second attempt without a reload
    expect(page.locator("#panel-task dl.facts")).to_contain_text(re.compile(r"Attempts\s*2"))
    expect(page.locator("#task-state .badge")).to_have_text("FAILURE")
    assert_not_reloaded(page)


def test_markup_in_arguments_and_task_names_is_shown_as_text(page: Page, client: SyncClient) -> None:
    payload = "<script>window.fwdashXss = 1</script><img src=x onerror=window.fwdashXss=2>"
    echo_id = client.delay("fwdash.echo", payload, note=payload)
    markup_id = client.delay(MARKUP_NAME)
    wait_for_state(client, echo_id, TaskState.SUCCESS)
    wait_for_state(client, markup_id, TaskState.SUCCESS)
    page.goto(f"/tasks/{echo_id}")
    expect(page.locator("#task-args")).to_contain_text(payload)
    expect(page.locator("#task-kwargs")).to_contain_text(payload)
    expect(page.locator("#task-result")).to_contain_text(payload)
    assert page.evaluate("window.fwdashXss") is None
    page.goto("/tasks")
    name_cell = page.locator(f'tr[data-task-id="{markup_id}"] td.task-name')
    expect(name_cell).to_have_text(MARKUP_NAME)
    assert page.locator("#fwdash-bold").count() == 0
    page.goto(f"/tasks/{markup_id}")
    expect(page.locator(".task-title .task-name")).to_have_text(MARKUP_NAME)
    assert page.evaluate("window.fwdashXss") is None
    shot(page, "markup-as-text")


def test_pause_and_resume_change_the_shown_queue_state(page: Page, client: SyncClient) -> None:
    page.goto("/")
    row = page.locator('#queues-table tr[data-priority="low"]')
    expect(row).to_have_attribute("data-paused", "false")
    row.locator('button[data-action="pause"]').click()
    expect(page.locator("#flash")).to_contain_text("low level paused in every queue")
    expect(row).to_have_attribute("data-paused", "true")
    expect(row.locator(".queue-state")).to_have_text("paused")
    # While paused, a low task waits: the queue depth shows it live
    wait_until_live(page)
    waiting = client.delay("fwdash.add", 1, 1, priority="low")
    expect(row.locator(".depth-value")).to_have_text("1")
    shot(page, "queue-paused")
    row.locator('button[data-action="resume"]').click()
    expect(page.locator("#flash")).to_contain_text("low level resumed in every queue")
    expect(row).to_have_attribute("data-paused", "false")
    wait_for_state(client, waiting, TaskState.SUCCESS)


def test_auto_refresh_switch_is_remembered(page: Page) -> None:
    page.goto("/workers")
    expect(page.locator('#panel-workers tr[data-worker-id="w1"] button[data-action="drain"]')).to_be_visible()
    shot(page, "workers")
    expect(page.locator("body")).to_have_attribute("data-live", "live")
    page.locator(".live-switch").click()
    expect(page.locator("body")).to_have_attribute("data-live", "off")
    page.reload()
    expect(page.locator("#live-toggle")).not_to_be_checked()
    expect(page.locator("body")).to_have_attribute("data-live", "off")
    page.locator(".live-switch").click()
    expect(page.locator("body")).to_have_attribute("data-live", "live")


def test_a_running_tasks_progress_bar_message_and_eta_update_live(
    page: Page, client: SyncClient, tmp_path: Path
) -> None:
    first, second = tmp_path / "first", tmp_path / "second"
    task_id = client.delay("fwdash.progress", str(first), str(second))
    wait_for_state(client, task_id, TaskState.RUNNING)
    page.goto(f"/tasks/{task_id}")
    wait_until_live(page)
    bar = page.locator("#task-progress .progress-bar")
    expect(bar).to_have_attribute("aria-valuenow", "3")
    expect(bar).to_have_attribute("aria-valuemax", "10")
    expect(page.locator("#task-progress")).to_contain_text("3 / 10 · 30%")
    expect(page.locator("#task-progress .progress-message")).to_have_text("rendering")
    expect(page.locator("#task-progress .progress-eta")).to_contain_text(re.compile(r"about .+ left|almost done"))
    shot(page, "task-progress")

    first.touch()  # the task reports 7/10: the panel follows without a reload
    expect(bar).to_have_attribute("aria-valuenow", "7")
    expect(page.locator("#task-progress")).to_contain_text("7 / 10 · 70%")
    expect(page.locator("#task-progress .progress-message")).to_have_text("almost there")
    assert_not_reloaded(page)

    page.goto("/tasks")
    wait_until_live(page)
    row_bar = page.locator(f'#panel-tasks tr[data-task-id="{task_id}"] .progress-bar')
    expect(row_bar).to_have_attribute("aria-valuenow", "7")
    shot(page, "tasks-progress")
    second.touch()
    expect(page.locator(f'#panel-tasks tr[data-task-id="{task_id}"]')).to_have_attribute("data-state", "SUCCESS")
    expect(page.locator(f'#panel-tasks tr[data-task-id="{task_id}"] .progress-eta')).to_have_count(0)
    assert_not_reloaded(page)


def test_limits_set_through_the_form_are_listed_and_refresh_live(page: Page, client: SyncClient) -> None:
    page.goto("/")
    defined = page.locator('#limits-table tr[data-limit-name="fwdash.limited"]')
    expect(defined).to_have_attribute("data-overridden", "false")
    expect(defined.locator(".limit-rate")).to_contain_text("50/s")
    expect(defined.locator(".limit-concurrency")).to_contain_text("/2")
    row = page.locator('#limits-table tr[data-limit-name="fwdash.add"]')
    try:
        form = page.locator("#limits-form")
        form.locator('input[name="name"]').fill("fwdash.add")
        form.locator('input[name="rate_limit"]').fill("20/s")
        form.locator('input[name="max_concurrency"]').fill("3")
        form.locator('button[data-action="set-limits"]').click()
        expect(page.locator("#flash")).to_contain_text(
            "limits of fwdash.add: rate 20/s, concurrency 3 (set at run time)"
        )
        expect(row).to_have_attribute("data-overridden", "true")
        expect(row.locator(".limit-rate")).to_contain_text("20/s")
        expect(row.locator(".limit-origin")).to_have_text("set at run time")
        assert any("Change this task's limits" in message for message in page.dialogs)  # type: ignore[attr-defined]
        assert client.submit("fwdash.add", 2, 2, timeout=WAIT) == 4  # tasks still run under the limit
        shot(page, "limits")

        # A change made elsewhere shows without a reload
        wait_until_live(page)
        client.set_limits("fwdash.add", max_concurrency=1)
        expect(row.locator(".limit-concurrency")).to_contain_text("/1")
        assert_not_reloaded(page)

        row.locator('button[data-action="clear-limits"]').click()
        expect(page.locator("#flash")).to_contain_text("limits of fwdash.add: no rate limit, no concurrency limit")
        expect(row).to_have_count(0)
        expect(defined).to_be_visible()
    finally:
        client.set_limits("fwdash.add", clear=True)


def test_a_chain_shows_its_steps_and_their_states_live_on_the_workflow_page(
    page: Page, client: SyncClient, tmp_path: Path
) -> None:
    first_gate, second_gate = tmp_path / "first", tmp_path / "second"
    handle = client.delay_workflow(
        chain(
            signature("fwdash.add", args=(1, 2)),
            signature("fwdash.progress", args=(str(first_gate), str(second_gate)), immutable=True),
            signature("fwdash.add", args=(10, 3), immutable=True),
        )
    )
    first, middle, last = handle.task_ids
    wait_for_state(client, middle, TaskState.RUNNING)
    page.goto(f"/workflows/{handle.id}")
    expect(page.locator("#workflow-steps li.workflow-step")).to_have_count(3)
    expect(page.locator("#workflow-state .badge")).to_have_text("RUNNING")
    for task_id, state, depth in ((first, "SUCCESS", "0"), (middle, "RUNNING", "1"), (last, "SCHEDULED", "2")):
        row = page.locator(f'#workflow-steps li[data-task-id="{task_id}"]')
        expect(row).to_have_attribute("data-state", state)
        expect(row).to_have_attribute("data-depth", depth)  # each step under the one it waits for (SCHEDULED till then)
        expect(row.locator(".badge")).to_have_text(state)
    expect(page.locator(f'li[data-task-id="{middle}"] .progress-bar')).to_have_attribute("aria-valuenow", "3")
    expect(page.locator("#workflow-counts")).to_contain_text("3 steps:")
    shot(page, "workflow")

    wait_until_live(page)
    first_gate.touch()
    second_gate.touch()  # the last two steps finish: the page follows without a reload
    expect(page.locator(f'#workflow-steps li[data-task-id="{last}"]')).to_have_attribute("data-state", "SUCCESS")
    expect(page.locator("#workflow-state .badge")).to_have_text("SUCCESS")
    expect(page.locator('button[data-action="cancel-workflow"]')).to_have_count(0)
    assert_not_reloaded(page)
    assert handle.result(timeout=WAIT) == 13

    # A step links to its task page, which links back to the workflow and to the step it waited for
    page.locator(f'li[data-task-id="{last}"] a.step-name').click()
    expect(page).to_have_url(re.compile(f"/tasks/{last}$"))
    expect(page.locator("#task-workflow")).to_have_text(handle.id)
    expect(page.locator("#task-depends-on a")).to_have_text(middle[:8])
    page.locator("#task-workflow").click()
    expect(page).to_have_url(re.compile(f"/workflows/{handle.id}$"))
