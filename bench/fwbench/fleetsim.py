"""A light **simulated** subworker fleet for the ``fleet`` scenario: many workers per process, the real protocol.

``python -m fwbench.fleetsim --discovery ADDR --prefix sim500 --start 0 --count 125 --status FILE``
runs 125 workers on one asyncio loop. Each one *is* FastWorker's own worker runtime
(:class:`fastworker.worker.runtime.Worker`, with the CLI's defaults: ``--prefetch`` 4 per slot),
so registration (a unique worker id, a fresh incarnation), heartbeats at the interval the control
plane announced, long-polled work requests, prefetch and claims, results reported on their own
message while a work request is out, re-registration after a control-plane restart, and drain +
deregistration on SIGTERM are the real code paths, each worker on a connection of its own
(a discovery subscription and a request socket). What is simulated is only where the task runs:

- ``add`` is registered as an **async** task, so the runtime runs it on this process's loop instead
  of sending it to a child process (the runtime decodes the arguments and encodes the result with
  ``fastworker.protocol.payload``, as for any task; the benchmark client checks every result);
- it awaits ``--task-time`` seconds first (default 0.5 ms, about what a real worker's round trip to
  its child process takes on the 2-core machine), so outcomes arrive spread out as from real
  children, and the worker's message pattern (work requests, results, claims per task) matches a
  real worker's: the scenario's calibration row (the same fleet size real and simulated) shows it.

The process writes its counters (requests, and attempts on the wire, by kind; the bytes it sent and received on the
dispatch channel, summed over its workers, tasks run, its own CPU seconds) as JSON to ``--status``
a few times a second, so the benchmark can report the simulator's own cost.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import contextvars
import json
import logging
import os
import resource
import signal
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any, ClassVar

from fastworker.client.task import TaskRegistry, task
from fastworker.protocol.v1 import worker_pb2
from fastworker.worker import runtime
from fastworker.worker.link import ControlPlaneLink
from fastworker.worker.runtime import Worker, WorkerSettings, WorkerState

#: Seconds between status-file writes.
STATUS_INTERVAL = 0.2
#: Default seconds a simulated task takes (a real worker's round trip to its child process).
DEFAULT_TASK_TIME = 0.0005

#: Set from ``--task-time`` before any worker starts.
TASK_TIME = DEFAULT_TASK_TIME


@task(name="add")
async def add(x: int, y: int) -> int:
    """``bench/tasks.py``'s ``add``, run on the simulator's loop after ``--task-time``."""
    if TASK_TIME > 0:
        await asyncio.sleep(TASK_TIME)
    return x + y


#: The kind of request the current task is making (a contextvar: many workers share the loop).
_KIND: contextvars.ContextVar[str] = contextvars.ContextVar("kind", default="other")


class Counters:
    """What the whole simulator process sent and received (shared by its workers' links).

    ``requests`` counts the link's calls by kind; ``attempts`` counts what went on the wire, by kind:
    the link's requester sends a request again when an attempt got no answer in time.
    """

    requests: ClassVar[dict[str, int]] = {}
    attempts: ClassVar[dict[str, int]] = {}
    bytes_sent = 0
    bytes_received = 0


class CountingLink(ControlPlaneLink):
    """The worker's own link, counting its requests and attempts by kind and the bytes of every exchange."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        channel = self._channel
        plain = channel.request

        async def counted(data: bytes, timeout: float) -> bytes:
            kind = _KIND.get()
            Counters.attempts[kind] = Counters.attempts.get(kind, 0) + 1
            Counters.bytes_sent += len(data)
            reply = await plain(data, timeout)
            Counters.bytes_received += len(reply)
            return reply

        channel.request = counted  # type: ignore[method-assign]

    @staticmethod
    def _count(kind: str) -> contextvars.Token[str]:
        Counters.requests[kind] = Counters.requests.get(kind, 0) + 1
        return _KIND.set(kind)

    async def register(self, request: worker_pb2.RegisterRequest) -> worker_pb2.RegisterReply:
        """Count, then register."""
        token = self._count("register")
        try:
            return await super().register(request)
        finally:
            _KIND.reset(token)

    async def pull(self, *args: Any, **kwargs: Any) -> worker_pb2.Dispatch:
        """Count, then ask for work."""
        token = self._count("work_request")
        try:
            return await super().pull(*args, **kwargs)
        finally:
            _KIND.reset(token)

    async def send_results(self, *args: Any, **kwargs: Any) -> list[str]:
        """Count, then report results (and claims)."""
        token = self._count("results")
        try:
            return await super().send_results(*args, **kwargs)
        finally:
            _KIND.reset(token)

    async def heartbeat(self, beat: worker_pb2.Heartbeat) -> None:
        """Count, then beat."""
        token = self._count("heartbeat")
        try:
            await super().heartbeat(beat)
        finally:
            _KIND.reset(token)

    async def deregister(self, worker_id: str, returned_task_ids: Sequence[str]) -> None:
        """Count, then leave."""
        token = self._count("deregister")
        try:
            await super().deregister(worker_id, returned_task_ids)
        finally:
            _KIND.reset(token)


def snapshot(workers: Sequence[Worker], **extra: Any) -> dict[str, Any]:
    """The status file's content."""
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return {
        "pid": os.getpid(),
        "t": time.time(),
        "workers": len(workers),
        "running": sum(1 for w in workers if w.state is WorkerState.RUNNING),
        "requests": dict(Counters.requests),
        "attempts": dict(Counters.attempts),
        "bytes_sent": Counters.bytes_sent,
        "bytes_received": Counters.bytes_received,
        "tasks": sum(w.processed for w in workers),
        "failed": sum(w.failed for w in workers),
        "cpu_s": usage.ru_utime + usage.ru_stime,
        "maxrss_mb": usage.ru_maxrss / 1024,
        **extra,
    }


def _write_status(path: Path, content: dict[str, Any]) -> None:
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps(content))
    os.replace(tmp, path)


def _raise_open_files() -> None:
    """Two sockets per simulated worker: allow as many descriptors as the hard limit does."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft < hard or hard == resource.RLIM_INFINITY:
        with contextlib.suppress(ValueError, OSError):
            resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))


async def serve(args: argparse.Namespace) -> None:
    registry = TaskRegistry()
    registry.register(add)
    workers = [
        Worker(
            WorkerSettings(
                task_modules=(),
                control_plane=args.discovery,
                concurrency=args.capacity,
                prefetch=args.prefetch if args.prefetch is not None else 4 * args.capacity,  # the CLI's default
                worker_id=f"{args.prefix}-{i}",
                drain_timeout=1.0,
            ),
            registry,
        )
        for i in range(args.start, args.start + args.count)
    ]
    loop = asyncio.get_running_loop()
    stop = asyncio.Event()

    def own_signals() -> None:
        # Worker.run installs its own SIGTERM handler (one worker per process, normally): ours replaces it.
        for signum in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(signum, stop.set)

    runs: list[asyncio.Task[int]] = []

    async def ramp() -> None:
        """Start the workers evenly spread over ``--ramp`` seconds (a fleet rolled out, not a stampede)."""
        began = loop.time()
        for index, worker in enumerate(workers):
            delay = began + index * args.ramp / len(workers) - loop.time()
            if delay > 0:
                await asyncio.sleep(delay)
            runs.append(loop.create_task(worker.run()))
            await asyncio.sleep(0)  # its run() installed its signal handlers
            own_signals()

    own_signals()
    starting = loop.create_task(ramp())
    status = Path(args.status)

    async def report() -> None:
        while True:
            _write_status(status, snapshot(workers, started=starting.done()))
            await asyncio.sleep(STATUS_INTERVAL)

    reporter = loop.create_task(report())
    await stop.wait()
    starting.cancel()
    for worker in workers:
        worker.request_stop("the benchmark stopped the simulator")
    if runs:
        await asyncio.wait(runs, timeout=3.0)  # drain and deregister (nothing runs between measurements)
    reporter.cancel()
    _write_status(status, snapshot(workers, started=False, stopped=True))


def main(argv: Sequence[str] | None = None) -> int:
    global TASK_TIME
    p = argparse.ArgumentParser(prog="python -m fwbench.fleetsim", description=__doc__.split("\n", 1)[0])
    p.add_argument("--discovery", required=True, help="the control plane's discovery address")
    p.add_argument("--prefix", default="sim", help="worker ids are PREFIX-INDEX")
    p.add_argument("--start", type=int, default=0, help="first index")
    p.add_argument("--count", type=int, required=True, help="simulated workers in this process")
    p.add_argument("--capacity", type=int, default=2, help="slots (--concurrency) of each worker (2)")
    p.add_argument("--prefetch", type=int, help="each worker's --prefetch (default: 4 per slot, as the CLI's)")
    p.add_argument("--task-time", type=float, default=DEFAULT_TASK_TIME, help="seconds each task takes (0.0005)")
    p.add_argument("--ramp", type=float, default=0.0, help="start the workers spread over this many seconds (0)")
    p.add_argument("--status", required=True, help="JSON counters written here a few times a second")
    args = p.parse_args(argv)
    TASK_TIME = args.task_time
    logging.basicConfig(level=logging.WARNING, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    runtime.ControlPlaneLink = CountingLink  # type: ignore[attr-defined]  # this process only: count the traffic
    _raise_open_files()
    asyncio.run(serve(args))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
