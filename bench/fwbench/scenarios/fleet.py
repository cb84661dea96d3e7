"""``fleet`` (opt-in): one control plane with 1, 10, 100 and 500 connected subworkers, a row per size.

``python bench/run.py --scenarios fleet --repeats 1`` (about 4 minutes on the 2-core VM). Each row
gets a fresh control plane (``--local-concurrency 0``, so every task goes through dispatch; the
per-peer connection cap raised, since every worker connects from 127.0.0.1) and measures:

- **idle control-plane CPU**, % of one core, over 5 s with the fleet connected and no task (and,
  before the fleet connects, the control plane alone); for simulated rows also the requests per
  second the fleet sent meanwhile (heartbeats and held work requests: 2 per worker and second);
- **discovery bytes/s**: what one subscriber (a pynng ``Sub0`` of our own) receives on the
  discovery address, and that times the fleet (every worker subscribes); for simulated rows also
  the **dispatch-channel bytes/s** per worker, counted by the simulator;
- **memory per connected worker**: (control-plane RSS with the fleet - RSS before it) / N;
- **dispatch throughput**: ``--tasks`` (20,000) ``add(i, i)`` via ``delay_many`` then
  ``wait_many``, every result checked; the control plane's CPU per task (everything it spent in
  the run) and its inverse, tasks per control-plane CPU-second: a lower bound on what one core
  dispatches at this fleet size (the JSON also has an upper bound, the idle share given back);
- **registration after a restart**: the control plane is stopped (SIGTERM) and a new one started
  on the same addresses, and the whole fleet registers again at once (the stampede a real fleet
  makes); seconds from the new one's ready file until ``stats()`` counts every worker, its CPU per
  registration, the workers it declared lost meanwhile (from its log), then a batch of tasks must
  run on the fleet. A fleet that does not register within ``registration_bound``, or tasks that
  fail ``WorkerLost`` because the new control plane dropped live workers, are *findings*, printed
  under the table; a wrong result is a failure as in every scenario.

Sizes up to ``--fleet-real-max`` (10) run real ``fastworker-worker`` processes
(``--concurrency`` = ``--fleet-capacity``, 2, and the CLI's default prefetch); larger ones run
**simulated** workers (``fwbench.fleetsim``: FastWorker's own worker runtime, many per process,
the task run in place), and a simulated row at the largest real size comes right after the real
one, so the two can be compared. The control plane runs at normal priority and everything else
(this client, the simulators, the real workers) at nice ``FLEET_NICE``: in production the fleet is
on other hosts. The fleet side's CPU is reported, so a reader can tell who the bottleneck was.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import sys
import tempfile
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pynng

from fastworker.client import Client, FastworkerError, TaskInfo, TaskState
from fastworker.controlplane.testing import RunningControlPlane, start_controlplane
from fwbench.core import (
    TASK_MODULE,
    Metric,
    Options,
    collect_infos,
    controlplane_env,
    fleet,
    scenario,
    short,
    submit_batches,
    verify,
    wait_for_workers,
)
from fwbench.fleetsim import DEFAULT_TASK_TIME, STATUS_INTERVAL
from fwbench.procs import process_cpu_seconds, process_rss_mb, start_process, stop_process
from fwbench.scenarios.local import _cp

#: Simulated workers per simulator process (a 500-worker fleet runs in 4 processes).
SIM_PER_PROCESS = 125
#: Seconds a simulated task "runs" (a real worker's round trip to its task process).
SIM_TASK_TIME = DEFAULT_TASK_TIME
#: Simulated workers joining per second when a simulated fleet starts (500 join over 10 s).
SIM_RAMP_PER_S = 50.0
#: How much lower than the control plane's the priority of everything else is (``Placement``).
FLEET_NICE = 10
#: Most tasks of the check that the fleet runs tasks after the restart.
AFTER_RESTART_TASKS = 2_000


@dataclass(frozen=True)
class Row:
    """One row of the curve: a fleet size, real worker processes or simulated workers."""

    size: int
    simulated: bool

    @property
    def key(self) -> str:
        """Prefix of the row's metrics in the JSON (``real10_e2e_tps``, ``sim500_idle_cpu_pct``)."""
        return f"{'sim' if self.simulated else 'real'}{self.size}"

    @property
    def label(self) -> str:
        """How the row is named in the table."""
        return f"{self.size:,} {'simulated' if self.simulated else 'real'}"


def plan(opts: Options) -> list[Row]:
    """The rows: each size, real up to ``fleet_real_max``; a simulated twin of the largest real row."""
    rows = [Row(size, size > opts.fleet_real_max) for size in sorted({s for s in opts.fleet_sizes if s > 0})]
    real = [row for row in rows if not row.simulated]
    if real and len(real) < len(rows):
        rows.insert(rows.index(real[-1]) + 1, Row(real[-1].size, True))
    return rows


def _timings(opts: Options) -> dict[str, float]:
    if opts.quick:
        return {"base": 1.0, "settle": 0.6, "idle": 1.5}
    return {"base": 2.0, "settle": 2.0, "idle": 5.0}


def fleet_args(opts: Options) -> list[str]:
    """Control-plane flags: dispatch only, a cache for every result, and room for the fleet's connections."""
    biggest = max(opts.fleet_sizes, default=1)
    return [
        "--local-concurrency",
        "0",
        "--result-cache-size",
        str(max(100_000, 2 * (opts.tasks + AFTER_RESTART_TASKS))),
        "--max-connections",
        str(max(1024, biggest + 64)),
        "--max-connections-per-peer",
        str(max(256, biggest + 64)),
    ]


def _start_cp(opts: Options, workdir: Path, like: RunningControlPlane | None = None) -> RunningControlPlane:
    """A control plane for the bench tasks (at normal priority, see ``Placement``); on ``like``'s addresses if given."""
    fresh = "tcp://127.0.0.1:0"
    cp = start_controlplane(
        task_modules=[TASK_MODULE],
        extra_args=fleet_args(opts),
        env=controlplane_env(),
        workdir=workdir,
        discovery=like.discovery if like is not None else fresh,
        client=like.client if like is not None else fresh,
        dispatch=like.dispatch if like is not None else fresh,
    )
    PLACEMENT.place_controlplane(cp.pid)
    return cp


class Placement:
    """The control plane first: everything else this benchmark runs gets ``nice`` ``FLEET_NICE``.

    "One control plane on one core" is the unit of the sizing rule, and in production the fleet
    and the clients run on other hosts. On this one machine the benchmark process (the client)
    lowers its own priority, so that what it starts (simulators, real workers and their task
    processes) inherits it, and puts every control plane it starts back at normal priority (nice
    is per thread on Linux: every thread; threads made later inherit it). Then the control plane
    gets a core whenever it needs one, and the rest share what is left. Off where priorities cannot
    be lowered back (no privilege).
    """

    def __init__(self) -> None:
        self.original: int | None = None

    @staticmethod
    def _renice(pid: int, nice: int) -> None:
        for task in Path(f"/proc/{pid}/task").iterdir():
            with contextlib.suppress(OSError, ValueError):
                os.setpriority(os.PRIO_PROCESS, int(task.name), nice)

    def start(self) -> str:
        """Lower this process's priority (and so that of what it starts); returns how things were placed."""
        try:
            original = os.getpriority(os.PRIO_PROCESS, 0)
            os.setpriority(os.PRIO_PROCESS, 0, min(19, original + FLEET_NICE))
            os.setpriority(os.PRIO_PROCESS, 0, original)  # may we raise it back? (the control planes need it)
        except (AttributeError, OSError):
            return "not prioritized (priorities cannot be raised back here)"
        self.original = original
        self._renice(os.getpid(), min(19, original + FLEET_NICE))
        return (
            f"control plane at nice {original}; this client, the simulators and the real workers at nice "
            f"{min(19, original + FLEET_NICE)} (the control plane gets a core when it needs one)"
        )

    def place_controlplane(self, pid: int) -> None:
        """Put a control plane (every thread it has) back at normal priority."""
        if self.original is not None:
            self._renice(pid, self.original)

    def stop(self) -> None:
        """This process's own priority back (for the scenarios that run after this one)."""
        if self.original is not None:
            self._renice(os.getpid(), self.original)
        self.original = None


PLACEMENT = Placement()


# ------------------------------------------------------------------------------------------ fleets


def _children(pids: Sequence[int]) -> list[int]:
    """Direct children of the given processes (a real worker's task processes), from /proc."""
    wanted = set(pids)
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
        except OSError:
            continue
        if int(stat[stat.rindex(")") + 2 :].split()[1]) in wanted:
            found.append(int(entry.name))
    return found


def cpu_seconds(pids: Sequence[int]) -> float:
    return sum(process_cpu_seconds(pid) or 0.0 for pid in pids)


class Fleet:
    """What the measurements need of a fleet: its processes, and (simulated) its traffic counters."""

    simulated = False

    def __init__(self, ids: Sequence[str], pids: Sequence[int]) -> None:
        self.ids = list(ids)
        self.pids = list(pids)

    def counters(self) -> dict[str, Any] | None:
        """Traffic counters (simulated fleets only)."""
        return None


class SimulatedFleet(Fleet):
    """Simulator processes (``fwbench.fleetsim``) and their status files."""

    simulated = True

    def __init__(self, ids: Sequence[str], pids: Sequence[int], status: Sequence[Path]) -> None:
        super().__init__(ids, pids)
        self.status = list(status)

    def counters(self) -> dict[str, Any] | None:
        """The simulator processes' counters, summed (``t``: the oldest status time)."""
        total: dict[str, Any] = {"t": float("inf"), "started": True, "requests": 0, "register": 0, "attempts": 0}
        for path in self.status:
            try:
                one = json.loads(path.read_text())
            except (OSError, ValueError):
                return None
            total["t"] = min(total["t"], one["t"])
            total["started"] = total["started"] and one.get("started", False)
            total["requests"] += sum(one["requests"].values())
            total["register"] += one["requests"].get("register", 0)
            total["attempts"] += sum(one["attempts"].values())
            total["register_attempts"] = total.get("register_attempts", 0) + one["attempts"].get("register", 0)
            for key in ("running", "bytes_sent", "bytes_received", "tasks", "failed"):
                total[key] = total.get(key, 0) + one[key]
        return total


@contextlib.contextmanager
def simulated_fleet(
    cp: RunningControlPlane, size: int, capacity: int, folder: Path, ramp: float
) -> Iterator[SimulatedFleet]:
    """``size`` simulated workers in processes of up to ``SIM_PER_PROCESS``, stopped by pid when the block ends.

    They join over ``ramp`` seconds (a fleet rolled out, not a stampede: the stampede is the
    restart's).
    """
    prefix = f"sim{size}"
    env = {k: v for k, v in os.environ.items() if not k.startswith("FASTWORKER_")}
    env.update(controlplane_env())
    processes = []
    status = []
    try:
        for index, start in enumerate(range(0, size, SIM_PER_PROCESS)):
            path = folder / f"{prefix}-{index}.json"
            argv = [sys.executable, "-m", "fwbench.fleetsim", "--discovery", cp.discovery, "--prefix", prefix]
            argv += ["--start", str(start), "--count", str(min(SIM_PER_PROCESS, size - start))]
            argv += ["--capacity", str(capacity), "--task-time", str(SIM_TASK_TIME), "--status", str(path)]
            argv += ["--ramp", f"{ramp:.3f}"]
            processes.append(start_process(argv, log_path=folder / f"{prefix}-{index}.log", env=env))
            status.append(path)
        ids = [f"{prefix}-{i}" for i in range(size)]
        yield SimulatedFleet(ids, [p.pid for p in processes], status)
    finally:
        for process in processes:
            stop_process(process)


@contextlib.contextmanager
def real_fleet(cp: RunningControlPlane, size: int, capacity: int) -> Iterator[Fleet]:
    """``size`` real subworkers (``fleet``); their pids include their task processes."""
    with fleet(cp, size, capacity, prefix=f"real{size}") as workers:
        parents = [w.pid for w in workers]
        yield Fleet([w.worker_id for w in workers], parents + _children(parents))


# ------------------------------------------------------------------------------------ measurements


async def settled_rss(pid: int, settle: float) -> float:
    """RSS in MiB after ``settle`` seconds (the last of a few reads)."""
    value = float("nan")
    for _ in range(3):
        await asyncio.sleep(settle / 3)
        value = process_rss_mb(pid) or float("nan")
    return value


def count_discovery(address: str, seconds: float) -> tuple[int, int, float]:
    """(bytes, messages, seconds) one subscriber receives on the discovery address, from its first message on."""
    with pynng.Sub0(recv_timeout=200) as sub:
        sub.subscribe(b"")
        sub.dial(address, block=False)
        connected = time.monotonic() + 5.0
        while True:
            try:
                sub.recv()
                break
            except pynng.Timeout:
                if time.monotonic() > connected:
                    return 0, 0, 0.0
        start = time.monotonic()
        total = messages = 0
        while time.monotonic() < start + seconds:
            try:
                data = sub.recv()
            except pynng.Timeout:
                continue
            total += len(data)
            messages += 1
        return total, messages, time.monotonic() - start


async def cp_cpu_pct(cp: RunningControlPlane, seconds: float) -> float:
    """The control plane's CPU over ``seconds``, in % of one core."""
    before, t0 = process_cpu_seconds(cp.pid) or 0.0, time.perf_counter()
    await asyncio.sleep(seconds)
    return ((process_cpu_seconds(cp.pid) or 0.0) - before) / (time.perf_counter() - t0) * 100


async def idle_window(cp: RunningControlPlane, fl: Fleet, seconds: float) -> dict[str, Any]:
    """Fleet connected, no task: control-plane and fleet CPU, discovery and dispatch-channel traffic."""
    counting = asyncio.ensure_future(asyncio.to_thread(count_discovery, cp.discovery, seconds))
    cp0, fleet0, sim0, t0 = process_cpu_seconds(cp.pid) or 0.0, cpu_seconds(fl.pids), fl.counters(), time.perf_counter()
    await asyncio.sleep(seconds)
    cp1, fleet1, sim1, t1 = process_cpu_seconds(cp.pid) or 0.0, cpu_seconds(fl.pids), fl.counters(), time.perf_counter()
    disc_bytes, disc_messages, disc_seconds = await counting
    size = len(fl.ids)
    out: dict[str, Any] = {
        "idle_cpu_pct": (cp1 - cp0) / (t1 - t0) * 100,
        "idle_fleet_cpu_pct": (fleet1 - fleet0) / (t1 - t0) * 100,
    }
    if disc_seconds > 0:
        per_subscriber = disc_bytes / disc_seconds
        out.update(
            {
                "discovery_bps_per_subscriber": per_subscriber,
                "discovery_messages_per_s": disc_messages / disc_seconds,
                "announcement_bytes": disc_bytes / max(1, disc_messages),
                "discovery_bps_fleet": per_subscriber * size,
            }
        )
    if sim0 is not None and sim1 is not None and sim1["t"] > sim0["t"]:
        span = sim1["t"] - sim0["t"]
        out.update(
            {
                "dispatch_bps_per_worker": (
                    (sim1["bytes_sent"] - sim0["bytes_sent"] + sim1["bytes_received"] - sim0["bytes_received"])
                    / span
                    / size
                ),
                "idle_requests_per_s": (sim1["requests"] - sim0["requests"]) / span,
            }
        )
        out["dispatch_bps_fleet"] = out["dispatch_bps_per_worker"] * size
        out["idle_cp_us_per_request"] = (cp1 - cp0) / (t1 - t0) * 1e6 / max(1e-9, out["idle_requests_per_s"])
    return out


async def dispatch_run(
    client: Client, cp: RunningControlPlane, fl: Fleet, opts: Options, idle_share: float, problems: list[str]
) -> dict[str, Any]:
    """``opts.tasks`` add(i, i) via delay_many then wait_many through the fleet; every result checked."""
    n = opts.tasks
    sim0 = fl.counters()
    cp0, fleet0, t0 = process_cpu_seconds(cp.pid) or 0.0, cpu_seconds(fl.pids), time.perf_counter()
    ids, submit_problems = await submit_batches(client, n, opts)
    accepted = [task_id for task_id in ids if task_id is not None]
    infos, wait_problems = await collect_infos(client, accepted, opts.wait_timeout)
    elapsed = time.perf_counter() - t0
    cp_cpu, fleet_cpu = (process_cpu_seconds(cp.pid) or 0.0) - cp0, cpu_seconds(fl.pids) - fleet0
    problems += submit_problems + wait_problems
    correct, wrong, lost = verify(ids, infos, lambda i: 2 * i, problems)
    used = {info.worker for info in infos if info is not None and info.worker}
    # Two readings of "how many tasks/s could one core dispatch at this fleet size": every CPU
    # second the control plane spent in the run, per task (a lower bound on the capacity: at
    # saturation the background of heartbeats and announcements is spread over more tasks), and the
    # same with the whole idle share taken out and given back as a budget (an upper bound: while
    # tasks flow, the held work requests that make half the idle traffic are answered with tasks).
    marginal_us = (cp_cpu - idle_share * elapsed) / n * 1e6
    if marginal_us < 0.2 * cp_cpu / n * 1e6:
        marginal_us = float("nan")  # the run was busier than idle by too little to tell
    out = {
        "tasks": n,
        "correct": correct,
        "wrong": wrong,
        "lost": lost,
        "e2e_tps": n / elapsed,
        "cp_us_per_task": cp_cpu / n * 1e6,
        "cp_busy_pct": cp_cpu / elapsed * 100,
        "fleet_busy_pct": fleet_cpu / elapsed * 100,
        "workers_used": len(used),
        "one_core_tps": n / cp_cpu if cp_cpu > 0 else float("nan"),
        "cp_marginal_us_per_task": marginal_us,
        "one_core_tps_upper": (1 - idle_share) * 1e6 / marginal_us,
    }
    await asyncio.sleep(2 * STATUS_INTERVAL)  # the simulators' status files catch up
    sim1 = fl.counters()
    if sim0 is not None and sim1 is not None:
        out["sim_requests_per_task"] = (sim1["requests"] - sim0["requests"]) / n
    if len(used) < min(len(fl.ids), n):
        problems.append(f"{len(used)} of {len(fl.ids)} workers ran tasks")
    return out


def registration_bound(size: int) -> float:
    """Seconds a fleet of ``size`` gets to register again after a restart before the row says it did not."""
    return max(30.0, size / 10)


async def restart(
    client: Client,
    cp: RunningControlPlane,
    fl: Fleet,
    opts: Options,
    workdir: Path,
    problems: list[str],
    findings: list[str],
) -> tuple[RunningControlPlane | None, dict[str, Any]]:
    """SIGTERM the control plane, start a new one on its addresses, time the fleet's registration, run a batch.

    Every worker registers again at once (the new instance announces itself, or answers "not
    registered"): the stampede a real fleet makes when its control plane restarts. A fleet that
    has not registered within ``registration_bound`` is a finding (reported, the run stays valid).
    """
    size = len(fl.ids)
    bound = registration_bound(size)
    sim0 = fl.counters()
    t0 = time.monotonic()
    exit_code = await asyncio.to_thread(cp.stop)
    t_stopped = time.monotonic()
    try:
        new = await asyncio.to_thread(_start_cp, opts, workdir, cp)
    except Exception as exc:  # the addresses could not be bound again, for one
        problems.append(f"restart: {short(exc)}")
        return None, {}
    t_ready = time.monotonic()
    cpu0 = process_cpu_seconds(new.pid) or 0.0
    deadline = t_ready + bound
    registered = 0
    timeline: list[tuple[float, int]] = []
    while (now := time.monotonic()) < deadline:
        try:
            async with asyncio.timeout(deadline - now):
                registered = int((await client.stats()).get("workers") or 0)
        except (FastworkerError, TimeoutError):
            pass
        if not timeline or time.monotonic() - t_ready - timeline[-1][0] >= 1.0:
            timeline.append((round(time.monotonic() - t_ready, 2), registered))
        if registered >= size:
            break
        await asyncio.sleep(0.02)
    t_end = time.monotonic()
    cpu = (process_cpu_seconds(new.pid) or 0.0) - cpu0
    await asyncio.sleep(2 * STATUS_INTERVAL)  # the simulators' status files catch up
    sim1 = fl.counters()
    complete = registered >= size
    out: dict[str, Any] = {
        "restart_stop_s": t_stopped - t0,
        "restart_start_s": t_ready - t_stopped,
        "old_cp_exit_code": exit_code,
        "registered_after_restart": registered,
        "registration_complete": complete,
        "registration_timeline": timeline,
        "registration_cp_busy_pct": cpu / (t_end - t_ready) * 100,
    }
    if sim0 is not None and sim1 is not None:
        out["registration_requests_per_worker"] = (sim1["register"] - sim0["register"]) / size
        out["registration_attempts_per_worker"] = (sim1["register_attempts"] - sim0["register_attempts"]) / size
    if not complete:
        attempts = out.get("registration_attempts_per_worker")
        findings.append(
            f"{size:,} workers: after the restart only {registered:,} had registered within {bound:g} s "
            f"(the control plane {out['registration_cp_busy_pct']:.0f}% busy"
            + (f"; {attempts:.1f} registration requests sent per worker)" if attempts is not None else ")")
        )
        return new, out
    out["registration_s"] = t_end - t_ready
    out["registration_cp_ms_per_worker"] = cpu / size * 1e3
    listed = {w["worker_id"] for w in await client.workers()}
    if listed - set(fl.ids):
        problems.append(f"after the restart workers() lists ids not in the fleet: {sorted(listed - set(fl.ids))[:5]}")
    n = min(opts.tasks, AFTER_RESTART_TASKS)
    ids = await client.delay_many([("add", (i, i)) for i in range(n)])
    infos, wait_problems = await collect_infos(client, ids, opts.wait_timeout)
    problems += [f"after the restart: {p}" for p in wait_problems]
    # A task that failed WorkerLost was on a worker the control plane declared lost in the storm's
    # wake (its heartbeats waited behind the registrations): a finding about the control plane,
    # counted apart. Any other failure, or a wrong value, is a problem.
    worker_lost = 0
    check: list[str] = []
    kept_ids: list[str | None] = []
    kept_infos: list[TaskInfo | None] = []
    for task_id, info in zip(ids, infos, strict=True):
        if info is not None and info.state is TaskState.FAILURE and info.error and info.error.type == "WorkerLost":
            worker_lost += 1
            kept_ids.append(None)  # counted as lost by verify: subtracted below
            continue
        kept_ids.append(task_id)
        kept_infos.append(info)
    _, wrong, lost = verify(kept_ids, kept_infos, lambda i: 2 * i, check)
    lost -= worker_lost
    problems += [f"after the restart: {p}" for p in check]
    log = new.log()
    out.update(
        {
            "after_restart_tasks": n,
            "after_restart_wrong": wrong,
            "after_restart_lost": lost,
            "after_restart_worker_lost_tasks": worker_lost,
            "workers_declared_lost": log.count(" lost (no heartbeat"),
            "stalls_detected": log.count("this control plane was stalled"),
        }
    )
    if out["workers_declared_lost"] or worker_lost:
        findings.append(
            f"{size:,} workers: right after the restart the new control plane declared "
            f"{out['workers_declared_lost']:,} live workers lost (no heartbeat for more than the 5 s timeout); "
            f"{worker_lost:,} of {n:,} tasks submitted then failed WorkerLost"
        )
    return new, out


async def measure_row(row: Row, opts: Options, first: RunningControlPlane | None, workdir: Path) -> dict[str, Any]:
    """Every figure of one row, on a control plane of its own (``first``, or a fresh one)."""
    timing = _timings(opts)
    problems: list[str] = []
    findings: list[str] = []
    cp = first if first is not None else await asyncio.to_thread(_start_cp, opts, workdir)
    started = [cp]
    m: dict[str, Any] = {
        "workers": row.size,
        "simulated": row.simulated,
        "label": row.label,
        "problems": problems,
        "findings": findings,
        "loadavg_before": os.getloadavg()[0],
    }
    try:
        async with Client(cp.discovery) as client:
            await client.stats()
            m["idle0_cpu_pct"] = await cp_cpu_pct(cp, timing["base"])
            rss0 = await settled_rss(cp.pid, timing["settle"])
            folder = workdir / row.key
            folder.mkdir(exist_ok=True)
            ramp = row.size / SIM_RAMP_PER_S
            t0 = time.monotonic()
            with (
                simulated_fleet(cp, row.size, opts.fleet_capacity, folder, ramp)
                if row.simulated
                else real_fleet(cp, row.size, opts.fleet_capacity)
            ) as fl:
                joined = await wait_for_workers(client, row.size, timeout=ramp + 30.0 + row.size / 10)
                m["connect_s"] = time.monotonic() - t0
                if joined:
                    problems += joined  # the fleet never came up: nothing below would mean anything
                    return m
                rss = await settled_rss(cp.pid, timing["settle"])
                m.update({"rss0_mb": rss0, "rss_mb": rss, "rss_kib_per_worker": (rss - rss0) * 1024 / row.size})
                m.update(await idle_window(cp, fl, timing["idle"]))
                m.update(await dispatch_run(client, cp, fl, opts, m["idle_cpu_pct"] / 100, problems))
                new, after = await restart(client, cp, fl, opts, workdir, problems, findings)
                m.update(after)
                if new is not None:
                    started.append(new)
                if fl.simulated:
                    m["sim_processes"] = len(fl.pids)
    except Exception as exc:
        problems.append(f"{row.label}: {short(exc)}")
        m["log_tail"] = started[-1].log()[-3000:]
    finally:
        for each in started:
            if each is not first:
                await asyncio.to_thread(each.stop)
        if first is not None:
            first.stop()  # stopped already when restarted; a no-op then
        m["loadavg_after"] = os.getloadavg()[0]
        m["valid"] = not problems and m.get("wrong") == 0 and m.get("lost") == 0
    return m


# ---------------------------------------------------------------------------------------- summary

ROW_METRICS = (
    "idle0_cpu_pct",
    "idle_cpu_pct",
    "idle_fleet_cpu_pct",
    "idle_requests_per_s",
    "idle_cp_us_per_request",
    "discovery_bps_per_subscriber",
    "discovery_bps_fleet",
    "announcement_bytes",
    "dispatch_bps_per_worker",
    "dispatch_bps_fleet",
    "registration_s",
    "registration_cp_ms_per_worker",
    "registration_cp_busy_pct",
    "registration_requests_per_worker",
    "registration_attempts_per_worker",
    "registered_after_restart",
    "workers_declared_lost",
    "after_restart_worker_lost_tasks",
    "stalls_detected",
    "restart_stop_s",
    "restart_start_s",
    "connect_s",
    "e2e_tps",
    "cp_us_per_task",
    "cp_marginal_us_per_task",
    "one_core_tps_upper",
    "cp_busy_pct",
    "fleet_busy_pct",
    "one_core_tps",
    "rss0_mb",
    "rss_mb",
    "rss_kib_per_worker",
    "workers_used",
    "sim_requests_per_task",
)


def _slope(points: Sequence[tuple[float, float]]) -> float:
    """Least-squares slope of y over x."""
    if len(points) < 2:
        return float("nan")
    mx = sum(x for x, _ in points) / len(points)
    my = sum(y for _, y in points) / len(points)
    den = sum((x - mx) ** 2 for x, _ in points)
    return sum((x - mx) * (y - my) for x, y in points) / den if den else float("nan")


def summarize_rows(rows: Sequence[dict[str, Any]]) -> dict[str, Any]:
    """Per-row metrics flattened (``sim500_e2e_tps``), and the sizing figures of the largest fleet."""
    flat: dict[str, Any] = {}
    for m in rows:
        key = Row(m["workers"], m["simulated"]).key
        for metric in ROW_METRICS:
            if isinstance(m.get(metric), int | float):
                flat[f"{key}_{metric}"] = m[metric]
    measured = [m for m in rows if isinstance(m.get("e2e_tps"), float)]
    if measured:
        largest = max(measured, key=lambda m: (m["workers"], m["simulated"]))
        flat.update(
            {
                "largest_workers": largest["workers"],
                "largest_e2e_tps": largest["e2e_tps"],
                "best_e2e_tps": max(m["e2e_tps"] for m in measured),
                "largest_cp_us_per_task": largest["cp_us_per_task"],
                "largest_idle_cpu_pct": largest["idle_cpu_pct"],
                "largest_rss_kib_per_worker": largest["rss_kib_per_worker"],
                "largest_one_core_tps": largest["one_core_tps"],
            }
        )
        if "registration_s" in largest:
            flat["largest_registration_s"] = largest["registration_s"]
        # From 10 workers up: below that the idle CPU is a few 10 ms ticks of /proc accounting.
        points = [(m["workers"], m["idle_cpu_pct"] - m["idle0_cpu_pct"]) for m in measured if m["workers"] >= 10]
        if len({x for x, _ in points}) >= 2:
            flat["idle_cpu_pct_per_100_workers"] = 100 * _slope(points)
    return flat


@scenario(
    "fleet",
    "the control plane with 1, 10, 100 and 500 connected subworkers (real up to --fleet-real-max, then "
    "simulated): idle CPU, discovery bytes/s, registration after a restart, dispatch tasks/s, RSS per worker",
    display=(
        Metric("largest_workers", "largest fleet, connected workers"),
        Metric("largest_e2e_tps", "dispatch at the largest fleet, tasks/s"),
        Metric("best_e2e_tps", "best dispatch over the sizes, tasks/s"),
        Metric("largest_cp_us_per_task", "control-plane CPU per task at the largest fleet, µs", ",.1f"),
        Metric("largest_idle_cpu_pct", "idle control-plane CPU at the largest fleet, % of a core", ",.1f"),
        Metric("idle_cpu_pct_per_100_workers", "idle CPU per 100 connected workers, % of a core", ",.2f"),
        Metric("largest_rss_kib_per_worker", "control-plane RSS per connected worker, KiB", ",.0f"),
        Metric("largest_registration_s", "whole-fleet registration after a restart, s", ",.2f"),
        Metric("largest_one_core_tps", "tasks per control-plane CPU-second at the largest fleet (≥ one core)"),
    ),
    controlplane_args=fleet_args,
    default=False,
    report=lambda result: print_fleet_table(result),
)
async def fleet_scenario(cp: RunningControlPlane | None, opts: Options) -> dict[str, Any]:
    first: RunningControlPlane | None = _cp(cp)
    rows: list[dict[str, Any]] = []
    placement = PLACEMENT.start()
    try:
        PLACEMENT.place_controlplane(_cp(cp).pid)
        with tempfile.TemporaryDirectory(prefix="fastworker-bench-fleet-") as folder:
            for row in plan(opts):
                m = await measure_row(row, opts, first, Path(folder))
                first = None  # the runner's control plane serves the first row only
                rows.append(m)
                print(f"    fleet {row.label}: {_row_line(m)}", file=sys.stderr, flush=True)
    finally:
        PLACEMENT.stop()
    problems = [p for m in rows for p in m["problems"]]
    result: dict[str, Any] = {
        "valid": all(m["valid"] for m in rows),
        "wrong": sum(m.get("wrong", 0) + m.get("after_restart_wrong", 0) for m in rows),
        "lost": sum(m.get("lost", 0) + m.get("after_restart_lost", 0) for m in rows),
        "tasks": sum(m.get("tasks", 0) + m.get("after_restart_tasks", 0) for m in rows),
        "rows": rows,
        "placement": placement,
        "problems": problems,
    }
    result.update(summarize_rows(rows))
    return result


def _row_line(m: dict[str, Any]) -> str:
    parts = []
    for key, fmt, unit in (
        ("idle_cpu_pct", ".1f", "% idle CPU"),
        ("e2e_tps", ",.0f", " tasks/s"),
        ("cp_us_per_task", ",.0f", " µs/task"),
        ("registration_s", ".2f", " s registration"),
        ("rss_kib_per_worker", ",.0f", " KiB/worker"),
    ):
        if isinstance(m.get(key), int | float):
            parts.append(f"{m[key]:{fmt}}{unit}")
    return ", ".join(parts) + ("" if m["valid"] else "  [INVALID]")


# ------------------------------------------------------------------------------------------ table

#: (header, metrics shown in the cell, format, separator between them)
COLUMNS: tuple[tuple[str, tuple[str, ...], str, str], ...] = (
    ("Idle CP CPU %, alone → with fleet", ("idle0_cpu_pct", "idle_cpu_pct"), ".1f", " → "),
    ("Discovery B/s, per subscriber / fleet", ("discovery_bps_per_subscriber", "discovery_bps_fleet"), ",.0f", " / "),
    ("Idle requests/s (sim), B/s per worker", ("idle_requests_per_s", "dispatch_bps_per_worker"), ",.0f", " / "),
    ("Registration after restart, s", ("registration_s",), ".2f", ""),
    ("… CP CPU per worker, ms", ("registration_cp_ms_per_worker",), ".1f", ""),
    ("… workers declared lost", ("workers_declared_lost",), ",.0f", ""),
    ("Dispatch tasks/s", ("e2e_tps",), ",.0f", ""),
    ("CP busy %", ("cp_busy_pct",), ",.0f", ""),
    ("CP µs/task", ("cp_us_per_task",), ",.0f", ""),
    ("Tasks per CP CPU-second", ("one_core_tps",), ",.0f", ""),
    ("CP RSS/worker KiB", ("rss_kib_per_worker",), ",.0f", ""),
    ("Fleet-side CPU %, idle / dispatch", ("idle_fleet_cpu_pct", "fleet_busy_pct"), ",.0f", " / "),
)


def fleet_table_rows(result: dict[str, Any]) -> list[tuple[str, ...]]:
    """One line per row of the curve, medians over the repeats."""
    summary = result["summary"]
    runs = [run for run in result["runs"] if run.get("rows")]
    if not runs:
        return []
    out = []
    for m in runs[0]["rows"]:
        key = Row(m["workers"], m["simulated"]).key
        cells = [m["label"]]
        for _, metrics, fmt, sep in COLUMNS:
            values = [summary.get(f"{key}_{metric}", {}).get("median") for metric in metrics]
            cells.append(sep.join("n/a" if v is None else f"{v:{fmt}}" for v in values))
            if metrics == ("registration_s",) and values[0] is None and "registered_after_restart" in m:
                cells[-1] = (
                    f"> {registration_bound(m['workers']):g} ({m['registered_after_restart']:,} of {m['workers']:,})"
                )
        out.append(tuple(cells))
    return out


def sizing_lines(result: dict[str, Any]) -> list[str]:
    summary = result["summary"]

    def med(name: str) -> float | None:
        stat = summary.get(name)
        return None if stat is None else float(stat["median"])

    lines = []
    largest, tps = med("largest_workers"), med("largest_one_core_tps")
    idle, slope = med("largest_idle_cpu_pct"), med("idle_cpu_pct_per_100_workers")
    if largest is not None and tps is not None and idle is not None:
        lines.append(
            f"Sizing (this run): with {largest:,.0f} workers connected the control plane idles at {idle:.1f}% "
            f"of a core, and dispatched {tps:,.0f} trivial tasks per second of its CPU (everything included): "
            f"one core handles {largest:,.0f} workers and at least that many tasks/s."
        )
    if slope is not None and slope > 0:
        lines.append(
            f"Idle cost of the fleet: {slope:.2f}% of a core per 100 connected workers (least squares): "
            f"heartbeats and held work requests alone would fill a core at about {100 / slope * 100:,.0f} workers."
        )
    for run in result["runs"][:1]:
        if run.get("placement"):
            lines.append(f"Placement: {run['placement']}.")
    for run in result["runs"]:
        for m in run.get("rows", []):
            lines += [f"Finding: {finding}" for finding in m.get("findings", [])]
    lines.append(
        "Rows marked simulated are fwbench.fleetsim workers (real protocol, tasks run in place, ≤ "
        f"{SIM_PER_PROCESS} per process); 'fleet-side CPU' is theirs (or the real workers' and their task "
        "processes'), all on the same machine as the control plane."
    )
    return lines


def print_fleet_table(result: dict[str, Any]) -> None:
    rows = fleet_table_rows(result)
    if not rows:
        return
    header = ["Workers", *(c[0] for c in COLUMNS)]
    title = "Fleet size: one control plane, N connected subworkers (medians)"
    try:
        from rich.console import Console
        from rich.table import Table
    except ImportError:
        widths = [max(len(h), *(len(r[i]) for r in rows)) for i, h in enumerate(header)]
        print(f"\n{title}")
        print("  ".join(h.ljust(w) for h, w in zip(header, widths, strict=True)))
        for r in rows:
            print("  ".join(c.rjust(w) if i else c.ljust(w) for i, (c, w) in enumerate(zip(r, widths, strict=True))))
        for line in sizing_lines(result):
            print(line)
        return
    console = Console() if sys.stdout.isatty() else Console(width=200)
    table = Table(title=title)
    for i, column in enumerate(header):
        table.add_column(column, justify="left" if i == 0 else "right")
    for r in rows:
        table.add_row(*r)
    console.print(table)
    for line in sizing_lines(result):
        console.print(line, highlight=False)
