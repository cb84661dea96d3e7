"""Submissions whose outcome is unknown (no answer, a restart without a journal) name their ids, alone or batched.

A fake control plane stands in for the real one: it queues each task id at most once, as the real
one does, and can stall (it queues what it got but the answer never comes) or come back restarted
without a journal (it refuses, as outcome unknown, a resent submission it does not know).
"""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from fastworker.client import (
    Client,
    ClientClosed,
    ControlPlaneUnavailable,
    InvalidOptions,
    PayloadError,
    UnknownTask,
    _async,
)
from fastworker.client.workflows import chain, signature
from fastworker.protocol.v1 import error_pb2
from fastworker.protocol.v1.envelope_pb2 import Envelope


class _FakeControlPlane(Client):
    """A client whose requests go to an in-process control plane that dedups by task id."""

    def __init__(self) -> None:
        super().__init__("tcp://127.0.0.1:1")
        #: Task ids queued, each once, with their task names.
        self.queued: dict[str, str] = {}
        #: "answer", "stall" (queue, then no answer) or "restarted" (outcome unknown for a resent id).
        self.mode = "answer"
        #: Task names it refuses as unknown.
        self.unknown_names: set[str] = set()
        #: How many tasks each request carried, and whether alone (a submit) or as a batch.
        self.requests: list[tuple[str, int]] = []

    async def connect(self) -> None:
        pass

    async def _request(self, build: Any, **_: Any) -> Envelope:
        request = build if isinstance(build, Envelope) else Envelope()
        if not isinstance(build, Envelope):
            build(request)
        specs = [request.submit.task] if request.HasField("submit") else list(request.submit_batch.tasks)
        self.requests.append(("submit" if request.HasField("submit") else "batch", len(specs)))
        reply = Envelope()
        outcomes = []
        for spec in specs:
            if self.mode == "restarted" and spec.task_id not in self.queued:
                outcomes.append(("error", error_pb2.ERROR_CODE_OUTCOME_UNKNOWN, f"task {spec.task_id} not vouched"))
            elif spec.name in self.unknown_names:
                outcomes.append(("error", error_pb2.ERROR_CODE_UNKNOWN_TASK, f"unknown task {spec.name!r}"))
            else:
                self.queued.setdefault(spec.task_id, spec.name)
                outcomes.append(("accepted", 0, spec.task_id))
        if self.mode == "stall":
            unavailable = ControlPlaneUnavailable("no reply from the control plane within 2 s")
            unavailable.may_have_arrived = True
            raise unavailable
        if request.HasField("submit"):
            (kind, code, text) = outcomes[0]
            if kind == "error":
                reply.error.code, reply.error.message = code, text  # type: ignore[assignment]
                raise _async._error_from_wire(reply.error, specs[0].name, specs[0].task_id)
            reply.submit_reply.task_id = text
            return reply
        for spec, (kind, code, text) in zip(specs, outcomes, strict=True):
            outcome = reply.submit_batch_reply.outcomes.add(task_id=spec.task_id)
            if kind == "error":
                outcome.error.code, outcome.error.message = code, text  # type: ignore[assignment]
            else:
                outcome.accepted.task_id = text
        return reply


async def test_a_delay_many_with_no_answer_lists_every_call_id_and_sent_again_under_them_queues_each_once() -> None:
    # Given a control plane that queues a batch of 3 and then stalls: no answer comes
    control_plane = _FakeControlPlane()
    control_plane.mode = "stall"
    calls = [("count", (f"m{i}",)) for i in range(3)]
    with pytest.raises(ControlPlaneUnavailable) as raised:
        await control_plane.delay_many(calls)

    # Then the error lists the id of every call, in order: those it queued
    error = raised.value
    task_ids = error.task_ids  # type: ignore[attr-defined]
    assert error.may_have_arrived and task_ids == list(control_plane.queued) and None not in task_ids
    assert error.task_id == task_ids[0]
    assert "3 of the 3 calls may have been accepted" in str(error)
    assert "delay_many(calls, task_ids=error.task_ids)" in str(error)

    # When the caller sends the same calls again under those ids, the control plane answering now
    control_plane.mode = "answer"
    assert await control_plane.delay_many(calls, task_ids=task_ids) == task_ids

    # Then each call was queued once
    assert len(control_plane.queued) == 3


async def test_a_delay_many_names_unknown_outcomes_over_a_refusal_and_the_refused_call_is_none(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # Given batches of 2 calls: the first answered (one call refused), the second never answered
    monkeypatch.setattr(_async, "_MAX_BATCH", 2)
    control_plane = _FakeControlPlane()
    control_plane.unknown_names = {"nope"}
    answered = control_plane._request

    async def second_stalls(build: Any, **kwargs: Any) -> Envelope:
        if control_plane.queued:  # the first batch went through
            control_plane.mode = "stall"
        return await answered(build, **kwargs)

    control_plane._request = second_stalls  # type: ignore[method-assign]
    with pytest.raises(ControlPlaneUnavailable) as raised:
        await control_plane.delay_many([("add", (1,)), ("nope", ()), ("add", (2,)), ("add", (3,))])

    # Then what is raised is the unknown outcome (the one to act on), and the refused call has no id
    first, refused, *stalled = raised.value.task_ids  # type: ignore[attr-defined]
    assert refused is None and [first, *stalled] == list(control_plane.queued)
    assert raised.value.may_have_arrived and "2 of the 4 calls may have been accepted" in str(raised.value)


async def test_a_delay_many_fully_answered_with_a_refusal_still_raises_that_refusal() -> None:
    control_plane = _FakeControlPlane()
    control_plane.unknown_names = {"nope"}
    with pytest.raises(UnknownTask) as raised:
        await control_plane.delay_many([("add", (1,)), ("nope", ())])
    assert raised.value.task_ids == [next(iter(control_plane.queued)), None]  # type: ignore[attr-defined]


async def test_delays_batched_together_after_a_restart_without_a_journal_say_they_may_have_arrived() -> None:
    # Given a control plane restarted without a journal: it cannot vouch for resent ids it does not know
    control_plane = _FakeControlPlane()
    control_plane.mode = "restarted"

    # When two delays travel in one batch, a lone one alone, and a delay_many
    together = await asyncio.gather(
        control_plane.delay("count", "x", task_id="my-id"),
        control_plane.delay("count", "y", task_id="my-id-b"),
        return_exceptions=True,
    )
    alone = await asyncio.gather(control_plane.delay("count", "z", task_id="my-id-c"), return_exceptions=True)
    with pytest.raises(ControlPlaneUnavailable) as many:
        await control_plane.delay_many([("count", ("m",)), ("count", ("n",))], task_ids=["m-1", "m-2"])

    # Then every one says it may have arrived and names its task, as its message does
    assert control_plane.requests == [("batch", 2), ("submit", 1), ("batch", 2)]
    for error, task_id in zip([*together, *alone], ["my-id", "my-id-b", "my-id-c"], strict=True):
        assert isinstance(error, ControlPlaneUnavailable), error
        assert (error.may_have_arrived, error.task_id) == (True, task_id)
        assert f"task {task_id} may have been accepted" in str(error)
    assert (many.value.may_have_arrived, many.value.task_id) == (True, "m-1")
    assert many.value.task_ids == ["m-1", "m-2"]  # type: ignore[attr-defined]


async def test_a_delay_many_whose_client_closed_under_it_keeps_every_call_id_for_a_safe_resend() -> None:
    # ClientClosed cannot tell whether the request reached the control plane: None (refused) there
    # made the resend recipe queue every call a second time under fresh ids
    control_plane = _FakeControlPlane()
    calls = [("count", (f"c{i}",)) for i in range(3)]
    original = control_plane._request

    async def closed_after_sending(build: Any, **kwargs: Any) -> Envelope:
        await original(build, **kwargs)  # the control plane queued them
        raise ClientClosed("the client was closed")

    control_plane._request = closed_after_sending  # type: ignore[method-assign]
    with pytest.raises(ClientClosed) as raised:
        await control_plane.delay_many(calls)
    ids = raised.value.task_ids  # type: ignore[attr-defined]
    assert ids == list(control_plane.queued)
    control_plane._request = original  # type: ignore[method-assign]
    assert await control_plane.delay_many(calls, task_ids=ids) == ids
    assert len(control_plane.queued) == 3  # each once


async def test_delay_many_task_ids_give_each_call_its_id_and_none_a_fresh_one() -> None:
    control_plane = _FakeControlPlane()
    ids = await control_plane.delay_many([("add", (1,)), ("add", (2,)), ("add", (3,))], task_ids=["a", None, "c"])
    assert ids[0] == "a" and ids[2] == "c" and ids[1] not in ("a", "c", None)
    assert list(control_plane.queued) == ids


@pytest.mark.parametrize(
    ("calls", "task_ids", "said"),
    [
        (
            [("add", (1,)), ("add",)],
            None,
            r"calls\[1\] must be \(name, args\) or \(name, args, kwargs\).*got \('add',\)",
        ),
        ([("add", (1,)), ("add", 5)], None, r"calls\[1\] must be .*got \('add', 5\)"),
        ([("add", (1,)), ("add", "xy")], None, r"calls\[1\] must be .*a tuple or list of arguments"),
        ([("add", (1,)), ("add", (1,), [2])], None, r"calls\[1\] must be .*a dict of keyword arguments"),
        (["add"], None, r"calls\[0\] must be"),
        ([("add", (1,)), ("add", (2,))], ["a"], r"task_ids must list one id \(or None\) per call: 1 ids for 2 calls"),
        ([("add", (1,))], "a", r"task_ids must list one id .*: a string for 1 calls"),
        ([("add", (1,)), ("add", (2,))], [None, "a/b"], r"task_ids\[1\]: task_id must be printable"),
        # the later call would be answered with the first one's task, and never run
        ([("add", (1,)), ("add", (2,)), ("add", (3,))], ["s", None, "s"], r"task_ids\[2\] repeats task_ids\[0\]"),
    ],
)
async def test_a_malformed_delay_many_is_refused_naming_the_call_before_anything_is_sent(
    calls: Any, task_ids: Any, said: str
) -> None:
    control_plane = _FakeControlPlane()
    with pytest.raises(InvalidOptions, match=said):
        await control_plane.delay_many(calls, task_ids=task_ids)
    assert not control_plane.queued


@pytest.mark.parametrize(
    ("bad_args", "said"),
    [((object(),), "cannot encode object"), ((b"x" * (9 << 20),), "exceeds the limit")],
    ids=["unencodable", "oversize"],
)
async def test_a_payload_error_in_delay_many_names_the_call_and_its_task(bad_args: tuple[Any, ...], said: str) -> None:
    control_plane = _FakeControlPlane()
    calls = [("add", (1, 1)), ("add", (2, 2)), ("echo", bad_args)]
    with pytest.raises(PayloadError, match=rf"^calls\[2\] \('echo'\): .*{said}"):
        await control_plane.delay_many(calls)
    assert not control_plane.queued


async def test_a_payload_error_in_a_workflow_names_the_step() -> None:
    control_plane = _FakeControlPlane()
    workflow = chain(signature("add", (1, 2)), signature("echo", (object(),)))
    with pytest.raises(PayloadError, match=r"^workflow refused: step 2 \('echo'\): .*cannot encode object"):
        await control_plane.delay_workflow(workflow)


@pytest.mark.parametrize("option", ["unique_key", "task_id"])
async def test_an_overlong_key_is_refused_quoting_only_its_start_and_length(option: str) -> None:
    control_plane = _FakeControlPlane()
    with pytest.raises(InvalidOptions) as refused:
        await control_plane.delay("add", 1, 2, **{option: "k" * 10_000})
    message = str(refused.value)
    assert len(message) < 300 and "(10000 characters)" in message and message.startswith(option)


def test_an_outcome_unknown_error_reply_says_it_may_have_arrived_and_names_its_task() -> None:
    error = _async._error_from_wire(
        error_pb2.Error(code=error_pb2.ERROR_CODE_OUTCOME_UNKNOWN, message="m"), "count", "t-1"
    )
    assert isinstance(error, ControlPlaneUnavailable)
    assert (error.may_have_arrived, error.task_id) == (True, "t-1")
