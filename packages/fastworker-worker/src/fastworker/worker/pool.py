"""Run sync tasks in a pool of spawned child processes, so that a task that crashes, leaks or hangs costs only its child.

:class:`ProcessPool` lives on the worker daemon's event loop. Each child is started with the
multiprocessing *spawn* context (never fork: the daemon has nng threads), imports the task
modules, and runs one task at a time (see :mod:`fastworker.worker.child` for the child side and
the frames). The pool never blocks the loop while a task runs: it watches each child's result
pipe and its exit (a pidfd on Linux, the process sentinel elsewhere) with ``loop.add_reader``.

A child is killed (SIGKILL, with the process group it leads, so that what the task started
dies too) and replaced when its task passes its hard time limit or is cancelled; a child that
dies on its own (``os.abort()``, a segfault, the OOM killer) is replaced and its task fails with
``WorkerCrashed``; a child that ran ``max_tasks_per_child`` tasks or grew past ``max_rss_bytes``
is asked to exit and replaced. Every child is reaped: none is left a zombie. If this process dies
without closing the pool (SIGKILL), the children die with it, and a reaper process kills their
process groups (:mod:`fastworker.worker._groupreaper`).

Children log as this process does when ``fastworker.client.logsetup.configure_logging`` set it
up (a daemon's ``--log-level`` and ``--log-format``, and its ``worker_id``), to the stderr they
inherit; each run's :class:`~fastworker.client.context.TaskContext` travels with its task.

Not thread-safe: call every method from the thread that runs the pool's event loop.
"""

from __future__ import annotations

import asyncio
import logging
import math
import os
import signal
from collections import deque
from collections.abc import Sequence
from enum import Enum
from multiprocessing import get_context
from multiprocessing.connection import Connection
from multiprocessing.process import BaseProcess
from time import time

from fastworker.client import _tracing as tracing
from fastworker.client._progress import ProgressSink
from fastworker.client.context import TaskContext
from fastworker.client.home import home
from fastworker.client.logsetup import logging_settings
from fastworker.client.models import Progress
from fastworker.protocol.v1.task_pb2 import Payload
from fastworker.worker._groupreaper import GroupReaper
from fastworker.worker.child import (
    LOAD_ERROR,
    OUTCOME,
    PROGRESS,
    READY,
    ChildConfig,
    decode,
    decode_outcome,
    decode_progress,
    encode_exit,
    encode_run,
)
from fastworker.worker.child import main as child_main
from fastworker.worker.errors import TaskLoadError
from fastworker.worker.executor import Outcome, failure
from fastworker.worker.slotwait import SlotWaiters

__all__ = ["ProcessPool"]

_log = logging.getLogger(__name__)

_SPAWN = get_context("spawn")
#: Bytes read from a result pipe per read call (a pipe holds 64 KiB by default).
_READ_SIZE = 1 << 16
#: How long a retired child may take to exit before it is killed.
_RETIRE_TIMEOUT = 5.0
#: How long close() waits for killed children to be reaped.
_KILL_WAIT = 5.0
#: How long a child that closed its exit sentinel may stay alive before it is killed.
_REAP_GRACE = 1.0
#: Delays between attempts to replace a child whose replacement failed to start.
_RESPAWN_DELAY_MIN = 0.5
_RESPAWN_DELAY_MAX = 30.0
#: How often run() tries another child when the one it took turns out to be dead already.
_SEND_ATTEMPTS = 3


class _State(Enum):
    STARTING = "starting"  # spawned, importing the task modules
    IDLE = "idle"  # ready, in the idle queue
    RESERVED = "reserved"  # handed to a run() that has not sent its task yet
    BUSY = "busy"  # running a task
    LEAVING = "leaving"  # out of service: retired, killed, or failed to load; waiting to be reaped
    DEAD = "dead"  # reaped; every resource released


_IN_SERVICE = frozenset({_State.STARTING, _State.IDLE, _State.RESERVED, _State.BUSY})


class _Child:
    """One child process and everything the pool tracks about it."""

    __slots__ = (
        "buf",
        "exit_fd",
        "exit_sent",
        "exit_fd_is_pidfd",
        "exited",
        "future",
        "grouped",
        "load_error",
        "note",
        "on_progress",
        "pid",
        "process",
        "reader",
        "ready",
        "reap_deadline",
        "rfd",
        "started_at",
        "state",
        "task_id",
        "task_name",
        "tasks",
        "timer",
        "writer",
    )

    def __init__(self, process: BaseProcess, writer: Connection, reader: Connection, exited: asyncio.Future[None]):
        pid = process.pid
        assert pid is not None
        self.process = process
        self.pid: int = pid
        self.writer = writer
        self.reader = reader
        self.rfd: int = reader.fileno()
        self.exit_fd: int = -1
        self.exit_fd_is_pidfd = False
        self.buf = bytearray()
        self.state = _State.STARTING
        self.tasks = 0
        self.task_id: str | None = None
        self.task_name = ""
        self.future: asyncio.Future[Outcome] | None = None
        #: Receives the progress of the task it runs, if its run() passed a sink.
        self.on_progress: ProgressSink | None = None
        self.timer: asyncio.TimerHandle | None = None
        self.started_at = 0.0
        self.ready: asyncio.Future[None] | None = None
        self.load_error: TaskLoadError | None = None
        self.grouped = False
        self.note = ""
        self.reap_deadline = 0.0
        self.exit_sent = False
        self.exited = exited

    def cancel_timer(self) -> None:
        if self.timer is not None:
            self.timer.cancel()
            self.timer = None


class ProcessPool:
    """A fixed number of child processes that run sync tasks, each child one task at a time.

    Args:
        size: How many children run tasks at once (at least 1).
        task_modules: Dotted names of the task modules every child imports.
        max_tasks_per_child: Replace a child after it ran this many tasks; 0 for never.
        max_rss_bytes: Replace a child whose resident set size is above this after a task; 0 for
            no limit.
        allow_pickle: Accept pickled arguments and pickle results (an explicit opt-in).
        sys_path: Folders prepended to each child's ``sys.path`` before importing the task
            modules (e.g. the worker's working directory).

    Raises:
        ValueError: ``size`` is below 1, or a limit is negative.
        TypeError: ``task_modules`` is a single str.
    """

    def __init__(
        self,
        size: int,
        task_modules: Sequence[str],
        *,
        max_tasks_per_child: int = 0,
        max_rss_bytes: int = 0,
        allow_pickle: bool = False,
        sys_path: Sequence[str] = (),
    ) -> None:
        if isinstance(task_modules, str):
            raise TypeError(
                f"task_modules must be a sequence of module names, not a str (did you mean [{task_modules!r}]?)"
            )
        if isinstance(sys_path, str):
            raise TypeError(f"sys_path must be a sequence of folders, not a str (did you mean [{sys_path!r}]?)")
        for label, value, low in (
            ("size", size, 1),
            ("max_tasks_per_child", max_tasks_per_child, 0),
            ("max_rss_bytes", max_rss_bytes, 0),
        ):
            if not isinstance(value, int) or isinstance(value, bool):
                raise TypeError(f"{label} must be an int, not {type(value).__qualname__}")
            if value < low:
                raise ValueError(f"{label} must be {low} or more, got {value}")
        self._size = size
        self._modules = tuple(task_modules)
        self._max_tasks = max_tasks_per_child
        self._max_rss = max_rss_bytes
        logs = logging_settings()
        self._config = ChildConfig(
            task_modules=self._modules,
            sys_path=tuple(os.fspath(entry) for entry in sys_path),
            allow_pickle=bool(allow_pickle),
            measure_rss=max_rss_bytes > 0,
            parent_pid=os.getpid(),
            log_level=logs[0] if logs is not None else "",
            log_format=logs[1] if logs is not None else "text",
            log_fields=tuple(logs[2].items()) if logs is not None else (),
            home=home(),  # the daemon's control plane, for tasks that submit tasks
            outcome_base_types=True,
        )
        self._loop: asyncio.AbstractEventLoop | None = None
        self._children: dict[_Child, None] = {}  # every child not yet reaped, in spawn order
        self._idle: deque[_Child] = deque()
        self._waiters: SlotWaiters[_Child] = SlotWaiters(self._release)
        self._running: dict[str, _Child] = {}
        self._sync_names: frozenset[str] = frozenset()
        self._async_names: frozenset[str] = frozenset()
        self._restarts = 0
        self._started = False
        self._closed = False
        self._start_timeout = 30.0
        self._respawn_delay = _RESPAWN_DELAY_MIN
        self._respawns: set[asyncio.TimerHandle] = set()
        self._serial = 0
        self._reaper = GroupReaper()

    # -- properties -------------------------------------------------------------------------

    @property
    def size(self) -> int:
        """How many children the pool keeps."""
        return self._size

    @property
    def busy(self) -> int:
        """How many children are running a task now."""
        return len(self._running)

    @property
    def restarts(self) -> int:
        """How many children were replaced so far (crashed, killed, or retired)."""
        return self._restarts

    @property
    def abandoned(self) -> int:
        """Always 0: a child whose task was given up is killed and replaced, never left running."""
        return 0

    @property
    def pids(self) -> list[int]:
        """The pids of the children in service (starting, idle or busy), oldest first."""
        return [child.pid for child in self._children if child.state in _IN_SERVICE]

    def __repr__(self) -> str:
        state = "closed" if self._closed else "running" if self._started else "new"
        return f"<ProcessPool {state} size={self._size} busy={self.busy} restarts={self._restarts}>"

    # -- life cycle -------------------------------------------------------------------------

    async def start(self, timeout: float = 30) -> None:
        """Start every child and wait until each has imported the task modules.

        Children start one after another, the loop running between them (a start blocks it until
        the new interpreter reads its instructions: on a busy host, a large pool would hold the
        loop, and a SIGTERM, for many seconds), and import side by side.

        Args:
            timeout: Seconds the children may go without one more of them becoming ready (a large
                pool on few cores takes longer than that in all); also the limit for each later
                replacement child.

        Raises:
            TaskLoadError: A child could not import the task modules (the child's error text),
                or died while importing them.
            TimeoutError: No child became ready for ``timeout`` seconds.
            RuntimeError: The pool was started or closed already.
        """
        if self._started or self._closed:
            raise RuntimeError("a ProcessPool can be started once")
        _check_seconds("timeout", timeout)
        self._loop = loop = asyncio.get_running_loop()
        self._started = True
        self._start_timeout = timeout
        self._reaper.start(loop)
        readies: list[asyncio.Future[None]] = []
        try:
            for _ in range(self._size):
                ready: asyncio.Future[None] = loop.create_future()
                readies.append(ready)
                child = self._spawn()
                child.ready = ready
                child.cancel_timer()  # start() has its own deadline
                await asyncio.sleep(0)  # signals, and children that are ready, are seen meanwhile
            waiting = {ready for ready in readies if not ready.done()}
            for ready in readies:
                if ready.done():
                    ready.result()  # one that failed already (TaskLoadError) fails the start
            while waiting:
                done, waiting = await asyncio.wait(waiting, timeout=timeout, return_when=asyncio.FIRST_COMPLETED)
                if not done:
                    raise TimeoutError(
                        f"the pool's children stopped becoming ready: {self._size - len(waiting)} of {self._size}"
                        f" ready, none more for {timeout:g} s"
                    )
                for ready in done:
                    ready.result()
        except BaseException:
            for ready in readies:
                if ready.done() and not ready.cancelled():
                    ready.exception()  # retrieved: no "exception was never retrieved" later
                else:
                    ready.cancel()
            await self.close(timeout=0)
            raise

    async def close(self, timeout: float = 5) -> None:
        """Ask every child to exit, wait up to ``timeout``, then kill and reap the stragglers, and the group reaper.

        A task still running when the time is up fails with ``WorkerLost``; ``run()`` calls
        waiting for a child raise RuntimeError. Calling close again waits for what is left.

        Args:
            timeout: Seconds children get to finish their task and exit cleanly.
        """
        if timeout < 0 or math.isnan(timeout):
            raise ValueError(f"timeout must be 0 or more seconds, got {timeout!r}")
        if not self._closed:
            self._closed = True
            for handle in self._respawns:
                handle.cancel()
            self._respawns.clear()
            self._waiters.fail_all(RuntimeError("the process pool is closed"))
            for child in list(self._children):
                if child.state is _State.STARTING or child.state is _State.RESERVED:
                    self._evict(child)
                elif child.state is _State.IDLE or child.state is _State.BUSY:
                    self._send_exit(child)
        pending = [child.exited for child in self._children]
        if pending and timeout > 0:
            await asyncio.wait(pending, timeout=timeout)
        stragglers = [child for child in self._children if not child.exited.done()]
        if stragglers:
            for child in stragglers:
                if child.state is not _State.LEAVING:
                    self._evict(
                        child, fail=("WorkerLost", "the process pool closed while the task ran; its process was killed")
                    )
                else:
                    self._kill(child)
            await asyncio.wait([child.exited for child in stragglers], timeout=_KILL_WAIT)
            for child in stragglers:
                if not child.exited.done():
                    _log.error("pool child %d did not exit within %g s of SIGKILL", child.pid, _KILL_WAIT)
        await self._reaper.close()  # every child is reaped (or SIGKILLed): it has nothing left to kill

    # -- running tasks ----------------------------------------------------------------------

    async def run(
        self,
        task_id: str,
        name: str,
        arguments: Payload,
        *,
        timeout: float | None = None,
        soft_timeout: float | None = None,
        progress: ProgressSink | None = None,
        context: TaskContext | None = None,
    ) -> Outcome:
        """Run one sync task in a free child and return how it ended; waits for a free child.

        Args:
            task_id: The task's id; unique among the tasks in this pool.
            name: The registered task name.
            arguments: The encoded ``[args, kwargs]``.
            timeout: Hard time limit in seconds, or None for none. When it passes, the child is
                killed and replaced and the Outcome fails with ``TimeLimitExceeded``.
            soft_timeout: Soft time limit in seconds, or None: ``SoftTimeLimitExceeded`` is raised
                inside the task (SIGALRM in the child), which may clean up.
            progress: Called on the loop with what the task reports with ``report_progress``
                (rate-limited by the child; its last value arrives before the outcome).
            context: What ``current_task()`` returns in the task (None: attempt 1, no retries
                left, no worker id).

        Returns:
            The task's Outcome. Besides what the task itself raised, it fails with
            ``TimeLimitExceeded``, ``WorkerCrashed`` (the child died), ``TaskCancelled``
            (:meth:`cancel`), ``WorkerLost`` (the pool closed under it) or ``UnknownTask``.

        Raises:
            TypeError: The task is an ``async def``; run those on the event loop.
            ValueError: ``timeout`` is not a positive number, or ``task_id`` is in the pool already.
            RuntimeError: The pool is not started, or is closed.
            asyncio.CancelledError: The caller was cancelled; a task it was running is killed
                with its child, which is replaced.
        """
        loop = self._loop
        if loop is None or self._closed:
            raise RuntimeError("the process pool is closed" if self._closed else "start() the process pool first")
        if name in self._async_names:
            raise TypeError(f"task {name!r} is async: await it on the event loop, not in a pool process")
        if timeout is not None:
            _check_seconds("timeout", timeout)
        if task_id in self._running or task_id in self._waiters:
            raise ValueError(f"task {task_id!r} is in this process pool already")
        if name not in self._sync_names:
            return failure("UnknownTask", f"no task named {name!r} in the pool's task modules")
        frame = encode_run(task_id, name, arguments, soft_timeout or 0.0, tracing.carrier(), context)
        for _ in range(_SEND_ATTEMPTS):
            child = self._take_idle()
            if child is None:
                child = await self._wait_for_child(task_id)
            if child is None:
                return failure("TaskCancelled", f"task {name!r} was cancelled before it started")
            if self._waiters.cancelled_after_hand_over(task_id):
                self._release(child)
                return failure("TaskCancelled", f"task {name!r} was cancelled before it started")
            if self._is_closed():  # closed while this run() waited
                self._release(child)
                raise RuntimeError("the process pool is closed")
            if child.state is not _State.RESERVED:
                continue  # it died after it was handed over
            started = time()
            future: asyncio.Future[Outcome] = loop.create_future()
            child.state = _State.BUSY
            child.task_id, child.task_name, child.future, child.started_at = task_id, name, future, started
            child.on_progress = progress
            self._running[task_id] = child
            try:
                child.writer.send_bytes(frame)
            except OSError:  # the child died while idle; its exit is reaped in the background
                self._evict(child, note="its task pipe broke")
                self._replace()
                continue
            if timeout is not None:
                child.timer = loop.call_later(timeout, self._on_time_limit, child, future, timeout)
            try:
                return await future
            except asyncio.CancelledError:
                if child.future is future:
                    self._evict(child)
                    self._replace()
                raise
        return failure("WorkerCrashed", f"task {name!r} found no live process to run it ({_SEND_ATTEMPTS} died)")

    def cancel(self, task_id: str) -> bool:
        """Cancel a task of this pool: kill the child running it, and replace the child.

        The pending :meth:`run` returns a failed Outcome of type ``TaskCancelled``. A task
        still waiting for a free child is cancelled too (it never starts).

        Returns:
            True when the task was running or waiting in this pool; False otherwise.
        """
        waiting = self._waiters.cancel(task_id)
        if waiting is not None:
            return waiting
        child = self._running.get(task_id)
        if child is None:
            return False
        self._evict(
            child,
            fail=("TaskCancelled", f"task {child.task_name!r} was cancelled while it ran; its process was killed"),
        )
        self._replace()
        return True

    def _is_closed(self) -> bool:
        return self._closed

    def _take_idle(self) -> _Child | None:
        """Reserve an idle child, if there is one: the one that went idle last.

        Its memory is still in the CPU's caches and it sleeps least deeply: a sequential task's round
        trip through a pool of 16 took 50 µs this way, against 101 µs through the child idle longest.
        """
        if not self._idle:
            return None
        child = self._idle.pop()
        child.state = _State.RESERVED
        return child

    async def _wait_for_child(self, task_id: str) -> _Child | None:
        """Wait until a child is free (None when the task was cancelled while waiting)."""
        if self._closed:
            raise RuntimeError("the process pool is closed")
        return await self._waiters.wait(task_id)

    def _release(self, child: _Child) -> None:
        """Hand a ready child to the oldest waiting run(), or queue it as idle."""
        if child.state is not _State.IDLE and child.state is not _State.RESERVED:
            return
        child.state = _State.RESERVED
        if not self._waiters.hand(child):
            child.state = _State.IDLE
            self._idle.append(child)

    # -- child events -----------------------------------------------------------------------

    def _spawn(self) -> _Child:
        """Start one child; its READY (or its death) arrives through the loop's readers."""
        loop = self._loop
        assert loop is not None
        self._serial += 1
        tasks_in, tasks_out = _SPAWN.Pipe(duplex=False)
        results_in, results_out = _SPAWN.Pipe(duplex=False)
        process = _SPAWN.Process(
            target=child_main,
            args=(self._config, tasks_in, results_out),
            name=f"fastworker-pool-{self._serial}",
            daemon=True,  # terminated at interpreter exit if the pool was never closed
        )
        try:
            process.start()
        except BaseException:
            tasks_out.close()
            results_in.close()
            raise
        finally:
            tasks_in.close()
            results_out.close()
        os.set_blocking(results_in.fileno(), False)
        child = _Child(process, tasks_out, results_in, loop.create_future())
        self._reaper.watch(child.pid)  # the group it leads once it runs, with what its tasks start
        try:
            child.exit_fd = os.pidfd_open(child.pid)
            child.exit_fd_is_pidfd = True
        except (AttributeError, OSError):  # not Linux >= 5.3: the sentinel closes when the child exits
            child.exit_fd = process.sentinel
        self._children[child] = None
        loop.add_reader(child.rfd, self._on_readable, child)
        loop.add_reader(child.exit_fd, self._on_exit, child)
        child.timer = loop.call_later(self._start_timeout, self._on_start_timeout, child)
        return child

    def _replace(self) -> None:
        """Start a child in place of one that left service."""
        if self._closed:
            return
        self._restarts += 1
        self._respawn()

    def _respawn(self) -> None:
        if self._closed:
            return
        try:
            self._spawn()
        except Exception:
            _log.exception("cannot start a pool process; retrying in %g s", self._respawn_delay)
            self._schedule_respawn()

    def _schedule_respawn(self) -> None:
        assert self._loop is not None
        delay = self._respawn_delay
        self._respawn_delay = min(delay * 2, _RESPAWN_DELAY_MAX)

        def fire() -> None:
            self._respawns.discard(handle)
            self._respawn()

        handle = self._loop.call_later(delay, fire)
        self._respawns.add(handle)

    def _on_readable(self, child: _Child) -> None:
        """Read what the child wrote (never blocking) and handle every complete frame."""
        buf = child.buf
        while True:
            try:
                chunk = os.read(child.rfd, _READ_SIZE)
            except BlockingIOError:
                break
            except OSError:
                chunk = b""
            if not chunk:
                self._on_pipe_closed(child)
                break
            buf += chunk
            if len(chunk) < _READ_SIZE:
                break
        while len(buf) >= 4 and child.state is not _State.DEAD:
            size = int.from_bytes(buf[:4], "big", signed=True)
            start = 4
            if size == -1:  # Connection.send_bytes' header for bodies over 2 GiB
                if len(buf) < 12:
                    return
                size, start = int.from_bytes(buf[4:12], "big"), 12
            end = start + size
            if len(buf) < end:
                return
            frame = bytes(buf[start:end])
            del buf[:end]
            self._on_frame(child, frame)

    def _on_pipe_closed(self, child: _Child) -> None:
        """The child's result pipe hit end of file: it is exiting, or (a task did it) closed the pipe."""
        assert self._loop is not None
        if child.rfd >= 0:
            self._loop.remove_reader(child.rfd)
            child.rfd = -1
        if child.state is not _State.LEAVING and child.state is not _State.DEAD:
            self._loop.call_later(_REAP_GRACE, self._kill_if_alive, child, "it closed its pipe to the pool")

    def _kill_if_alive(self, child: _Child, note: str) -> None:
        if child.state is not _State.DEAD:
            child.note = child.note or note
            self._kill(child)

    def _on_frame(self, child: _Child, frame: bytes) -> None:
        try:
            message = decode(frame)
            tag = message[0]
            if child.state is _State.BUSY and tag == OUTCOME:
                self._on_outcome(child, *decode_outcome(message))
            elif tag == PROGRESS:
                self._on_progress(child, decode_progress(message))
            elif child.state is _State.STARTING and tag == READY:
                self._on_ready(child, message[2], message[3])
            elif child.state is _State.STARTING and tag == LOAD_ERROR:
                child.load_error = TaskLoadError(str(message[1]), str(message[2]))
                if child.ready is not None and not child.ready.done():
                    child.ready.set_exception(child.load_error)
            elif child.state is not _State.LEAVING:
                raise ValueError(f"unexpected frame {tag} from a {child.state.value} child")
        except (ValueError, TypeError, IndexError) as exc:  # our own protocol broke: never trust that child again
            _log.error("pool child %d sent a bad frame: %s", child.pid, exc)
            child.note = child.note or f"it sent a bad frame ({exc})"
            self._kill(child)

    def _on_ready(self, child: _Child, sync_names: list[str], async_names: list[str]) -> None:
        child.cancel_timer()
        child.grouped = True
        self._sync_names = frozenset(sync_names)
        self._async_names = frozenset(async_names)
        self._respawn_delay = _RESPAWN_DELAY_MIN
        if self._closed:
            self._send_exit(child)
            return
        child.state = _State.IDLE
        if child.ready is not None and not child.ready.done():
            child.ready.set_result(None)
        self._release(child)

    def _on_progress(self, child: _Child, progress: Progress) -> None:
        sink = child.on_progress
        if sink is None or child.state is not _State.BUSY:
            return  # nobody asked for it (or the task is over): dropped
        try:
            sink(progress)
        except Exception:
            _log.exception("handling the progress of task %s failed", child.task_id)

    def _on_outcome(self, child: _Child, outcome: Outcome, rss: int) -> None:
        future, task_id = child.future, child.task_id
        child.cancel_timer()
        child.future = child.task_id = child.on_progress = None
        if task_id is not None:
            self._running.pop(task_id, None)
        child.tasks += 1
        child.state = _State.RESERVED
        if self._max_tasks and child.tasks >= self._max_tasks:
            _log.debug("pool child %d ran %d tasks: replacing it", child.pid, child.tasks)
            self._send_exit(child)
            self._replace()
        elif self._max_rss and rss > self._max_rss:
            _log.info("pool child %d uses %d bytes, over the limit of %d: replacing it", child.pid, rss, self._max_rss)
            self._send_exit(child)
            self._replace()
        elif self._closed:
            self._send_exit(child)
        else:
            self._release(child)
        if future is not None and not future.done():
            future.set_result(outcome)

    def _on_time_limit(self, child: _Child, future: asyncio.Future[Outcome], limit: float) -> None:
        child.timer = None
        if child.future is not future:
            return
        message = f"task {child.task_name!r} exceeded its hard time limit of {limit:g} s; its process was killed"
        self._evict(child, fail=("TimeLimitExceeded", message))
        self._replace()

    def _on_start_timeout(self, child: _Child) -> None:
        child.timer = None
        if child.state is _State.STARTING:
            child.note = f"it was not ready within {self._start_timeout:g} s"
            self._kill(child)

    def _on_exit(self, child: _Child) -> None:
        """The child's exit fd is readable: it exited (or, without pidfd, closed its sentinel)."""
        loop = self._loop
        assert loop is not None
        loop.remove_reader(child.exit_fd)
        if child.rfd >= 0:
            self._on_readable(child)  # an outcome written just before it died still counts
        child.reap_deadline = loop.time() + _REAP_GRACE
        self._reap(child, 0.001)

    def _reap(self, child: _Child, delay: float) -> None:
        loop = self._loop
        assert loop is not None
        code = child.process.exitcode  # waitpid(WNOHANG)
        if code is None:  # only without pidfd: the sentinel closed a moment before the exit
            if loop.time() > child.reap_deadline:
                child.note = child.note or "it closed its exit sentinel but kept running"
                self._kill(child)
                child.reap_deadline = math.inf
            loop.call_later(delay, self._reap, child, min(delay * 2, 0.1))
            return
        self._on_dead(child, code)

    def _on_dead(self, child: _Child, code: int) -> None:
        """The child is reaped: fail its task, replace it if it was in service, free its resources."""
        loop = self._loop
        assert loop is not None
        state = child.state
        if state is not _State.LEAVING and child.grouped:
            _kill_group(child.pid)  # what its task started dies with it
        self._reaper.forget(child.pid)  # its group is killed, or given up with its clean exit
        child.state = _State.DEAD
        child.cancel_timer()
        if child.rfd >= 0:
            loop.remove_reader(child.rfd)
            child.rfd = -1
        if child.exit_fd_is_pidfd:
            os.close(child.exit_fd)
        child.exit_fd = -1
        child.writer.close()
        child.reader.close()
        child.process.close()
        del self._children[child]
        how = _describe_exit(code)
        if child.note:
            how = f"{how}: {child.note}"
        if state is _State.STARTING:
            error = child.load_error or TaskLoadError(
                f"a pool process {how} while importing the task modules", ", ".join(self._modules)
            )
            if child.ready is not None:
                if not child.ready.done():
                    child.ready.set_exception(error)
            elif not self._closed:
                _log.error("a replacement pool process failed: %s; retrying in %g s", error, self._respawn_delay)
                self._schedule_respawn()
        elif state is not _State.LEAVING:
            if state is _State.IDLE:
                self._idle.remove(child)
            future, task_id = child.future, child.task_id
            if future is not None and task_id is not None:
                self._running.pop(task_id, None)
                if not future.done():
                    message = f"the process running task {child.task_name!r} (pid {child.pid}) {how}"
                    future.set_result(failure("WorkerCrashed", message, started_at=child.started_at))
            else:
                _log.warning("an idle pool process (pid %d) %s; replacing it", child.pid, how)
            self._replace()
        child.future = child.on_progress = None
        child.exited.set_result(None)

    # -- taking children out of service -----------------------------------------------------

    def _evict(self, child: _Child, *, fail: tuple[str, str] | None = None, note: str = "") -> None:
        """Take a child out of service and kill it, failing its task with ``fail`` if given."""
        future, task_id = child.future, child.task_id
        child.cancel_timer()
        child.future = child.task_id = child.on_progress = None
        if task_id is not None:
            self._running.pop(task_id, None)
        if child.state is _State.IDLE:
            self._idle.remove(child)
        child.state = _State.LEAVING
        child.note = child.note or note
        self._kill(child)
        if future is not None and not future.done():
            if fail is not None:
                future.set_result(failure(*fail, started_at=child.started_at))
            else:
                future.cancel()

    def _send_exit(self, child: _Child) -> None:
        """Ask a child to exit once its current task (if any) is done; kill it if it takes too long."""
        assert self._loop is not None
        if child.state is _State.IDLE:
            self._idle.remove(child)
        if child.state is not _State.BUSY:
            child.state = _State.LEAVING
        if not child.exit_sent:
            child.exit_sent = True
            try:
                child.writer.send_bytes(encode_exit())
            except OSError:
                self._kill(child)
                return
        if child.state is _State.LEAVING:
            child.cancel_timer()
            child.timer = self._loop.call_later(_RETIRE_TIMEOUT, self._kill, child)

    def _kill(self, child: _Child) -> None:
        """SIGKILL a child that is not reaped yet (and the process group it leads)."""
        if child.state is _State.DEAD:
            return
        if child.grouped:
            _kill_group(child.pid)
        try:
            os.kill(child.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass


def _kill_group(pgid: int) -> None:
    try:
        os.killpg(pgid, signal.SIGKILL)
    except (ProcessLookupError, PermissionError):
        pass


def _describe_exit(code: int) -> str:
    if code < 0:
        try:
            name = signal.Signals(-code).name
        except ValueError:
            name = f"signal {-code}"
        hint = " (out of memory, or killed from outside)" if -code == signal.SIGKILL else ""
        return f"was killed by {name}{hint}"
    return f"exited with code {code}"


def _check_seconds(label: str, value: float) -> None:
    if not isinstance(value, int | float) or isinstance(value, bool):
        raise TypeError(f"{label} must be a number of seconds, not {type(value).__qualname__}")
    if not (value > 0 and math.isfinite(value)):
        raise ValueError(f"{label} must be a positive, finite number of seconds, got {value!r}")
