"""The fastworker CLI: its parser, common flags in either position, each command's output and exit code.

Commands run against a fake client here; the integration suite runs them against a real control plane.
"""

from __future__ import annotations

import argparse
import asyncio
import decimal
import json
import os
import re
import signal
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar

import pytest

from fastworker.client import (
    CancelResult,
    Client,
    Priority,
    TaskDetail,
    TaskInfo,
    TaskLimits,
    TaskPage,
    TaskState,
    WorkflowInfo,
    __version__,
    cli,
)
from fastworker.client.cli import (
    COMMANDS,
    RET_FAILED,
    RET_OK,
    RET_TIMEOUT,
    RET_UNREACHABLE,
    RET_USAGE,
    main,
    make_parser,
    parse_arg,
    parse_command_line,
)
from fastworker.client.errors import InvalidRequest, TaskNotFound, UnknownTask
from fastworker.client.jsonshape import (
    cancel_json,
    detail_json,
    drain_json,
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
from fastworker.client.limits import UNSET
from fastworker.client.models import TaskError

TASK_ID = "3b0f2a4e-7f45-4c1e-9d3a-2f5e8c1b9a70"


def make_info(state: TaskState = TaskState.SUCCESS, **changes: Any) -> TaskInfo:
    values: dict[str, Any] = {
        "id": TASK_ID,
        "name": "add",
        "state": state,
        "priority": Priority.NORMAL,
        "attempts": 1,
        "worker": "controlplane",
        "queued_at": 1.0,
        "started_at": 1.5,
        "finished_at": 2.0,
        "result": (b"\x00\x01", decimal.Decimal("1.10")),
        "error": None,
    }
    values.update(changes)
    return TaskInfo(**values)


class FakeClient:
    """Stands in for ``Client``: records how the CLI built it and what it asked, answers canned data."""

    made: ClassVar[list[FakeClient]] = []
    #: The state ``status`` and ``wait`` report.
    state: ClassVar[TaskState] = TaskState.SUCCESS

    def __init__(self, address: str | None = None, *, secret: str | None = None, connect_timeout: float = 5.0) -> None:
        self.address = address
        self.secret = secret
        self.connect_timeout = connect_timeout
        self.calls: list[tuple[str, tuple[Any, ...], dict[str, Any]]] = []
        FakeClient.made.append(self)

    async def __aenter__(self) -> FakeClient:
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        pass

    def _record(self, method: str, *args: Any, **kwargs: Any) -> None:
        self.calls.append((method, args, kwargs))

    async def send(
        self, name: str, args: Sequence[Any] = (), kwargs: Mapping[str, Any] | None = None, **options: Any
    ) -> str:
        self._record("send", name, list(args), dict(kwargs or {}), **options)
        return TASK_ID

    async def status(self, task_id: str) -> TaskInfo:
        self._record("status", task_id)
        return make_info(self.state)

    async def wait(self, task_id: str, *, timeout: float | None = None) -> TaskInfo:
        self._record("wait", task_id, timeout=timeout)
        return make_info(self.state)

    async def cancel(self, task_id: str) -> CancelResult:
        return CancelResult(cancelled=task_id == TASK_ID, previous_state=TaskState.PENDING)

    async def retry(self, task_id: str) -> TaskState:
        return TaskState.PENDING

    async def list_tasks(self, **filters: Any) -> TaskPage:
        self._record("list_tasks", **filters)
        return TaskPage(tasks=[make_info()], total=7, offset=filters["offset"], limit=filters["limit"])

    async def task_detail(self, task_id: str) -> TaskDetail:
        return DETAIL

    async def workers(self) -> list[dict[str, Any]]:
        return [dict(w) for w in WORKERS]

    async def queues(self) -> list[dict[str, Any]]:
        return [dict(q) for q in QUEUES]

    async def stats(self) -> dict[str, Any]:
        return dict(STATS)

    async def tasks(self) -> list[dict[str, Any]]:
        return [dict(t) for t in REGISTERED]

    async def purge(self, priority: str) -> int:
        return 3

    async def pause(self, priority: str) -> bool:
        return True

    async def resume(self, priority: str) -> bool:
        return False

    async def drain_worker(self, worker_id: str, *, timeout: float = 30.0) -> bool:
        self._record("drain_worker", worker_id, timeout=timeout)
        return worker_id == "w1"

    async def limits(self) -> list[TaskLimits]:
        return list(LIMITS)

    async def set_limits(self, name: str, **changes: Any) -> TaskLimits:
        self._record("set_limits", name, **changes)
        if name == "nope":
            raise UnknownTask(f"unknown task {name!r}")
        return SET_LIMITS

    async def workflow(self, workflow_id: str) -> WorkflowInfo:
        self._record("workflow", workflow_id)
        if workflow_id != WORKFLOW.id:
            raise TaskNotFound(workflow_id)
        return WORKFLOW

    async def cancel_workflow(self, workflow_id: str) -> int:
        self._record("cancel_workflow", workflow_id)
        if workflow_id != WORKFLOW.id:
            raise TaskNotFound(workflow_id)
        return 2


DETAIL = TaskDetail(
    info=make_info(TaskState.FAILURE, error=TaskError("ValueError", "bad", "Traceback ...")),
    args=[(1, 2), b"raw"],
    kwargs={"when": decimal.Decimal("2.5")},
    eta=None,
)
WORKERS = [{"worker_id": "w1", "host": "h", "capacity": 4, "in_flight": 1}]
QUEUES = [
    {"queue": "default", "priority": p.value, "depth": 0, "oldest_age": 0.0, "paused": False, "servers": 1}
    for p in Priority
]
STATS = {"submitted": 12, "throughput": float("nan"), "history": [{"at": 1.0, "succeeded": 2, "failed": 1}]}
LIMITS = [
    TaskLimits("reports.build", "10/s", 3, running=3, waiting=7, current_rate=9.5, burst=1, overridden=True),
    TaskLimits("emails.send", None, 2, running=1, waiting=0),
]
SET_LIMITS = TaskLimits("reports.build", "5/s", None, running=0, waiting=2, current_rate=0.0, burst=1, overridden=True)


def _step(task_id: str, state: TaskState, *depends_on: str, **changes: Any) -> TaskInfo:
    return make_info(state, id=task_id, depends_on=depends_on, workflow_id="wf-7", result=None, **changes)


#: chord(group(chain(fetch, parse), fetch), merge): merge waits for two steps, one of which failed.
WORKFLOW = WorkflowInfo(
    "wf-7",
    TaskState.FAILURE,
    [
        _step("a1111111-aaaa", TaskState.SUCCESS, name="fetch"),
        _step("a2222222-aaaa", TaskState.FAILURE, "a1111111-aaaa", name="parse", error=TaskError("KeyError", "x")),
        _step("b1111111-bbbb", TaskState.SUCCESS, name="fetch"),
        _step(
            "c1111111-cccc",
            TaskState.FAILURE,
            "a2222222-aaaa",
            "b1111111-bbbb",
            name="[bold]merge[/]",
            error=TaskError("DependencyFailed", "parse failed"),
        ),
    ],
    created_at=1.0,
    output_ids=("c1111111-cccc",),
)
REGISTERED = [
    {"name": "add", "priority": "normal", "retries": 0, "timeout": 0.0, "soft_timeout": 0.0, "every": 0.0, "cron": ""},
    {
        "name": "nightly",
        "priority": "low",
        "retries": 0,
        "timeout": 0.0,
        "soft_timeout": 0.0,
        "every": 0.0,
        "cron": "0 3 * * *",
        "timezone": "Europe/Paris",
    },
]


@dataclass
class Ran:
    code: int
    out: str
    err: str

    @property
    def client(self) -> FakeClient:
        (client,) = FakeClient.made
        return client

    @property
    def json(self) -> Any:
        return json.loads(self.out)


@pytest.fixture(autouse=True)
def fake_client(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """Every test runs the CLI against FakeClient, with no FASTWORKER_* env var of the caller's."""
    for name in (
        "FASTWORKER_CONTROL_PLANE",
        "FASTWORKER_SECRET",
        "FASTWORKER_SECRET_FILE",
        "FASTWORKER_JSON",
        "FASTWORKER_CONNECT_TIMEOUT",
    ):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("COLUMNS", "200")
    monkeypatch.setattr(cli, "Client", FakeClient)
    FakeClient.made = []
    FakeClient.state = TaskState.SUCCESS
    yield
    FakeClient.made = []


@pytest.fixture
def run(capsys: pytest.CaptureFixture[str]) -> Any:
    def run(*argv: str) -> Ran:
        code = main(list(argv))
        captured = capsys.readouterr()
        return Ran(code, captured.out, captured.err)

    return run


# ---------------------------------------------------------------------------------------- arguments


@pytest.mark.parametrize(
    ("text", "value"),
    [
        ("1", 1),
        ("2.5", 2.5),
        ('"x"', "x"),
        ("hello", "hello"),
        ("[1, 2]", [1, 2]),
        ('{"a": 1}', {"a": 1}),
        ("true", True),
        # Not JSON (RFC 8259), though Python's json module takes them: text.
        ("NaN", "NaN"),
        ("Infinity", "Infinity"),
        ("1e400", "1e400"),
        ("[1, NaN]", "[1, NaN]"),
    ],
)
def test_arguments_are_json_when_they_parse_and_text_otherwise(text: str, value: object) -> None:
    assert parse_arg(text) == value


@pytest.mark.parametrize(
    "argv",
    [
        ["submit", "add", "--timeout", "-1", "--wait"],
        ["submit", "add", "--timeout", "nan", "--wait"],
        ["result", TASK_ID, "--wait", "--timeout", "inf"],
        ["--connect-timeout", "-1", "stats"],
        ["drain", "w1", "--timeout", "soon"],
    ],
)
def test_a_duration_that_is_negative_or_not_a_finite_number_is_a_usage_error_naming_it(
    argv: list[str], capsys: pytest.CaptureFixture[str]
) -> None:
    with pytest.raises(SystemExit) as exc:
        main(argv)
    assert exc.value.code == RET_USAGE
    # (--connect-timeout must be above 0: a timeout of 0 could find no control plane, ever)
    assert re.search(r"expected a number of seconds(, 0 or more| above 0), got", capsys.readouterr().err)
    assert FakeClient.made == []


def test_with_json_a_usage_error_is_json_on_stdout_too(capsys: pytest.CaptureFixture[str]) -> None:
    for argv in (["--json", "submit", "add", "--kwargs", "[1]"], ["--json", "bogus"], ["stats", "--json", "--nope"]):
        with pytest.raises(SystemExit) as exc:
            main(argv)
        captured = capsys.readouterr()
        assert exc.value.code == RET_USAGE, argv
        assert json.loads(captured.out)["error"], argv  # one JSON object
        assert "usage:" in captured.err, argv
    with pytest.raises(SystemExit):
        main(["submit", "add", "--kwargs", "[1]"])
    assert capsys.readouterr().out == ""  # without --json, stdout stays empty


def test_a_malformed_control_plane_address_is_a_usage_error_naming_it(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(cli, "Client", Client)  # the real one
    # (an empty one, an unset variable, is refused too: it quietly meant FASTWORKER_CONTROL_PLANE)
    for address in ("notanaddress", "tcp://127.0.0.1:99999", "http://127.0.0.1:5550", ""):
        with pytest.raises(SystemExit) as refused:
            main(["--json", "--control-plane", address, "stats"])
        assert refused.value.code == RET_USAGE, address
        error = json.loads(capsys.readouterr().out)["error"]
        assert "argument --control-plane" in error and repr(address) in error


def test_usage_errors_exit_two() -> None:
    for argv in (["submit"], ["submit", "add", "--priority", "urgent"], ["list", "--limit", "-1"], ["pause", "x"]):
        with pytest.raises(SystemExit) as exc:
            make_parser().parse_args(argv)
        assert exc.value.code == RET_USAGE, argv


def test_bad_kwargs_and_clashing_options_are_usage_errors_before_connecting(run: Any) -> None:
    with pytest.raises(SystemExit) as exc:
        main(["submit", "add", "--kwargs", "[1]"])
    assert exc.value.code == RET_USAGE
    with pytest.raises(SystemExit) as exc:
        main(["submit", "add", "--kwargs", "{nope"])
    assert exc.value.code == RET_USAGE
    clash = run("--json", "submit", "add", "--countdown", "5", "--eta", "+5")
    assert clash.code == RET_USAGE and "not both" in clash.json["error"]
    assert FakeClient.made == []


def test_submit_takes_a_negative_countdown_as_at_once_and_refuses_nan(run: Any) -> None:
    ran = run("--json", "submit", "add", "--countdown", "-2.5")
    assert ran.code == RET_OK
    _, _, options = ran.client.calls[0]
    assert options["countdown"] == -2.5  # SubmitOptions.apply sends it as "at once"
    refused = run("--json", "submit", "add", "--countdown", "nan")
    assert refused.code == RET_USAGE and "countdown must be finite" in refused.json["error"]


def test_the_spec_commands_exist_each_with_a_description_and_every_argument_with_help() -> None:
    parser = make_parser()
    (subparsers,) = (a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
    spec = {"submit", "status", "result", "cancel", "retry", "workers", "queues", "stats", "tasks"}
    assert spec | {"list", "inspect", "purge", "pause", "resume", "drain", "limits", "limit", "workflow"} <= set(
        subparsers.choices
    )
    assert set(subparsers.choices) == set(COMMANDS)
    for name, sub in subparsers.choices.items():
        assert sub.description, name
        for action in sub._actions:
            assert action.help, f"{name} {action.dest}"
    for action in parser._actions:
        assert action.help, action.dest


def test_an_unknown_flag_is_named_even_without_a_command(capsys: pytest.CaptureFixture[str]) -> None:
    for argv, named in ((["--bogus"], "--bogus"), (["list", "--bogus2"], "--bogus2"), ([], "COMMAND")):
        with pytest.raises(SystemExit) as exc:
            main(argv)
        assert exc.value.code == RET_USAGE, argv
        assert named in capsys.readouterr().err, argv


def test_states_and_priorities_are_accepted_in_the_case_they_are_printed_in(run: Any) -> None:
    ran = run("list", "--state", "FAILURE", "--state", "Running", "--priority", "HIGH")
    assert ran.code == RET_OK
    assert ran.client.calls[0][2]["states"] == ["failure", "running"]
    assert ran.client.calls[0][2]["priority"] == "high"
    args = make_parser().parse_args(["pause", "LOW"])
    assert args.priority == "low"


def test_version(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exc:
        main(["--version"])
    assert exc.value.code == 0
    assert capsys.readouterr().out.strip() == f"fastworker {__version__}"


# ------------------------------------------------------------------- common flags, before and after


def _secret_file(tmp_path: Path, name: str, secret: str) -> str:
    path = tmp_path / name
    path.write_text(secret + "\n")
    return str(path)


#: (flag, value before, value after, env var value, what the client was given for each, the default)
_COMMON: list[tuple[str, str, str, str, str, Any, Any, Any, Any]] = [
    (
        "--control-plane",
        "tcp://before:1",
        "tcp://after:2",
        "tcp://env:3",
        "address",
        "tcp://before:1",
        "tcp://after:2",
        "tcp://env:3",
        None,
    ),
    ("--connect-timeout", "1.5", "2.5", "3.5", "connect_timeout", 1.5, 2.5, 3.5, 5.0),
    ("--secret", "s-before", "s-after", "s-env", "secret", "s-before", "s-after", "s-env", None),
    ("--secret-file", "before.txt", "after.txt", "env.txt", "secret", "f-before", "f-after", "f-env", None),
]


@pytest.mark.parametrize(
    ("flag", "before", "after", "env", "attribute", "got_before", "got_after", "got_env", "default"),
    _COMMON,
    ids=[c[0] for c in _COMMON],
)
def test_a_common_flag_works_before_and_after_the_command_and_after_wins(
    run: Any,
    monkeypatch: pytest.MonkeyPatch,
    tmp_path: Path,
    flag: str,
    before: str,
    after: str,
    env: str,
    attribute: str,
    got_before: Any,
    got_after: Any,
    got_env: Any,
    default: Any,
) -> None:
    if flag == "--secret-file":
        before, after, env = (
            _secret_file(tmp_path, n, s) for n, s in ((before, "f-before"), (after, "f-after"), (env, "f-env"))
        )

    def given(*argv: str) -> Any:
        FakeClient.made = []
        ran = run(*argv)
        assert ran.code == RET_OK, ran
        value = getattr(ran.client, attribute)
        return value if value is None or isinstance(value, str | int | float) else value.secrets()[0]

    assert given("stats") == default
    assert given(flag, before, "stats") == got_before
    assert given("stats", flag, after) == got_after
    assert given(flag, before, "stats", flag, after) == got_after
    assert given(f"{flag}={before}", "queues") == got_before  # the = form too
    assert given("queues", f"{flag}={after}") == got_after

    monkeypatch.setenv("FASTWORKER_" + flag.removeprefix("--").replace("-", "_").upper(), env)
    assert given("stats") == got_env
    assert given(flag, before, "stats") == got_before  # a flag beats its env var, in either position
    assert given("stats", flag, after) == got_after


@pytest.mark.parametrize("argv", [["--json", "stats"], ["stats", "--json"], ["--json", "stats", "--json"]])
def test_json_works_before_and_after_the_command(run: Any, argv: list[str]) -> None:
    ran = run(*argv)
    assert ran.code == RET_OK and ran.json["submitted"] == 12


def test_json_from_its_env_var_and_human_output_by_default(run: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    human = run("stats")
    assert human.code == RET_OK and "submitted" in human.out
    with pytest.raises(json.JSONDecodeError):
        json.loads(human.out)
    monkeypatch.setenv("FASTWORKER_JSON", "1")
    assert run("stats").json["submitted"] == 12


def test_secret_and_secret_file_together_are_a_usage_error_in_any_positions(run: Any, tmp_path: Path) -> None:
    path = _secret_file(tmp_path, "s.txt", "x")
    for argv in (
        ["--secret", "a", "stats", "--secret-file", path],
        ["--secret-file", path, "stats", "--secret", "a"],
        ["stats", "--secret", "a", "--secret-file", path],
    ):
        with pytest.raises(SystemExit) as exc:
            main(argv)
        assert exc.value.code == RET_USAGE, argv


def test_common_flags_mix_with_a_command_s_own_arguments(run: Any) -> None:
    ran = run("drain", "w1", "--json", "--timeout", "2", "--connect-timeout", "0.5")
    assert ran.code == RET_OK and ran.json == drain_json("w1", True)
    assert ran.client.connect_timeout == 0.5
    assert ran.client.calls == [("drain_worker", ("w1",), {"timeout": 2.0})]


def test_an_unreachable_control_plane_exits_three(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(cli, "Client", Client)  # the real one
    for argv in (
        ["--control-plane", "tcp://127.0.0.1:9", "--connect-timeout", "0.2", "--json", "stats"],
        ["stats", "--json", "--control-plane", "tcp://127.0.0.1:9", "--connect-timeout", "0.2"],
    ):
        assert main(argv) == RET_UNREACHABLE
        assert "no control plane announced itself" in json.loads(capsys.readouterr().out)["error"]


# --------------------------------------------------------------------------------------- commands


def test_submit_passes_arguments_and_every_task_option_to_send(run: Any) -> None:
    ran = run(
        "submit",
        "add",
        "1",
        "x",
        "--kwargs",
        '{"y": [2]}',
        "--priority",
        "high",
        "--queue",
        "reports",
        "--countdown",
        "5",
        "--expires",
        "2000000000",
        "--task-id",
        "mine",
        "--unique-key",
        "nightly-7",
        "--json",
    )
    assert ran.code == RET_OK
    assert ran.json == task_json(make_info())
    method, args, options = ran.client.calls[0]
    assert method == "send" and args == ("add", [1, "x"], {"y": [2]})
    assert options == {
        "priority": Priority.HIGH,
        "queue": "reports",
        "countdown": 5.0,
        "eta": None,
        "expires": 2000000000.0,
        "task_id": "mine",
        "unique_key": "nightly-7",
        "depends_on": None,
    }


def test_submit_wait_exits_as_the_task_ends(run: Any) -> None:
    ran = run("submit", "add", "--wait", "--timeout", "3", "--json")
    assert ran.code == RET_OK and ran.json["state"] == "SUCCESS"
    assert ("wait", (TASK_ID,), {"timeout": 3.0}) in ran.client.calls
    FakeClient.made = []
    FakeClient.state = TaskState.FAILURE
    assert run("submit", "add", "--wait").code == RET_FAILED


@pytest.mark.parametrize("as_json", [False, True])
def test_submit_wait_interrupted_by_ctrl_c_names_the_task_that_goes_on(
    run: Any, monkeypatch: pytest.MonkeyPatch, as_json: bool
) -> None:
    # Ctrl-C while waiting: asyncio.run cancels the command, then raises KeyboardInterrupt
    async def interrupted(self: FakeClient, task_id: str, *, timeout: float | None = None) -> TaskInfo:
        os.kill(os.getpid(), signal.SIGINT)
        await asyncio.sleep(10)
        raise AssertionError("not interrupted")

    monkeypatch.setattr(FakeClient, "wait", interrupted)
    # Ctrl-C as a terminal delivers it: a background job (CI's) inherits SIGINT ignored
    previous = signal.signal(signal.SIGINT, signal.default_int_handler)
    try:
        ran = run("submit", "add", "--wait", *(["--json"] if as_json else []))
    finally:
        signal.signal(signal.SIGINT, previous)
    assert ran.code == 130
    if as_json:
        assert json.loads(ran.out)["id"] == TASK_ID and "goes on" in json.loads(ran.out)["error"]
    else:
        assert f"task {TASK_ID} was queued and goes on" in ran.err


def test_result_exits_zero_one_or_four(run: Any) -> None:
    assert run("result", TASK_ID).code == RET_OK
    FakeClient.made = []
    FakeClient.state = TaskState.RUNNING
    pending = run("--json", "result", TASK_ID)
    assert pending.code == RET_TIMEOUT and pending.json["state"] == "RUNNING"
    FakeClient.made = []
    FakeClient.state = TaskState.CANCELLED
    assert run("result", TASK_ID, "--wait").code == RET_FAILED


def test_task_json_is_the_shared_shape_with_id_first(run: Any) -> None:
    ran = run("status", TASK_ID, "--json")
    assert ran.code == RET_OK
    data = ran.json
    assert data == task_json(make_info())
    assert list(data)[0] == "id"
    assert data["result"] == ["AAE=", "1.10"]


@pytest.mark.parametrize(
    ("argv", "expected", "code"),
    [
        (["inspect", TASK_ID], detail_json(DETAIL), RET_OK),
        (["workers"], workers_json(WORKERS), RET_OK),
        (["queues"], queues_json(QUEUES), RET_OK),
        (["stats"], stats_json(STATS), RET_OK),
        (["tasks"], registered_tasks_json(REGISTERED), RET_OK),
        (["cancel", TASK_ID], cancel_json(make_info(), CancelResult(True, TaskState.PENDING)), RET_OK),
        (["cancel", "other"], cancel_json(make_info(), CancelResult(False, TaskState.PENDING)), RET_FAILED),
        (["purge", "low"], purge_json("low", 3), RET_OK),
        (["pause", "high"], pause_json("high", True), RET_OK),
        (["resume", "high"], pause_json("high", False), RET_OK),
        (["drain", "w1"], drain_json("w1", True), RET_OK),
        (["drain", "nobody"], drain_json("nobody", False), RET_FAILED),
        (["retry", TASK_ID], task_json(make_info()), RET_OK),
        (["limits"], limits_json(LIMITS), RET_OK),
        (["limit", "reports.build", "--rate", "5/s"], task_limits_json(SET_LIMITS), RET_OK),
        (["workflow", "wf-7"], workflow_json(WORKFLOW), RET_OK),
        (["workflow", "wf-7", "--cancel"], workflow_cancel_json("wf-7", 2), RET_OK),
    ],
)
def test_each_command_prints_the_shared_json_shape(run: Any, argv: list[str], expected: Any, code: int) -> None:
    ran = run(*argv, "--json")
    assert ran.code == code
    assert ran.json == expected


def test_tasks_table_names_the_time_zone_a_cron_schedule_is_read_in(run: Any) -> None:
    ran = run("tasks")
    assert ran.code == RET_OK
    (line,) = [line for line in ran.out.splitlines() if "nightly" in line]
    assert "0 3 * * * Europe/Paris" in line


def test_list_passes_filters_and_prints_a_page(run: Any) -> None:
    ran = run("list", "--state", "failure", "--state", "running", "--name", "add", "--offset", "2", "--limit", "5")
    assert ran.code == RET_OK and "tasks 3-3 of 7" in ran.out
    assert ran.client.calls == [
        (
            "list_tasks",
            (),
            {
                "states": ["failure", "running"],
                "name": "add",
                "priority": None,
                "worker": "",
                "search": "",
                "offset": 2,
                "limit": 5,
            },
        )
    ]
    FakeClient.made = []
    page = run("list", "--json").json
    assert page == page_json(TaskPage([make_info()], total=7, offset=0, limit=20))
    assert list(page) == ["tasks", "total", "offset", "limit"]


def test_human_output_of_the_commands(run: Any) -> None:
    stats = run("stats")
    assert "submitted" in stats.out and "finished/s, last 2 min" in stats.out
    assert "w1" in run("workers").out
    assert "critical" in run("queues").out
    assert "add" in run("tasks").out
    detail = run("inspect", TASK_ID)
    assert "ValueError: bad" in detail.out and "Traceback" in detail.out and "ran" in detail.out
    assert "is PENDING again" in run("retry", TASK_ID).out
    assert "low: dispatching" in run("resume", "low").out
    assert f"task {TASK_ID} cancelled (it was PENDING)" in run("cancel", TASK_ID).out


#: A subworker serving many tasks: one of its names holds a tab and a newline (a name is the application's text).
BUSY_WORKERS = [
    {"worker_id": "w1", "host": "h", "capacity": 4, "task_names": [f"app.tasks.job_{n:02}" for n in range(25)]},
    {"worker_id": "w2", "host": "h", "capacity": 1, "task_names": ["odd\tname\nhere"]},
]


@pytest.fixture
def busy_workers(monkeypatch: pytest.MonkeyPatch) -> None:
    async def workers(self: FakeClient) -> list[dict[str, Any]]:
        return [dict(w) for w in BUSY_WORKERS]

    monkeypatch.setattr(FakeClient, "workers", workers)


def test_tables_piped_with_no_columns_are_plain_tab_separated_lines(
    run: Any, busy_workers: None, monkeypatch: pytest.MonkeyPatch
) -> None:
    # `fastworker workers > log` printed a title padded to 455 characters and box-drawn rows
    monkeypatch.delenv("COLUMNS")
    ran = run("workers")
    assert ran.code == RET_OK
    # Then: the title, a header and one line per worker, tab-separated, no box, no padding, nothing wrapped
    title, header, first, second = ran.out.splitlines()
    assert title == "workers"
    assert header.split("\t") == ["worker_id", "host", "capacity", "task_names"]
    assert first.split("\t") == ["w1", "h", "4", ", ".join(BUSY_WORKERS[0]["task_names"])]  # grep finds each name
    assert second.split("\t") == ["w2", "h", "1", "odd\\tname\\nhere"]  # escaped: no column or line of its own
    # and the other tables read the same (one helper)
    queues = run("queues").out.splitlines()
    assert queues[:3] == [
        "queues",
        "queue\tpriority\tdepth\toldest_age\tpaused\tservers",
        "default\tcritical\t0\t0.000 s\t\t1",
    ]
    assert run("workers", "--json").json == workers_json(BUSY_WORKERS)  # scripts: unchanged


def test_tables_are_laid_out_for_columns_when_it_is_set_even_piped(
    run: Any, busy_workers: None, monkeypatch: pytest.MonkeyPatch
) -> None:
    # `COLUMNS=80 fastworker workers | less` ignored COLUMNS: 455-character lines
    monkeypatch.setenv("COLUMNS", "80")
    ran = run("workers")
    assert ran.code == RET_OK
    assert max(len(line) for line in ran.out.splitlines()) <= 80, ran.out


def test_times_print_as_iso_8601_for_people_and_as_unix_seconds_with_json(
    run: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Given a worker heard from at a known instant and a control plane up for 90 s
    heartbeat = 1_796_497_322.25
    seen = [{"worker_id": "w1", "host": "h", "in_flight": 1, "last_heartbeat": heartbeat}]

    async def workers(self: FakeClient) -> list[dict[str, Any]]:
        return [dict(w) for w in seen]

    async def stats(self: FakeClient) -> dict[str, Any]:
        return {"submitted": 1, "uptime": 90.5, "history": []}

    monkeypatch.setattr(FakeClient, "workers", workers)
    monkeypatch.setattr(FakeClient, "stats", stats)
    # Then people read the instant as ISO-8601 (UTC) and the duration in seconds, never an epoch float
    listed = run("workers").out
    assert "2026-12-05T19:02:02.250+00:00" in listed, listed
    assert "1796497322" not in listed.replace(",", ""), listed
    assert "90.500 s" in run("stats").out
    # and scripts keep Unix seconds
    assert run("workers", "--json").json[0]["last_heartbeat"] == heartbeat


def test_inspect_shows_when_a_scheduled_task_is_due_and_when_it_expires(
    run: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    # An operator saw a scheduled task's eta but not when it would end CANCELLED (Expired) instead
    scheduled = TaskDetail(
        info=make_info(TaskState.SCHEDULED), args=[], kwargs={}, eta=1_796_497_622.25, expires=1_796_497_322.25
    )

    async def task_detail(self: FakeClient, task_id: str) -> TaskDetail:
        return scheduled

    monkeypatch.setattr(FakeClient, "task_detail", task_detail)
    shown = run("inspect", TASK_ID).out
    assert re.search(r"^\s*expires\s+2026-12-05T19:02:02\.250\+00:00", shown, re.MULTILINE), shown
    assert re.search(r"^\s*eta\s+2026-12-05T19:07:02\.250\+00:00", shown, re.MULTILINE), shown
    data = run("inspect", TASK_ID, "--json").json
    assert (data["eta"], data["expires"]) == (1_796_497_622.25, 1_796_497_322.25)


def _levels(queue: str, servers: int, **depths: int) -> list[dict[str, Any]]:
    return [
        {
            "queue": queue,
            "priority": p.value,
            "depth": depths.get(p.value, 0),
            "oldest_age": 12.5 if depths.get(p.value) else 0.0,
            "paused": p is Priority.LOW,
            "servers": servers,
        }
        for p in Priority
    ]


#: "default" (served by the control plane's slots and a subworker), "idle" (served, empty), "reports" (unserved).
NAMED_QUEUES = [*_levels("default", 2, high=1), *_levels("idle", 1), *_levels("reports", 0, normal=3, low=1)]


@pytest.fixture
def named_queues(monkeypatch: pytest.MonkeyPatch) -> None:
    async def queues(self: FakeClient) -> list[dict[str, Any]]:
        return [dict(q) for q in NAMED_QUEUES]

    monkeypatch.setattr(FakeClient, "queues", queues)


def _table_rows(text: str) -> list[list[str]]:
    """The body rows of a rich table as lists of cell texts."""
    return [[cell.strip() for cell in line.strip("│").split("│")] for line in text.splitlines() if line.startswith("│")]


def test_queues_for_people_show_each_queue_and_level_and_the_unserved_queue(run: Any, named_queues: None) -> None:
    ran = run("queues")
    assert ran.code == RET_OK
    lines = ran.out.splitlines()
    header = next(line for line in lines if "priority" in line)
    assert [c.strip() for c in header.strip("┃").split("┃")] == [
        "queue",
        "priority",
        "depth",
        "oldest_age",
        "paused",
        "servers",
    ]
    # Every level of "default"; of the others only the levels tasks wait in, and one "-" row for an empty queue
    assert _table_rows(ran.out) == [
        ["default", "critical", "0", "0.000 s", "", "2"],
        ["default", "high", "1", "12.500 s", "", "2"],
        ["default", "normal", "0", "0.000 s", "", "2"],
        ["default", "low", "0", "0.000 s", "paused", "2"],
        ["idle", "-", "0", "0.000 s", "", "1"],
        ["reports", "normal", "3", "12.500 s", "", "0 (none)"],
        ["reports", "low", "1", "12.500 s", "paused", "0 (none)"],
    ]
    assert (
        "no worker serves queue reports: its 4 waiting tasks start once a worker with --queues reports connects"
        in ran.out
    )
    assert "(--json lists them all)" in ran.out


def test_queues_json_is_every_entry_as_the_client_returns_it(run: Any, named_queues: None) -> None:
    ran = run("queues", "--json")
    assert ran.code == RET_OK
    assert ran.json == queues_json(NAMED_QUEUES) == NAMED_QUEUES
    assert len(ran.json) == 12 and "no worker" not in ran.out


def test_queues_of_only_the_default_queue_show_its_four_levels_and_no_notes(run: Any) -> None:
    ran = run("queues")
    assert [row[:2] for row in _table_rows(ran.out)] == [["default", p.value] for p in Priority]
    assert "no worker" not in ran.out and "not shown" not in ran.out


def test_level_actions_say_they_act_in_every_queue() -> None:
    for name in ("purge", "pause", "resume"):
        assert "in every queue" in COMMANDS[name].help and "every named queue" in COMMANDS[name].description


def test_control_characters_from_tasks_print_escaped_never_raw(run: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    # A result or error message could otherwise recolour, move the cursor or rewrite the terminal.
    hostile = "\x1b[2J\x1b[31mred\rgone\x9b"
    failed = make_info(
        TaskState.FAILURE, name="x\x1b]0;title\x07", result=hostile, error=TaskError("E", f"[bold]{hostile}", "")
    )

    async def status(self: FakeClient, task_id: str) -> TaskInfo:
        return failed

    async def refuse(*args: Any, **kwargs: Any) -> str:
        raise UnknownTask(hostile)

    monkeypatch.setattr(FakeClient, "status", status)
    shown = run("status", TASK_ID)
    assert "\x1b" not in shown.out and "\r" not in shown.out and "\x9b" not in shown.out and "\x07" not in shown.out
    assert "\\x1b[31mred\\x0dgone\\x9b" in shown.out and "[bold]" in shown.out
    monkeypatch.setattr(FakeClient, "send", refuse)
    error = run("submit", "x")
    assert error.code == RET_FAILED and "\x1b" not in error.err and "\\x1b[2J" in error.err
    as_json = run("--json", "status", TASK_ID)
    assert json.loads(as_json.out)["result"] == hostile  # JSON carries the text as it is, escaped by JSON


def test_bidirectional_overrides_from_tasks_print_escaped_never_reordering_the_line(
    run: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    # U+202E (right-to-left override) and U+2066 (isolate) reorder what follows them on the line
    reordering = "ok\u202e\u2066SSECCUS\u2069\u202c\u2028"
    shown_info = make_info(TaskState.FAILURE, name=reordering, result=reordering)

    async def status(self: FakeClient, task_id: str) -> TaskInfo:
        return shown_info

    monkeypatch.setattr(FakeClient, "status", status)
    shown = run("status", TASK_ID)
    assert not any(ch in shown.out for ch in "\u202e\u2066\u2069\u202c\u2028")
    assert "ok\\u202e\\u2066SSECCUS\\u2069\\u202c\\u2028" in shown.out


def test_errors_print_as_json_with_json(run: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    async def refuse(*args: Any, **kwargs: Any) -> str:
        raise UnknownTask("nope")

    monkeypatch.setattr(FakeClient, "send", refuse)
    ran = run("submit", "nope", "--json")
    assert ran.code == RET_FAILED and "nope" in ran.json["error"]


# ------------------------------------------------------------------------------------ flow control


def test_limits_lists_each_limited_name_with_a_run_time_marker(run: Any) -> None:
    ran = run("limits")
    assert ran.code == RET_OK
    for text in ("reports.build", "10/s", "emails.send", "set at run time", "9.50", "yes"):
        assert text in ran.out, text
    listed = run("limits", "--json").json
    assert [entry["name"] for entry in listed] == ["reports.build", "emails.send"]
    assert list(listed[0])[:5] == ["name", "rate_limit", "max_concurrency", "running", "waiting"]
    assert listed[1]["rate_limit"] is None and listed[1]["max_concurrency"] == 2


def test_limits_with_nothing_limited_says_so(run: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    async def nothing(self: FakeClient) -> list[TaskLimits]:
        return []

    monkeypatch.setattr(FakeClient, "limits", nothing)
    assert "limits: none" in run("limits").out
    assert run("limits", "--json").json == []


@pytest.mark.parametrize(
    ("options", "expected"),
    [
        (["--rate", "10/s"], {"rate_limit": "10/s", "max_concurrency": UNSET, "clear": False}),
        (["--rate", "120/m", "--concurrency", "3"], {"rate_limit": "120/m", "max_concurrency": 3, "clear": False}),
        (["--rate", "none"], {"rate_limit": None, "max_concurrency": UNSET, "clear": False}),
        (["--concurrency", "NONE"], {"rate_limit": UNSET, "max_concurrency": None, "clear": False}),
        (["--clear"], {"rate_limit": UNSET, "max_concurrency": UNSET, "clear": True}),
        (["--clear", "--concurrency", "2"], {"rate_limit": UNSET, "max_concurrency": 2, "clear": True}),
    ],
)
def test_limit_passes_only_the_limits_given(run: Any, options: list[str], expected: dict[str, Any]) -> None:
    ran = run("limit", "reports.build", *options)
    assert ran.code == RET_OK, ran
    assert ran.client.calls == [("set_limits", ("reports.build",), expected)]


def test_limit_prints_the_limits_as_they_now_hold(run: Any) -> None:
    ran = run("limit", "reports.build", "--rate", "5/s", "--concurrency", "none")
    assert ran.code == RET_OK
    assert "reports.build: rate 5/s (burst 1), no concurrency limit, set at run time" in ran.out
    assert run("--json", "limit", "reports.build", "--clear").json == task_limits_json(SET_LIMITS)


def test_limit_without_a_change_or_with_a_bad_value_is_a_usage_error_naming_it(
    run: Any, capsys: pytest.CaptureFixture[str]
) -> None:
    nothing = run("--json", "limit", "reports.build")
    assert nothing.code == RET_USAGE
    assert "--rate, --concurrency or --clear" in nothing.json["error"]
    for option, value in (("--rate", "10/d"), ("--rate", "0/s"), ("--rate", "fast"), ("--concurrency", "0")):
        with pytest.raises(SystemExit) as exc:
            main(["limit", "reports.build", option, value])
        assert exc.value.code == RET_USAGE
        err = capsys.readouterr().err
        assert f"argument {option}" in err and repr(value) in err, err
    with pytest.raises(SystemExit) as exc:
        main(["limit", "--rate", "5/s"])  # no NAME
    assert exc.value.code == RET_USAGE
    assert FakeClient.made == []  # refused before connecting


def test_limit_of_an_unknown_task_exits_one(run: Any) -> None:
    ran = run("--json", "limit", "nope", "--concurrency", "1")
    assert ran.code == RET_FAILED and "unknown task 'nope'" in ran.json["error"]


# ---------------------------------------------------------------------------------------- workflows


def test_workflow_prints_its_steps_indented_under_what_they_wait_for(run: Any) -> None:
    ran = run("workflow", "wf-7")
    assert ran.code == RET_OK, ran.err
    lines = ran.out.splitlines()
    assert "workflow wf-7 FAILURE" in lines[0]
    assert "4 steps: 2 SUCCESS, 2 FAILURE" in lines[0]
    rows = [line for line in lines if any(key in line for key in ("a1111111", "a2222222", "b1111111", "c1111111"))]
    assert [row.split()[0] for row in rows] == ["fetch", "└", "fetch", "└"]
    fetch, parse, other, merge = rows
    assert fetch.index("fetch") < parse.index("parse")  # parse is indented under the fetch it waits for
    assert other.index("fetch") == fetch.index("fetch")  # a second root starts at the left again
    assert "[bold]merge[/]" in merge and "(after 2 steps)" in merge  # literal, not markup; once, after both
    assert merge.index("└") == parse.index("└")  # under b1111111, the last of its dependencies
    assert "KeyError" in parse and "DependencyFailed" in merge and "KeyError" not in fetch
    assert "c1111111" in merge and "c1111111-cccc" not in merge  # short ids
    assert "\x1b[" not in ran.out  # piped: no colour codes


def test_workflow_states_are_coloured_on_a_terminal(run: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("FORCE_COLOR", "1")
    monkeypatch.delenv("NO_COLOR", raising=False)
    monkeypatch.setenv("TERM", "xterm-256color")
    ran = run("workflow", "wf-7")
    assert ran.code == RET_OK
    assert "\x1b[" in ran.out and "SUCCESS" in ran.out


def test_workflow_cancel_cancels_then_shows_it(run: Any) -> None:
    ran = run("workflow", "wf-7", "--cancel")
    assert ran.code == RET_OK
    assert "cancelled 2 steps of workflow wf-7" in ran.out and "(after 2 steps)" in ran.out
    assert [call[0] for call in ran.client.calls] == ["cancel_workflow", "workflow"]


def test_workflow_cancel_with_nothing_left_is_a_refusal_on_stderr(run: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    # Given a workflow whose steps are all final already
    async def cancel_workflow(self: FakeClient, workflow_id: str) -> int:
        return 0

    monkeypatch.setattr(FakeClient, "cancel_workflow", cancel_workflow)
    # Then for people it is refused as cancel's and drain's refusals are: exit 1, the error on stderr, stdout empty
    ran = run("workflow", "wf-7", "--cancel")
    assert (ran.code, ran.out) == (RET_FAILED, "")
    assert ran.err.startswith("error: workflow wf-7 not cancelled: no step was left to cancel (it is FAILURE)")
    # And a script gets the outcome's shape, as with cancel and drain
    FakeClient.made = []
    scripted = run("--json", "workflow", "wf-7", "--cancel")
    assert (scripted.code, scripted.json) == (RET_FAILED, workflow_cancel_json("wf-7", 0))


def test_an_unknown_workflow_exits_one_with_a_clear_error(run: Any) -> None:
    ran = run("--json", "workflow", "nope")
    assert ran.code == RET_FAILED
    assert ran.json == {
        "error": "workflow nope is not known to the control plane (never seen, or its steps were forgotten)"
    }
    FakeClient.made = []
    human = run("workflow", "nope", "--cancel")
    assert human.code == RET_FAILED and "workflow nope is not known" in human.err


def test_status_of_a_workflow_step_shows_its_workflow_and_dependencies(
    run: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    async def status(self: FakeClient, task_id: str) -> TaskInfo:
        return WORKFLOW.steps[3]

    plain = run("status", TASK_ID)
    assert "workflow_id" not in plain.out and "depends_on" not in plain.out  # only for steps and dependants
    FakeClient.made = []
    monkeypatch.setattr(FakeClient, "status", status)
    step = run("status", TASK_ID)
    assert "wf-7" in step.out and "a2222222-aaaa, b1111111-bbbb" in step.out


def test_a_request_the_control_plane_refuses_as_invalid_exits_one_not_two(
    run: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    async def refuse(*args: Any, **kwargs: Any) -> TaskState:
        raise InvalidRequest("task is RUNNING: only FAILURE or CANCELLED tasks can be retried")

    monkeypatch.setattr(FakeClient, "retry", refuse)
    ran = run("--json", "retry", TASK_ID)
    assert ran.code == RET_FAILED and "only FAILURE or CANCELLED" in ran.json["error"]


def test_without_rich_the_command_answers_json_help_and_version_and_names_the_extra_for_tables(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    import sys

    from fastworker.client import command

    # As in an application that installed fastworker-client without the cli extra
    for name in [n for n in sys.modules if n == "rich" or n.startswith("rich.")]:
        monkeypatch.delitem(sys.modules, name)
    monkeypatch.setitem(sys.modules, "rich", None)
    for name in ("fastworker.client.cli", "fastworker.client._waitbar", "fastworker.client.workflowtree"):
        monkeypatch.delitem(sys.modules, name, raising=False)
    monkeypatch.delattr(fastworker_client_module(), "cli", raising=False)

    # Tables for people: nothing is done, and the message says what to install (or to add --json)
    assert command.main(["stats"]) == RET_FAILED
    said = capsys.readouterr()
    assert said.out == "" and "pip install 'fastworker-client[cli]'" in said.err and "--json" in said.err
    # --version and --help answer
    with pytest.raises(SystemExit) as version:
        command.main(["--version"])
    assert version.value.code == 0 and capsys.readouterr().out.startswith("fastworker ")
    with pytest.raises(SystemExit) as helped:
        command.main(["--help"])
    assert helped.value.code == 0 and "stats" in capsys.readouterr().out
    # --json needs nothing more
    monkeypatch.setattr(sys.modules["fastworker.client.cli"], "Client", FakeClient)
    assert command.main(["--json", "stats"]) == RET_OK
    assert json.loads(capsys.readouterr().out)["submitted"] == STATS["submitted"]
    assert "rich" not in [name.split(".")[0] for name, module in sys.modules.items() if module is not None]


def fastworker_client_module() -> Any:
    import fastworker.client

    return fastworker.client


def test_a_task_command_given_a_workflow_id_says_to_use_workflow(run: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    async def unknown(self: FakeClient, task_id: str) -> TaskInfo:
        raise TaskNotFound(task_id)

    monkeypatch.setattr(FakeClient, "status", unknown)
    shown = run("status", WORKFLOW.id)
    assert shown.code == RET_FAILED
    assert f"it is a workflow id; `fastworker workflow {WORKFLOW.id}` shows that workflow" in shown.err
    plain = run("status", "no-such-id")
    assert plain.code == RET_FAILED and "workflow" not in plain.err


def test_args_after_a_double_dash_are_task_arguments_wherever_the_options_stand(
    capsys: pytest.CaptureFixture[str],
) -> None:
    for argv in (
        ["submit", "echo", "--wait", "--", "-x", "-5"],  # argparse alone refused these after an option
        ["submit", "--wait", "echo", "--", "-x", "-5"],
        ["submit", "echo", "--wait", "--priority", "high", "--", "-x", "-5"],
    ):
        args = parse_command_line(make_parser(), argv)
        assert (args.name, args.args, args.wait) == ("echo", ["-x", "-5"], True), argv
    args = parse_command_line(make_parser(), ["submit", "echo", "a", "--wait", "--", "--json"])
    assert args.args == ["a", "--json"] and not args.json  # after "--" even a known flag is an argument
    with pytest.raises(SystemExit) as exc:
        parse_command_line(make_parser(), ["submit", "echo", "-x", "--wait"])
    assert exc.value.code == RET_USAGE
    assert "an ARG that starts with '-' goes after '--': -- -x" in capsys.readouterr().err
    with pytest.raises(SystemExit) as exc:  # a command without ARGs takes nothing after "--"
        parse_command_line(make_parser(), ["stats", "--", "x"])
    assert exc.value.code == RET_USAGE
    assert "unrecognized arguments: -- x" in capsys.readouterr().err
    # ARGs may follow the options too, in order; negative numbers are ARGs
    for argv, expected in (
        (["submit", "echo", "--wait", "1", "2"], ["1", "2"]),
        (["submit", "echo", "1", "--wait", "2", "--priority", "high", "3"], ["1", "2", "3"]),
        (["submit", "echo", "--wait", "-5", "-2.5", "--", "-x"], ["-5", "-2.5", "-x"]),
    ):
        assert parse_command_line(make_parser(), argv).args == expected, argv
    # A task id that starts with "-" after "--", as argparse reads it for every single-id command
    for command in ("status", "result", "cancel", "retry", "inspect", "workflow"):
        assert "-dash" in vars(parse_command_line(make_parser(), [command, "--", "-dash"])).values(), command
