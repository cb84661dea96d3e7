"""Multi-host for real: control plane, two subworkers and a client each in its own network namespace.

The hosts (``fwsec_netns.Lab``) share a private /24 through a switch namespace; the control plane
binds every interface of its host with ``--advertise-host`` its IP, TLS (a CA and a certificate for
that IP made here) and a shared secret on every channel, and a journal, so that a restart (SIGTERM,
then a new process on the same ports) keeps what was queued. Workers and the client (``fwsec_agent``:
one ``Client`` object for the whole test) dial discovery at ``tls+tcp://<cp IP>:PORT``.

Tasks are ``fwsec.exec`` (retries=2) and ``fwsec.exec_once`` (retries=0); every execution appends
its start and end (task id, worker, pid, time) to one log, so executions per task are counted
exactly. At a cut of w1's link (its switch port down for 2.5x the heartbeat timeout) the test reads
which tasks the control plane showed held by w1 (PENDING on w1: prefetched, not started), and the
log tells which ones w1 had started ("running at the cut"). Then:

- issue 14: tasks flow through both workers; what w1 ran at the cut re-runs elsewhere within the
  heartbeat timeout (plus slack), nothing accepted is lost, and after a control-plane restart the
  workers come back and new tasks from the same client object run on both;
- issue 20 (fencing), three times in a row: a task held at the cut runs exactly once (on whichever
  side), a task running at the cut at most twice and twice only with retries left, and a restart
  right after the link returns fails no task (only a retries=0 task running on w1 at the cut may
  end ``WorkerLost``, the documented fate of a task whose worker is lost); bursts from the same
  client and from a new one all succeed.

The suite's summary shows ``ran_twice_held`` (ran twice though never running at a fault: must be
0) and ``ran_twice_after_loss`` (re-runs of tasks the lost worker was running).
"""

from __future__ import annotations

import asyncio
import random
import time
from collections import Counter
from collections.abc import AsyncIterator, Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
from fwsec_agent import Agent
from fwsec_netns import Lab, daemon_env, make_pki, port_of, start_controlplane, start_worker
from fwsec_tasks import EXECUTIONS_LOG

from fastworker.controlplane.testing import RunningControlPlane, RunningWorker

HEARTBEAT_INTERVAL = 0.5
HEARTBEAT_TIMEOUT = 3.0
#: How long a cut lasts: well past the heartbeat timeout, so the control plane declares w1 lost.
CUT_SECONDS = 2.5 * HEARTBEAT_TIMEOUT
#: Allowance beyond the heartbeat timeout for w1's tasks to start elsewhere (reaper period, dispatch, a busy machine).
RERUN_SLACK = 3.0
#: A task that ended on w1 this long before the cut was surely reported; one that ended later may not have been.
REPORT_MARGIN = 1.0
SECRET = "multi-host-secret"
RETRIES = {"fwsec.exec": 2, "fwsec.exec_once": 0}


# ------------------------------------------------------------------------------------------ fleet


@dataclass
class Fleet:
    """The lab network and the processes on it; everything is stopped by pid and deleted at teardown."""

    lab: Lab
    folder: Path
    ca: Path
    cert: Path
    key: Path
    control_plane: RunningControlPlane | None = None
    ports: tuple[int, int, int] = (0, 0, 0)
    workers: dict[str, RunningWorker] = field(default_factory=dict)
    agents: list[Agent] = field(default_factory=list)
    stopped: list[Any] = field(default_factory=list)

    @property
    def discovery(self) -> str:
        assert self.control_plane is not None
        return self.control_plane.discovery

    def cp_flags(self) -> list[str]:
        return [
            "--local-concurrency", "0",
            "--heartbeat-interval", str(HEARTBEAT_INTERVAL), "--heartbeat-timeout", str(HEARTBEAT_TIMEOUT),
            "--result-cache-size", "100000", "--drain-timeout", "15",
            "--journal", str(self.folder / "tasks.journal"),
            "--tls-cert", str(self.cert), "--tls-key", str(self.key),
        ]  # fmt: skip

    def env(self, *, peer: bool = True) -> dict[str, str]:
        """The secret goes through the environment, never argv (``ps`` shows argv); peers get the CA too.

        (The control plane must not: its ``--tls-ca`` would ask every peer for a client certificate.)
        """
        return daemon_env({"FASTWORKER_SECRET": SECRET, **({"FASTWORKER_TLS_CA": str(self.ca)} if peer else {})})

    async def start_control_plane(self) -> RunningControlPlane:
        """Start it (again, on the first run's ports)."""
        self.control_plane = await asyncio.to_thread(
            start_controlplane,
            self.lab.hosts["cp"],
            self.folder,
            ports=self.ports,
            flags=self.cp_flags(),
            env=self.env(peer=False),
        )
        if self.ports == (0, 0, 0):
            cp = self.control_plane
            self.ports = (port_of(cp.discovery), port_of(cp.client), port_of(cp.dispatch))
        return self.control_plane

    async def restart_control_plane(self) -> float:
        """SIGTERM (it drains, the journal keeps the rest), then a new one on the same ports; seconds it took."""
        assert self.control_plane is not None
        began = time.monotonic()
        old = self.control_plane
        exit_code = await asyncio.to_thread(old.stop)
        self.stopped.append(old)
        assert exit_code == 0, f"the control plane exited {exit_code} on SIGTERM"
        await self.start_control_plane()
        return time.monotonic() - began

    async def start_worker(self, worker_id: str, *flags: str) -> RunningWorker:
        worker = await asyncio.to_thread(
            start_worker,
            self.lab.hosts[worker_id],
            self.folder,
            self.discovery,
            worker_id,
            flags=["--tls-ca", str(self.ca), *flags],
            env=self.env(),
        )
        self.workers[worker_id] = worker
        return worker

    async def start_agent(self) -> Agent:
        log = self.folder / f"agent-{len(self.agents)}.log"
        agent = await Agent.start(self.lab.hosts["client"].namespace, self.discovery, self.env(), log)
        self.agents.append(agent)
        return agent

    async def close(self) -> None:
        for agent in self.agents:
            await agent.stop()
        daemons = [*self.workers.values(), *([self.control_plane] if self.control_plane else [])]
        for daemon in daemons:
            await asyncio.to_thread(daemon.stop)
        for daemon in [*self.stopped, *daemons]:
            label = getattr(daemon, "worker_id", "") or "control plane"
            print(f"---- {label} pid {daemon.pid} ----")  # shown when a test fails
            print(daemon.log()[-15_000:])
        for agent in self.agents:
            print(f"---- agent pid {agent.pid} ----")
            print(agent.log_path.read_text()[-5_000:])


@pytest.fixture
async def fleet(tmp_path: Path) -> AsyncIterator[Fleet]:
    """Namespaces cp, w1, w2, client; a control plane in cp (started), nothing else yet."""
    lab = Lab.create(["cp", "w1", "w2", "client"])
    try:
        ca, cert, key = make_pki(tmp_path / "pki", lab.hosts["cp"].address)
        running = Fleet(lab, tmp_path, ca, cert, key)
        try:
            await running.start_control_plane()
            assert running.discovery.startswith(f"tls+tcp://{lab.hosts['cp'].address}:")
            yield running
        finally:
            await running.close()
    finally:
        lab.close()


# --------------------------------------------------------------------------------- executions


@dataclass
class Execution:
    """One run of a task, from the execution log."""

    worker: str
    pid: int
    started: float
    ended: float | None = None


def read_executions(directory: Path) -> dict[str, list[Execution]]:
    """Task id -> its executions in start order (an end line closes that pid's open run of the task)."""
    runs: dict[str, list[Execution]] = {}
    path = directory / EXECUTIONS_LOG
    for line in path.read_text().splitlines() if path.exists() else []:
        event, key, _attempt, worker, pid, at = line.split()
        if event == "start":
            runs.setdefault(key, []).append(Execution(worker, int(pid), float(at)))
            continue
        for run in reversed(runs.get(key, [])):
            if run.pid == int(pid) and run.ended is None:
                run.ended = float(at)
                break
    return runs


@dataclass
class AtCut:
    """What the cut worker had in hand when its link went down."""

    #: Tasks it had started and not finished long enough before the cut to have reported them.
    running: set[str]
    #: Of those, the ones still running at the cut (not ended by then): they must re-run elsewhere.
    unfinished: set[str]
    #: Tasks the control plane showed held by it (PENDING on it) just before, that it had not started.
    held: set[str]


def at_cut(runs: dict[str, list[Execution]], worker: str, cut_at: float, shown_held: Iterable[str]) -> AtCut:
    started_before = {k: r for k, rs in runs.items() for r in rs if r.worker == worker and r.started < cut_at}
    running = {k for k, r in started_before.items() if r.ended is None or r.ended > cut_at - REPORT_MARGIN}
    unfinished = {k for k, r in started_before.items() if r.ended is None or r.ended > cut_at}
    return AtCut(running, unfinished, set(shown_held) - set(started_before))


def ran_twice(runs: dict[str, list[Execution]], cut: AtCut) -> tuple[list[str], list[str]]:
    """(ran twice though never running at the cut, ran twice after the loss of the worker running them)."""
    twice = sorted(k for k, rs in runs.items() if len(rs) > 1)
    return [k for k in twice if k not in cut.running], [k for k in twice if k in cut.running]


def describe_runs(runs: list[Execution], cut_at: float, shown: int = 6) -> str:
    """``w1@-0.40s, w2@+3.21s``: who started the task when, relative to the cut (the first few runs)."""
    text = ", ".join(f"{r.worker}@{r.started - cut_at:+.2f}s" for r in runs[:shown]) or "never"
    return text + (f", ... ({len(runs)} runs)" if len(runs) > shown else "")


# ------------------------------------------------------------------------------------------ steps


class Submitted:
    """Task ids with their names, and when the control plane accepted them."""

    def __init__(self) -> None:
        self.names: dict[str, str] = {}
        self.accepted: dict[str, float] = {}
        self.failed: dict[str, str] = {}

    async def send(self, agent: Agent, tasks: list[tuple[str, str, list[Any]]]) -> dict[str, Any]:
        self.names.update((task_id, name) for task_id, name, _ in tasks)
        answer = await agent.submit(tasks)
        self.accepted.update(answer["accepted"])
        self.failed.update(answer["failed"])
        return answer


def exec_task(task_id: str, directory: Path, seconds: float, name: str = "fwsec.exec") -> tuple[str, str, list[Any]]:
    return task_id, name, [task_id, str(directory), seconds]


async def wait_for(what: str, check: Callable[[], Any], timeout: float) -> Any:
    """Poll ``check`` (sync or async) until truthy, bounded; fails naming ``what`` and the last value."""
    deadline = time.monotonic() + timeout
    last: Any = None
    while time.monotonic() < deadline:
        last = check()
        if asyncio.iscoroutine(last):
            try:
                last = await last
            except Exception as exc:  # the control plane may be restarting: ask again
                last = f"{type(exc).__name__}: {exc}"
        if last and not isinstance(last, str):
            return last
        await asyncio.sleep(0.1)
    pytest.fail(f"{what} did not happen within {timeout:g} s (last: {last})")


async def workers_listed(agent: Agent, expected: set[str], timeout: float = 30) -> float:
    began = time.monotonic()

    async def listed() -> bool | str:
        seen = set(await agent.call("workers", timeout=10))
        return seen == expected or f"listed {sorted(seen)}"

    await wait_for(f"workers {sorted(expected)} listed", listed, timeout)
    return time.monotonic() - began


async def settle(agent: Agent, task_ids: Iterable[str], timeout: float = 60) -> dict[str, Any]:
    infos: dict[str, Any] = await agent.call("status", timeout=timeout + 30, ids=sorted(task_ids), wait=timeout)
    return infos


def unfinished(infos: dict[str, Any]) -> list[str]:
    """Tasks unknown to the control plane or not final: lost."""
    return sorted(
        f"{t}: {i['state'] if i else 'unknown'}"
        for t, i in infos.items()
        if i is None or i["state"] not in ("SUCCESS", "FAILURE", "CANCELLED")
    )


async def held_and_cut(fleet: Fleet, agent: Agent, worker: str, wait: float = 5.0) -> tuple[float, list[str]]:
    """Read what the control plane shows held by ``worker``, then cut its link at once; (cut time, held ids).

    Waits (at most ``wait`` seconds) until the worker holds some: on a busy machine its refill request may lag.
    """
    deadline = time.monotonic() + wait
    shown = await agent.call("tasks", timeout=10, worker=worker)
    while not any(state == "PENDING" for _, state in shown) and time.monotonic() < deadline:
        await asyncio.sleep(0.05)
        shown = await agent.call("tasks", timeout=10, worker=worker)
    fleet.lab.cut(worker)
    cut_at = time.time()
    return cut_at, [task_id for task_id, state in shown if state == "PENDING"]


# ------------------------------------------------------------------------------------------ tests


@pytest.mark.timeout(180)
async def test_tasks_flow_across_hosts_survive_a_cut_link_and_a_control_plane_restart(
    fleet: Fleet, security_report: Callable[..., None]
) -> None:
    """Issue 14: TLS + secret across four namespaces; a cut and a restart lose nothing."""
    runs_dir = fleet.folder / "flow"
    runs_dir.mkdir()
    await fleet.start_worker("w1", "--concurrency", "2", "--prefetch", "8")
    await fleet.start_worker("w2", "--concurrency", "2", "--prefetch", "8")
    agent = await fleet.start_agent()
    await workers_listed(agent, {"w1", "w2"})
    submitted = Submitted()
    rng = random.Random()
    durations = [0.001, 0.002, 0.005, 0.01, 0.05, 0.2, 0.5]
    stop_load = asyncio.Event()

    async def load() -> None:
        """About 30 tasks a second until told to stop; through the cut and the restart."""
        index = 0
        while not stop_load.is_set():
            batch = [exec_task(f"a-{index + n:05d}", runs_dir, rng.choice(durations)) for n in range(6)]
            index += len(batch)
            await submitted.send(agent, batch)
            await asyncio.sleep(0.2)

    loader = asyncio.create_task(load())
    try:
        await wait_for(
            "both workers running tasks",
            lambda: {r.worker for rs in read_executions(runs_dir).values() for r in rs} >= {"w1", "w2"},
            30,
        )
        await asyncio.sleep(1.0)
        # Random load may leave w1 idle at any instant: long tasks (one per slot) make sure it runs some at the cut.
        staged = [exec_task(f"stage-{n}", runs_dir, 3.0) for n in range(4)]
        await submitted.send(agent, staged)
        await wait_for(
            "w1 running a staged long task",
            lambda: any(
                r.worker == "w1" and r.ended is None
                for task_id, _, _ in staged
                for r in read_executions(runs_dir).get(task_id, [])
            ),
            15,
        )
        # (Waiting at most 1 s for held tasks: longer, the staged run could end before the cut.)
        cut_at, shown_held = await held_and_cut(fleet, agent, "w1", wait=1.0)
        try:
            await asyncio.sleep(CUT_SECONDS)
        finally:
            fleet.lab.restore("w1")
        restored_at = time.time()
        rejoined_after = await workers_listed(agent, {"w1", "w2"})
        await asyncio.sleep(1.0)
        restart_at = time.time()
        restart_took = await fleet.restart_control_plane()
        back_after = await workers_listed(agent, {"w1", "w2"})
        await asyncio.sleep(1.0)
    finally:
        stop_load.set()
        await asyncio.wait_for(loader, 90)

    # New tasks after the restart, from the same client object: all succeed, on both workers.
    burst = [exec_task(f"after-{n:03d}", runs_dir, 0.05) for n in range(40)]
    answer = await submitted.send(agent, burst)
    infos = await settle(agent, submitted.accepted)
    runs = read_executions(runs_dir)
    cut = at_cut(runs, "w1", cut_at, shown_held)
    twice_held, twice_after_loss = ran_twice(runs, cut)
    late = {
        k: min((r.started for r in runs.get(k, []) if r.worker != "w1" and r.started > cut_at), default=None)
        for k in cut.unfinished
    }
    security_report(
        fault=f"multi-host link cut {CUT_SECONDS:g}s + control-plane restart",
        faults_injected=2,
        tasks_accepted=len(submitted.accepted),
        tasks_lost=len(unfinished(infos)),
        reruns_after_loss=sum(1 for i in infos.values() if i and i["attempts"] > 1),
        ran_twice_held=len(twice_held),
        ran_twice_after_loss=len(twice_after_loss),
        running_at_cut=len(cut.running),
        held_at_cut=len(cut.held),
        w1_rejoined_after_s=round(rejoined_after, 2),
        restart_s=round(restart_took, 2),
        workers_back_after_s=round(back_after, 2),
    )
    assert submitted.failed == {}, f"submissions never accepted: {list(submitted.failed.items())[:5]}"
    assert unfinished(infos) == [], f"accepted tasks lost: {unfinished(infos)[:10]}"
    not_ok = sorted((t, i["state"], i["error"]) for t, i in infos.items() if i["state"] != "SUCCESS")
    assert not_ok == [], f"{len(not_ok)} tasks did not succeed: {not_ok[:10]}"
    assert cut.unfinished, "w1 was running nothing at the cut: the fault tested nothing"
    bound = HEARTBEAT_TIMEOUT + RERUN_SLACK
    slow = sorted(
        (k, "never" if at is None else f"{at - cut_at:.2f}s")
        for k, at in late.items()
        if at is None or at - cut_at > bound
    )
    assert slow == [], f"tasks w1 was running at the cut not re-run elsewhere within {bound:g} s: {slow[:10]}"
    assert restored_at - cut_at >= CUT_SECONDS
    burst_ids = [task_id for task_id, _, _ in burst]
    assert sorted(answer["accepted"]) == burst_ids, f"burst after the restart refused: {answer['failed']}"
    ran_on = Counter(runs[t][-1].worker for t in burst_ids)
    assert set(ran_on) == {"w1", "w2"}, f"after the restart, tasks ran only on {dict(ran_on)}"
    # Issue 20 (fencing): a task w1 held but never started must not run twice.
    assert twice_held == [], (
        f"{len(twice_held)} tasks ran twice though w1 was not running them at the cut "
        f"(held at the cut: {len(cut.held)}; times from the cut, link back at +{restored_at - cut_at:.1f}s, "
        f"restart at +{restart_at - cut_at:.1f}s): "
        + "; ".join(f"{k} [{describe_runs(runs[k], cut_at)}]" for k in twice_held[:10])
    )


@dataclass
class RoundOutcome:
    """What one cut-and-restart round saw, and what it found wrong."""

    problems: list[str] = field(default_factory=list)
    numbers: dict[str, int] = field(default_factory=dict)


async def cut_then_restart_round(fleet: Fleet, agent: Agent, round_: int) -> RoundOutcome:
    """Stage w1 with running and held tasks, cut it, restore, restart the control plane at once; judge."""
    outcome = RoundOutcome()
    runs_dir = fleet.folder / f"round-{round_}"
    runs_dir.mkdir()
    submitted = Submitted()
    names = list(RETRIES)
    # Short tasks first, so that both workers prefetch (they do while recent tasks average < 20 ms).
    warm = [exec_task(f"r{round_}-warm-{n:03d}", runs_dir, 0.001, names[n % 2]) for n in range(80)]
    await submitted.send(agent, warm)
    await settle(agent, [t for t, _, _ in warm], timeout=30)
    # Long tasks fill every slot (2 per worker, both kinds), then short ones queue up behind them:
    # each worker holds some in its prefetch queue, the rest wait in the control plane.
    long = [exec_task(f"r{round_}-long-{n}", runs_dir, 3.5 + 0.25 * n, names[n % 2]) for n in range(4)]
    await submitted.send(agent, long)
    await wait_for(
        "the long tasks starting",
        lambda: sum(1 for t, _, _ in long if t in read_executions(runs_dir)) >= 4,
        15,
    )
    short = [exec_task(f"r{round_}-short-{n:03d}", runs_dir, 0.002, names[n % 2]) for n in range(60)]
    await submitted.send(agent, short)
    await asyncio.sleep(0.3)  # the workers' refill requests take their share
    cut_at, shown_held = await held_and_cut(fleet, agent, "w1")
    try:
        await asyncio.sleep(CUT_SECONDS)
    finally:
        fleet.lab.restore("w1")
    await asyncio.sleep(0.3)  # restart right after the link is back
    restart_at = time.time()
    restart_took = await fleet.restart_control_plane()
    back_after = await workers_listed(agent, {"w1", "w2"})

    # Bursts after the restart: 30 from the same client object, 40 from a new one.
    burst = [exec_task(f"r{round_}-burst-{n:03d}", runs_dir, 0.01, names[n % 2]) for n in range(30)]
    answers = [await submitted.send(agent, burst)]
    newcomer = await fleet.start_agent()
    fresh = [exec_task(f"r{round_}-new-{n:03d}", runs_dir, 0.01, names[n % 2]) for n in range(40)]
    answers.append(await submitted.send(newcomer, fresh))
    infos = await settle(agent, submitted.accepted)
    await newcomer.stop()

    runs = read_executions(runs_dir)
    cut = at_cut(runs, "w1", cut_at, shown_held)
    twice_held, twice_after_loss = ran_twice(runs, cut)
    outcome.numbers = {
        "tasks_accepted": len(submitted.accepted),
        "tasks_lost": len(unfinished(infos)),
        "reruns_after_loss": sum(1 for i in infos.values() if i and i["attempts"] > 1),
        "ran_twice_held": len(twice_held),
        "ran_twice_after_loss": len(twice_after_loss),
        "running_at_cut": len(cut.running),
        "held_at_cut": len(cut.held),
        "restart_ms": round(restart_took * 1000),
        "workers_back_ms": round(back_after * 1000),
    }
    problems = outcome.problems
    if not cut.held or not cut.unfinished:
        problems.append(f"staging: w1 held {len(cut.held)} and was running {len(cut.unfinished)} tasks at the cut")
    if submitted.failed or any(a["failed"] for a in answers):
        problems.append(f"submissions refused: {list(submitted.failed.items())[:5]}")
    if unfinished(infos):
        problems.append(f"accepted tasks lost: {unfinished(infos)[:10]}")
    held_wrong = sorted(k for k in cut.held if len(runs.get(k, [])) != 1)
    if held_wrong:
        problems.append(
            f"{len(held_wrong)} of {len(cut.held)} tasks held by w1 at the cut did not run exactly once: "
            + "; ".join(f"{k} [{describe_runs(runs.get(k, []), cut_at)}]" for k in held_wrong[:6])
        )
    too_many = sorted(k for k in cut.running if len(runs[k]) > min(2, 1 + RETRIES[submitted.names[k]]))
    if too_many:
        problems.append(
            f"{len(too_many)} of {len(cut.running)} tasks running on w1 at the cut ran more than their retries allow: "
            + "; ".join(
                f"{k} retries={RETRIES[submitted.names[k]]} [{describe_runs(runs[k], cut_at)}]" for k in too_many[:6]
            )
        )
    if twice_held:
        problems.append(
            f"ran_twice_held={len(twice_held)}: "
            + "; ".join(f"{k} [{describe_runs(runs[k], cut_at)}]" for k in twice_held[:6])
        )
    # A retries=0 task w1 was running when it was declared lost may end WorkerLost (docs/reference.md); nothing else fails.
    may_fail = {k for k in cut.running if RETRIES[submitted.names[k]] == 0}
    failed = sorted(
        (t, i["state"], i["error"])
        for t, i in infos.items()
        if i
        and i["state"] != "SUCCESS"
        and not (t in may_fail and i["state"] == "FAILURE" and str(i["error"]).startswith("WorkerLost"))
    )
    if failed:
        problems.append(f"{len(failed)} tasks did not succeed: {failed[:6]}")
    if problems:
        problems.insert(
            0, f"times from the cut; link back at +{CUT_SECONDS:g}s, restart at +{restart_at - cut_at:.1f}s"
        )
    return outcome


@pytest.mark.timeout(300)
async def test_held_tasks_run_once_and_a_restart_right_after_a_cut_fails_nothing_three_times_in_a_row(
    fleet: Fleet, security_report: Callable[..., None]
) -> None:
    """Issue 20 (fencing): exactly once for held tasks, at most twice (with retries) for running ones."""
    await fleet.start_worker("w1", "--concurrency", "2", "--prefetch", "8")
    await fleet.start_worker("w2", "--concurrency", "2", "--prefetch", "8")
    agent = await fleet.start_agent()
    await workers_listed(agent, {"w1", "w2"})
    problems: list[str] = []
    for round_ in range(1, 4):
        outcome = await cut_then_restart_round(fleet, agent, round_)
        security_report(
            fault=f"round {round_}: cut w1 {CUT_SECONDS:g}s, restart 0.3s after the link returned",
            faults_injected=2,
            **outcome.numbers,
        )
        problems += [f"round {round_}: {p}" for p in outcome.problems]
    assert problems == [], "\n".join(problems)
