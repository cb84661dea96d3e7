"""The ``fastworker`` operator command: submit and inspect tasks, see workers, queues and stats.

Rich tables and a spinner for people, ``--json`` (one JSON object or a list, in the shapes of
:mod:`fastworker.client.jsonshape`, shared with the web dashboard's API) for scripts, and the
the documented exit codes: 0 ok, 1 the task failed, was cancelled or was refused, 2 usage error,
3 control plane unreachable, 4 timeout.

Each subcommand is one ``@command`` function next to the function that declares its arguments.
The common flags (``--json``, ``--control-plane``, ...) work before and after the subcommand.
"""

from __future__ import annotations

import argparse
import asyncio
import dataclasses
import datetime as dt
import io
import json
import math
import os
import re
import sys
from collections.abc import Awaitable, Callable, Iterable, Sequence
from typing import TYPE_CHECKING, Any, NoReturn, TextIO

from fastworker.client._async import Client
from fastworker.client._terminal import one_field, visible
from fastworker.client.completion import add_completion_flag
from fastworker.client.envflags import _arguments, apply_env_defaults, env_name, env_true
from fastworker.client.errors import (
    ControlPlaneUnavailable,
    FastworkerError,
    InvalidRequest,
    QueueFull,
    TaskNotFound,
    TaskTimeout,
    UnknownTask,
)
from fastworker.client.jsonshape import (
    Json,
    cancel_json,
    detail_json,
    drain_json,
    jsonable,
    limits_json,
    page_json,
    pause_json,
    purge_json,
    queues_json,
    registered_tasks_json,
    stats_json,
    task_json,
    task_limits_json,
    workers_json,
    workflow_cancel_json,
    workflow_json,
)
from fastworker.client.limits import MAX_CONCURRENCY, UNSET, Rate, TaskLimits, Unset
from fastworker.client.logsetup import add_logging_flags, configure_logging
from fastworker.client.models import Priority, TaskDetail, TaskInfo, TaskState
from fastworker.client.options import (
    add_submit_arguments,
    address_argument,
    options_from_namespace,
    positive_seconds_argument,
    seconds_argument,
)
from fastworker.client.secretfile import add_secret_file_flag, resolve_secret
from fastworker.client.version import __version__
from fastworker.client.workflows import WorkflowInfo
from fastworker.protocol.queues import DEFAULT_QUEUE

if TYPE_CHECKING:
    from rich.console import Console
    from rich.text import Text

#: Exit codes (docs/reference.md).
RET_OK = 0
RET_FAILED = 1
RET_USAGE = 2
RET_UNREACHABLE = 3
RET_TIMEOUT = 4

_PRIORITIES = [p.value for p in Priority]

_EPILOG = """The common options may also come after the command (fastworker stats --json).

examples:
  fastworker submit add 1 2 --wait
  fastworker submit emails.send 42 --kwargs '{"subject": "hi"}' --priority high
  fastworker status 3b0f2a4e-7f45-4c1e-9d3a-2f5e8c1b9a70 --json
  fastworker workflow 6d1c0b7e-2a44-4f0e-8a51-93c2f0d1e4b8
  fastworker workers
  fastworker limit reports.build --rate 10/s --concurrency 3
"""


# ------------------------------------------------------------------------------------ the registry


Runner = Callable[[Client, argparse.Namespace, "_Output"], Awaitable[int]]
Arguments = Callable[[argparse.ArgumentParser], None]


def _no_arguments(parser: argparse.ArgumentParser) -> None:
    """For commands that take nothing but the common flags."""


def _no_check(args: argparse.Namespace) -> None:
    """For commands whose arguments argparse checks entirely."""


@dataclasses.dataclass(frozen=True)
class Command:
    """One subcommand: its help, its arguments and what it does."""

    name: str
    #: One line for ``fastworker --help``.
    help: str
    #: The paragraph of ``fastworker NAME --help``.
    description: str
    #: Adds the command's own arguments to its parser.
    arguments: Arguments
    #: Runs with a connected client; returns the exit code.
    run: Runner
    #: Checks the parsed arguments before connecting; raises ValueError for a usage error (exit 2).
    check: Callable[[argparse.Namespace], None] = _no_check


#: Every subcommand by name, in the order ``--help`` lists them.
COMMANDS: dict[str, Command] = {}


def command(
    name: str,
    *,
    help: str,
    description: str,
    arguments: Arguments = _no_arguments,
    check: Callable[[argparse.Namespace], None] = _no_check,
) -> Callable[[Runner], Runner]:
    """Register the decorated coroutine function as subcommand ``name``."""

    def register(run: Runner) -> Runner:
        if name in COMMANDS:
            raise ValueError(f"command {name!r} is defined twice")
        COMMANDS[name] = Command(name, help, description, arguments, run, check)
        return run

    return register


# -------------------------------------------------------------------------------- the common flags


def _common_flags(*, after_command: bool) -> _Parser:
    """A parent parser holding the common flags.

    Before the command they carry the defaults (which ``apply_env_defaults`` replaces with env
    vars); after it they default to ``SUPPRESS``, so a flag given there overrides the value from
    before the command and an absent one leaves it alone.
    """
    parent = _Parser(add_help=False)
    parent.add_argument(
        "--control-plane",
        type=address_argument,  # an empty one (an unset variable) is refused, not read as "the default"
        default=None,
        metavar="ADDRESS",
        help="the control plane's discovery address (default tcp://127.0.0.1:5550)",
    )
    parent.add_argument("--secret", default=None, help="the shared secret")
    add_secret_file_flag(parent)
    parent.add_argument("--json", action="store_true", help="print JSON for scripts")
    parent.add_argument(
        "--connect-timeout",
        type=positive_seconds_argument,  # (0 could find no control plane, ever)
        default=5.0,
        metavar="SECONDS",
        help="how long to look for the control plane (default 5)",
    )
    add_logging_flags(parent, default_level="WARNING")
    if after_command:
        for action in _arguments(parent):  # not set_defaults: that would put SUPPRESS in the namespace
            action.default = argparse.SUPPRESS
            action.help = f"{action.help} [env {env_name(action.dest)}]"
    return parent


class _Parser(argparse.ArgumentParser):
    """argparse's parser, whose usage errors are also ``{"error": ...}`` on stdout when JSON was asked for.

    A script reading ``--json`` output then gets JSON for every error, usage errors included
    (exit 2 still; the usage text goes to stderr as always).
    """

    json_errors = False

    def error(self, message: str) -> NoReturn:
        if _Parser.json_errors:
            try:
                print(json.dumps({"error": f"{self.prog}: {message}"}), flush=True)
            except OSError:  # a reader that left (or a full disk): the usage error stands, on stderr
                os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        super().error(message)


def _json_asked(argv: Sequence[str]) -> bool:
    """True when the command line or ``FASTWORKER_JSON`` asks for JSON (looked at before parsing)."""
    return "--json" in argv or env_true(os.environ.get("FASTWORKER_JSON", ""))


def make_parser() -> argparse.ArgumentParser:
    """The argument parser (env vars are applied by ``main``)."""
    parser = _Parser(
        prog="fastworker",
        description="Submit and inspect FastWorker tasks.",
        epilog=_EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
        parents=[_common_flags(after_command=False)],
    )
    parser.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    add_completion_flag(parser)
    # Not required here: main() says which flag is unknown before it says the command is missing.
    subparsers = parser.add_subparsers(
        dest="command", metavar="COMMAND", help="what to do (fastworker COMMAND --help for more)"
    )
    after = _common_flags(after_command=True)
    for spec in COMMANDS.values():
        sub = subparsers.add_parser(spec.name, help=spec.help, description=spec.description, parents=[after])
        spec.arguments(sub)
    return parser


# ---------------------------------------------------------------------------------- shared pieces


def _count(text: str, least: int = 0) -> int:
    """A whole number of ``least`` or more; the refusal names the same bound whatever was wrong."""
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a whole number, {least} or more, got {text!r}") from None
    if value < least:
        raise argparse.ArgumentTypeError(f"must be {least} or more, got {value}")
    return value


def _page_size(text: str) -> int:
    return _count(text, 1)


def _strict_json(text: str) -> Any:
    """JSON as RFC 8259 has it: no ``NaN``/``Infinity``, no number too large for a float (Python's json takes them).

    Raises:
        ValueError: not JSON.
    """

    def number(literal: str) -> float:
        value = float(literal)
        if not math.isfinite(value):
            raise ValueError(f"number out of range: {literal}")
        return value

    def refuse(constant: str) -> Any:
        raise ValueError(f"not JSON: {constant}")

    return json.loads(text, parse_float=number, parse_constant=refuse)


def parse_arg(text: str) -> Any:
    """A command-line task argument: JSON when it parses as JSON, else the text itself (``NaN`` stays a string)."""
    try:
        return _strict_json(text)
    except ValueError:
        return text


def _kwargs_object(text: str) -> dict[str, Any]:
    """``--kwargs``: a JSON object (argparse reports anything else as a usage error)."""
    try:
        value = _strict_json(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(f"not JSON: {exc}") from None
    if not isinstance(value, dict):
        raise argparse.ArgumentTypeError("must be a JSON object")
    return value


def _task_id_argument(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("task_id", metavar="TASK_ID", help="the task's id (as submit printed it)")


def _priority_argument(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "priority", choices=_PRIORITIES, type=str.lower, metavar="PRIORITY", help="critical, high, normal or low"
    )


def _wait_arguments(parser: argparse.ArgumentParser, wait_help: str) -> None:
    parser.add_argument("--wait", action="store_true", help=wait_help)
    parser.add_argument(
        "--timeout",
        type=seconds_argument,
        default=None,
        metavar="SECONDS",
        help="longest wait (exit 4 when it passes)",
    )


def _exit_for(info: TaskInfo) -> int:
    return RET_OK if info.state is TaskState.SUCCESS else RET_FAILED


async def _wait_and_show(client: Client, task_id: str, timeout: float | None, out: _Output) -> int:
    if out.as_json:
        info = await client.wait(task_id, timeout=timeout)
    else:
        with out.people.status(f"waiting for task {task_id} ..."):
            info = await client.wait(task_id, timeout=timeout)
    out.task(info)
    return _exit_for(info)


# ------------------------------------------------------------------------------------ the commands


def _submit_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("name", help="registered task name")
    parser.add_argument(
        "args", nargs="*", default=[], metavar="ARG", help="positional arguments (JSON if they parse, else text)"
    )
    parser.add_argument(
        "--kwargs", type=_kwargs_object, default=None, metavar="JSON", help="keyword arguments as a JSON object"
    )
    add_submit_arguments(parser)
    _wait_arguments(parser, "wait for the result (exit 1 if the task fails)")


def _check_submit(args: argparse.Namespace) -> None:
    options_from_namespace(args)


@command(
    "submit",
    help="queue a task (and wait for it with --wait)",
    description="Queue task NAME with the given arguments and print it; with --wait, print it once final.",
    arguments=_submit_arguments,
    check=_check_submit,
)
async def submit(client: Client, args: argparse.Namespace, out: _Output) -> int:
    """Queue a task; with ``--wait`` exit as the task ends."""
    options = options_from_namespace(args)
    task_id = await client.send(args.name, [parse_arg(a) for a in args.args], args.kwargs or {}, **options.as_kwargs())
    if args.wait:
        try:
            return await _wait_and_show(client, task_id, args.timeout, out)
        except asyncio.CancelledError:  # Ctrl-C: the task goes on, and whoever runs this needs its id
            out.error(f"interrupted while waiting; task {task_id} was queued and goes on", id=task_id)
            raise
    out.task(await client.status(task_id))
    return RET_OK


@command(
    "status",
    help="a task's state",
    description="Print a task's current info: exit 0 whatever its state (result tells success from failure), "
    "1 if the id is unknown.",
    arguments=_task_id_argument,
)
async def status(client: Client, args: argparse.Namespace, out: _Output) -> int:
    """Print one task."""
    out.task(await client.status(args.task_id))
    return RET_OK


def _result_arguments(parser: argparse.ArgumentParser) -> None:
    _task_id_argument(parser)
    _wait_arguments(parser, "wait until the task is final")


@command(
    "result",
    help="a task's result",
    description="Print a task with its result or error: exit 0 on success, 1 on failure or cancellation, "
    "4 while it is not final. With --wait on a terminal, a live bar shows the task's progress meanwhile.",
    arguments=_result_arguments,
)
async def result(client: Client, args: argparse.Namespace, out: _Output) -> int:
    """Print a task's outcome; exit as it ended (4 if it has not)."""
    if args.wait and not out.as_json and out.people.is_terminal:
        from fastworker.client._waitbar import wait_with_bar  # rich: output for people only

        info = await wait_with_bar(client, args.task_id, args.timeout, out.people)
        out.task(info)
        return _exit_for(info)
    if args.wait:
        return await _wait_and_show(client, args.task_id, args.timeout, out)
    info = await client.status(args.task_id)
    out.task(info)
    return _exit_for(info) if info.state.is_final else RET_TIMEOUT


@command(
    "cancel",
    help="cancel a task",
    description="Cancel a waiting or running task (exit 1 if it was already final).",
    arguments=_task_id_argument,
)
async def cancel(client: Client, args: argparse.Namespace, out: _Output) -> int:
    """Cancel one task and say what state it was in; ``--json`` prints the task as it is now, with that."""
    outcome = await client.cancel(args.task_id)
    if out.as_json:
        out.data(cancel_json(await client.status(args.task_id), outcome))
    elif outcome.cancelled:
        out.say(f"task {args.task_id} cancelled (it was {outcome.previous_state.value})")
    else:  # a refusal, as the other exit-1 answers: on stderr
        out.error(f"task {args.task_id} not cancelled (it was {outcome.previous_state.value})")
    return RET_OK if outcome.cancelled else RET_FAILED


@command(
    "retry",
    help="re-run a failed task",
    description="Queue a FAILURE or CANCELLED task again under the same id.",
    arguments=_task_id_argument,
)
async def retry(client: Client, args: argparse.Namespace, out: _Output) -> int:
    """Re-queue one task; ``--json`` prints the task as it is now."""
    state = await client.retry(args.task_id)
    if out.as_json:
        out.task(await client.status(args.task_id))
    else:
        out.say(f"task {args.task_id} is {state.value} again")
    return RET_OK


def _list_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--state",
        action="append",
        default=[],
        choices=[s.value.lower() for s in TaskState],
        type=str.lower,  # SUCCESS as printed, or success
        help="only tasks in this state, in any case (repeatable)",
    )
    parser.add_argument("--name", default="", help="only this task name")
    parser.add_argument(
        "--priority", choices=_PRIORITIES, type=str.lower, default=None, help="only this priority level, in any case"
    )
    parser.add_argument("--worker", default="", help="only tasks run by this worker id")
    parser.add_argument(
        "--search", default="", metavar="TEXT", help="only tasks whose id starts with TEXT or whose name contains it"
    )
    parser.add_argument("--offset", type=_count, default=0, help="matches to skip (default 0)")
    parser.add_argument("--limit", type=_page_size, default=20, help="page size (default 20)")


@command(
    "list",
    help="live and recent tasks, newest first (filters, paging)",
    description="List live tasks and finished ones still in the result cache, newest first.",
    arguments=_list_arguments,
)
async def list_tasks(client: Client, args: argparse.Namespace, out: _Output) -> int:
    """Print one page of the task listing."""
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
        out.data(page_json(page))
    else:
        shown = f"{page.offset + 1}-{page.offset + len(page.tasks)}" if page.tasks else f"none past {page.offset}"
        out.rows(f"tasks {shown} of {page.total}", [_list_row(info) for info in page.tasks])
    return RET_OK


@command(
    "inspect",
    help="one task in full: arguments, timings, traceback",
    description="Print everything about one task: its info, arguments, ETA, wait and run times, and traceback.",
    arguments=_task_id_argument,
)
async def inspect(client: Client, args: argparse.Namespace, out: _Output) -> int:
    """Print one task in full."""
    detail = await client.task_detail(args.task_id)
    if out.as_json:
        out.data(detail_json(detail))
    else:
        out.detail(detail)
    return RET_OK


def _workflow_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("workflow_id", metavar="WORKFLOW_ID", help="the workflow's id (its handle's id)")
    parser.add_argument(
        "--cancel",
        action="store_true",
        help="cancel its waiting and running steps first (exit 1 if none was left to cancel)",
    )


@command(
    "workflow",
    help="a workflow's steps and their states",
    description="Print a workflow's state and its steps as an indented list: each step under the step it "
    "waits for, with its name, short id, state and the error type of a failed step. A step that waits for "
    "several (a chord's callback) shows once, after the last of them. With --cancel, cancel its waiting "
    "and running steps first. Exit 1 if the id is unknown.",
    arguments=_workflow_arguments,
)
async def workflow(client: Client, args: argparse.Namespace, out: _Output) -> int:
    """Print one workflow (cancelling it first with ``--cancel``)."""
    workflow_id = args.workflow_id
    try:
        if args.cancel:
            cancelled = await client.cancel_workflow(workflow_id)
            if out.as_json:  # a refusal too prints its shape (cancelled 0), as cancel's and drain's do
                out.data(workflow_cancel_json(workflow_id, cancelled))
                return RET_OK if cancelled else RET_FAILED
            if not cancelled:  # a refusal, as the other exit-1 answers: on stderr, nothing on stdout
                state = (await client.workflow(workflow_id)).state
                out.error(f"workflow {workflow_id} not cancelled: no step was left to cancel (it is {state.value})")
                return RET_FAILED
            out.say(f"cancelled {cancelled} step{'' if cancelled == 1 else 's'} of workflow {workflow_id}")
        out.workflow(await client.workflow(workflow_id))
    except TaskNotFound:
        out.error(f"workflow {workflow_id} is not known to the control plane (never seen, or its steps were forgotten)")
        return RET_FAILED
    return RET_OK


@command("workers", help="connected subworkers", description="List the connected subworkers and their load.")
async def workers(client: Client, args: argparse.Namespace, out: _Output) -> int:
    """Print the subworkers."""
    found = await client.workers()
    out.rows("workers", [_worker_row(entry) for entry in found], workers_json(found))
    return RET_OK


@command(
    "queues",
    help="queue depth per named queue and priority",
    description="List each named queue's depth and oldest waiting age per priority level, who serves it "
    "(0: its tasks wait for a worker that serves it), and which levels are paused.",
)
async def queues(client: Client, args: argparse.Namespace, out: _Output) -> int:
    """Print the queues: for people, without the empty levels of queues other than the first."""
    found = await client.queues()
    rows, notes = _queue_rows(found)
    out.rows("queues", rows, queues_json(found))
    if not out.as_json:
        for note in notes:
            out.note(note)
    return RET_OK


@command(
    "stats",
    help="counters",
    description="Print the control plane's counters and the last two minutes of throughput.",
)
async def stats(client: Client, args: argparse.Namespace, out: _Output) -> int:
    """Print the counters (with sparklines for people)."""
    counters = await client.stats()
    if out.as_json:
        out.data(stats_json(counters))
        return RET_OK
    history = counters.pop("history", [])
    rows: list[dict[str, Any]] = [
        {"counter": k, "value": _seconds(v) if k == "uptime" else v} for k, v in counters.items()
    ]
    rows.append({"counter": "finished/s, last 2 min", "value": sparkline(s["succeeded"] for s in history)})
    rows.append({"counter": "failed/s, last 2 min", "value": sparkline(s["failed"] for s in history)})
    out.rows("stats", rows)
    return RET_OK


@command(
    "tasks",
    help="registered tasks with their options",
    description="List the registered task names with their default priority, retries, limits and schedule.",
)
async def tasks(client: Client, args: argparse.Namespace, out: _Output) -> int:
    """Print the registered tasks."""
    found = await client.tasks()
    out.rows("tasks", [_task_row(entry) for entry in found], registered_tasks_json(found))
    return RET_OK


@command(
    "purge",
    help="cancel every waiting task of a priority level (in every queue)",
    description="Cancel every task waiting at one priority level, in every named queue; running tasks are not touched.",
    arguments=_priority_argument,
)
async def purge(client: Client, args: argparse.Namespace, out: _Output) -> int:
    """Cancel a level's waiting tasks."""
    purged = await client.purge(args.priority)
    out.action(purge_json(args.priority, purged), f"purged {purged} waiting {args.priority} tasks")
    return RET_OK


@command(
    "pause",
    help="stop dispatching a priority level (in every queue)",
    description="Stop dispatching one priority level, in every named queue; its tasks wait and new ones are still "
    "accepted.",
    arguments=_priority_argument,
)
async def pause(client: Client, args: argparse.Namespace, out: _Output) -> int:
    """Pause a level."""
    _show_paused(args.priority, await client.pause(args.priority), out)
    return RET_OK


@command(
    "resume",
    help="dispatch a paused priority level again (in every queue)",
    description="Dispatch a paused priority level again, in every named queue.",
    arguments=_priority_argument,
)
async def resume(client: Client, args: argparse.Namespace, out: _Output) -> int:
    """Resume a level."""
    _show_paused(args.priority, await client.resume(args.priority), out)
    return RET_OK


def _show_paused(priority: str, paused: bool, out: _Output) -> None:
    out.action(pause_json(priority, paused), f"{priority}: {'paused' if paused else 'dispatching'}")


def _drain_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("worker_id", metavar="WORKER_ID", help="the subworker's id (see fastworker workers)")
    parser.add_argument(
        "--timeout",
        type=seconds_argument,
        default=30.0,
        metavar="SECONDS",
        help="time to finish running tasks before they are re-queued (default 30)",
    )


@command(
    "drain",
    help="ask a subworker to finish its tasks and leave",
    description="Ask a subworker to take nothing new, finish its running tasks and leave (exit 1 if no such worker).",
    arguments=_drain_arguments,
)
async def drain(client: Client, args: argparse.Namespace, out: _Output) -> int:
    """Drain one subworker."""
    draining = await client.drain_worker(args.worker_id, timeout=args.timeout)
    if draining or out.as_json:
        out.action(drain_json(args.worker_id, draining), f"worker {args.worker_id} is draining")
    else:  # a refusal, as the other exit-1 answers: on stderr
        out.error(f"no worker {args.worker_id} is connected")
    return RET_OK if draining else RET_FAILED


def _rate_option(text: str) -> Rate | None:
    """``--rate``: ``N/s``, ``N/m``, ``N/h``, or ``none`` (no rate limit)."""
    if text.strip().lower() == "none":
        return None
    try:
        return Rate.parse(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected N/s, N/m or N/h with N above 0, or none, got {text!r}") from None


def _concurrency_option(text: str) -> int | None:
    """``--concurrency``: a whole number from 1, or ``none`` (no concurrency limit)."""
    if text.strip().lower() == "none":
        return None
    try:
        value = int(text)
    except ValueError:
        value = 0
    if not 1 <= value <= MAX_CONCURRENCY:
        raise argparse.ArgumentTypeError(f"expected a whole number from 1 to {MAX_CONCURRENCY}, or none, got {text!r}")
    return value


def _limit_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("name", metavar="NAME", help="the task name")
    parser.add_argument(
        "--rate",
        type=_rate_option,
        default=argparse.SUPPRESS,  # absent when not given: keep the current value
        metavar="N/s|none",
        help="starts allowed across the fleet: N/s, N/m or N/h (none: no rate limit)",
    )
    parser.add_argument(
        "--concurrency",
        type=_concurrency_option,
        default=argparse.SUPPRESS,
        metavar="N|none",
        help="most tasks of NAME running at once across the fleet (none: no limit)",
    )
    parser.add_argument(
        "--clear",
        action="store_true",
        help="drop the limits set at run time, so the task's definition applies again (before --rate/--concurrency)",
    )


def _limit_changes(args: argparse.Namespace) -> tuple[Rate | None | Unset, int | None | Unset]:
    """The rate and concurrency ``fastworker limit`` was given (``UNSET``: keep the current value)."""
    rate: Rate | None | Unset = getattr(args, "rate", UNSET)
    concurrency: int | None | Unset = getattr(args, "concurrency", UNSET)
    return rate, concurrency


def _check_limit(args: argparse.Namespace) -> None:
    if _limit_changes(args) == (UNSET, UNSET) and not args.clear:
        raise ValueError(f"fastworker limit {args.name}: give --rate, --concurrency or --clear")


@command(
    "limits",
    help="flow-control limits per task name",
    description="List the task names with a rate or concurrency limit: the limits, the tasks running and "
    "waiting for them, and the starts in the last second. Limits set at run time are marked.",
)
async def limits(client: Client, args: argparse.Namespace, out: _Output) -> int:
    """Print every limited task name."""
    found = await client.limits()
    out.rows("limits", [_limits_row(entry) for entry in found], limits_json(found))
    return RET_OK


@command(
    "limit",
    help="change a task name's rate or concurrency limit",
    description="Change task NAME's fleet-wide limits at once and print them as they now hold; a limit not "
    "given keeps its value, none removes it, --clear goes back to the task's definition.",
    arguments=_limit_arguments,
    check=_check_limit,
)
async def limit(client: Client, args: argparse.Namespace, out: _Output) -> int:
    """Set one name's limits (exit 1 if no connected process defines it)."""
    rate, concurrency = _limit_changes(args)
    text = rate.text if isinstance(rate, Rate) else rate
    now = await client.set_limits(args.name, rate_limit=text, max_concurrency=concurrency, clear=args.clear)
    out.action(task_limits_json(now), _limits_sentence(now))
    return RET_OK


# -------------------------------------------------------------------------------------- the output


#: The width output piped to another program is laid out in: wide enough that nothing wraps.
_PIPED_WIDTH = 100_000


def _columns_given() -> bool:
    """Whether ``COLUMNS`` names a width (as rich reads it): output is laid out for it, piped or not."""
    return os.environ.get("COLUMNS", "").isdigit()


class PeopleOutputUnavailable(Exception):
    """Tables and colours need ``rich`` (the ``cli`` extra), which is not installed; ``--json`` needs nothing more."""


class _Output:
    """Prints for people (rich, the ``cli`` extra: loaded only for them) or for scripts (JSON on stdout).

    Raises:
        PeopleOutputUnavailable: output for people without ``rich`` (before the command does anything).
    """

    def __init__(self, as_json: bool) -> None:
        self.as_json = as_json
        if as_json:
            return
        try:
            from rich.console import Console
        except ModuleNotFoundError as exc:
            if exc.name is None or exc.name.split(".")[0] != "rich":
                raise
            raise PeopleOutputUnavailable from None
        console = Console()
        #: Piped into grep, a file, a pager or a CI log with no COLUMNS: tables as plain lines.
        self._plain = not console.is_terminal and not _columns_given()
        if self._plain:
            # Never wrap or cut at 80 columns (whole ids stay whole).
            console = Console(width=_PIPED_WIDTH)
        self._people = console
        self._errors = Console(stderr=True)

    @property
    def people(self) -> Console:
        """The console for people (rich): only without ``--json``."""
        return self._people

    def data(self, value: Json) -> None:
        print(json.dumps(value))

    def say(self, text: str) -> None:
        self._people.print(visible(text), markup=False, highlight=False)

    def task(self, info: TaskInfo, *, traceback: bool = True) -> None:
        if self.as_json:
            self.data(task_json(info))
            return
        from rich.table import Table
        from rich.text import Text

        table = Table(show_header=False, box=None)
        for field in dataclasses.fields(info):
            value = getattr(info, field.name)
            if field.name in ("depends_on", "workflow_id", "result_error") and not value:
                continue  # shown for dependants, workflow steps, and a result not decodable here
            if field.name == "error" and info.error is not None:
                value = f"{info.error.type}: {info.error.message}"
            elif field.name == "depends_on":
                value = ", ".join(value)
            elif field.name.endswith("_at"):
                value = _when(value)  # ISO-8601, as everywhere else
            table.add_row(Text(field.name, style="bold"), Text("" if value is None else visible(str(value))))
        self._people.print(table)
        if traceback and info.error is not None and info.error.traceback:
            self._people.print(visible(info.error.traceback), markup=False, highlight=False)

    def rows(self, title: str, rows: list[dict[str, Any]], as_json: Json | None = None) -> None:
        """A table for people; for scripts ``as_json`` (default: the rows themselves)."""
        if self.as_json:
            self.data(jsonable(rows) if as_json is None else as_json)
            return
        if not rows:
            self._people.print(f"{title}: none")
            return
        columns = list(rows[0])
        if self._plain:
            self._plain_rows(title, columns, rows)
            return
        from rich.table import Table

        table = Table(title=title)
        for column in columns:
            table.add_column(column, overflow="fold")  # wrap long ids rather than cut them
        for row in rows:
            table.add_row(*(_cell(row[c]) for c in columns))
        self._people.print(table)

    def _plain_rows(self, title: str, columns: list[str], rows: list[dict[str, Any]]) -> None:
        """The title, then the header and one line per row, tab-separated: no box, no padding, nothing wrapped.

        What a log keeps and ``grep``, ``cut -f`` or ``column -t`` read; print() rather than rich,
        which would turn the tabs into spaces.
        """
        print(one_field(title))
        for cells in (columns, *([_cell_text(row[c]) for c in columns] for row in rows)):
            print("\t".join(map(one_field, cells)))

    def note(self, text: str) -> None:
        """A remark after a table, for people only (in yellow, never read as markup)."""
        from rich.text import Text

        self._people.print(Text(visible(text), style="yellow"))

    def action(self, value: Json, text: str) -> None:
        if self.as_json:
            self.data(value)
        else:
            self.say(text)

    def detail(self, detail: TaskDetail) -> None:
        info = detail.info
        self.task(info, traceback=False)  # the error in its row; its traceback after the details
        from rich.table import Table
        from rich.text import Text

        table = Table(show_header=False, box=None)
        for key, value in (
            ("args", repr(detail.args)),
            ("kwargs", repr(detail.kwargs)),
            ("arguments error", detail.arguments_error),
            ("eta", _when(detail.eta)),
            ("expires", _when(detail.expires)),
            ("waited", _seconds(detail.wait_time)),
            ("ran", _seconds(detail.run_time)),
        ):
            if value:
                table.add_row(Text(key, style="bold"), Text(visible(value)))
        self._people.print(table)
        if info.error is not None and info.error.traceback:
            self._people.print(visible(info.error.traceback), markup=False, highlight=False)

    def workflow(self, info: WorkflowInfo) -> None:
        """The workflow as JSON, or a header line and its steps as an indented list (states in colour on a terminal)."""
        if self.as_json:
            self.data(workflow_json(info))
            return
        from rich.table import Table
        from rich.text import Text

        from fastworker.client.workflowtree import state_counts, state_text, workflow_tree

        header = Text(f"workflow {info.id} ", style="bold")
        header.append(state_text(info.state))
        counts = ", ".join(f"{count} {state.value}" for state, count in state_counts(info.steps))
        header.append(f"  {len(info.steps)} step{'' if len(info.steps) == 1 else 's'}: {counts}")
        if info.forgotten:
            header.append(f", {len(info.forgotten)} no longer known (left the result cache)")
        if info.created_at:
            header.append(f"  created {_when(info.created_at)}", style="dim")
        self._people.print(header)
        table = Table(box=None, pad_edge=False)
        for column in ("step", "id", "state", "error"):
            table.add_column(column, overflow="fold")
        for row in workflow_tree(info.steps):
            step = row.step
            label = Text("  " * row.indent + ("└ " if row.depth else ""))
            label.append(visible(step.name))
            if row.after_note:
                label.append(f"  ({row.after_note})", style="dim")
            error = step.error.type if step.error is not None and step.state is TaskState.FAILURE else ""
            table.add_row(label, Text(_short_id(step.id)), state_text(step.state), Text(visible(error), style="red"))
        self._people.print(table)

    def error(self, message: str, **about: Json) -> None:
        """Print an error: ``about`` (e.g. the ``id`` of a task still running) goes into its JSON too."""
        if self.as_json:
            print(json.dumps({"error": message, **about}))
        else:
            # Never markup (a task's message may hold brackets), never wrapped (piped into a log).
            from rich.text import Text

            self._errors.print(Text.assemble(("error:", "red"), " ", visible(message)), soft_wrap=True)


def _cell(value: Any) -> Text:
    """A table cell as plain text: task names and messages are never read as rich markup, control characters escaped."""
    from rich.text import Text

    return Text(visible(_cell_text(value)))


def _cell_text(value: Any) -> str:
    """A table cell's text, not escaped yet: a list comma-separated, a float with two decimals."""
    if isinstance(value, list):
        return ", ".join(map(str, value))
    if isinstance(value, float):
        return f"{value:,.2f}"
    return str(value)


def _short_id(task_id: str) -> str:
    """The first 8 characters of an id: enough to tell steps apart (``--json`` has the whole ids)."""
    return task_id[:8]


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


def _worker_row(entry: dict[str, Any]) -> dict[str, Any]:
    """A subworker's columns for people: its last heartbeat as ISO-8601, like every time printed (not epoch)."""
    return {key: _when(value) if key == "last_heartbeat" else value for key, value in entry.items()}


def _queue_rows(found: Sequence[dict[str, Any]]) -> tuple[list[dict[str, Any]], list[str]]:
    """``fastworker queues`` for people: the rows, and notes on queues nobody serves and on hidden rows.

    The first queue ("default") shows every level, so every level's paused flag is in view (pausing
    acts on a level in every queue); the others show only the levels tasks wait in, or one ``-`` row
    while nothing waits, so that many named queues stay readable. ``--json`` lists every entry.
    """
    order: list[str] = []
    by_queue: dict[str, list[dict[str, Any]]] = {}
    for entry in found:
        name = str(entry.get("queue") or DEFAULT_QUEUE)
        if name not in by_queue:
            order.append(name)
            by_queue[name] = []
        by_queue[name].append(entry)
    rows: list[dict[str, Any]] = []
    notes: list[str] = []
    hidden = 0
    for index, name in enumerate(order):
        entries = by_queue[name]
        servers = entries[0].get("servers")
        waiting = sum(int(e.get("depth") or 0) for e in entries)
        shown = entries if index == 0 or name == DEFAULT_QUEUE else [e for e in entries if e.get("depth")]
        hidden += len(entries) - len(shown)
        served = "" if servers is None else (f"{servers}" if servers else "0 (none)")
        for entry in shown or [{"priority": "-", "depth": 0, "oldest_age": 0.0, "paused": False}]:
            rows.append(
                {
                    "queue": name,
                    "priority": entry.get("priority", ""),
                    "depth": entry.get("depth", 0),
                    "oldest_age": _seconds(float(entry.get("oldest_age") or 0.0)),
                    "paused": "paused" if entry.get("paused") else "",
                    "servers": served,
                }
            )
        if servers == 0:
            tasks = (
                f"its {waiting} waiting task{' starts' if waiting == 1 else 's start'}"
                if waiting
                else "its tasks start"
            )
            notes.append(f"no worker serves queue {name}: {tasks} once a worker with --queues {name} connects")
    if hidden:
        notes.append("levels of the other queues with nothing waiting are not shown (--json lists them all)")
    return rows, notes


def _task_row(entry: dict[str, Any]) -> dict[str, Any]:
    """The columns of a registered task that fit a terminal."""
    if entry.get("every"):
        schedule = f"every {entry['every']:g} s"
    else:  # a cron expression is read in its time zone (UTC when none is named)
        schedule = " ".join(part for part in (entry.get("cron") or "", entry.get("timezone") or "") if part)
    limits = "/".join(f"{entry[k]:g} s" for k in ("soft_timeout", "timeout") if entry.get(k)) or ""
    return {
        "name": entry["name"],
        "priority": entry["priority"],
        "retries": entry["retries"],
        "limits (soft/hard)": limits,
        "async": "yes" if entry.get("is_async") else "",
        "schedule": schedule,
        "queue": entry.get("queue", ""),
        "rate": entry.get("rate_limit") or "",
        "concurrency": entry.get("max_concurrency") or "",
    }


def _limits_row(entry: TaskLimits) -> dict[str, Any]:
    """The columns of a limited task name."""
    return {
        "name": entry.name,
        "rate": entry.rate_limit or "",
        "burst": entry.burst if entry.rate_limit else "",
        "concurrency": entry.max_concurrency or "",
        "running": entry.running,
        "waiting": entry.waiting,
        "starts/s now": entry.current_rate,
        "set at run time": "yes" if entry.overridden else "",
    }


def _limits_sentence(entry: TaskLimits) -> str:
    """A name's limits in words, as ``fastworker limit`` reports them."""
    rate = f"rate {entry.rate_limit} (burst {entry.burst})" if entry.rate_limit else "no rate limit"
    concurrency = f"concurrency {entry.max_concurrency}" if entry.max_concurrency else "no concurrency limit"
    if entry.overridden:
        origin = ", set at run time"
    elif entry.rate_limit or entry.max_concurrency:
        origin = ", from the task's definition"
    else:
        origin = ""
    return f"{entry.name}: {rate}, {concurrency}{origin}"


# ---------------------------------------------------------------------------------------- running


async def _run(args: argparse.Namespace, out: _Output) -> int:
    spec = COMMANDS[args.command]
    spec.check(args)  # usage errors before looking for the control plane
    async with Client(args.control_plane, secret=args.secret, connect_timeout=args.connect_timeout) as client:
        try:
            return await spec.run(client, args, out)
        except TaskNotFound as exc:
            if exc.what == "task" and await _is_workflow(client, exc.task_id):
                out.error(f"{exc}: it is a workflow id; `fastworker workflow {exc.task_id}` shows that workflow")
                return RET_FAILED
            raise


async def _is_workflow(client: Client, maybe_id: str) -> bool:
    """Whether an id the control plane knows no task by is a workflow's (the hint for a task command given one)."""
    try:
        await client.workflow(maybe_id)
    except FastworkerError:
        return False
    return True


#: What argparse reads as a negative number rather than an option (``-5``, ``-.5``, ``-2.5``).
_NEGATIVE_NUMBER = re.compile(r"^-\d+$|^-\d*\.\d+$")


def parse_command_line(parser: argparse.ArgumentParser, argv: Sequence[str] | None) -> argparse.Namespace:
    """Parse like ``parse_args``, but an unknown flag is named even when the command is missing too (exit 2).

    A command's ARGs may also follow its options (``submit echo --wait 1 2``), and everything after
    the first ``--`` is ARGs wherever the options stand (``submit echo --wait -- -x``): argparse
    alone refuses ARGs after an option once the list has started.
    """
    words = list(sys.argv[1:] if argv is None else argv)
    args, unknown = parser.parse_known_args(words)
    if unknown and isinstance(getattr(args, "args", None), list):
        trailing: list[str] = []
        if "--" in words:
            at = words.index("--")
            args, unknown = parser.parse_known_args(words[:at])
            trailing = words[at + 1 :]
        late = [word for word in unknown if not word.startswith("-") or _NEGATIVE_NUMBER.match(word)]
        unknown = [word for word in unknown if word not in late]
        args.args.extend([*late, *trailing])
    if unknown:
        dashed = [word for word in unknown if word.startswith("-")]
        hint = (
            f" (an ARG that starts with '-' goes after '--': {' '.join(['--', *dashed])})"
            if dashed and isinstance(getattr(args, "args", None), list)
            else ""
        )
        parser.error(f"unrecognized arguments: {' '.join(unknown)}{hint}")
    if args.command is None:
        parser.error("the following arguments are required: COMMAND")
    return args


def main(argv: Sequence[str] | None = None) -> int:
    """Run one command; returns the exit code."""
    _Parser.json_errors = _json_asked(sys.argv[1:] if argv is None else argv)
    parser = make_parser()
    apply_env_defaults(parser, argv=argv)
    args = parse_command_line(parser, argv)
    args.secret = resolve_secret(parser, args, argv)
    configure_logging(args.log_level, args.log_format)
    stdout = sys.stdout
    sys.stdout = output = _ReaderMayLeave(stdout)
    try:
        code = _main(args)
        output.flush()
    finally:
        sys.stdout = stdout
    if output.failure is not None:  # (a full disk, a closed descriptor: not a reader that left)
        print(f"fastworker: cannot write the output: {output.failure}", file=sys.stderr)
        return RET_FAILED
    return code


def _main(args: argparse.Namespace) -> int:
    try:
        out = _Output(args.json)
    except PeopleOutputUnavailable:
        print(
            "fastworker: tables and colours need the cli extra: pip install 'fastworker-client[cli]'"
            " (or add --json, which needs nothing more)",
            file=sys.stderr,
        )
        return RET_FAILED
    try:
        return asyncio.run(_run(args, out))
    except ControlPlaneUnavailable as exc:
        out.error(str(exc))
        return RET_UNREACHABLE
    except TaskTimeout as exc:
        out.error(str(exc), id=exc.task_id)  # it goes on: a script needs its id
        return RET_TIMEOUT
    except (UnknownTask, QueueFull, TaskNotFound, InvalidRequest) as exc:  # refused; before ValueError
        out.error(str(exc))
        return RET_FAILED
    except ValueError as exc:  # a bad option value (e.g. countdown with eta)
        out.error(str(exc))
        return RET_USAGE
    except FastworkerError as exc:
        out.error(str(exc))
        return RET_FAILED
    except KeyboardInterrupt:
        return 130
    except BrokenPipeError:  # a write that went around the wrapper: stop quietly
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return RET_FAILED


class _ReaderMayLeave(io.TextIOBase):
    """Standard output whose reader may leave early (``| head``): what follows is dropped, quietly.

    The command then ends with its own exit code: a ``status`` of a finished task piped into
    ``head`` exits 0, not 1 (which means "the task failed" to a script with ``pipefail``).
    """

    def __init__(self, stream: TextIO) -> None:
        self._stream = stream
        self._gone = False
        #: Why the output could not be written, when it was not a reader that left (``/dev/full``).
        self.failure: str | None = None

    def write(self, text: str) -> int:
        if not self._gone:
            try:
                self._stream.write(text)
            except OSError as exc:
                self._reader_left(exc)
        return len(text)

    def flush(self) -> None:
        if not self._gone:
            try:
                self._stream.flush()
            except OSError as exc:
                self._reader_left(exc)

    def _reader_left(self, exc: OSError) -> None:
        if not isinstance(exc, BrokenPipeError):
            self.failure = exc.strerror or str(exc)
        self._gone = True
        # Later writes, and the interpreter's own flush at exit, go nowhere instead of failing again.
        os.dup2(os.open(os.devnull, os.O_WRONLY), self._stream.fileno())

    def isatty(self) -> bool:
        return self._stream.isatty()

    def fileno(self) -> int:
        return self._stream.fileno()

    @property
    def encoding(self) -> str:  # type: ignore[override]
        return self._stream.encoding


if __name__ == "__main__":
    sys.exit(main())
