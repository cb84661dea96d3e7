"""The subworker's life: INIT -> RUNNING -> DRAINING -> STOPPED, its slots, and what it tells the control plane.

A worker asks for work only while it has a free slot (one outstanding WorkRequest at a time), so
the control plane never hands it more than it can start at once and short tasks never wait behind
long ones here. Async tasks run on this process's event loop; sync tasks run in child processes
(``pool``), so a task that crashes or hangs costs one child, not the worker; ``--pool threads``
runs them on threads of this process instead (``threads``): cheaper, with no such isolation.

While its tasks are short it prefetches a few beyond its slots; those start only once the control
plane granted them (a claim), and nothing starts while its lease has lapsed (the fence of
``fastworker.protocol.lease``): a task it holds when its link is cut never runs here and elsewhere.

What running tasks report with ``report_progress`` goes out on a results message of its own, the
latest value per task at most a few times a second (``progress``); a task's last value rides on its
outcome.
"""

from __future__ import annotations

import asyncio
import contextlib
import enum
import inspect
import logging
import os
import socket
import time
import uuid
from collections.abc import Coroutine, Sequence
from dataclasses import dataclass, field
from typing import Any

from fastworker.client import _tracing as tracing
from fastworker.client._background import cancel_all, spawn
from fastworker.client._readyfile import (
    check_ready_file,
    remove_own_ready_file,
    remove_ready_file,
    write_ready_file,
)
from fastworker.client._tracing import ProcessSpan
from fastworker.client.context import TaskContext
from fastworker.client.cpus import available_cpus
from fastworker.client.errors import ControlPlaneUnavailable, FastworkerError
from fastworker.client.home import Home, close_home_clients, set_home
from fastworker.client.task import TaskRegistry
from fastworker.client.tls import TlsFiles
from fastworker.protocol.addresses import parse_address, parse_http_address
from fastworker.protocol.auth import Secret
from fastworker.protocol.framing import DEFAULT_MAX_FRAME_SIZE
from fastworker.protocol.ids import worker_id_problem
from fastworker.protocol.lease import fence_after, worker_fenced
from fastworker.protocol.queues import DEFAULT_QUEUE, check_queue_name
from fastworker.protocol.v1 import task_pb2, worker_pb2
from fastworker.worker._stallwatch import LoopStallWatch
from fastworker.worker._stopsignals import answer_signals
from fastworker.worker.bounds import MAX_CONCURRENCY, POOLS
from fastworker.worker.errors import TaskLoadError
from fastworker.worker.executor import Outcome, failure, prepare, run_async_limited, tell_span
from fastworker.worker.health import HealthServer
from fastworker.worker.link import ControlPlaneLink, NotRegistered
from fastworker.worker.policy import TaskPolicy, effective_policy, options_policy
from fastworker.worker.pool import ProcessPool
from fastworker.worker.progress import ProgressRelay, Reported, RunSink
from fastworker.worker.tasklog import log_outcome
from fastworker.worker.threads import ThreadPool
from fastworker.worker.version import __version__

logger = logging.getLogger(__name__)

#: Prefetch only while recent tasks ran shorter than this on average, in seconds: holding long
#: tasks in a local queue would keep them from an idle worker (Celery's prefetch trap).
PREFETCH_TASK_TIME = 0.02
#: How long an outcome may wait for the next work request while a refill request is out, in seconds.
REFILL_REPORT_DELAY = 0.005
#: Seconds a claim waits for more slots to free while at least half of them are still busy.
CLAIM_GATHER = 0.001
#: Seconds the next work request waits for a just-started short task when the control plane had
#: no more work: the request then carries its outcome (one message each way per task, not three).
PULL_GATHER = 0.001
#: Bytes a request to the control plane keeps free of outcomes (its other fields, the frame header).
FRAME_SLACK = 64 * 1024
#: Bytes an outcome takes in a request beyond its own encoding (field tags and lengths).
OUTCOME_OVERHEAD = 16
#: While work requests keep the lease fresh, one heartbeat per this many intervals carries the figures.
QUIET_BEATS = 5
#: Largest --prefetch accepted.
MAX_PREFETCH = 10_000
#: The rank of a task that gives no priority (the control plane writes any other one into the spec).
NORMAL_PRIORITY = task_pb2.PRIORITY_NORMAL
#: Exit code when the control plane refuses this worker's id (another live worker process holds it).
EXIT_ID_IN_USE = 3
#: Exit code when the control plane refuses the worker for good: its id, task definitions or queues (as for a module that fails to load).
EXIT_REFUSED = 1
#: Exit code when --health-address cannot be bound (in use, or not an address of this host).
EXIT_LISTEN_FAILED = 1
#: Exit code when the pool's children cannot start (an import fails in them, or they stop starting).
EXIT_POOL_FAILED = 1
#: Exit code when the ``--ready-file`` could not be written.
EXIT_READY_FILE_FAILED = 1
#: Seconds between warnings, while no control plane announced itself yet, of why none did.
UNHEARD_WARNING_EVERY = 10.0
#: Seconds before registering again after a failed registration, doubled per failure up to the
#: most (a control plane that refuses every time, e.g. of another protocol version, is not flooded
#: with requests, nor the log with the same warning).
REGISTER_RETRY_FIRST = 0.5
REGISTER_RETRY_MAX = 5.0
#: Seconds between looks, while draining, at whether undelivered outcomes found a control plane.
DELIVERY_POLL = 0.1
#: Seconds a draining worker delivers its last outcomes before it warns that they are not delivered yet.
DELIVERY_QUIET = 0.5
#: Seconds between warnings that tasks arrive past this worker's fence (a link too slow for it).
LATE_ANSWER_LOG_EVERY = 60.0


class WorkerState(enum.StrEnum):
    """Where the worker is in its life."""

    #: Starting: children spawning, looking for the control plane.
    INIT = "INIT"
    #: Registered and taking tasks.
    RUNNING = "RUNNING"
    #: Finishing what it runs; takes nothing new.
    DRAINING = "DRAINING"
    #: Gone.
    STOPPED = "STOPPED"


def default_worker_id() -> str:
    """``HOST-PID``: unique on a fleet unless set explicitly."""
    return f"{socket.gethostname()}-{os.getpid()}"


@dataclass(frozen=True)
class WorkerSettings:
    """Everything the worker daemon needs; see ``fastworker-worker --help``."""

    task_modules: tuple[str, ...]
    control_plane: str = "tcp://127.0.0.1:5550"
    concurrency: int = field(default_factory=available_cpus)
    #: The named queues it takes tasks from.
    queues: tuple[str, ...] = (DEFAULT_QUEUE,)
    #: Tasks held beyond ``concurrency`` while tasks are short (see ``PREFETCH_TASK_TIME``).
    prefetch: int = 0
    worker_id: str = field(default_factory=default_worker_id)
    drain_timeout: float = 30.0
    #: Where sync tasks run: ``processes`` (one child each) or ``threads`` (of this process).
    pool: str = "processes"
    max_tasks_per_child: int = 0
    max_child_rss: int = 0
    allow_pickle: bool = False
    ready_file: str | None = None
    #: ``HOST:PORT`` to serve ``/healthz`` on for a liveness probe (``fastworker.worker.health``), if any.
    health_address: str | None = None
    sys_path: tuple[str, ...] = ()
    #: The control plane's shared secret (every frame sealed and checked), if it has one.
    secret: Secret | None = field(default=None, repr=False)
    #: TLS files for a ``tls+tcp://`` control plane.
    tls: TlsFiles | None = None

    def __post_init__(self) -> None:
        if not 1 <= self.concurrency <= MAX_CONCURRENCY:
            raise ValueError(f"--concurrency must be 1..{MAX_CONCURRENCY:,}, got {self.concurrency}")
        if self.max_tasks_per_child < 0:
            raise ValueError(f"--max-tasks-per-child must be 0 (never) or more, got {self.max_tasks_per_child}")
        if self.max_child_rss < 0:
            raise ValueError(f"--max-child-rss must be 0 (no limit) or more MB, got {self.max_child_rss // 2**20}")
        if not self.queues:
            raise ValueError("--queues must name at least one queue")
        for queue in self.queues:
            check_queue_name(queue)
        if not 0 <= self.prefetch <= MAX_PREFETCH:
            raise ValueError(f"--prefetch must be 0..{MAX_PREFETCH:,}, got {self.prefetch}")
        if not self.worker_id:
            raise ValueError("--worker-id cannot be empty (an unset variable?); leave it out for HOST-PID")
        if (problem := worker_id_problem(self.worker_id)) is not None:
            raise ValueError(f"--worker-id: {problem}")
        try:
            address = parse_address(self.control_plane)
        except ValueError as exc:
            raise ValueError(f"--control-plane: {exc}") from None
        if address.port == 0:
            raise ValueError(f"--control-plane {self.control_plane}: port 0 can be listened on, not dialled")
        if address.scheme == "tls+tcp" and self.tls is None:
            raise ValueError(f"--control-plane {self.control_plane} uses TLS: give the CA bundle (--tls-ca)")
        if self.drain_timeout < 0:
            raise ValueError("--drain-timeout cannot be negative")
        if self.health_address is not None:
            parse_http_address(self.health_address, "--health-address")  # raises ValueError naming it
        check_ready_file(self.ready_file)
        if self.pool not in POOLS:
            raise ValueError(f"--pool must be one of {', '.join(POOLS)}, not {self.pool!r}")
        if self.pool == "threads":
            child_flags = [
                flag
                for flag, value in (
                    ("--max-tasks-per-child", self.max_tasks_per_child),
                    ("--max-child-rss", self.max_child_rss),
                )
                if value
            ]
            if child_flags:
                raise ValueError(
                    f"--pool threads takes no {' or '.join(child_flags)}: threads are never replaced "
                    "(these apply to --pool processes)"
                )


def _rss_bytes(pids: Sequence[int]) -> int:
    """Resident memory of this process and its children, from /proc (0 where unreadable)."""
    page = os.sysconf("SC_PAGE_SIZE")
    total = 0
    for pid in (os.getpid(), *pids):
        try:
            with open(f"/proc/{pid}/statm") as statm:
                total += int(statm.read().split()[1]) * page
        except (OSError, ValueError, IndexError):
            continue
    return total


#: What a run stopped at the drain timeout says in its span and log line (the control plane ends it).
DRAIN_TIMEOUT_STOP = "stopped at this worker's drain timeout; it runs again elsewhere if it has retries left"


class _Running(RunSink):
    """A task this worker runs: the asyncio task, the instance that gave it, the spec, and its progress sink."""

    __slots__ = ("context", "instance", "policy", "runner", "spec", "started_at")

    #: Set right after construction: the asyncio task that executes it (and gets this object).
    runner: asyncio.Task[None]

    def __init__(self, spec: task_pb2.TaskSpec, instance: str, relay: ProgressRelay) -> None:
        self.spec = spec
        self.instance = instance
        self.relay = relay
        self.task_id = spec.task_id
        self.attempt = spec.attempt
        self.latest = None
        #: When its run began (Unix seconds): a cancelled run's outcome says how long it ran.
        self.started_at = 0.0
        #: What ``current_task()`` returns in the run, and the run's policy, once it is known.
        self.context: TaskContext | None = None
        self.policy: TaskPolicy | None = None


class Worker:
    """One subworker process."""

    def __init__(self, settings: WorkerSettings, registry: TaskRegistry) -> None:
        self.settings = settings
        self.registry = registry
        self.state = WorkerState.INIT
        self.processed = 0
        self.failed = 0
        self.heartbeat_interval = 1.0
        self._running: dict[str, _Running] = {}
        #: Each task name's policy from its ``@task`` options, built once (the options never change).
        self._defined: dict[str, TaskPolicy] = {}
        #: Prefetched tasks waiting here for a free slot (they count as held), in dispatch order;
        #: they start by priority, then in that order (:meth:`_by_priority`).
        self._backlog: dict[str, tuple[task_pb2.TaskSpec, str]] = {}
        #: Some task in the backlog is of another priority than normal: order it before starting any.
        self._backlog_ranked = False
        #: Prefetched tasks the control plane granted: only these may start (``Results.started_task_ids``).
        self._granted: set[str] = set()
        #: Prefetched tasks asked for on the claim request in flight, and that request's task.
        self._claiming: set[str] = set()
        self._claimer: asyncio.Task[None] | None = None
        #: Running tasks the control plane ordered stopped (it repeats an order until the outcome).
        self._stopping: set[str] = set()
        #: The work request in flight (abandoned when this worker registers again).
        self._poll: asyncio.Task[worker_pb2.Dispatch] | None = None
        #: Tasks an answer brought after the drain began: never started here, handed back with the deregistration.
        self._came_while_draining: list[str] = []
        #: Random per process: lets the control plane tell a reconnect of this process from another
        #: process that claims the same worker id.
        self.incarnation = uuid.uuid4().hex
        #: The control plane's heartbeat timeout (from the registration): sets this worker's fence.
        self.heartbeat_timeout = 5.0
        self.exit_code = 0
        self._fence_logged = False
        #: Moving average of recent task run times, in seconds (decides whether to prefetch); it
        #: starts high, so a worker prefetches only once its tasks have proven short.
        self._run_time = 1.0
        self._results: list[tuple[str, worker_pb2.TaskOutcome]] = []
        #: The largest frame the control plane reads (told at registration; until then our own limit).
        self._frame_limit = DEFAULT_MAX_FRAME_SIZE
        #: Tasks finished here whose results the control plane has not acknowledged yet, with their
        #: attempt (a report being sent is in neither ``_results`` nor ``_running``: it is here).
        self._unacked: dict[str, int] = {}
        #: Unacknowledged outcomes a restarted control plane adopted: task id -> that instance, so
        #: that one given back after a failed send goes to it, not to the instance that gave the task.
        self._adopted_by: dict[str, str] = {}
        #: The control plane instance that accepted this worker's latest registration.
        self._registered_instance = ""
        #: True while ``_register_until_accepted`` runs.
        self._registering = False
        #: Why the control plane refused this worker for good (its id in use, its definitions): "" if not.
        self._refused = ""
        #: When a task that arrived past the fence was last logged (monotonic).
        self._late_answer_logged = float("-inf")
        #: Async tasks this worker cancelled because the control plane asked (reported, not handed back).
        self._cancelled: set[str] = set()
        self._flush_scheduled = False
        self._pulling = False
        #: The work request out is a refill (the prefetch queue still feeds the slots), not a starving one.
        self._refilling = False
        #: The last dispatch held fewer tasks than asked for: the control plane had no more for us, so
        #: the next work request will likely be held until work comes.
        self._dry = False
        self._slot_free = asyncio.Event()
        self._slot_free.set()
        self._registered = asyncio.Event()
        self._stop = asyncio.Event()
        self._link: ControlPlaneLink | None = None
        self._pool: ProcessPool | ThreadPool | None = None
        self._background: set[asyncio.Task[Any]] = set()
        #: The drain timeout an operator gave, overriding ``settings.drain_timeout``.
        self._drain_timeout: float | None = None
        #: Running tasks' progress, rate-limited; what it delivers waits in ``_progress_out`` to be sent.
        self._progress = ProgressRelay(self._send_progress)
        self._progress_out: dict[str, worker_pb2.TaskProgress] = {}
        self._progress_sender: asyncio.Task[None] | None = None
        self._health: HealthServer | None = None
        self._stall_watch: LoopStallWatch | None = None

    # ------------------------------------------------------------------------------------ lifecycle

    def request_stop(self, reason: str = "requested") -> None:
        """Begin draining (safe from a signal handler on the loop)."""
        if not self._stop.is_set():
            logger.info("worker %s draining: %s", self.settings.worker_id, reason)
            self._stop.set()

    async def run(self) -> int:
        """Serve until stopped; returns the exit code (0 after a clean drain)."""
        loop = asyncio.get_running_loop()
        self._progress.attach(loop)  # tasks may report from threads of their own
        self._stall_watch = LoopStallWatch(loop, what="worker's event loop")
        self._stall_watch.start()
        answer_signals(loop, self.request_stop)
        s = self.settings
        if s.ready_file:
            # One a killed predecessor left (a restarted container keeps /tmp) would say this
            # process is registered: it is not, until it writes its own.
            remove_ready_file(s.ready_file)
        if s.health_address is not None:
            # First, so a liveness probe is answered while the worker waits for a control plane; a
            # port in use stops the start, as for the control plane's listeners.
            try:
                self._health = HealthServer(loop, s.health_address, self._health_problem, self._readiness_problem)
            except OSError as exc:
                logger.error("cannot serve --health-address %s: %s", s.health_address, exc)
                return EXIT_LISTEN_FAILED
            self._health.start()
            logger.info("health on %s/healthz", self._health.url)
        elsewhere = sorted(t.name for t in self.registry if (t.options.queue or DEFAULT_QUEUE) not in s.queues)
        if elsewhere:
            logger.warning(
                "this worker serves the queues %s; these tasks go to other queues unless a submission names one of "
                "these, so they will not run here: %s",
                ",".join(s.queues),
                ", ".join(elsewhere),
            )
        # Tasks that submit tasks (``add.delay_sync(...)``, ``await add.delay(...)``) reach this
        # worker's control plane, here and in the pool's children.
        set_home(Home(s.control_plane, secret=s.secret, tls=s.tls))
        if any(not task.is_async for task in self.registry):
            if s.pool == "threads":
                self._pool = ThreadPool(s.concurrency, self.registry, allow_pickle=s.allow_pickle)
                self._pool.on_abandoned_returned = self._abandoned_slot_freed
            else:
                self._pool = ProcessPool(
                    s.concurrency,
                    list(s.task_modules),
                    max_tasks_per_child=s.max_tasks_per_child,
                    max_rss_bytes=s.max_child_rss,
                    allow_pickle=s.allow_pickle,
                    sys_path=list(s.sys_path),
                )
            try:
                started = await self._start_pool(self._pool)
            except (TaskLoadError, TimeoutError) as exc:
                logger.error("cannot start the %s pool: %s", s.pool, exc)
                self.exit_code = EXIT_POOL_FAILED
                started = False
            if not started:
                await self._close()
                return self.exit_code
        self._link = ControlPlaneLink(s.control_plane, secret=s.secret, tls=s.tls)
        self._link.on_cancel = self._cancel_tasks
        self._link.on_drain = self._drain_ordered
        logger.info("worker %s looking for a control plane on %s", s.worker_id, s.control_plane)
        try:
            await self._first_registration()
        except asyncio.CancelledError:
            raise
        if self._stop.is_set():
            await self._close()
            return self.exit_code
        self.state = WorkerState.RUNNING
        if s.ready_file:
            about = {"worker_id": s.worker_id}
            if self._health is not None:
                about["health"] = self._health.url
            try:
                write_ready_file(s.ready_file, about)
            except OSError as exc:  # (checked at start: the folder went away, or the disk is full)
                logger.error("%s; stopping", exc.strerror)
                self.exit_code = EXIT_READY_FILE_FAILED
                await self._close()
                return self.exit_code
        for coroutine in (self._pull_loop(), self._heartbeat_loop(), self._follow_restarts()):
            self._spawn(coroutine)
        await self._stop.wait()
        await self._drain()
        await self._close()
        return self.exit_code

    async def _start_pool(self, pool: ProcessPool | ThreadPool) -> bool:
        """Start the pool unless a stop comes first: False then (its children are stopped)."""
        start = asyncio.ensure_future(pool.start())
        stop = asyncio.ensure_future(self._stop.wait())
        try:
            await asyncio.wait((start, stop), return_when=asyncio.FIRST_COMPLETED)
        finally:
            stop.cancel()
        if not start.done():
            start.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await start
            logger.info("stopped while its %s pool was starting", self.settings.pool)
            return False
        start.result()
        return True

    async def _first_registration(self) -> None:
        link = self._link
        assert link is not None
        looking_since = time.monotonic()
        retry = REGISTER_RETRY_FIRST
        while not self._stop.is_set():
            waiting = asyncio.ensure_future(link.wait_for_control_plane())
            stopping = asyncio.ensure_future(self._stop.wait())
            done, _ = await asyncio.wait(
                {waiting, stopping}, timeout=UNHEARD_WARNING_EVERY, return_when=asyncio.FIRST_COMPLETED
            )
            waiting.cancel()
            stopping.cancel()
            if self._stop.is_set():
                return
            if not done:
                logger.warning(
                    "still no control plane after %.0f s: %s",
                    time.monotonic() - looking_since,
                    f"its announcements fail authentication ({link.problem}): a wrong or missing secret?"
                    if link.problem
                    else link.why_unheard(),
                )
                continue
            if await self._register():
                return
            await asyncio.sleep(retry)
            retry = min(2 * retry, REGISTER_RETRY_MAX)

    async def _register(self) -> bool:
        """Register with the announced control plane; True on success."""
        assert self._link is not None
        s = self.settings
        request = worker_pb2.RegisterRequest(
            worker_id=s.worker_id,
            host=socket.gethostname(),
            pid=os.getpid(),
            capacity=s.concurrency,
            version=__version__,
            incarnation=self.incarnation,
            queues=s.queues,
        )
        request.tasks.extend(self.registry.definitions())
        # What it holds from before (running, or finished and not acknowledged): a restarted
        # control plane adopts those its journal has running here, instead of running them again.
        for running in self._running.values():
            if running.task_id not in self._stopping:
                request.held.add(task_id=running.task_id, attempt=running.attempt)
        for task_id, attempt in self._unacked.items():
            request.held.add(task_id=task_id, attempt=attempt)
        for task_id in self._granted:  # counted as running there: waiting here for a slot
            if (waiting := self._backlog.get(task_id)) is not None:
                request.held.add(task_id=task_id, attempt=waiting[0].attempt)
        try:
            answer = await self._link.register(request)
        except FastworkerError as exc:
            logger.warning("registration failed: %s", exc)
            return False
        if not answer.accepted:
            if not (answer.id_in_use or answer.final_refusal):  # e.g. its previous process not lost yet
                logger.warning("registration deferred: %s", answer.reason)
                return False
            logger.error("the control plane refused this worker: %s", answer.reason)
            if answer.id_in_use:
                self.exit_code = EXIT_ID_IN_USE
                self._refused = "its worker id is in use by another live worker"
                self.request_stop(self._refused)
            elif answer.final_refusal:  # its own id, tasks or queues: registering again cannot help
                self.exit_code = EXIT_REFUSED
                self._refused = "the control plane refused its id, task definitions or queues"
                self.request_stop(self._refused)
            return False
        self.heartbeat_interval = answer.heartbeat_interval or self.heartbeat_interval
        self.heartbeat_timeout = answer.heartbeat_timeout or self.heartbeat_timeout
        self._frame_limit = min(self._link.max_frame_size, answer.max_frame_size or DEFAULT_MAX_FRAME_SIZE)
        if not answer.resumed:
            # A fresh registration: the control plane holds no lease for what this worker prefetched
            # before (it took those back, or will once this worker's fence has passed): start none,
            # but those a restarted control plane adopted (granted, waiting for a slot here).
            # What runs here and it did not adopt, it re-ran elsewhere or failed (WorkerLost,
            # ControlPlaneLost) while it did not hear from us (a paused process, a cut link, a
            # restart). Stop those, so that a task is not run twice at once and a task reported
            # failed does not go on acting; the adopted ones report to this instance from now on.
            adopted = self._adopt(answer.instance_id, answer.adopted_task_ids)
            self._drop_prefetched(keep=adopted)
            settled = set(answer.settled_task_ids)
            delivered = [
                report.task_id
                for given_by, report in self._results
                if given_by != answer.instance_id and report.task_id in settled
            ]
            if delivered:
                logger.info(
                    "%d finished tasks reached control plane %s before its restart (their acknowledgement did not): %s",
                    len(delivered),
                    answer.instance_id,
                    ", ".join(delivered[:20]) + (" ..." if len(delivered) > 20 else ""),
                )
            moot = [
                report.task_id
                for given_by, report in self._results
                if given_by != answer.instance_id and report.task_id not in settled
            ]
            if moot:
                # Dropped by the next _take_results: said here, or a finished run vanishes unseen.
                logger.warning(
                    "dropping the outcomes of %d finished tasks control plane %s did not adopt (it re-ran or failed"
                    " them while it did not hear from this worker, or it restarted without a journal and does not"
                    " know them): %s",
                    len(moot),
                    answer.instance_id,
                    ", ".join(moot[:20]) + (" ..." if len(moot) > 20 else ""),
                )
            taken_back = [
                task_id for task_id in self._running if task_id not in self._stopping and task_id not in adopted
            ]
            if taken_back:
                logger.warning(
                    "stopping %d running tasks the control plane took back while it did not hear from this worker",
                    len(taken_back),
                )
                self._cancel_tasks(taken_back)
        self._registered_instance = answer.instance_id
        self._registered.set()
        logger.info(
            "worker %s %s control plane %s (%d tasks, capacity %d)",
            s.worker_id,
            "resumed its registration with" if answer.resumed else "registered with",
            answer.instance_id,
            len(self.registry),
            s.concurrency,
        )
        return True

    def _adopt(self, instance: str, task_ids: Sequence[str]) -> set[str]:
        """Make the tasks a new control plane instance adopted its own: their outcomes go to it."""
        adopted = set(task_ids)
        if not adopted:
            return adopted
        for task_id in adopted:
            running = self._running.get(task_id)
            if running is not None:
                running.instance = instance
            waiting = self._backlog.get(task_id)
            if waiting is not None:
                self._backlog[task_id] = (waiting[0], instance)
        self._results[:] = [
            (instance if report.task_id in adopted else given_by, report) for given_by, report in self._results
        ]
        self._adopted_by.update((task_id, instance) for task_id in adopted if task_id in self._unacked)
        logger.info("the control plane adopted %d tasks this worker holds from its previous instance", len(adopted))
        return adopted

    def _lost_registration(self, why: str) -> None:
        """The control plane does not know this worker (restart, loss, reconnect): register anew.

        Nothing is dropped here: a registration that resumes keeps every lease, and one that does not
        drops the prefetched tasks (``_register``). Outcomes are kept and sent again: the control
        plane applies those it still counts on and ignores the rest.
        """
        if not self._registered.is_set():
            return  # someone is already at it
        self._registered.clear()
        # Not a warning yet: a worker only cut off resumes its registration, and nothing it runs is
        # touched; what a fresh registration costs (tasks stopped, outcomes dropped) is warned about then.
        logger.info("registering again: %s", why)
        self._spawn(self._register_until_accepted())

    async def _register_until_accepted(self) -> None:
        retry = REGISTER_RETRY_FIRST
        self._registering = True
        try:
            # Also while draining with tasks running or outcomes to deliver: a control plane that
            # came back adopts them (``_deliver_before_leaving``).
            while not self._refused and (
                not self._stop.is_set() or (self.state is WorkerState.DRAINING and (self._running or self._unacked))
            ):
                if await self._register():
                    self._start_waiting()
                    if self._poll is not None:
                        # The work request in flight went to the instance before, whose answer may never
                        # come: the pull loop asks the one that accepted us at once.
                        self._poll.cancel()
                    self._slot_free.set()
                    return
                await asyncio.sleep(retry)
                retry = min(2 * retry, REGISTER_RETRY_MAX)
        finally:
            self._registering = False

    def _drop_prefetched(self, keep: set[str] | frozenset[str] = frozenset()) -> None:
        """Forget prefetched tasks that never started (the control plane re-queues them), but those in ``keep``."""
        dropped = [task_id for task_id in self._backlog if task_id not in keep]
        if dropped:
            logger.info("dropping %d prefetched tasks that never started", len(dropped))
            self._slot_free.set()
            for task_id in dropped:
                del self._backlog[task_id]
        self._granted.intersection_update(keep)

    def _fenced(self) -> bool:
        """True while this worker's lease has lapsed: it must start nothing it holds."""
        link = self._link
        fenced = link is None or worker_fenced(time.monotonic(), link.last_contact, self.heartbeat_timeout)
        if fenced and not self._fence_logged:
            logger.warning(
                "no answer from the control plane for %.1f s: starting none of the %d prefetched tasks until it answers",
                fence_after(self.heartbeat_timeout),
                len(self._backlog),
            )
        self._fence_logged = fenced
        return fenced

    def _spawn(self, coroutine: Coroutine[Any, Any, None]) -> asyncio.Task[None]:
        return spawn(coroutine, self._background)

    # ----------------------------------------------------------------------------------------- loops

    async def _pull_loop(self) -> None:
        link = self._link
        assert link is not None
        gather = False
        while self.state is WorkerState.RUNNING:
            if gather:
                gather = False
                if self._running and not self._results and self._run_time < PULL_GATHER:
                    # Nothing more to fetch now and our tasks are short: wait (once) for one to end,
                    # so that the next request carries its outcome instead of a separate report.
                    self._slot_free.clear()
                    with contextlib.suppress(TimeoutError):
                        async with asyncio.timeout(PULL_GATHER):
                            await self._slot_free.wait()
                    continue
            prefetch = self._prefetch()
            occupied = self._occupied()
            room = self.settings.concurrency + prefetch - occupied - len(self._backlog)
            starving = not self._backlog and occupied < self.settings.concurrency
            # With a prefetch queue that still feeds the slots, ask again only once half of it is
            # free: each round trip then carries several outcomes and several tasks.
            if room <= 0 or (not starving and room < max(1, prefetch // 2)):
                if room <= 0 and self._results and not self._flush_scheduled:
                    # No work request will carry them (threads stuck past a hard limit hold the slots).
                    self._flush_scheduled = True
                    self._spawn(self._flush_results())
                self._slot_free.clear()
                await self._slot_free.wait()
                continue
            await self._registered.wait()
            current = link.instance_id
            # Results waiting to be reported ride along: one message frees the slot and asks for more.
            held = [*self._running, *self._backlog, *self._unacked]
            outcomes = self._take_results(current, besides=_ids_size(held))
            self._pulling = True
            self._refilling = not starving
            call = asyncio.ensure_future(
                link.pull(
                    self.settings.worker_id,
                    self.heartbeat_interval,
                    outcomes,
                    held,
                    prefetch,
                    busy=bool(self._running or self._backlog),
                )
            )
            self._poll = call
            try:
                dispatch = await call
            except asyncio.CancelledError:
                me = asyncio.current_task()
                if not call.cancelled() or me is None or me.cancelling():
                    raise
                # Abandoned after registering again: its outcomes go again (the control plane applies
                # an outcome once and ignores a copy).
                self._give_back(current, outcomes)
                continue
            except NotRegistered:
                self._give_back(current, outcomes)
                self._lost_registration("the control plane does not know this worker")
                continue
            except FastworkerError as exc:  # unreachable, or refused (e.g. sealed for an instance now gone)
                if not isinstance(exc, ControlPlaneUnavailable):
                    logger.warning("work request failed (asking again): %s", exc)
                self._give_back(current, outcomes)
                await asyncio.sleep(0.2)
                continue
            finally:
                self._pulling = False
                self._poll = None
            self._acknowledged(outcomes)
            if self._left_running():
                # The drain began while this request was out: what its answer brings never starts
                # here (the drain may be past waiting for what runs); it goes back, unstarted.
                self._came_while_draining.extend(spec.task_id for spec in dispatch.tasks)
                return
            self._dry = gather = len(dispatch.tasks) < room
            self._start_waiting()
            prefetched = set(dispatch.prefetched_task_ids)
            for spec in dispatch.tasks:
                self._start(spec, dispatch.instance_id, prefetched=spec.task_id in prefetched)
            if prefetched:
                self._start_waiting()  # claims them at once if a slot of ours is free already

    def _left_running(self) -> bool:
        """True once the worker drains or stops (read after an await: the state may have changed meanwhile)."""
        return self.state is not WorkerState.RUNNING

    def _claims(self) -> list[str]:
        """Prefetched tasks to ask to start: the oldest not granted or asked for yet, one per free slot."""
        free = self.settings.concurrency - self._occupied() - len(self._granted) - len(self._claiming)
        if free <= 0:
            return []
        waiting = [t for t in self._backlog if t not in self._granted and t not in self._claiming]
        return self._by_priority(waiting)[:free]

    def _by_priority(self, task_ids: list[str]) -> list[str]:
        """Backlog tasks in the order they start: higher priority first, then dispatch order.

        So a critical task dispatched behind prefetched normal ones starts at the next free slot.
        """
        if not self._backlog_ranked:
            return task_ids
        if not self._backlog:
            self._backlog_ranked = False
            return task_ids
        backlog = self._backlog
        return sorted(task_ids, key=lambda task_id: backlog[task_id][0].priority or NORMAL_PRIORITY)

    async def _claim(self) -> None:
        """Ask to start prefetched tasks for the free slots, with the outcomes waiting to be reported.

        A prefetched task starts only once the control plane granted it, so that a task it may hand
        to another worker (after this one's link was cut) is never started here too. Claims go on
        their own request, answered at once, never behind a held work request.
        """
        link = self._link
        assert link is not None
        gathered = False
        try:
            while self.state is WorkerState.RUNNING and (claims := self._claims()):
                if not gathered and self._running and self._occupied() > self.settings.concurrency // 2:
                    # More of our slots free any moment: gather them into one claim (fewer, larger
                    # round trips). With half the slots free, or none busy, claim at once.
                    gathered = True
                    await asyncio.sleep(CLAIM_GATHER)
                    continue
                gathered = False
                await self._registered.wait()
                current = link.instance_id
                outcomes = self._take_results(current, besides=_ids_size(claims))
                self._claiming.update(claims)
                try:
                    granted = await link.send_results(self.settings.worker_id, outcomes, claims)
                except NotRegistered:
                    self._give_back(current, outcomes)
                    self._lost_registration("the control plane does not know this worker")
                    return
                except FastworkerError as exc:
                    if not isinstance(exc, ControlPlaneUnavailable):
                        logger.warning("claim failed (asking again): %s", exc)
                    self._give_back(current, outcomes)
                    await asyncio.sleep(0.2)
                    continue
                finally:
                    self._claiming.difference_update(claims)
                self._acknowledged(outcomes)
                self._take_grants(claims, granted)
                self._start_waiting(claim=False)
        finally:
            self._claimer = None

    def _take_grants(self, claims: Sequence[str], granted: Sequence[str]) -> None:
        """Record which claims the control plane granted; a claim it refused was taken back: dropped."""
        allowed = set(granted)
        for task_id in claims:
            if task_id not in self._backlog:
                continue
            if task_id in allowed:
                self._granted.add(task_id)
            else:
                del self._backlog[task_id]
                logger.info("prefetched task %s was taken back by the control plane: dropped", task_id)
                # Room for more: the pull loop, waiting for a slot while its backlog was full, asks again
                # (and its request tells the control plane what this worker still holds).
                self._slot_free.set()

    def _prefetch(self) -> int:
        """Tasks to take beyond the slots now: the setting while tasks are short, else none."""
        return self.settings.prefetch if self._run_time < PREFETCH_TASK_TIME else 0

    def _take_results(self, instance: str, besides: int = 0) -> list[worker_pb2.TaskOutcome]:
        """Take the outcomes to report to this control plane instance, as many as fit one frame to it.

        ``besides``: bytes the rest of the request takes. Outcomes beyond the frame stay for the next
        request (a report of them is scheduled), and one that cannot fit even alone is turned into a
        failure that says so: sent whole, the request was refused again and again, and the worker
        sent nothing else, for ever. Those an earlier instance gave are moot once this worker
        registered with ``instance`` (it adopted the tasks it wanted, whose outcomes were handed to
        it then); until that registration they stay, for it to decide.
        """
        settled = instance == self._registered_instance
        room = self._frame_limit - FRAME_SLACK - besides
        batch: list[worker_pb2.TaskOutcome] = []
        kept: list[tuple[str, worker_pb2.TaskOutcome]] = []
        for given_by, report in self._results:
            if given_by == instance:
                size = report.ByteSize() + OUTCOME_OVERHEAD
                if size > self._frame_limit - FRAME_SLACK:
                    _too_large(report, size, self._frame_limit)
                    size = report.ByteSize() + OUTCOME_OVERHEAD
                if size <= room:
                    room -= size
                    batch.append(report)
                else:  # the next request carries it (a report of its own, with nothing besides, has room)
                    kept.append((given_by, report))
            elif settled:
                self._unacked.pop(report.task_id, None)
            else:
                kept.append((given_by, report))
        self._results[:] = kept
        if len(kept) and any(given_by == instance for given_by, _ in kept) and not self._flush_scheduled:
            self._flush_scheduled = True
            self._spawn(self._flush_results())
        return batch

    def _give_back(self, instance: str, batch: Sequence[worker_pb2.TaskOutcome]) -> None:
        """Keep outcomes whose report failed, to send again (they stay listed as held meanwhile)."""
        adopted_by = self._adopted_by
        self._results[:0] = [(adopted_by.get(report.task_id, instance), report) for report in batch]

    def _acknowledged(self, batch: Sequence[worker_pb2.TaskOutcome]) -> None:
        for report in batch:
            self._unacked.pop(report.task_id, None)
        if self._adopted_by:
            for report in batch:
                self._adopted_by.pop(report.task_id, None)

    async def _heartbeat_loop(self) -> None:
        """Tell the control plane this worker lives, once per heartbeat interval.

        Work requests renew the lease as well: while one is out (orders reach the worker on its
        answer at once) and they are answered often enough that the lease stays fresh until the next
        check, a heartbeat goes out only every ``QUIET_BEATS`` intervals,
        with the worker's figures (RSS, counts): an idle worker sends 1.2 requests a second instead
        of 2 (a held work request and a heartbeat), about a quarter less control-plane CPU for an
        idle fleet. With a heartbeat timeout of about three intervals or less every beat goes out.
        """
        link = self._link
        assert link is not None
        skipped = QUIET_BEATS - 1  # the first check sends one: the control plane learns the figures (RSS) at once
        while True:
            await asyncio.sleep(self.heartbeat_interval)
            if not self._registered.is_set():
                skipped = QUIET_BEATS - 1  # and again once registered anew
                continue
            # Skipped only while a work request is out (the control plane answers it at once with any
            # stop or drain order) and if, checked again one interval from now, this worker would still
            # be short of its fence (so the control plane well short of its timeout), whatever the
            # two settings.
            age = time.monotonic() - link.last_contact
            fresh = age + self.heartbeat_interval < fence_after(self.heartbeat_timeout)
            if self._pulling and fresh and skipped < QUIET_BEATS - 1:
                skipped += 1
                continue
            skipped = 0
            try:
                await link.heartbeat(self._beat())
            except NotRegistered:
                self._lost_registration("the control plane does not know this worker")
            except FastworkerError as exc:
                logger.debug("heartbeat failed: %s", exc)
            else:
                self._start_waiting()  # an answer lifts the fence, if it was up

    def _beat(self) -> worker_pb2.Heartbeat:
        return worker_pb2.Heartbeat(
            sender_id=self.settings.worker_id,
            in_flight=len(self._running),
            processed=self.processed,
            failed=self.failed,
            rss_bytes=_rss_bytes(self._pool.pids if self._pool is not None else ()),
            draining=self.state is WorkerState.DRAINING,
            sent_at=time.time(),
        )

    async def _follow_restarts(self) -> None:
        link = self._link
        assert link is not None
        while True:
            await link.instance_changed.wait()
            link.instance_changed.clear()
            self._lost_registration(f"a new control plane instance {link.instance_id} announced itself")
            await self._registered.wait()

    # ---------------------------------------------------------------------------------------- tasks

    def _cancel_tasks(self, task_ids: list[str]) -> None:
        """Stop running tasks the control plane cancelled; each is reported CANCELLED."""
        for task_id in task_ids:
            waiting = self._backlog.pop(task_id, None)
            self._granted.discard(task_id)
            if waiting is not None:
                spec, instance = waiting
                logger.info(
                    "cancelling prefetched task %s on request of the control plane", task_id, extra=_task_fields(spec)
                )
                now = time.time()
                self.failed += 1
                self._report(spec, instance, failure("TaskCancelled", "cancelled on request before it started"), now)
                continue
            running = self._running.get(task_id)
            if running is None or task_id in self._stopping:
                continue  # not here, or ordered stopped already (the control plane repeats its orders)
            self._stopping.add(task_id)
            logger.info("cancelling task %s on request of the control plane", task_id, extra=_task_fields(running.spec))
            if self._pool is not None and self._pool.cancel(task_id):
                continue  # its run() returns a TaskCancelled outcome
            self._cancelled.add(task_id)
            if inspect.getcoroutinestate(running.runner.get_coro()) == inspect.CORO_CREATED:  # type: ignore[arg-type]
                # Its first step is still to come: cancelled now, none of _execute would run (no
                # outcome, the slot held for good); it finds the order in _cancelled and ends itself.
                continue
            running.runner.cancel()

    def _start(self, spec: task_pb2.TaskSpec, instance: str, *, prefetched: bool = False) -> None:
        """Run a dispatched task now, or hold it until a slot frees.

        A task the control plane counts as prefetched waits for a grant even if a slot of ours is
        free already (we finished a task it has not heard of yet): it may hand that task to another
        worker until then. One it counts as running needs no grant.
        """
        if spec.task_id in self._running or spec.task_id in self._backlog:
            return  # already holding this very task (a duplicate delivery): never run it twice at once
        if prefetched or self._occupied() >= self.settings.concurrency:
            self._backlog[spec.task_id] = (spec, instance)
            if spec.priority and spec.priority != NORMAL_PRIORITY:
                self._backlog_ranked = True
            if not prefetched:
                self._granted.add(spec.task_id)  # counted as running already: starts when a slot frees
            return
        if self._fenced():
            # The answer came too late: the control plane may take this task back before it could
            # hear from us again. Not held: the next work request lets it re-queue the task, so
            # that request must go out (the pull loop may be waiting for a slot to free).
            self._warn_late_answer(spec.task_id)
            self._slot_free.set()
            return
        self._run(spec, instance)

    def _warn_late_answer(self, task_id: str) -> None:
        """Say, at most once a minute, that tasks arrive too late to start, and what to do about it."""
        now = time.monotonic()
        if now - self._late_answer_logged < LATE_ANSWER_LOG_EVERY:
            return
        self._late_answer_logged = now
        link = self._link
        waited = now - link.last_contact if link is not None else float("nan")
        logger.warning(
            "task %s arrived %.1f s after this worker asked for work, past its fence (%.1f s): not started; the"
            " control plane re-queues it (it may come back at once). If answers keep taking that long, the link's"
            " round trip exceeds the fence and this worker can start nothing: raise the control plane's"
            " --heartbeat-timeout (the fence is about 70%% of it)",
            task_id,
            waited,
            fence_after(self.heartbeat_timeout),
        )

    def _occupied(self) -> int:
        """Slots in use: running tasks, and pool threads still inside tasks given up at their hard limit."""
        pool = self._pool
        return len(self._running) + (pool.abandoned if pool is not None else 0)

    def _abandoned_slot_freed(self) -> None:
        """A thread given up at its hard limit came back: its slot takes work again."""
        self._start_waiting()
        self._slot_free.set()

    def _run(self, spec: task_pb2.TaskSpec, instance: str) -> None:
        running = _Running(spec, instance, self._progress)
        running.runner = asyncio.get_running_loop().create_task(self._execute(running))
        self._running[spec.task_id] = running

    def _start_waiting(self, *, claim: bool = True) -> None:
        """Fill free slots with granted prefetched tasks (by priority, then oldest) while this worker's lease holds.

        Claims more for the slots still free (``claim``).
        """
        if self._granted and self._occupied() < self.settings.concurrency:
            if not self._registered.is_set() or self._fenced():
                return
            for task_id in self._by_priority([task_id for task_id in self._backlog if task_id in self._granted]):
                if self._occupied() >= self.settings.concurrency:
                    break
                spec, instance = self._backlog.pop(task_id)
                self._granted.discard(task_id)
                self._run(spec, instance)
        if claim and self._claimer is None and self._claims():
            self._claimer = self._spawn(self._claim())

    async def _execute(self, running: _Running) -> None:
        spec = running.spec
        started = running.started_at = time.time()
        with tracing.process(spec, spec.attempt, self.settings.worker_id) as span:
            try:
                outcome = await self._outcome_or_cancel(running)
            except asyncio.CancelledError:
                # Stopped at the drain timeout: no outcome goes out, the control plane decides.
                self._stopped_at_drain_timeout(running, span)
                raise
            tell_span(span, outcome, task=self.registry.get(spec.name), ctx=running.context)
        if running.latest is not None:
            outcome.progress = self._progress.finish(running)
        self._running.pop(spec.task_id, None)
        self._stopping.discard(spec.task_id)
        self._start_waiting()
        self._slot_free.set()
        if outcome.succeeded:
            self.processed += 1
        else:
            self.failed += 1
        finished = outcome.finished_at or time.time()
        self._run_time = 0.8 * self._run_time + 0.2 * max(0.0, finished - (outcome.started_at or started))
        # Read now: a restarted control plane may have adopted the task while it ran (``_adopt``).
        self._report(spec, running.instance, outcome, started)
        log_outcome(running.context or self._context(spec, None), outcome, running.policy)  # once it is on its way

    def _stopped_at_drain_timeout(self, running: _Running, span: ProcessSpan) -> None:
        """End the span and log the line of a run stopped at the drain timeout, as the control plane will end it.

        It runs again if it has retries left, else it fails with ``WorkerLost`` (``Dispatcher.deregister``).
        """
        context = running.context or self._context(running.spec, running.policy)
        span.ended("retry" if context.retries_left > 0 else "failure", "WorkerLost", DRAIN_TIMEOUT_STOP)
        log_outcome(context, failure("WorkerLost", DRAIN_TIMEOUT_STOP, started_at=running.started_at))

    async def _outcome_or_cancel(self, running: _Running) -> Outcome:
        """The run's outcome; a cancel asked for by the control plane ends it as TaskCancelled."""
        spec = running.spec
        if spec.task_id in self._cancelled:  # the order came before this run's first step
            self._cancelled.discard(spec.task_id)
            return failure("TaskCancelled", "cancelled on request before it started", started_at=running.started_at)
        try:
            outcome = await self._outcome(spec, running)
        except (
            Exception
        ) as exc:  # the run could not even start (a bug, a spec it cannot honour): fail it, keep the slot
            logger.exception("task %s (%s) could not be run", spec.task_id, spec.name)
            return failure(type(exc).__name__, f"the worker could not run the task: {exc}")
        except asyncio.CancelledError:
            if spec.task_id not in self._cancelled:
                self._running.pop(spec.task_id, None)
                self._stopping.discard(spec.task_id)
                self._slot_free.set()
                raise
            self._cancelled.discard(spec.task_id)
            current = asyncio.current_task()
            if current is not None:
                current.uncancel()
            return failure("TaskCancelled", "cancelled on request while running", started_at=running.started_at)
        if spec.task_id in self._cancelled:  # an async task that caught its cancellation and returned
            self._cancelled.discard(spec.task_id)
            current = asyncio.current_task()
            if current is not None:
                current.uncancel()
            return failure(
                "TaskCancelled",
                "cancelled on request while running; it caught the cancellation (asyncio.CancelledError) and ran on"
                " until it returned, its value dropped",
                started_at=running.started_at,
            )
        return outcome

    def _report(self, spec: task_pb2.TaskSpec, instance: str, outcome: Outcome, started: float) -> None:
        """Queue a task's outcome for the control plane (sent with the next work request, or at once)."""
        report = worker_pb2.TaskOutcome(
            task_id=spec.task_id,
            attempt=spec.attempt,
            started_at=outcome.started_at or started,
            finished_at=outcome.finished_at or time.time(),
        )
        if outcome.succeeded:
            report.state = task_pb2.TASK_STATE_SUCCESS
            if outcome.result is not None:
                report.result.CopyFrom(outcome.result)
        else:
            report.state = task_pb2.TASK_STATE_FAILURE
            if outcome.retry_delay is not None:
                report.retry_requested = True
                report.retry_delay = outcome.retry_delay
            if outcome.error is not None:
                report.error.CopyFrom(outcome.error)
                if outcome.error.type == "TaskCancelled":
                    report.state = task_pb2.TASK_STATE_CANCELLED
        if outcome.progress is not None:
            report.progress.CopyFrom(outcome.progress.to_wire())
        self._results.append((instance, report))
        self._unacked[spec.task_id] = spec.attempt
        # With a work request out, report at once; else the pull loop is about to carry it.
        if self._pulling and not self._flush_scheduled:
            self._flush_scheduled = True
            if self._refilling and not self._dry:
                # A refill is usually answered at once, and the next request carries this outcome:
                # report separately only if it is held (the control plane ran out of work).
                asyncio.get_running_loop().call_later(REFILL_REPORT_DELAY, self._spawn_flush)
            else:
                self._spawn(self._flush_results())

    async def _outcome(self, spec: task_pb2.TaskSpec, running: _Running) -> Outcome:
        task = self.registry.get(spec.name)
        if task is None:
            return failure("UnknownTask", f"worker {self.settings.worker_id} has no task {spec.name!r}")
        defined = self._defined.get(spec.name)
        if defined is None:
            defined = self._defined[spec.name] = options_policy(task.options)
        policy = running.policy = effective_policy(spec, defined)
        context = running.context = self._context(spec, policy)
        limit, soft = policy.timeout, policy.soft_timeout
        if not task.is_async:
            assert self._pool is not None
            return await self._pool.run(
                spec.task_id,
                spec.name,
                spec.arguments,
                timeout=limit or None,
                soft_timeout=soft or None,
                progress=running,
                context=context,
            )
        prepared = prepare(task, spec.arguments, allow_pickle=self.settings.allow_pickle)
        if isinstance(prepared, Outcome):
            return prepared
        args, kwargs = prepared
        return await run_async_limited(
            task,
            args,
            kwargs,
            hard=limit,
            soft=soft,
            allow_pickle=self.settings.allow_pickle,
            progress=running,
            context=context,
        )

    def _context(self, spec: task_pb2.TaskSpec, policy: TaskPolicy | None) -> TaskContext:
        """What ``current_task()`` returns in a run of ``spec`` (no retries left without a policy)."""
        attempt = spec.attempt or 1
        return TaskContext(
            spec.task_id,
            spec.name,
            attempt,
            policy.retries_left(attempt) if policy is not None else 0,
            self.settings.worker_id,
            spec.headers.get("traceparent") if spec.headers else None,
        )

    def _spawn_flush(self) -> None:
        self._spawn(self._flush_results())

    def _send_progress(self, batch: list[Reported]) -> None:
        """Queue running tasks' latest progress for the control plane (one message at a time, latest wins)."""
        for task_id, attempt, progress in batch:
            self._progress_out[task_id] = worker_pb2.TaskProgress(
                task_id=task_id, attempt=attempt, progress=progress.to_wire()
            )
        if self._progress_sender is None and self._link is not None:
            self._progress_sender = self._spawn(self._flush_progress())

    async def _flush_progress(self) -> None:
        """Send queued progress; best effort: a lost update is superseded, and the last one rides on the outcome."""
        link = self._link
        assert link is not None
        try:
            while self._progress_out and self._registered.is_set():
                batch = list(self._progress_out.values())
                self._progress_out.clear()
                try:
                    await link.send_results(self.settings.worker_id, (), progress=batch)
                except NotRegistered:
                    self._lost_registration("the control plane does not know this worker")
                    return
                except FastworkerError as exc:
                    logger.debug("could not report the progress of %d tasks: %s", len(batch), exc)
                    return
        finally:
            self._progress_sender = None
            self._progress_out.clear()

    async def _flush_results(self) -> None:
        """Send finished outcomes in batches; those of a control plane instance that is gone are dropped."""
        link = self._link
        assert link is not None
        cancelled = False
        try:
            while self._results:
                await self._registered.wait()
                current = link.instance_id
                batch = self._take_results(current)
                if not batch:
                    break  # only outcomes another instance gave: the next registration decides them
                try:
                    await link.send_results(self.settings.worker_id, batch)
                except NotRegistered:
                    # Sent again once registered: applied if the registration resumed, else ignored.
                    self._give_back(current, batch)
                    self._lost_registration("the control plane does not know this worker")
                    return
                except FastworkerError as exc:
                    logger.warning("could not report %d results (will retry): %s", len(batch), exc)
                    self._give_back(current, batch)
                    await asyncio.sleep(0.5)
                    continue
                self._acknowledged(batch)
        except asyncio.CancelledError:
            cancelled = True  # the worker stops (or its drain gave up on the control plane): no successor
            raise
        finally:
            self._flush_scheduled = False
            if self._results and not cancelled and self.state is not WorkerState.STOPPED:
                self._flush_scheduled = True
                self._spawn(self._flush_results())

    # ----------------------------------------------------------------------------------------- drain

    def _drain_ordered(self, timeout: float) -> None:
        """An operator asked this worker to drain: finish within ``timeout``, then exit as on SIGTERM."""
        if self._stop.is_set():
            return
        self._drain_timeout = max(0.0, timeout)
        self.request_stop(f"drain requested by an operator (timeout {timeout:g} s)")

    async def _drain(self) -> None:
        """Take nothing new, finish what runs within the drain timeout, hand back the rest, deregister."""
        self.state = WorkerState.DRAINING
        link = self._link
        assert link is not None
        deadline = time.monotonic() + (
            self._drain_timeout if self._drain_timeout is not None else self.settings.drain_timeout
        )
        farewell = link.farewell_timeout(self.heartbeat_timeout)
        answered = False  # whether the control plane heard of the drain
        if farewell is None:
            logger.info(
                "the control plane has not answered for over %g s: leaving without telling it "
                "(it takes back what this worker held, as for a worker that vanished)",
                self.heartbeat_timeout,
            )
        else:
            try:
                # The control plane stops dispatching to us at once. Within the drain timeout: a
                # control plane that does not answer must not hold the running tasks' deadline back.
                await link.heartbeat(self._beat(), timeout=max(0.1, min(farewell, deadline - time.monotonic())))
                answered = True
            except FastworkerError as exc:
                logger.warning("could not announce the drain: %s", exc)
                link.farewell_unanswered()
        poll = self._poll
        if poll is not None and answered:
            # A work request still out may bring tasks (the control plane answers it once it heard of
            # the drain): let its answer land first, so that they go back with the rest below.
            with contextlib.suppress(Exception, asyncio.CancelledError):  # (the pull loop reports failures)
                await asyncio.wait_for(asyncio.shield(poll), timeout=max(0.0, min(1.0, deadline - time.monotonic())))
            await asyncio.sleep(0)  # the pull loop, woken by the same answer, files what it brought
        # Prefetched tasks have not started: hand them back now, for another worker to run.
        waiting = [spec.task_id for spec, _ in self._backlog.values()] + self._came_while_draining
        self._backlog.clear()
        self._granted.clear()
        while self._running and time.monotonic() < deadline:
            self._slot_free.clear()
            try:
                async with asyncio.timeout(deadline - time.monotonic()):
                    await self._slot_free.wait()
            except TimeoutError:
                break
        unfinished = list(self._running.values())
        for running in unfinished:
            running.runner.cancel()  # first, so no outcome is reported: these are handed back instead
        for running in unfinished:
            try:
                await running.runner
            except (asyncio.CancelledError, Exception):
                pass
            if self._pool is not None:
                self._pool.cancel(running.spec.task_id)  # stop the child if it still runs the task
        await self._deliver_before_leaving(deadline, quietly_for=DELIVERY_QUIET if answered else 0.0)
        farewell = link.farewell_timeout(self.heartbeat_timeout)  # again: the drain may have taken long
        if self._results and farewell is not None and not self._refused:
            try:
                await asyncio.wait_for(self._flush_results(), timeout=farewell)
            except TimeoutError:
                pass
        if self._results:
            logger.warning(
                "could not report %d results before leaving%s",
                len(self._results),
                f" ({self._refused}: the control plane settled their tasks without this process)"
                if self._refused
                else "",
            )
        if farewell is not None and not self._refused:
            try:
                # Only what never started here goes back as if it had not come: a task stopped at the
                # drain timeout ran, and the control plane re-runs it only if it has retries left.
                await link.deregister(self.settings.worker_id, waiting, timeout=farewell)
            except FastworkerError as exc:
                logger.warning("could not deregister: %s", exc)
        logger.info(
            "worker %s drained: %d succeeded, %d failed or were cancelled, %d handed back unstarted,"
            " %d stopped at the drain timeout",
            self.settings.worker_id,
            self.processed,
            self.failed,
            len(waiting),
            len(unfinished),
        )

    async def _deliver_before_leaving(self, deadline: float, *, quietly_for: float = 0.0) -> None:
        """With outcomes undelivered, keep delivering them until ``deadline`` (the drain timeout).

        The control plane may be restarting (a rollout of both): a new instance registers this
        worker again, adopts the tasks and takes their outcomes; leaving at once would make it
        re-run or fail tasks that ended here. A control plane that answers takes them at once, so
        the warning that they wait comes only after ``quietly_for`` seconds.
        """
        if not self._unacked or time.monotonic() >= deadline:
            return
        warn_at: float | None = time.monotonic() + quietly_for  # None once warned
        while self._unacked and time.monotonic() < deadline and not self._refused:
            if warn_at is not None and time.monotonic() >= warn_at:
                warn_at = None
                # Said every time: else a worker that stays for its drain timeout looks stuck.
                logger.warning(
                    "%d outcomes are not delivered yet: offering them for up to %.1f s more (the drain timeout)"
                    " to a control plane that takes them (a restarted one adopts their tasks)",
                    len(self._unacked),
                    deadline - time.monotonic(),
                )
            if not self._registered.is_set() and not self._registering:
                self._spawn(self._register_until_accepted())  # an earlier attempt gave up
            if self._results and self._registered.is_set() and not self._flush_scheduled:
                self._flush_scheduled = True
                self._spawn(self._flush_results())
            await asyncio.sleep(DELIVERY_POLL)

    def _health_problem(self) -> str | None:
        """Why this worker is not healthy (None while it runs): read on the loop by ``/healthz``."""
        return "the worker has stopped" if self.state is WorkerState.STOPPED else None

    def _readiness_problem(self) -> str | None:
        """Why this worker takes no tasks now (None while registered and running): read on the loop by ``/readyz``."""
        if self.state is WorkerState.STOPPED:
            return "the worker has stopped"
        if self.state is WorkerState.DRAINING:
            return "the worker is draining"
        link = self._link
        if self._registered.is_set():
            if link is not None and link.shutdown_announced:
                return "the control plane announced its shutdown: it dispatches nothing until its successor comes"
            if link is not None and worker_fenced(time.monotonic(), link.last_contact, self.heartbeat_timeout):
                # Its lease lapsed: it starts nothing until the control plane answers again.
                return f"no answer from the control plane for {time.monotonic() - link.last_contact:.0f} s"
            return None
        if link is not None and link.problem:
            return f"not registered: the control plane's announcements fail authentication ({link.problem})"
        if link is not None and link.instance_id:
            return "not registered with the control plane yet"
        return f"not registered: no control plane announced itself on {self.settings.control_plane}"

    async def _close(self) -> None:
        self.state = WorkerState.STOPPED
        if self._stall_watch is not None:
            self._stall_watch.stop()
        self._progress.close()
        await cancel_all(self._background)
        await close_home_clients()
        if self._pool is not None:
            await self._pool.close()
        if self._link is not None:
            self._link.close()
        if self.settings.ready_file:
            remove_own_ready_file(self.settings.ready_file)
        if self._health is not None:
            await asyncio.to_thread(self._health.close)  # joins the listener's thread


def _too_large(report: worker_pb2.TaskOutcome, size: int, limit: int) -> None:
    """Turn an outcome no frame to the control plane can carry into a failure that says so, in place."""
    report.ClearField("result")
    report.ClearField("progress")
    report.state = task_pb2.TASK_STATE_FAILURE
    report.retry_requested = False
    report.error.CopyFrom(
        task_pb2.TaskError(
            type="PayloadError",
            message=f"its outcome ({size:,} bytes) does not fit in a frame to the control plane, which reads"
            f" {limit:,} bytes at most (its --max-frame-size)",
        )
    )


def _ids_size(task_ids: Sequence[str]) -> int:
    """Bytes a list of task ids takes in a request (each with its field tag and length)."""
    return sum(len(task_id) + 4 for task_id in task_ids)


def _task_fields(spec: task_pb2.TaskSpec) -> dict[str, Any]:
    """The log fields of a line about one task that is not running here (no task context is bound)."""
    return {"task_id": spec.task_id, "task_name": spec.name, "attempt": spec.attempt}
