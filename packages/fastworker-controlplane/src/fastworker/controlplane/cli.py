"""The ``fastworker-controlplane`` command: parse flags (with env vars), configure logging, run the daemon."""

from __future__ import annotations

from fastworker.worker._pid1 import become_init_if_pid1, hold_stop_signals_if_pid1

hold_stop_signals_if_pid1()  # before the other imports: a container's SIGTERM during them is kept

import argparse
import asyncio
import json
import logging
import logging.config
import os
import sys
from collections.abc import Sequence
from datetime import UTC, datetime

from fastworker.client import secretfile
from fastworker.client.completion import add_completion_flag
from fastworker.client.dashboardflags import add_dashboard_flags, dashboard_password
from fastworker.client.envflags import apply_env_defaults, name_env_origins
from fastworker.client.logsetup import add_logging_flags, configure_logging
from fastworker.client.options import positive_seconds_argument, queues_argument, seconds_argument
from fastworker.client.task import TaskRegistry
from fastworker.controlplane import journal, journal_salvage
from fastworker.controlplane import settings as defaults
from fastworker.controlplane.server import CannotListen, ControlPlane
from fastworker.controlplane.settings import ControlPlaneSettings
from fastworker.controlplane.version import __version__
from fastworker.protocol.queues import DEFAULT_QUEUE
from fastworker.worker._heap import settle_heap
from fastworker.worker.bounds import POOLS
from fastworker.worker.errors import TaskLoadError
from fastworker.worker.loader import load_task_modules, log_load_error

#: Exit codes.
RET_OK = 0
RET_ERROR = 1
RET_USAGE = 2

_EPILOG = """examples:
  fastworker-controlplane --task-modules myapp.tasks
  fastworker-controlplane --task-modules myapp.tasks --local-concurrency 0 --max-queue 100000
  FASTWORKER_CLIENT_ADDRESS=tcp://127.0.0.1:0 fastworker-controlplane --task-modules t --ready-file ready.json
  fastworker-controlplane --task-modules myapp.tasks --journal /var/lib/fastworker/tasks.journal
  fastworker-controlplane journal inspect /var/lib/fastworker/tasks.journal    (or: journal compact PATH)
  fastworker-controlplane journal salvage tasks.journal salvaged.journal    (a journal refused as corrupt)
"""


def make_parser() -> argparse.ArgumentParser:
    """The argument parser (env vars are applied by ``main``)."""
    p = argparse.ArgumentParser(
        prog="fastworker-controlplane",
        description="FastWorker control plane: queues tasks, runs them or dispatches them to subworkers.",
        epilog=_EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    add_completion_flag(p, commands={"journal": make_journal_parser})  # main() dispatches journal itself
    p.add_argument(
        "--task-modules", nargs="+", default=[], metavar="MODULE", help="modules that define @task functions"
    )
    p.add_argument("--discovery-address", default=defaults.DEFAULT_DISCOVERY_ADDRESS, help="PUB address for discovery")
    p.add_argument("--client-address", default=defaults.DEFAULT_CLIENT_ADDRESS, help="address clients send requests to")
    p.add_argument("--dispatch-address", default=defaults.DEFAULT_DISPATCH_ADDRESS, help="address subworkers dial")
    p.add_argument(
        "--dashboard-address", default=defaults.DEFAULT_DASHBOARD_ADDRESS, help="HOST:PORT of the web dashboard"
    )
    p.add_argument("--no-dashboard", action="store_true", help="do not serve the web dashboard")
    p.add_argument(
        "--metrics-address",
        default=defaults.DEFAULT_METRICS_ADDRESS,
        metavar="HOST:PORT",
        help="plain-HTTP listener for GET /metrics (Prometheus) and GET /healthz",
    )
    p.add_argument("--no-metrics", action="store_true", help="serve neither /metrics nor /healthz")
    p.add_argument("--dashboard-read-only", action="store_true", help="serve the dashboard without its action buttons")
    add_dashboard_flags(p)
    p.add_argument(
        "--advertise-host",
        default=None,
        help="host name or IP that clients and workers on other hosts dial (default: the bound host; "
        "this machine's name for 0.0.0.0)",
    )
    p.add_argument(
        "--local-concurrency",
        type=int,
        default=None,
        help="tasks run in this process at once (default: the CPUs it may use, container limits included; 0 = only subworkers)",
    )
    p.add_argument(
        "--local-pool",
        choices=POOLS,
        default="threads",
        help="where the sync tasks this process runs itself run: threads of it (fast; a task that crashes its "
        "process takes the control plane down) or child processes (a crash or hard time limit costs one child)",
    )
    p.add_argument(
        "--queues",
        type=queues_argument,
        default=DEFAULT_QUEUE,
        metavar="QUEUE[,QUEUE...]",
        help=f"the named queues this process's own slots take tasks from, comma-separated (default: {DEFAULT_QUEUE})",
    )
    p.add_argument("--result-cache-size", type=int, default=10_000, help="finished tasks remembered (LRU)")
    p.add_argument(
        "--result-cache-mb", type=int, default=512, help="bound on the result cache's memory in MiB (LRU beyond it)"
    )
    p.add_argument(
        "--max-connections", type=int, default=1024, help="connections each listening socket accepts at once"
    )
    p.add_argument(
        "--max-connections-per-peer",
        type=int,
        default=256,
        help="of those, connections from one IP address (raise it for many clients behind one NAT address)",
    )
    p.add_argument(
        "--idle-connection-timeout",
        type=positive_seconds_argument,
        default=10.0,
        metavar="SECONDS",
        help="close connections that send no valid (with a secret: authenticated) request this long after "
        "connecting; connections that have spoken stay until a full cap needs room",
    )
    p.add_argument(
        "--max-worker-tasks",
        type=int,
        default=1024,
        help="most tasks one subworker may hold at once, running plus prefetched (a larger claimed capacity is capped)",
    )
    p.add_argument(
        "--result-ttl", type=positive_seconds_argument, default=3600.0, help="seconds a finished task is remembered"
    )
    p.add_argument(
        "--max-queue", type=int, default=0, help="bound on waiting tasks (PENDING + SCHEDULED); 0 = unbounded"
    )
    p.add_argument(
        "--journal",
        default=None,
        metavar="PATH",
        help="write-ahead journal file (created if missing): queued tasks, states and results survive a restart "
        "or a crash; a submission is acknowledged once it is on disk",
    )
    p.add_argument(
        "--heartbeat-interval", type=positive_seconds_argument, default=1.0, help="seconds between heartbeats"
    )
    p.add_argument(
        "--heartbeat-timeout", type=positive_seconds_argument, default=5.0, help="silence after which a worker is lost"
    )
    p.add_argument(
        "--drain-timeout", type=seconds_argument, default=30.0, help="seconds to finish running tasks on shutdown"
    )
    p.add_argument("--max-frame-size", type=int, default=16 * 1024 * 1024, help="largest accepted frame in bytes")
    p.add_argument(
        "--misfire-policy",
        default="run_once",
        choices=["run_once", "skip", "run_all"],
        help="periodic runs missed during downtime or a late wake-up: run once, skip, or run all (capped)",
    )
    p.add_argument(
        "--allow-pickle", action="store_true", help="accept and produce pickle payloads (unsafe: code execution)"
    )
    p.add_argument(
        "--secret", default=None, help="shared secret: every frame on every channel is authenticated (HMAC-SHA256)"
    )
    secretfile.add_secret_file_flag(p)
    p.add_argument(
        "--tls-cert", default=None, metavar="PEM", help="TLS certificate: every channel listens on tls+tcp://"
    )
    p.add_argument("--tls-key", default=None, metavar="PEM", help="the TLS certificate's private key")
    p.add_argument(
        "--tls-ca", default=None, metavar="PEM", help="CA bundle: peers must present a certificate it signed"
    )
    add_logging_flags(p)
    p.add_argument(
        "--ready-file", default=None, metavar="PATH", help="write a JSON object with pid and addresses once serving"
    )
    return p


def make_journal_parser() -> argparse.ArgumentParser:
    """The parser of ``fastworker-controlplane journal inspect|compact PATH`` (offline journal tools)."""
    p = argparse.ArgumentParser(
        prog="fastworker-controlplane journal",
        description="Look at, compact or salvage a control plane's journal (--journal). inspect and salvage also "
        "work while a control plane uses it; compact is refused then.",
    )
    actions = p.add_subparsers(dest="action", required=True, metavar="inspect|compact|salvage")
    inspect = actions.add_parser(
        "inspect",
        help="describe a journal: size, records, tasks by state (changes nothing)",
        description="Describe a journal: size, records, tasks by state, paused levels, periodic last runs. "
        "Changes nothing, and works while a control plane uses it.",
    )
    inspect.add_argument("path", metavar="PATH", help="the journal file")
    inspect.add_argument("--json", action="store_true", help="print one JSON object")
    compact = actions.add_parser(
        "compact",
        help="rewrite a journal as its live state (refused while it is in use)",
        description="Rewrite a journal as its live state: unfinished tasks, and the results still kept. "
        "Refused while a control plane uses it.",
    )
    compact.add_argument("path", metavar="PATH", help="the journal file")
    compact.add_argument(
        "--result-ttl", type=seconds_argument, default=3600.0, help="drop results finished longer ago (seconds)"
    )
    compact.add_argument(
        "--result-cache-size", type=_at_least_one, default=10_000, help="keep at most this many results (1 or more)"
    )
    salvage = actions.add_parser(
        "salvage",
        help="copy every readable batch of a corrupt journal into a new file (PATH is not changed)",
        description="Copy every readable batch of a journal refused as corrupt into NEW_PATH and report what was "
        "skipped. PATH is not changed; start the control plane on NEW_PATH.",
    )
    salvage.add_argument("path", metavar="PATH", help="the journal file")
    salvage.add_argument("new_path", metavar="NEW_PATH", help="the new journal (must not exist)")
    return p


def _at_least_one(text: str) -> int:
    """A count of 1 or more from the command line (argparse reports a bad one as a usage error naming it)."""
    try:
        value = int(text)
    except ValueError:
        value = 0
    if value < 1:
        raise argparse.ArgumentTypeError(f"expected a whole number, 1 or more, got {text!r}")
    return value


def journal_main(argv: Sequence[str]) -> int:
    """``fastworker-controlplane journal ...``: returns the exit code (1 when the journal cannot be read or written)."""
    args = make_journal_parser().parse_args(argv)
    try:
        if args.action == "inspect":
            report = journal.inspect(args.path)
            print(json.dumps(report, indent=2) if args.json else format_inspection(report))
        elif args.action == "salvage":
            print("\n".join(journal_salvage.salvage(args.path, args.new_path).lines()))
        else:
            before, after = journal.compact(
                args.path, result_ttl=args.result_ttl, result_cache_size=args.result_cache_size
            )
            print(f"compacted {args.path}: {before:,} -> {after:,} bytes")
    except (journal.JournalError, OSError) as exc:
        print(f"fastworker-controlplane journal: {exc}", file=sys.stderr)
        return RET_ERROR
    return RET_OK


def format_inspection(report: dict[str, object]) -> str:
    """The lines ``journal inspect`` prints for people."""

    def listing(counts: object) -> str:
        items = counts.items() if isinstance(counts, dict) else ()
        return ", ".join(f"{name} {count:,}" for name, count in items) or "none"

    lines = [
        f"journal {report['path']}{' (in use by a running control plane)' if report['in_use'] else ''}",
        f"  size: {report['size_bytes']:,} bytes in {report['batches']:,} batches, {report['records']:,} records"
        f" ({listing(report['records_by_kind'])})",
        f"  tasks: {report['tasks']:,} ({listing(report['tasks_by_state'])})",
        f"  after compaction: {report['snapshot_records']:,} records",
        f"  paused levels: {', '.join(report['paused']) if isinstance(report['paused'], list) and report['paused'] else 'none'}",
        f"  periodic last runs: {_last_runs(report['periodic_last_runs'])}",
    ]
    if report["torn_bytes"]:
        lines.append(f"  unfinished last write: {report['torn_bytes']:,} bytes (ignored; dropped at the next start)")
    if report["unknown_records"]:
        lines.append(f"  records of unknown kinds: {report['unknown_records']:,} (written by a newer version?)")
    return "\n".join(lines)


def _last_runs(runs: object) -> str:
    if not isinstance(runs, dict) or not runs:
        return "none"
    return ", ".join(
        f"{name} at {datetime.fromtimestamp(slot, UTC).isoformat(timespec='seconds')}" for name, slot in runs.items()
    )


def main(argv: Sequence[str] | None = None) -> int:
    """Run the daemon until SIGTERM/SIGINT (or the ``journal`` tools); returns the exit code."""
    arguments = sys.argv[1:] if argv is None else list(argv)
    if arguments[:1] == ["journal"]:
        return journal_main(arguments[1:])
    parser = make_parser()
    apply_env_defaults(parser, argv=arguments)
    args = parser.parse_args(arguments)
    args.secret = secretfile.resolve_secret(parser, args, arguments)
    become_init_if_pid1()  # a container's PID 1 stays behind to reap orphans; the daemon goes on here
    configure_logging(args.log_level, args.log_format)
    if os.getcwd() not in sys.path:
        # Console scripts do not put the working directory on sys.path; task modules usually live there.
        sys.path.insert(0, os.getcwd())
    try:
        registry = load_task_modules(args.task_modules) if args.task_modules else None
    except TaskLoadError as exc:
        log_load_error(exc)
        return RET_ERROR
    try:
        settings = ControlPlaneSettings(
            task_modules=tuple(args.task_modules),
            discovery_address=args.discovery_address,
            client_address=args.client_address,
            dispatch_address=args.dispatch_address,
            dashboard_address=args.dashboard_address,
            no_dashboard=args.no_dashboard,
            metrics_address=args.metrics_address,
            no_metrics=args.no_metrics,
            dashboard_read_only=args.dashboard_read_only,
            dashboard_password=dashboard_password(args),
            dashboard_hosts=tuple(args.dashboard_host),
            dashboard_insecure=args.dashboard_insecure,
            secret=args.secret or None,
            tls_cert=args.tls_cert or None,
            tls_key=args.tls_key or None,
            tls_ca=args.tls_ca or None,
            advertise_host=args.advertise_host,
            local_concurrency=args.local_concurrency
            if args.local_concurrency is not None
            else defaults.ControlPlaneSettings().local_concurrency,
            local_pool=args.local_pool,
            queues=args.queues,
            result_cache_size=args.result_cache_size,
            result_cache_mb=args.result_cache_mb,
            max_connections=args.max_connections,
            max_connections_per_peer=args.max_connections_per_peer,
            idle_connection_timeout=args.idle_connection_timeout,
            max_worker_tasks=args.max_worker_tasks,
            result_ttl=args.result_ttl,
            max_queue=args.max_queue,
            journal=args.journal or None,
            heartbeat_interval=args.heartbeat_interval,
            heartbeat_timeout=args.heartbeat_timeout,
            drain_timeout=args.drain_timeout,
            max_frame_size=args.max_frame_size,
            allow_pickle=args.allow_pickle,
            misfire_policy=args.misfire_policy,
            ready_file=args.ready_file,
            log_level=args.log_level,
        )
    except ValueError as exc:
        parser.error(name_env_origins(parser, arguments, str(exc)))
    return asyncio.run(_run(settings, registry or TaskRegistry()))


async def _run(settings: ControlPlaneSettings, registry: TaskRegistry) -> int:
    control_plane = ControlPlane(settings, registry)
    control_plane.answer_signals()
    try:
        await control_plane.start()
    except CannotListen as exc:  # an address in use: named by its flag
        logging.getLogger(__name__).error("cannot start: %s", exc)
        return RET_ERROR
    except Exception as exc:  # anything else: say what failed, exit non-zero
        logging.getLogger(__name__).error("cannot start: %s: %s", type(exc).__name__, exc)
        return RET_ERROR
    settle_heap()  # what starting made lives as long as the daemon
    await control_plane.run()
    return RET_OK
