"""SubmitOptions: validation, kwargs splitting, the wire mapping, merging, and the CLI flags made from it."""

from __future__ import annotations

import argparse
import datetime as dt
import re
import time
import uuid
from dataclasses import fields
from typing import Any, get_type_hints

import pytest

from fastworker.client import Client, InvalidOptions, Priority
from fastworker.client.options import (
    SUBMIT_OPTION_NAMES,
    BatchOptionArgs,
    SubmitOptionArgs,
    SubmitOptions,
    add_submit_arguments,
    options_from_namespace,
    parse_when,
    positive_seconds_argument,
)
from fastworker.protocol.v1 import task_pb2
from fastworker.protocol.v1.envelope_pb2 import Envelope

FUTURE = dt.datetime(2030, 1, 1, tzinfo=dt.UTC)


# ------------------------------------------------------------------------------------------ validation


@pytest.mark.parametrize(
    ("changes", "message"),
    [
        ({"priority": "urgent"}, r"unknown priority 'urgent'"),
        ({"priority": 3}, r"unknown priority 3"),
        ({"countdown": "5"}, r"countdown must be a number of seconds, not str"),
        ({"countdown": True}, r"countdown must be a number of seconds, not bool"),
        ({"countdown": float("inf")}, r"countdown must be finite"),
        ({"countdown": float("nan")}, r"countdown must be finite"),
        ({"countdown": -float("inf")}, r"countdown must be finite"),
        ({"countdown": 1, "eta": FUTURE}, r"give countdown or eta, not both"),
        ({"eta": "tomorrow"}, r"eta must be a datetime or Unix seconds, not str"),
        ({"expires": float("nan")}, r"expires must be finite"),
        ({"expires": [1]}, r"expires must be a datetime or Unix seconds, not list"),
        ({"expires": 0}, r"expires=0: give a datetime or Unix seconds \(a number below 10\^9"),
        ({"eta": 0.0}, r"eta=0: give a datetime or Unix seconds"),
        ({"expires": -1.5}, r"expires=-1.5: give a datetime or Unix seconds"),
        ({"task_id": 7}, r"task_id must be a non-empty string of at most 200 characters, not 7"),
        ({"task_id": ""}, r"task_id must be a non-empty string of at most 200 characters, not ''"),
    ],
)
def test_a_bad_value_raises_value_error_naming_the_option(changes: dict[str, Any], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        SubmitOptions(**changes)


def test_good_values_are_kept_and_a_priority_name_becomes_a_priority() -> None:
    options = SubmitOptions(priority="HIGH", countdown=0, expires=2e9, task_id="mine")
    assert options.priority is Priority.HIGH
    assert (options.countdown, options.eta, options.expires, options.task_id) == (0, None, 2e9, "mine")
    assert SubmitOptions(eta=FUTURE).eta == FUTURE


def test_an_unknown_option_name_is_a_type_error() -> None:
    with pytest.raises(TypeError, match="prority"):
        SubmitOptions(prority="high")  # type: ignore[call-arg]


# ------------------------------------------------------------------------------------------ split


def test_split_takes_the_reserved_names_out_of_task_kwargs() -> None:
    options, rest = SubmitOptions.split({"x": 1, "priority": "low", "task_id": "t", "subject": "hi"})
    assert options == SubmitOptions(priority=Priority.LOW, task_id="t")
    assert rest == {"x": 1, "subject": "hi"}


def test_split_without_options_gives_the_defaults_and_a_copy_of_the_kwargs() -> None:
    kwargs = {"x": 1}
    options, rest = SubmitOptions.split(kwargs)
    assert options == SubmitOptions() and rest == kwargs and rest is not kwargs
    assert SubmitOptions.split({}) == (SubmitOptions(), {})


def test_split_validates() -> None:
    with pytest.raises(ValueError, match="countdown must be finite"):
        SubmitOptions.split({"countdown": float("nan"), "x": 1})


# ------------------------------------------------------------------------------------------ wire


def test_apply_writes_every_given_option_into_its_wire_field() -> None:
    spec = task_pb2.TaskSpec()
    SubmitOptions(priority="critical", eta=dt.datetime(2030, 1, 1), expires=1_900_000_000.5, task_id="abc").apply(spec)
    assert spec.task_id == "abc"
    assert spec.priority == task_pb2.PRIORITY_CRITICAL
    assert spec.eta == FUTURE.timestamp()  # a naive datetime means UTC
    assert spec.expires == 1_900_000_000.5


def test_apply_turns_a_countdown_into_an_absolute_eta_and_a_naive_expiry_into_utc() -> None:
    spec = task_pb2.TaskSpec()
    before = time.time()
    SubmitOptions(countdown=30, expires=dt.datetime(2030, 1, 1)).apply(spec)
    assert before + 30 <= spec.eta <= time.time() + 30
    assert spec.expires == FUTURE.timestamp()
    zero = task_pb2.TaskSpec()
    SubmitOptions(countdown=0).apply(zero)
    assert zero.eta == 0.0  # at once


@pytest.mark.parametrize("countdown", [-0.001, -30, dt.timedelta(seconds=-5)])
def test_a_negative_countdown_means_at_once_as_a_past_eta_does(countdown: float | dt.timedelta) -> None:
    # Celery runs it at once: ``countdown=(deadline - now).total_seconds()`` just past its deadline.
    spec = task_pb2.TaskSpec()
    SubmitOptions(countdown=countdown).apply(spec)
    assert spec.eta == 0.0


def test_apply_without_options_leaves_defaults_and_gives_a_fresh_uuid4() -> None:
    first, second = task_pb2.TaskSpec(), task_pb2.TaskSpec()
    SubmitOptions().apply(first)
    SubmitOptions().apply(second)
    assert str(uuid.UUID(first.task_id, version=4)) == first.task_id
    assert first.task_id != second.task_id
    assert (first.priority, first.eta, first.expires) == (task_pb2.PRIORITY_UNSPECIFIED, 0.0, 0.0)


# ------------------------------------------------------------------------------------------ keyword types


def test_the_typed_dicts_list_exactly_the_dataclass_fields_with_the_same_types() -> None:
    assert get_type_hints(SubmitOptionArgs) == get_type_hints(SubmitOptions)
    assert set(SubmitOptionArgs.__optional_keys__) == SUBMIT_OPTION_NAMES == {f.name for f in fields(SubmitOptions)}
    batchable = {f.name for f in fields(SubmitOptions) if f.metadata["flag"].batch}
    assert set(BatchOptionArgs.__optional_keys__) == batchable == SUBMIT_OPTION_NAMES - {"task_id", "unique_key"}


def test_as_kwargs_gives_every_option_and_round_trips() -> None:
    options = SubmitOptions(priority="low", countdown=5, task_id="t")
    assert options.as_kwargs() == dict.fromkeys(SUBMIT_OPTION_NAMES) | {
        "priority": Priority.LOW,
        "countdown": 5,
        "task_id": "t",
    }
    assert SubmitOptions(**options.as_kwargs()) == options


# ------------------------------------------------------------------------------------------ merging


def test_merged_lets_the_given_values_win_and_keeps_the_rest() -> None:
    base = SubmitOptions(priority="high", countdown=5, task_id="a")
    assert base.merged(SubmitOptions(priority="low")) == SubmitOptions(priority="low", countdown=5, task_id="a")
    assert base.replace(task_id="b", expires=1_900_000_009.0) == SubmitOptions(
        priority="high", countdown=5, expires=1_900_000_009.0, task_id="b"
    )
    assert base.merged(SubmitOptions()) is base
    assert base.replace(priority=None) is base  # None means "not given", never "clear"


def test_merged_treats_countdown_and_eta_as_one_choice() -> None:
    assert SubmitOptions(countdown=5).replace(eta=FUTURE) == SubmitOptions(eta=FUTURE)
    assert SubmitOptions(eta=FUTURE, priority="low").replace(countdown=1) == SubmitOptions(countdown=1, priority="low")


def test_for_batch_refuses_an_option_that_names_one_task() -> None:
    shared = SubmitOptions(priority="low", countdown=1, expires=FUTURE)
    assert shared.for_batch() is shared
    with pytest.raises(ValueError, match="task_id names one task"):
        SubmitOptions(task_id="x").for_batch()


# ------------------------------------------------------------------------------------------ CLI


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="submit")
    add_submit_arguments(parser)
    return parser


def test_every_option_gets_one_documented_flag() -> None:
    actions = {a.dest: a for a in _parser()._actions if a.dest != "help"}
    assert set(actions) == SUBMIT_OPTION_NAMES
    assert actions["task_id"].option_strings == ["--task-id"]
    assert list(actions["priority"].choices or ()) == ["critical", "high", "normal", "low"]
    assert all(action.help and action.default is None for action in actions.values())


def test_flags_become_submit_options() -> None:
    namespace = _parser().parse_args(
        ["--priority", "high", "--countdown", "2.5", "--expires", "2030-01-01T00:00:00Z", "--task-id", "job-1"]
    )
    assert options_from_namespace(namespace) == SubmitOptions(
        priority=Priority.HIGH, countdown=2.5, expires=FUTURE, task_id="job-1"
    )
    assert options_from_namespace(_parser().parse_args([])) == SubmitOptions()
    assert options_from_namespace(argparse.Namespace()) == SubmitOptions()  # flags never added: none given


def test_times_on_the_command_line_are_iso_8601_unix_seconds_or_seconds_from_now() -> None:
    assert parse_when("2030-01-01T00:00:00+00:00") == FUTURE
    assert parse_when("2030-01-01") == dt.datetime(2030, 1, 1)  # naive: read as UTC when applied
    assert parse_when("1893456000") == 1893456000.0
    before = time.time()
    later = parse_when("+60")
    assert isinstance(later, float) and before + 60 <= later <= time.time() + 60
    for bad in ("tomorrow", "+-5", "+soon", "nan", "inf"):
        with pytest.raises(argparse.ArgumentTypeError, match="ISO 8601"):
            parse_when(bad)


def test_bad_flags_are_usage_errors(capsys: pytest.CaptureFixture[str]) -> None:
    for argv in (["--eta", "someday"], ["--priority", "urgent"], ["--countdown", "soon"]):
        with pytest.raises(SystemExit) as exited:
            _parser().parse_args(argv)
        assert exited.value.code == 2
    assert "--eta" in capsys.readouterr().err
    with pytest.raises(ValueError, match="not both"):
        options_from_namespace(_parser().parse_args(["--countdown", "1", "--eta", "+5"]))


# ------------------------------------------------------------------------------------------ the client


class _Captured(Client):
    """A Client that records the specs it would send instead of sending them."""

    def __init__(self) -> None:
        super().__init__("tcp://127.0.0.1:1")
        self.specs: list[task_pb2.TaskSpec] = []
        self.timeouts: list[float | None] = []

    async def _enqueue(self, spec: task_pb2.TaskSpec) -> str:
        self.specs.append(spec)
        return spec.task_id

    async def _submit_and_wait(self, spec: task_pb2.TaskSpec, timeout: float | None) -> Any:
        self.specs.append(spec)
        self.timeouts.append(timeout)
        return None

    async def connect(self) -> None:
        pass

    async def _request(self, build: Any, **_: Any) -> Envelope:
        assert isinstance(build, Envelope)  # delay_many sends prepared batch envelopes
        reply = Envelope()
        for spec in build.submit_batch.tasks:
            self.specs.append(spec)
            reply.submit_batch_reply.outcomes.add(task_id=spec.task_id).accepted.task_id = spec.task_id
        return reply


async def test_client_delay_and_submit_take_options_from_kwargs_and_pass_the_rest_to_the_task() -> None:
    client = _Captured()
    assert await client.delay("add", 1, y=2, priority="low", task_id="d1") == "d1"
    await client.submit("add", 1, y=2, timeout=3, countdown=10)
    await client.send("add", (1,), {"priority": "a task argument"}, priority="high")
    await client.send_and_wait("add", (), None, timeout=4, expires=FUTURE)
    delayed, submitted, sent, waited = client.specs
    assert (delayed.task_id, delayed.priority) == ("d1", task_pb2.PRIORITY_LOW)
    assert submitted.eta > time.time() + 5 and client.timeouts == [3, 4]
    assert sent.priority == task_pb2.PRIORITY_HIGH
    assert waited.expires == FUTURE.timestamp()
    with pytest.raises(ValueError, match="countdown must be finite"):
        await client.delay("add", countdown=float("nan"))
    await client.delay("add", countdown=-1)
    assert client.specs[-1].eta == 0.0  # a negative countdown: at once


async def test_client_delay_many_gives_every_task_the_shared_options_and_its_own_id() -> None:
    client = _Captured()
    before = time.time()
    ids = await client.delay_many(
        [("add", (1, 2)), ("add", (3,), {"y": 4})], priority="low", countdown=60, expires=FUTURE
    )
    assert [spec.task_id for spec in client.specs] == ids and len(set(ids)) == 2
    for spec in client.specs:
        assert spec.priority == task_pb2.PRIORITY_LOW and spec.expires == FUTURE.timestamp()
        assert before + 60 <= spec.eta <= time.time() + 60
    with pytest.raises(ValueError, match="task_id names one task"):
        await client.delay_many([("add", (1, 2))], task_id="x")  # type: ignore[call-arg]


@pytest.mark.parametrize(
    ("option", "hint"),
    [
        ({"expires": 60}, "expires=timedelta(seconds=60) (on the command line: --expires +60)"),
        ({"eta": 300.0}, "countdown=300 (on the command line: --countdown 300)"),
    ],
)
def test_a_duration_given_where_unix_seconds_are_meant_is_refused_naming_the_form_that_works(
    option: dict[str, float], hint: str
) -> None:
    # Celery's expires=60 means "in 60 s": read as Unix seconds it would expire every task at once.
    with pytest.raises(ValueError, match="is Unix seconds, a time in 1970") as refused:
        SubmitOptions(**option)  # type: ignore[arg-type]
    assert hint in str(refused.value)


def test_a_timedelta_counts_from_the_submission_not_from_when_the_options_were_made() -> None:
    later = SubmitOptions(countdown=dt.timedelta(seconds=30), expires=dt.timedelta(minutes=5))
    before = time.time()
    spec = task_pb2.TaskSpec()
    later.apply(spec)
    after = time.time()
    assert before + 30 <= spec.eta <= after + 30
    assert before + 300 <= spec.expires <= after + 300
    with pytest.raises(ValueError, match="expires cannot be negative"):
        SubmitOptions(expires=dt.timedelta(seconds=-1))


@pytest.mark.parametrize(
    ("option", "said"),
    [
        ({"countdown": 1e30}, "countdown=1e+30 ends after the year 9999"),
        ({"eta": 1e14}, "eta=1e+14 is after the year 9999"),
    ],
)
def test_a_time_past_the_year_9999_is_refused_naming_the_option(option: dict[str, float], said: str) -> None:
    # It reached the control plane, refused there as an `eta` problem (CLI exit 1, not 2)
    with pytest.raises(ValueError, match=re.escape(said)):
        SubmitOptions(**option)  # type: ignore[arg-type]


@pytest.mark.parametrize("task_id", ["a/b", "..", "new\nline"])
def test_a_task_id_the_control_plane_would_refuse_is_refused_before_sending(task_id: str) -> None:
    with pytest.raises(ValueError, match="task_id must be printable characters without '/'"):
        SubmitOptions(task_id=task_id)


@pytest.mark.parametrize("text", ["0", "-1", "nan", "inf", "abc", ""])
def test_a_timeout_that_must_pass_before_anything_happens_is_above_zero(text: str) -> None:
    # `fastworker --connect-timeout 0` was accepted, then always failed ("nothing listens there").
    with pytest.raises(argparse.ArgumentTypeError, match=f"expected a number of seconds above 0, got {text!r}"):
        positive_seconds_argument(text)
    assert positive_seconds_argument("0.2") == 0.2


def test_an_eta_given_as_a_timedelta_is_refused_naming_countdown() -> None:
    with pytest.raises(InvalidOptions, match=r"eta must be a datetime or Unix seconds, not a timedelta.*countdown=90"):
        SubmitOptions(eta=dt.timedelta(seconds=90))  # type: ignore[arg-type]
