"""The ``fastworker`` operator command: submit and inspect tasks, see workers, queues and stats.

Rich tables and a spinner for people, ``--json`` (one JSON object or a list) for scripts, and the
SPEC's exit codes: 0 ok, 1 the task failed, was cancelled or was refused, 2 usage error,
3 control plane unreachable, 4 timeout.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import dataclasses
import datetime as dt
import decimal
import json
import sys
import uuid
from collections.abc import Iterable, Sequence
from typing import Any

from rich.console import Console
from rich.table import Table
from rich.text import Text

from fastworker.client._async import Client
from fastworker.client.envflags import apply_env_defaults
from fastworker.client.errors import (
    ControlPlaneUnavailable,
    FastworkerError,
    QueueFull,
    TaskNotFound,
    TaskTimeout,
    UnknownTask,
)
from fastworker.client.models import TaskDetail, TaskInfo, TaskState
from fastworker.client.secretfile import add_secret_file_flag, resolve_secret
from fastworker.client.version import __version__

#: Exit codes (SPEC).
RET_OK = 0
RET_FAILED = 1
RET_USAGE = 2
RET_UNREACHABLE = 3
RET_TIMEOUT = 4

_EPILOG = """examples:
  fastworker submit add 1 2 --wait
  fastworker submit emails.send 42 --kwargs '{"subject": "hi"}' --priority high
  fastworker status 3b0f2a4e-7f45-4c1e-9d3a-2f5e8c1b9a70 --json
  fastworker workers
"""


def _count(text: str) -> int:
    value = int(text)
    if value < 0:
        raise argparse.ArgumentTypeError("must be 0 or more")
    return value


def parse_arg(text: str) -> Any:
    """A command-line task argument: JSON when it parses as JSON, else the text itself."""
    try:
        return json.loads(text)
    except ValueError:
        return text


def _jsonable(value: Any) -> Any:
    """Values the safe codec returns, made JSON-friendly (bytes as base64, Decimals and times as text)."""
    if isinstance(value, bytes):
        return base64.b64encode(value).decode()
    if isinstance(value, dt.datetime | dt.date | dt.time):
        return value.isoformat()
    if isinstance(value, dt.timedelta):
        return value.total_seconds()
    if isinstance(value, decimal.Decimal | uuid.UUID):
        return str(value)
    if isinstance(value, set | frozenset | tuple):
        return list(value)
    return repr(value)


def info_dict(info: TaskInfo) -> dict[str, Any]:
    """A TaskInfo as a plain dict, ``id`` first (the CLI's JSON shape)."""
    out = dataclasses.asdict(info)
    out["state"] = info.state.value
    out["priority"] = info.priority.value
    return out


def make_parser() -> argparse.ArgumentParser:
    """The argument parser (env vars are applied by ``main``)."""
    parser = argparse.ArgumentParser(
        prog="fastworker",
        description="Submit and inspect FastWorker tasks.",
        epilog=_EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    parser.add_argument("--control-plane", default=None, help="the control plane's discovery address")
    parser.add_argument("--secret", default=None, help="shared secret")
    add_secret_file_flag(parser)
    parser.add_argument("--json", action="store_true", help="print JSON for scripts")
    parser.add_argument("--connect-timeout", type=float, default=5.0, help="seconds to find the control plane")
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    submit = commands.add_parser("submit", help="queue a task (and wait for it with --wait)")
    submit.add_argument("name", help="registered task name")
    submit.add_argument("args", nargs="*", metavar="ARG", help="positional arguments (JSON if they parse)")
    submit.add_argument("--kwargs", default=None, metavar="JSON", help="keyword arguments as a JSON object")
    submit.add_argument("--priority", choices=["critical", "high", "normal", "low"], default=None)
    submit.add_argument("--countdown", type=float, default=None, metavar="SECONDS", help="run no earlier than this")
    submit.add_argument("--wait", action="store_true", help="wait for the result")
    submit.add_argument("--timeout", type=float, default=None, metavar="SECONDS", help="longest wait")

    for name, text in (("status", "a task's state"), ("cancel", "cancel a task"), ("retry", "re-run a failed task")):
        sub = commands.add_parser(name, help=text)
        sub.add_argument("task_id")
    result = commands.add_parser("result", help="a task's result")
    result.add_argument("task_id")
    result.add_argument("--wait", action="store_true", help="wait until the task is final")
    result.add_argument("--timeout", type=float, default=None, metavar="SECONDS", help="longest wait")
    listing = commands.add_parser("list", help="live and recent tasks, newest first (filters, paging)")
    listing.add_argument("--state", action="append", default=[], choices=[s.value.lower() for s in TaskState])
    listing.add_argument("--name", default="", help="only this task name")
    listing.add_argument("--priority", choices=["critical", "high", "normal", "low"], default=None)
    listing.add_argument("--worker", default="", help="only tasks run by this worker id")
    listing.add_argument("--search", default="", metavar="ID_PREFIX", help="only task ids starting with this")
    listing.add_argument("--offset", type=_count, default=0)
    listing.add_argument("--limit", type=_count, default=20)
    inspect = commands.add_parser("inspect", help="one task in full: arguments, timings, traceback")
    inspect.add_argument("task_id")
    for name, text in (
        ("purge", "cancel every waiting task of a priority level"),
        ("pause", "stop dispatching a priority level"),
        ("resume", "dispatch a paused priority level again"),
    ):
        sub = commands.add_parser(name, help=text)
        sub.add_argument("priority", choices=["critical", "high", "normal", "low"])
    drain = commands.add_parser("drain", help="ask a subworker to finish its tasks and leave")
    drain.add_argument("worker_id")
    drain.add_argument("--timeout", type=float, default=30.0, metavar="SECONDS", help="time to finish")
    for name, text in (
        ("workers", "connected subworkers"),
        ("queues", "queue depth per priority"),
        ("stats", "counters"),
        ("tasks", "registered tasks with their options"),
    ):
        commands.add_parser(name, help=text)
    return parser


class _Output:
    """Prints for people (rich) or for scripts (JSON on stdout)."""

    def __init__(self, as_json: bool) -> None:
        self.as_json = as_json
        self.console = Console()
        self.errors = Console(stderr=True)

    def data(self, value: Any) -> None:
        print(json.dumps(value, default=_jsonable))

    def task(self, info: TaskInfo) -> None:
        if self.as_json:
            self.data(info_dict(info))
            return
        table = Table(show_header=False, box=None)
        for key, value in info_dict(info).items():
            if key == "error" and info.error is not None:
                value = f"{info.error.type}: {info.error.message}"
            table.add_row(Text(key, style="bold"), Text("" if value is None else str(value)))
        self.console.print(table)
        if info.error is not None and info.error.traceback:
            self.console.print(info.error.traceback, markup=False, highlight=False)

    def rows(self, title: str, rows: list[dict[str, Any]]) -> None:
        if self.as_json:
            self.data(rows)
            return
        table = Table(title=title)
        columns = list(rows[0]) if rows else []
        for column in columns:
            table.add_column(column, overflow="fold")  # wrap long ids rather than cut them
        for row in rows:
            table.add_row(*(_cell(row[c]) for c in columns))
        if not rows:
            self.console.print(f"{title}: none")
            return
        self.console.print(table)

    def action(self, value: dict[str, Any], text: str) -> None:
        if self.as_json:
            self.data(value)
        else:
            self.console.print(text, markup=False, highlight=False)

    def detail(self, detail: TaskDetail) -> None:
        info = detail.info
        self.task(dataclasses.replace(info, error=None) if info.error is not None else info)
        table = Table(show_header=False, box=None)
        for key, value in (
            ("args", repr(detail.args)),
            ("kwargs", repr(detail.kwargs)),
            ("arguments error", detail.arguments_error),
            ("eta", _when(detail.eta)),
            ("waited", _seconds(detail.wait_time)),
            ("ran", _seconds(detail.run_time)),
        ):
            if value:
                table.add_row(Text(key, style="bold"), Text(value))
        self.console.print(table)
        if info.error is not None:
            self.console.print(Text(f"{info.error.type}: {info.error.message}", style="red"))
            if info.error.traceback:
                self.console.print(info.error.traceback, markup=False, highlight=False)

    def error(self, message: str) -> None:
        if self.as_json:
            print(json.dumps({"error": message}))
        else:
            self.errors.print(f"[red]error:[/red] {message}", highlight=False)


def _cell(value: Any) -> Text:
    """A table cell as plain text: task names and messages are never read as rich markup."""
    if isinstance(value, list):
        return Text(", ".join(map(str, value)))
    if isinstance(value, float):
        return Text(f"{value:,.2f}")
    return Text(str(value))


_SPARKS = "▁▂▃▄▅▆▇█"


def sparkline(values: Iterable[float]) -> str:
    """Values as a row of block characters scaled to the largest (all lows when every value is 0)."""
    points = list(values)
    top = max(points, default=0) or 1
    return "".join(_SPARKS[min(len(_SPARKS) - 1, int(v / top * (len(_SPARKS) - 1) + 0.5))] for v in points)


def _when(timestamp: float | None) -> str:
    if not timestamp:
        return ""
    return dt.datetime.fromtimestamp(timestamp, dt.UTC).isoformat(timespec="milliseconds")


def _seconds(value: float | None) -> str:
    return "" if value is None else f"{value:.3f} s"


def _list_row(info: TaskInfo) -> dict[str, Any]:
    """The columns of a listed task that fit a terminal."""
    return {
        "id": info.id,
        "name": info.name,
        "state": info.state.value,
        "priority": info.priority.value,
        "attempts": info.attempts,
        "worker": info.worker or "",
        "queued": _when(info.queued_at),
        "error": f"{info.error.type}: {info.error.message}" if info.error is not None else "",
    }


def _task_row(entry: dict[str, Any]) -> dict[str, Any]:
    """The columns of a registered task that fit a terminal."""
    schedule = f"every {entry['every']:g} s" if entry.get("every") else (entry.get("cron") or "")
    limits = "/".join(f"{entry[k]:g} s" for k in ("soft_timeout", "timeout") if entry.get(k)) or ""
    return {
        "name": entry["name"],
        "priority": entry["priority"],
        "retries": entry["retries"],
        "limits (soft/hard)": limits,
        "async": "yes" if entry.get("is_async") else "",
        "schedule": schedule,
    }


def _exit_for(info: TaskInfo) -> int:
    return RET_OK if info.state is TaskState.SUCCESS else RET_FAILED


async def _run(args: argparse.Namespace, out: _Output) -> int:
    async with Client(args.control_plane, secret=args.secret, connect_timeout=args.connect_timeout) as client:
        command = args.command
        if command == "submit":
            kwargs = json.loads(args.kwargs) if args.kwargs else {}
            if not isinstance(kwargs, dict):
                out.error("--kwargs must be a JSON object")
                return RET_USAGE
            task_id = await client.send(
                args.name,
                [parse_arg(a) for a in args.args],
                kwargs,
                priority=args.priority,
                countdown=args.countdown,
            )
            if not args.wait:
                info = await client.status(task_id)
                out.task(info)
                return RET_OK
            return await _wait_and_show(client, task_id, args.timeout, out)
        if command == "status":
            out.task(await client.status(args.task_id))
            return RET_OK
        if command == "result":
            if args.wait:
                return await _wait_and_show(client, args.task_id, args.timeout, out)
            info = await client.status(args.task_id)
            if not info.state.is_final:
                out.task(info)
                return RET_TIMEOUT
            out.task(info)
            return _exit_for(info)
        if command == "cancel":
            result = await client.cancel(args.task_id)
            if out.as_json:
                out.data(
                    {"id": args.task_id, "cancelled": result.cancelled, "previous_state": result.previous_state.value}
                )
            else:
                verb = "cancelled" if result.cancelled else "not cancelled"
                out.console.print(f"task {args.task_id} {verb} (it was {result.previous_state.value})")
            return RET_OK if result.cancelled else RET_FAILED
        if command == "retry":
            state = await client.retry(args.task_id)
            if out.as_json:
                out.task(await client.status(args.task_id))
            else:
                out.console.print(f"task {args.task_id} is {state.value} again")
            return RET_OK
        if command == "workers":
            out.rows("workers", await client.workers())
            return RET_OK
        if command == "queues":
            out.rows("queues", await client.queues())
            return RET_OK
        if command == "stats":
            stats = await client.stats()
            if out.as_json:
                out.data(stats)
            else:
                history = stats.pop("history")
                rows = [{"counter": k, "value": v} for k, v in stats.items()]
                rows.append({"counter": "finished/s, last 2 min", "value": sparkline(s["succeeded"] for s in history)})
                rows.append({"counter": "failed/s, last 2 min", "value": sparkline(s["failed"] for s in history)})
                out.rows("stats", rows)
            return RET_OK
        if command == "list":
            page = await client.list_tasks(
                states=args.state,
                name=args.name,
                priority=args.priority,
                worker=args.worker,
                search=args.search,
                offset=args.offset,
                limit=args.limit,
            )
            if out.as_json:
                out.data({"total": page.total, "tasks": [info_dict(info) for info in page.tasks]})
            else:
                out.rows(
                    f"tasks {page.offset + 1}-{page.offset + len(page.tasks)} of {page.total}",
                    [_list_row(info) for info in page.tasks],
                )
            return RET_OK
        if command == "inspect":
            detail = await client.task_detail(args.task_id)
            if out.as_json:
                out.data(
                    {
                        **info_dict(detail.info),
                        "args": detail.args,
                        "kwargs": detail.kwargs,
                        "arguments_error": detail.arguments_error,
                        "eta": detail.eta,
                        "wait_time": detail.wait_time,
                        "run_time": detail.run_time,
                    }
                )
            else:
                out.detail(detail)
            return RET_OK
        if command == "purge":
            purged = await client.purge(args.priority)
            out.action({"priority": args.priority, "purged": purged}, f"purged {purged} waiting {args.priority} tasks")
            return RET_OK
        if command in ("pause", "resume"):
            paused = await (client.pause if command == "pause" else client.resume)(args.priority)
            out.action(
                {"priority": args.priority, "paused": paused},
                f"{args.priority}: {'paused' if paused else 'dispatching'}",
            )
            return RET_OK
        if command == "drain":
            draining = await client.drain_worker(args.worker_id, timeout=args.timeout)
            text = f"worker {args.worker_id} is draining" if draining else f"no worker {args.worker_id}"
            out.action({"worker_id": args.worker_id, "draining": draining}, text)
            return RET_OK if draining else RET_FAILED
        tasks = await client.tasks()
        if not out.as_json:
            tasks = [_task_row(entry) for entry in tasks]
        out.rows("tasks", tasks)
        return RET_OK


async def _wait_and_show(client: Client, task_id: str, timeout: float | None, out: _Output) -> int:
    if out.as_json:
        info = await client.wait(task_id, timeout=timeout)
    else:
        with out.console.status(f"waiting for task {task_id} ..."):
            info = await client.wait(task_id, timeout=timeout)
    out.task(info)
    return _exit_for(info)


def main(argv: Sequence[str] | None = None) -> int:
    """Run one command; returns the exit code."""
    parser = make_parser()
    apply_env_defaults(parser)
    args = parser.parse_args(argv)
    args.secret = resolve_secret(parser, args, argv)
    out = _Output(args.json)
    try:
        return asyncio.run(_run(args, out))
    except ControlPlaneUnavailable as exc:
        out.error(str(exc))
        return RET_UNREACHABLE
    except TaskTimeout as exc:
        out.error(str(exc))
        return RET_TIMEOUT
    except (UnknownTask, QueueFull, TaskNotFound) as exc:
        out.error(str(exc))
        return RET_FAILED
    except json.JSONDecodeError as exc:
        out.error(f"--kwargs is not JSON: {exc}")
        return RET_USAGE
    except ValueError as exc:  # a bad option value (e.g. a negative countdown)
        out.error(str(exc))
        return RET_USAGE
    except FastworkerError as exc:
        out.error(str(exc))
        return RET_FAILED
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    sys.exit(main())
