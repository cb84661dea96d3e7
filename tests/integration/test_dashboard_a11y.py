"""Accessibility and the Content-Security-Policy of every web dashboard page, in a real browser (issue 17).

axe-core (vendored in ``vendor/axe-core``: CI has no npm) runs in Debian's chromium against every
page, in the light and the dark colour scheme, with real data on the pages: tasks in every state
and at every priority, a paused queue, a busy worker, run-time limits and a workflow. No violation
of impact *serious* or *critical* may remain. A second test loads every page under the real CSP
(no bypass), lets the live stream replace its panels, and checks that the browser reported no
violation and that the policy allows no inline styles or scripts; a third checks that the classes
which replaced the inline style attributes really size the bars and indent workflow steps.

The control plane serves the dashboard in-process with a dashboard password (so ``/login`` is a
page) and runs nothing itself; one subworker ``w1`` runs ``fwtests_dashboard_tasks``. Every wait
is bounded; every process is stopped by pid. Results land in ``test-artifacts/dashboard/a11y/``.
"""

from __future__ import annotations

import json
import time
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from playwright.sync_api import Browser, BrowserContext, Page

from fastworker.client import SyncClient, TaskState, chain, signature
from fastworker.controlplane.testing import RunningControlPlane, RunningWorker

TESTS_DIR = Path(__file__).resolve().parent
REPO_ROOT = TESTS_DIR.parent.parent
ARTIFACTS = REPO_ROOT / "test-artifacts" / "dashboard" / "a11y"
AXE = TESTS_DIR / "vendor" / "axe-core" / "axe.min.js"
TASK_MODULES = ("fwtests_dashboard_tasks",)
WAIT = 15.0  # seconds; generous for a small, noisy machine
WAIT_MS = WAIT * 1000
PASSWORD = "a11y-dashboard-password"
#: The impacts that fail the test; moderate and minor findings are only written to the artifacts.
BLOCKING = ("serious", "critical")
SCHEMES = ("light", "dark")

#: Every page of the dashboard (see routes/): id -> key of the path in the ``pages`` fixture.
PAGE_IDS = (
    "overview",
    "tasks",
    "tasks-filtered",
    "task-success",
    "task-failure",
    "task-running",
    "task-unserved",
    "workflow",
    "workers",
    "login",
    "not-found",
)

#: axe's findings, cut down to what a failure message needs (the contrast numbers included).
RUN_AXE = """async () => {
  const results = await window.axe.run(document, { resultTypes: ["violations"] });
  return results.violations.map((v) => ({
    id: v.id,
    impact: v.impact,
    help: v.help,
    nodes: v.nodes.map((n) => {
      const check = [...n.any, ...n.all, ...n.none].find((c) => c.data && typeof c.data === "object") || {};
      return { target: n.target, impact: n.impact, html: n.html.slice(0, 160), data: check.data || null };
    }),
  }));
}"""

#: Records CSP violations and which panels the live stream redrew, from before any page script runs.
WATCH_CSP = """
window.fwCspViolations = [];
document.addEventListener("securitypolicyviolation", (event) => {
  window.fwCspViolations.push({
    directive: event.violatedDirective,
    blocked: event.blockedURI,
    source: event.sourceFile,
    line: event.lineNumber,
    target: event.target && event.target.id ? event.target.id : String(event.target && event.target.nodeName),
  });
}, true);
window.fwPanels = new Set();
const NativeEventSource = window.EventSource;
if (typeof NativeEventSource === "function") {
  window.EventSource = function (url, init) {
    const source = new NativeEventSource(url, init);
    source.addEventListener("panel", (event) => { window.fwPanels.add(JSON.parse(event.data).id); });
    return source;
  };
  window.EventSource.prototype = NativeEventSource.prototype;
}
"""


@pytest.fixture(scope="module")
def cluster(
    tmp_path_factory: pytest.TempPathFactory, one_worker_cluster: Any
) -> Iterator[tuple[RunningControlPlane, RunningWorker]]:
    """A control plane serving the dashboard (with a password) and running nothing itself, plus subworker ``w1``."""
    workdir = tmp_path_factory.mktemp("dashboard-a11y")
    with one_worker_cluster(
        workdir,
        task_modules=TASK_MODULES,
        concurrency=2,
        controlplane_args=("--dashboard-password", PASSWORD),
        dashboard=True,
    ) as pair:
        yield pair


def _wait_for_state(client: SyncClient, task_id: str, state: TaskState) -> None:
    deadline = time.monotonic() + WAIT
    info = client.status(task_id)
    while info.state is not state:
        if time.monotonic() > deadline:
            pytest.fail(f"task {task_id} did not reach {state} within {WAIT:g} s (last: {info.state})")
        time.sleep(0.05)
        info = client.status(task_id)


@pytest.fixture(scope="module")
def pages(
    cluster: tuple[RunningControlPlane, RunningWorker], tmp_path_factory: pytest.TempPathFactory
) -> Iterator[dict[str, str]]:
    """Fill the control plane so that every kind of badge, pill and bar is on some page; answer each page's path.

    Tasks succeed at every priority, one fails, one is cancelled, one is held SCHEDULED, three wait in
    the paused low queue, one waits in the named queue "reports" that nothing serves; a workflow's middle step runs with progress (held by a gate file) and a
    long sleep fills the worker's other slot; one task name has run-time limits.
    """
    gates = tmp_path_factory.mktemp("a11y-gates")
    with SyncClient(cluster[0].discovery) as client:
        done = [
            client.delay("fwdash.add", n, n, priority=level)
            for n, level in enumerate(("critical", "high", "normal", "low"))
        ]
        failed = client.delay("fwdash.fail", "for the error badge")
        for task_id in done:
            _wait_for_state(client, task_id, TaskState.SUCCESS)
        _wait_for_state(client, failed, TaskState.FAILURE)
        client.cancel(client.delay("fwdash.sleep", 1, countdown=3600))
        client.delay("fwdash.add", 5, 5, countdown=3600)  # SCHEDULED
        client.pause("low")
        for n in range(3):
            client.delay("fwdash.add", n, 1, priority="low")  # PENDING in a paused queue
        unserved = client.delay("fwdash.add", 7, 7, queue="reports")  # PENDING: no worker serves "reports"
        client.set_limits("fwdash.add", rate_limit="100/s", max_concurrency=5)
        workflow = client.delay_workflow(
            chain(
                signature("fwdash.add", args=(1, 2)),
                signature("fwdash.progress", args=(str(gates / "first"), str(gates / "second")), immutable=True),
                signature("fwdash.add", args=(10, 3), immutable=True),
            )
        )
        running = workflow.task_ids[1]
        _wait_for_state(client, running, TaskState.RUNNING)
        sleeper = client.delay("fwdash.sleep", 600)  # cancelled at teardown
        _wait_for_state(client, sleeper, TaskState.RUNNING)
        try:
            yield {
                "overview": "/",
                "tasks": "/tasks",
                "tasks-filtered": "/tasks?" + "&".join(f"state={state.value}" for state in TaskState),
                "task-success": f"/tasks/{done[0]}",
                "task-failure": f"/tasks/{failed}",
                "task-running": f"/tasks/{running}",
                "task-unserved": f"/tasks/{unserved}",
                "workflow": f"/workflows/{workflow.id}",
                "workers": "/workers",
                "login": "/login",
                "not-found": "/tasks/no-such-task",
            }
        finally:
            for gate in ("first", "second"):
                (gates / gate).touch()
            client.cancel(sleeper)


def _context(chromium: Browser, dashboard_url: str, **options: Any) -> BrowserContext:
    """A browser context logged in to the dashboard (with a password, every page but /login needs it)."""
    context = chromium.new_context(base_url=dashboard_url, viewport={"width": 1400, "height": 1000}, **options)
    context.set_default_timeout(WAIT_MS)
    page = context.new_page()
    page.goto("/login?next=/workers")
    page.fill('input[name="secret"]', PASSWORD)
    page.click('form[action="/login"] button[type="submit"]')
    page.wait_for_url("**/workers")
    page.close()
    return context


def _describe(violation: dict[str, Any]) -> str:
    """One violation as text: the rule, its impact, and per element the target and (for contrast) the numbers."""
    lines = [f"{violation['id']} ({violation['impact']}): {violation['help']}"]
    for node in violation["nodes"]:
        data = node["data"] or {}
        numbers = ""
        if "contrastRatio" in data:
            # color-contrast names the colours fg/bg; link-in-text-block compares the link with its text
            needed = data.get("expectedContrastRatio") or f"{data.get('requiredContrastRatio')}:1"
            numbers = (
                f" contrast {data['contrastRatio']}:1 < {needed}"
                f" fg {data.get('fgColor') or data.get('nodeColor')} bg {data.get('bgColor') or data.get('parentColor')}"
            )
            if "fontSize" in data:
                numbers += f" {data['fontSize']} {data.get('fontWeight')}"
        lines.append(f"  {' > '.join(map(str, node['target']))}{numbers}")
    return "\n".join(lines)


@pytest.mark.parametrize("scheme", SCHEMES)
@pytest.mark.parametrize("page_id", PAGE_IDS)
def test_axe_finds_no_serious_or_critical_violation(
    chromium: Browser, dashboard_url: str, pages: dict[str, str], page_id: str, scheme: str
) -> None:
    # axe is injected as an init script: Playwright adds those through the DevTools protocol, outside
    # the page's CSP, so the page is audited exactly as served (a style the CSP blocks stays blocked)
    # with no bypass_csp. add_script_tag would be an inline <script>, which script-src 'self' refuses.
    context = _context(chromium, dashboard_url, color_scheme=scheme)
    try:
        context.add_init_script(path=AXE)
        # Auto-refresh off: a live panel redrawn during the audit would change the page under axe.
        context.add_init_script("window.localStorage.setItem('fastworker.dashboard.autoRefresh', 'off')")
        page: Page = context.new_page()
        page.goto(pages[page_id])
        assert page.evaluate("matchMedia('(prefers-color-scheme: dark)').matches") is (scheme == "dark")
        violations: list[dict[str, Any]] = page.evaluate(RUN_AXE)
        page.screenshot(path=str(ARTIFACTS / f"{page_id}-{scheme}.png"), full_page=True)
    finally:
        context.close()
    (ARTIFACTS / f"{page_id}-{scheme}.json").write_text(json.dumps(violations, indent=2))
    counts = Counter(f"{v['id']} ({v['impact']}): {len(v['nodes'])}" for v in violations)
    print(f"axe on {pages[page_id]} ({scheme}): {sorted(counts) or 'no violations'}")
    blocking = [v for v in violations if v["impact"] in BLOCKING]
    assert not blocking, f"axe on {pages[page_id]} ({scheme}):\n" + "\n".join(map(_describe, blocking))


def _until(page: Page, expression: str) -> None:
    """Poll ``expression`` from here until it is true (bounded).

    Not ``page.wait_for_function``: once its first check fails it polls with a function the page
    compiles from a string, which this CSP (no 'unsafe-eval') refuses. ``page.evaluate`` runs
    through the DevTools protocol, which the page's CSP does not govern.
    """
    deadline = time.monotonic() + WAIT
    while not page.evaluate(expression):
        if time.monotonic() > deadline:
            pytest.fail(f"never true within {WAIT:g} s: {expression}")
        page.wait_for_timeout(50)


@pytest.mark.parametrize("page_id", PAGE_IDS)
def test_the_csp_allows_nothing_inline_and_no_page_violates_it(
    chromium: Browser, dashboard_url: str, pages: dict[str, str], page_id: str
) -> None:
    context = _context(chromium, dashboard_url)  # the real CSP: no bypass_csp here
    console: list[str] = []
    try:
        context.add_init_script(WATCH_CSP)
        page = context.new_page()
        page.on("console", lambda message: console.append(message.text))
        response = page.goto(pages[page_id])
        assert response is not None
        policy = response.headers["content-security-policy"]
        assert "'unsafe-inline'" not in policy and "'unsafe-eval'" not in policy, policy
        assert "style-src 'self';" in policy and "script-src 'self';" in policy, policy
        if page.locator("body").get_attribute("data-stream"):
            # Live pages: the stream's first message redraws every panel; those fragments must comply too.
            _until(
                page,
                "[...document.querySelectorAll('[id^=\"panel-\"]')].every((panel) => window.fwPanels.has(panel.id))",
            )
        # A probe that must be refused proves the listener works; violations are reported in order,
        # so once the probe's has arrived, any the page caused before it has too.
        page.evaluate(
            "document.body.insertAdjacentHTML('beforeend', '<i id=\"fw-csp-probe\" style=\"color: red\"></i>')"
        )
        _until(page, "window.fwCspViolations.some((v) => v.target === 'fw-csp-probe')")
        violations = [v for v in page.evaluate("window.fwCspViolations") if v["target"] != "fw-csp-probe"]
    finally:
        context.close()
    assert not violations, f"{pages[page_id]} violated the CSP: {violations}"
    # The console says the same (asynchronously): at most the probe's own refusal may be there.
    refused = [text for text in console if "Content Security Policy" in text]
    assert len(refused) <= 1, refused


#: Each bar's drawn width as a fraction of its track, with the percent its ``w-N`` class asks for.
BAR_WIDTHS = """() => [...document.querySelectorAll(".load-bar > span, .depth-bar > span, .progress-bar > span")].map((bar) => {
  const track = bar.parentElement;
  const match = /(?:^| )w-(\\d+)(?: |$)/.exec(bar.className);
  return {
    wanted: match ? Number(match[1]) : null,
    drawn: bar.getBoundingClientRect().width / (track.clientWidth || 1),
    html: track.outerHTML.slice(0, 160),
  };
})"""


@pytest.mark.parametrize("page_id", ["overview", "workers", "workflow", "task-running"])
def test_bars_and_indents_are_drawn_from_classes_without_inline_styles(
    chromium: Browser, dashboard_url: str, pages: dict[str, str], page_id: str
) -> None:
    """The classes that replaced the style attributes really size the bars (and indent workflow steps)."""
    context = _context(chromium, dashboard_url, reduced_motion="reduce")  # no width transitions mid-measure
    try:
        context.add_init_script("window.localStorage.setItem('fastworker.dashboard.autoRefresh', 'off')")
        page = context.new_page()
        page.goto(pages[page_id])
        assert page.locator("[style]").count() == 0
        bars = page.evaluate(BAR_WIDTHS)
        indents = page.evaluate(
            "() => [...document.querySelectorAll('.workflow-step')].map((step) =>"
            " [Number(step.dataset.indent), parseFloat(getComputedStyle(step).paddingLeft)])"
        )
    finally:
        context.close()
    assert bars, f"no bars on {pages[page_id]}"
    for bar in bars:
        assert bar["wanted"] is not None, bar
        assert abs(bar["drawn"] - bar["wanted"] / 100) < 0.02, bar
    if page_id == "overview":  # empty queues and the full paused one: both ends of the scale
        assert {0, 100} <= {bar["wanted"] for bar in bars}, bars
    if page_id == "workflow":
        assert [indent for indent, _ in indents] == [0, 1, 2], indents
        steps = [padding for _, padding in indents]
        assert steps[0] < steps[1] < steps[2], indents
