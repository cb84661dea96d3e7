"""The ``fastworker-worker`` command: parse flags (with env vars), load task modules, run the subworker."""

from __future__ import annotations

from fastworker.worker._pid1 import become_init_if_pid1, hold_stop_signals_if_pid1

hold_stop_signals_if_pid1()  # before the other imports: a container's SIGTERM during them is kept

import argparse
import asyncio
import contextlib
import faulthandler
import os
import sys
from collections.abc import Sequence

from fastworker.client.completion import add_completion_flag
from fastworker.client.cpus import available_cpus
from fastworker.client.envflags import apply_env_defaults, name_env_origins
from fastworker.client.logsetup import add_logging_flags, configure_logging, set_process_log_fields
from fastworker.client.options import queues_argument, seconds_argument
from fastworker.client.secretfile import add_secret_file_flag, resolve_secret
from fastworker.client.tls import TlsFiles
from fastworker.protocol.queues import DEFAULT_QUEUE
from fastworker.worker._heap import settle_heap
from fastworker.worker.bounds import POOLS
from fastworker.worker.errors import TaskLoadError
from fastworker.worker.loader import load_task_modules, log_load_error
from fastworker.worker.runtime import MAX_PREFETCH, Worker, WorkerSettings, default_worker_id
from fastworker.worker.version import __version__

#: Exit codes.
RET_OK = 0
RET_ERROR = 1
RET_USAGE = 2

_EPILOG = """examples:
  fastworker-worker --task-modules myapp.tasks
  fastworker-worker --task-modules myapp.tasks --control-plane tcp://10.0.0.5:5550 --concurrency 8
"""


def make_parser() -> argparse.ArgumentParser:
    """The argument parser (env vars are applied by ``main``)."""
    p = argparse.ArgumentParser(
        prog="fastworker-worker",
        description="FastWorker subworker: finds the control plane through discovery and runs the tasks it is given.",
        epilog=_EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    add_completion_flag(p)
    p.add_argument(
        "--task-modules", nargs="+", required=True, metavar="MODULE", help="modules that define @task functions"
    )
    p.add_argument("--control-plane", default="tcp://127.0.0.1:5550", help="the control plane's discovery address")
    p.add_argument(
        "--concurrency",
        type=int,
        default=available_cpus(),
        help="tasks run at once (default: the CPUs it may use, container limits included)",
    )
    p.add_argument(
        "--queues",
        type=queues_argument,
        default=DEFAULT_QUEUE,
        metavar="QUEUE[,QUEUE...]",
        help=f"the named queues to take tasks from, comma-separated (default: {DEFAULT_QUEUE})",
    )
    p.add_argument(
        "--prefetch",
        type=int,
        default=None,
        metavar="N",
        help="tasks to hold beyond --concurrency while tasks are short (default: 4 x concurrency, at most "
        f"{MAX_PREFETCH:,}; 0: never)",
    )
    p.add_argument("--worker-id", default=None, help="unique id in the fleet (default: HOST-PID)")
    p.add_argument(
        "--drain-timeout",
        type=seconds_argument,
        default=30.0,
        help="seconds to finish running tasks, and deliver their outcomes, on SIGTERM",
    )
    p.add_argument(
        "--pool",
        choices=POOLS,
        default="processes",
        help="where sync tasks run: child processes (a crash or hard time limit costs one child: WorkerCrashed) or "
        "threads of this process (cheaper; a hard time limit or cancel interrupts the thread but cannot kill it, and "
        "a crash takes the worker down: WorkerLost after the heartbeat timeout)",
    )
    p.add_argument(
        "--max-tasks-per-child", type=int, default=0, help="replace a child process after N tasks (0: never)"
    )
    p.add_argument("--max-child-rss", type=int, default=0, metavar="MB", help="replace a child process above this RSS")
    p.add_argument("--allow-pickle", action="store_true", help="accept and produce pickle payloads (unsafe)")
    p.add_argument("--secret", default=None, help="the control plane's shared secret (every frame is authenticated)")
    add_secret_file_flag(p)
    p.add_argument(
        "--tls-ca", default=None, metavar="PEM", help="CA bundle that signed the control plane's certificate"
    )
    p.add_argument("--tls-cert", default=None, metavar="PEM", help="this worker's certificate (mutual TLS)")
    p.add_argument("--tls-key", default=None, metavar="PEM", help="the key of --tls-cert")
    p.add_argument(
        "--ready-file",
        default=None,
        metavar="PATH",
        help="write {pid, worker_id, health} as JSON once registered",
    )
    p.add_argument(
        "--health-address",
        default=None,
        metavar="HOST:PORT",
        help="serve GET /healthz here for a liveness probe (200 while this worker's event loop answers) and "
        "GET /readyz for a readiness probe (200 while registered and taking tasks); port 0 picks one (default: off)",
    )
    add_logging_flags(p)
    return p


def _report_fatal_signals() -> None:
    """Have a segfault or abort in this process write every thread's Python stack to stderr before it dies.

    A sync task on ``--pool threads`` (or an async task) that crashes in C code takes the worker down
    before it can log a line; the control plane only sees it vanish (``WorkerLost``). The stack of
    the crashing thread ("Current thread") names the task's function. Left alone when already on
    (``PYTHONFAULTHANDLER``, ``-X faulthandler``) or when there is no stderr to write to.
    """
    if not faulthandler.is_enabled():
        with contextlib.suppress(RuntimeError, ValueError, OSError):  # stderr is None, closed, or has no fd
            faulthandler.enable()


def main(argv: Sequence[str] | None = None) -> int:
    """Run the subworker until SIGTERM/SIGINT; returns the exit code."""
    parser = make_parser()
    apply_env_defaults(parser, argv=argv)
    args = parser.parse_args(argv)
    args.secret = resolve_secret(parser, args, argv)
    become_init_if_pid1()  # a container's PID 1 stays behind to reap orphans; the daemon goes on here
    configure_logging(args.log_level, args.log_format)
    _report_fatal_signals()
    cwd = os.getcwd()
    if cwd not in sys.path:
        sys.path.insert(0, cwd)  # console scripts do not; task modules usually live there
    try:
        registry = load_task_modules(args.task_modules)
        settings = WorkerSettings(
            task_modules=tuple(args.task_modules),
            control_plane=args.control_plane,
            concurrency=args.concurrency,
            queues=args.queues,
            prefetch=args.prefetch if args.prefetch is not None else min(4 * args.concurrency, MAX_PREFETCH),
            worker_id=default_worker_id() if args.worker_id is None else args.worker_id,  # "" is refused
            drain_timeout=args.drain_timeout,
            pool=args.pool,
            max_tasks_per_child=args.max_tasks_per_child,
            max_child_rss=args.max_child_rss * 1024 * 1024,
            allow_pickle=args.allow_pickle,
            ready_file=args.ready_file,
            health_address=args.health_address,
            secret=args.secret or None,
            tls=TlsFiles(ca=args.tls_ca, cert=args.tls_cert, key=args.tls_key)
            if (args.tls_ca or args.tls_cert or args.tls_key)
            else None,
            sys_path=(cwd,),
        )
    except TaskLoadError as exc:
        log_load_error(exc)
        return RET_ERROR
    except ValueError as exc:
        parser.error(name_env_origins(parser, sys.argv[1:] if argv is None else argv, str(exc)))
    set_process_log_fields(worker_id=settings.worker_id)
    settle_heap()  # the task modules are loaded: what they made lives as long as the worker
    return asyncio.run(Worker(settings, registry).run())
