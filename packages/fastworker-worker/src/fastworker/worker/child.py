"""Run sync tasks inside a pool child process, and frame the messages it exchanges with its pool.

:func:`main` is the target of every child that :class:`fastworker.worker.pool.ProcessPool` starts
with the multiprocessing *spawn* context. The child imports the task modules, reports ``READY``
with its task names (or ``LOAD_ERROR``), then runs one task per ``RUN`` frame with
:func:`~fastworker.worker.executor.prepare` and :func:`~fastworker.worker.executor.run_sync`
and answers each with an ``OUTCOME`` frame, until it reads ``EXIT`` or its pipe closes. What a
task reports with ``report_progress`` goes out as ``PROGRESS`` frames before its ``OUTCOME``, at
most a few a second (:class:`~fastworker.worker.progress.ProgressPump`: the latest value wins).
Each run's task context (``current_task()``) comes with its ``RUN`` frame. The child logs as the
daemon that started it does (level, format, process fields: :class:`ChildConfig`), to the stderr
it inherits, so what a task logs reaches the daemon's log with the task's fields.

Frames are MessagePack arrays sent with ``Connection.send_bytes`` (a 4-byte big-endian length,
then the body); task data stays in its :class:`~fastworker.protocol.v1.task_pb2.Payload` bytes
and is never pickled:

=============  ==========  ===============================================================
frame          direction   array
=============  ==========  ===============================================================
``RUN``        to child    ``[1, task_id, name, codec, data, soft_timeout, trace, attempt,
                           retries_left, worker_id, traceparent ("": none)]``
``EXIT``       to child    ``[2]``
``READY``      to pool     ``[1, pid, [sync task names], [async task names]]``
``LOAD_ERROR`` to pool     ``[2, message, module]``
``OUTCOME``    to pool     ``[3, succeeded, codec, data, error type, message, traceback,
                           started_at, finished_at, rss bytes]``
``PROGRESS``   to pool     ``[4, done, total (-1: unknown), message, reported_at]``
=============  ==========  ===============================================================
"""

from __future__ import annotations

import contextlib
import os
import resource
import signal
import sys
import traceback
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from multiprocessing import current_process
from multiprocessing.connection import Connection
from typing import Any

import msgpack

from fastworker.client import _tracing as tracing
from fastworker.client._progress import SINK
from fastworker.client.context import TaskContext
from fastworker.client.errors import SoftTimeLimitExceeded
from fastworker.client.home import Home, set_home
from fastworker.client.models import Progress
from fastworker.protocol.v1.task_pb2 import Payload, TaskError
from fastworker.worker.errors import TaskLoadError
from fastworker.worker.executor import Outcome, bound_error, failure, prepare, run_sync
from fastworker.worker.loader import load_task_modules
from fastworker.worker.progress import ProgressPump

__all__ = [
    "EXIT",
    "LOAD_ERROR",
    "OUTCOME",
    "PROGRESS",
    "READY",
    "RUN",
    "ChildConfig",
    "decode",
    "decode_outcome",
    "decode_progress",
    "encode_exit",
    "encode_progress",
    "encode_run",
    "main",
    "read_rss",
]

# Frame tags. To the child:
RUN = 1
EXIT = 2
# To the pool:
READY = 1
LOAD_ERROR = 2
OUTCOME = 3
PROGRESS = 4

_EXIT_FRAME: bytes = msgpack.packb([EXIT])
_PR_SET_PDEATHSIG = 1  # from <linux/prctl.h>


@dataclass(frozen=True, slots=True)
class ChildConfig:
    """What a child needs to know before it can run tasks (pickled once, by spawn, at start).

    Attributes:
        task_modules: Dotted names of the task modules to import.
        sys_path: Entries prepended to the child's ``sys.path`` before importing.
        allow_pickle: Accept pickled arguments and pickle results (an explicit opt-in).
        measure_rss: Report the resident set size after each task (the pool has an RSS limit).
        parent_pid: The pool's pid; the child exits when it is no longer its parent.
        log_level: The least severe level the child logs ("": leave its logging alone, as
            Python's defaults have it).
        log_format: ``text`` or ``json`` (``fastworker.client.logsetup``).
        log_fields: Fields every record of the child carries (the daemon's ``worker_id``).
        home: The control plane the child's tasks submit to by default (the daemon's).
        outcome_base_types: The pool reads a failure's base type names (an ``OUTCOME`` array's 12th
            element). A child spawned from newer code on disk by an older pool (an upgrade under a
            running worker) reads this as absent and sends the 11 elements that pool expects.
    """

    task_modules: tuple[str, ...]
    sys_path: tuple[str, ...]
    allow_pickle: bool
    measure_rss: bool
    parent_pid: int
    log_level: str = ""
    log_format: str = "text"
    log_fields: tuple[tuple[str, Any], ...] = ()
    home: Home | None = None
    outcome_base_types: bool = False


def encode_run(
    task_id: str,
    name: str,
    arguments: Payload,
    soft_timeout: float = 0.0,
    trace: dict[str, str] | None = None,
    context: TaskContext | None = None,
) -> bytes:
    """The ``RUN`` frame body for one task.

    ``soft_timeout`` 0: none; ``trace``: the run's trace context, if any; ``context``: what
    ``current_task()`` returns in the child (None: a first attempt, no retries, no worker id).
    """
    if context is None:
        attempt, retries_left, worker_id, traceparent = 1, 0, "", ""
    else:
        attempt, retries_left, worker_id = context.attempt, context.retries_left, context.worker_id
        traceparent = context.traceparent or ""
    frame: bytes = msgpack.packb(
        [
            RUN,
            task_id,
            name,
            arguments.codec,
            arguments.data,
            soft_timeout,
            trace or {},
            attempt,
            retries_left,
            worker_id,
            traceparent,
        ]
    )
    return frame


def encode_exit() -> bytes:
    """The ``EXIT`` frame body: finish and exit cleanly."""
    return _EXIT_FRAME


def decode(frame: bytes | bytearray | memoryview) -> list[Any]:
    """Unpack a frame body into its array; raises ``ValueError`` for anything else."""
    try:
        message = msgpack.unpackb(frame, raw=False, use_list=True)
    except Exception as exc:  # msgpack raises several unrelated types on corrupt input
        raise ValueError(f"corrupt frame: {exc}") from exc
    if not isinstance(message, list) or not message or not isinstance(message[0], int):
        raise ValueError(f"malformed frame: {message!r:.200}")
    return message


def decode_outcome(message: Sequence[Any]) -> tuple[Outcome, int]:
    """Rebuild the Outcome and the reported RSS (0 when not measured) from an ``OUTCOME`` array."""
    # 11 elements from a child of an older version (spawned from the code on disk): no base types.
    _, succeeded, codec, data, error_type, error_message, error_traceback, started, finished, rss, retry = message[:11]
    bases = message[11] if len(message) > 11 else []
    if succeeded:
        outcome = Outcome(True, Payload(codec=codec, data=data), None, started, finished)
    else:
        if not (isinstance(bases, list) and all(isinstance(name, str) for name in bases)):
            raise ValueError(f"malformed outcome frame: {message!r:.200}")
        error = bound_error(
            TaskError(type=error_type, message=error_message, traceback=error_traceback, base_types=bases)
        )
        outcome = Outcome(False, None, error, started, finished, None if retry < 0 else float(retry))
    return outcome, int(rss)


def encode_progress(progress: Progress) -> bytes:
    """The ``PROGRESS`` frame body for a run's latest progress."""
    total = -1 if progress.total is None else progress.total
    frame: bytes = msgpack.packb([PROGRESS, progress.done, total, progress.message, progress.reported_at])
    return frame


def decode_progress(message: Sequence[Any]) -> Progress:
    """Rebuild the Progress of a ``PROGRESS`` array; raises ``ValueError`` for a malformed one."""
    _, done, total, text, reported_at = message
    if not (isinstance(done, int) and isinstance(total, int) and isinstance(text, str)):
        raise ValueError(f"malformed progress frame: {message!r:.200}")
    if done < 0 or total < -1 or not isinstance(reported_at, int | float):
        raise ValueError(f"malformed progress frame: {message!r:.200}")
    return Progress(done, None if total < 0 else total, text, float(reported_at))


def _encode_outcome(outcome: Outcome, rss: int, with_bases: bool = True) -> bytes:
    result, error = outcome.result, outcome.error
    fields: list[Any] = [
        OUTCOME,
        outcome.succeeded,
        result.codec if result is not None else 0,
        result.data if result is not None else b"",
        error.type if error is not None else "",
        error.message if error is not None else "",
        error.traceback if error is not None else "",
        outcome.started_at,
        outcome.finished_at,
        rss,
        -1.0 if outcome.retry_delay is None else outcome.retry_delay,
    ]
    if with_bases:
        fields.append(list(error.base_types) if error is not None else [])
    frame: bytes = msgpack.packb(fields)
    return frame


_PAGE_SIZE = os.sysconf("SC_PAGE_SIZE") if hasattr(os, "sysconf") else 4096


def read_rss() -> int:
    """This process's current resident set size in bytes (peak RSS where /proc is missing)."""
    try:
        with open("/proc/self/statm", "rb") as statm:
            return int(statm.read().split()[1]) * _PAGE_SIZE
    except (OSError, ValueError, IndexError):
        peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
        return peak if sys.platform == "darwin" else peak * 1024  # bytes on macOS, KiB elsewhere


def main(config: ChildConfig, tasks_in: Connection, results_out: Connection) -> None:
    """A pool child's whole life: load the task modules, then run tasks until told to exit.

    Args:
        config: The pool's settings.
        tasks_in: Read end of the pool-to-child pipe (``RUN`` and ``EXIT`` frames).
        results_out: Write end of the child-to-pool pipe (``READY``, ``LOAD_ERROR``, ``OUTCOME``).
    """
    _detach(config.parent_pid)
    for conn in (tasks_in, results_out):  # keep them out of processes that tasks start
        os.set_inheritable(conn.fileno(), False)
    if config.log_level:  # before the task modules load: what they log at import counts too
        from fastworker.client.logsetup import configure_logging, set_process_log_fields

        configure_logging(config.log_level, config.log_format)
        set_process_log_fields(**dict(config.log_fields))
    sys.path[:0] = config.sys_path
    set_home(config.home)
    send = results_out.send_bytes
    try:
        registry = load_task_modules(config.task_modules)
    except TaskLoadError as exc:
        send(msgpack.packb([LOAD_ERROR, str(exc), exc.module]))
        return
    except Exception as exc:
        text = f"loading task modules failed: {type(exc).__name__}: {exc}"
        send(msgpack.packb([LOAD_ERROR, text, ", ".join(config.task_modules)]))
        return
    sync_names = [tf.name for tf in registry if not tf.is_async]
    async_names = [tf.name for tf in registry if tf.is_async]
    send(msgpack.packb([READY, os.getpid(), sync_names, async_names]))

    recv = tasks_in.recv_bytes
    allow_pickle, measure_rss = config.allow_pickle, config.measure_rss
    with_bases = getattr(config, "outcome_base_types", False)  # absent in an older pool's config
    pump = ProgressPump(lambda progress: send(encode_progress(progress)))
    SINK.set(pump)  # once: this thread runs every task, and the pump knows which one is under way
    while True:
        try:
            frame = recv()
        except (EOFError, OSError):  # the pool is gone
            return
        message = decode(frame)
        if message[0] != RUN:
            return
        _, task_id, name, codec, data, soft_timeout, trace, attempt, retries_left, worker_id, traceparent = message
        tf = registry.get(name)
        try:
            if tf is None or tf.is_async:
                outcome = failure("UnknownTask", f"no sync task named {name!r} in this worker's task modules")
            else:
                prepared = prepare(tf, Payload(codec=codec, data=data), allow_pickle=allow_pickle)
                if isinstance(prepared, Outcome):
                    outcome = prepared
                else:
                    context = TaskContext(task_id, name, attempt, retries_left, worker_id, traceparent or None)
                    pump.start_run()
                    try:
                        with _soft_limit(soft_timeout, name), tracing.attached(trace):
                            outcome = run_sync(tf, prepared[0], prepared[1], allow_pickle=allow_pickle, context=context)
                    finally:
                        pump.end_run()  # its last progress goes out before its outcome
            reply = _encode_outcome(outcome, read_rss() if measure_rss else 0, with_bases)
        except BaseException as exc:  # KeyboardInterrupt from the task, or an outcome that did not encode
            text = "".join(traceback.format_exception(exc))
            reply = _encode_outcome(failure(type(exc).__name__, _text(exc), text), 0, with_bases)
        send(reply)


@contextlib.contextmanager
def _soft_limit(seconds: float, name: str) -> Iterator[None]:
    """Raise SoftTimeLimitExceeded in the task ``name`` (this process's main thread) once seconds pass."""
    if not seconds or seconds <= 0:
        yield
        return

    def expire(signum: int, frame: object) -> None:
        raise SoftTimeLimitExceeded(
            f"task {name!r} exceeded its soft time limit of {seconds:g} s"
        )  # as every pool says

    previous = signal.signal(signal.SIGALRM, expire)
    signal.setitimer(signal.ITIMER_REAL, seconds)
    try:
        yield
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, previous)


def _detach(parent_pid: int) -> None:
    """Leave the pool's signals to the pool, and die with it.

    The child leads its own process group, so that the pool can kill what a task started along
    with it, and a terminal's Ctrl-C reaches the pool alone. It is no daemonic process, so that
    tasks may start processes of their own. On Linux it is SIGKILLed when the pool process dies
    (strictly: when the thread that started it exits, which is the event loop's thread).
    """
    current_process().daemon = False
    try:
        os.setpgid(0, 0)
    except OSError:
        pass
    if sys.platform.startswith("linux"):
        try:
            import ctypes
            import signal

            libc = ctypes.CDLL(None, use_errno=True)
            libc.prctl(_PR_SET_PDEATHSIG, int(signal.SIGKILL), 0, 0, 0)
        except (OSError, AttributeError):
            pass
    if os.getppid() != parent_pid:  # the pool died before prctl took effect
        os._exit(1)


def _text(exc: BaseException) -> str:
    try:
        return str(exc)
    except Exception:
        return f"<unprintable {type(exc).__name__} object>"
