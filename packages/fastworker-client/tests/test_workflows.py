"""Workflows on the client side: signatures, the shapes ``plan_workflow`` flattens them into, and handles.

A plan is read back as rows ``(name, args, dependencies as step indexes, input, output)`` so that
each shape's graph is visible at a glance. Nothing here talks to a control plane.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Sequence
from typing import Any

import pytest

from fastworker.client import (
    CallContextError,
    Client,
    ClientError,
    Priority,
    Signature,
    TaskOptions,
    TaskRegistry,
    WorkflowHandle,
    WorkflowInfo,
    chain,
    chord,
    group,
    signature,
    use_client,
)
from fastworker.client.task import SyncTaskFunction
from fastworker.client.workflows import Workflow, plan_workflow
from fastworker.protocol.payload import decode_arguments
from fastworker.protocol.v1 import task_pb2
from fastworker.protocol.v1.envelope_pb2 import Envelope

NONE, ONE, LIST = "none", "result", "results"
INPUTS = {
    task_pb2.DEPENDENCY_INPUT_NONE: NONE,
    task_pb2.DEPENDENCY_INPUT_RESULT: ONE,
    task_pb2.DEPENDENCY_INPUT_RESULTS: LIST,
}
OUTPUTS = {
    task_pb2.WORKFLOW_OUTPUT_NONE: "",
    task_pb2.WORKFLOW_OUTPUT_VALUE: "value",
    task_pb2.WORKFLOW_OUTPUT_ITEM: "item",
}

Row = tuple[str, tuple[Any, ...], list[int], str, str]


def s(name: str, *args: Any) -> Signature[Any]:
    return signature(name, args)


def rows(workflow: Workflow) -> tuple[list[Row], list[int], bool]:
    """The plan as rows, the output steps' indexes, and whether the result is a list."""
    steps, outputs, many = plan_workflow(workflow)
    index = {step.task_id: i for i, step in enumerate(steps)}
    assert len(index) == len(steps), "step ids are unique"
    table = [
        (
            step.signature.name,
            step.signature.args,
            [index[d] for d in step.depends_on],
            INPUTS[step.input],
            OUTPUTS[step.output],
        )
        for step in steps
    ]
    for i, row in enumerate(table):
        assert all(d < i for d in row[2]), "a step depends only on steps before it"
    return table, [index[o] for o in outputs], many


# ------------------------------------------------------------------------------------------ shapes


def test_one_signature_is_a_workflow_of_one_step_whose_value_is_the_result() -> None:
    assert rows(s("a", 1)) == ([("a", (1,), [], NONE, "value")], [0], False)


def test_a_chain_of_chains_is_one_line_each_step_given_the_previous_result() -> None:
    table, out, many = rows(chain(chain(s("a", 1), s("b")), chain(s("c"), chain(s("d")))))
    assert table == [
        ("a", (1,), [], NONE, ""),
        ("b", (), [0], ONE, ""),
        ("c", (), [1], ONE, ""),
        ("d", (), [2], ONE, "value"),
    ]
    assert (out, many) == ([3], False)


def test_a_group_in_a_chain_gets_the_previous_result_each_and_passes_the_list_on() -> None:
    table, out, many = rows(chain(s("a"), group(s("b"), s("c")), s("d")))
    assert table == [
        ("a", (), [], NONE, ""),
        ("b", (), [0], ONE, ""),
        ("c", (), [0], ONE, ""),
        ("d", (), [1, 2], LIST, "value"),
    ]
    assert (out, many) == ([3], False)


def test_a_chain_ending_in_a_group_has_the_list_as_its_result() -> None:
    table, out, many = rows(chain(s("a"), group(s("b"), s("c"))))
    assert [row[4] for row in table] == ["", "item", "item"]
    assert (out, many) == ([1, 2], True)


def test_a_group_after_a_group_gives_each_member_the_whole_list() -> None:
    table, _, _ = rows(chain(group(s("a"), s("b")), group(s("c"), s("d"))))
    assert table[2:] == [("c", (), [0, 1], LIST, "item"), ("d", (), [0, 1], LIST, "item")]


def test_a_chord_runs_its_header_then_its_body_with_the_list() -> None:
    table, out, many = rows(chord([s("h", i) for i in range(3)], s("body", "x")))
    assert table == [
        ("h", (0,), [], NONE, ""),
        ("h", (1,), [], NONE, ""),
        ("h", (2,), [], NONE, ""),
        ("body", ("x",), [0, 1, 2], LIST, "value"),
    ]
    assert (out, many) == ([3], False)
    assert rows(chord(group(s("h")), s("body")))[0][1][2] == [0]  # a Group header is taken as is


def test_a_chord_in_a_chain_gives_its_header_the_previous_result_and_its_body_result_goes_on() -> None:
    table, out, _ = rows(chain(s("a"), chord([s("h1"), s("h2")], s("body")), s("z")))
    assert [(row[0], row[2], row[3]) for row in table] == [
        ("a", [], NONE),
        ("h1", [0], ONE),
        ("h2", [0], ONE),
        ("body", [1, 2], LIST),
        ("z", [3], ONE),
    ]
    assert out == [4]


def test_an_immutable_signature_waits_for_the_previous_step_but_takes_nothing_from_it() -> None:
    immutable = signature("b", (1, 2), immutable=True)
    table, _, _ = rows(chain(s("a"), immutable, group(s("c"), s("d")), signature("e", (9,), immutable=True)))
    assert table == [
        ("a", (), [], NONE, ""),
        ("b", (1, 2), [0], NONE, ""),
        ("c", (), [1], ONE, ""),
        ("d", (), [1], ONE, ""),
        ("e", (9,), [2, 3], NONE, "value"),
    ]


def test_an_empty_group_first_in_a_chain_gives_the_next_step_an_empty_list_now() -> None:
    table, out, _ = rows(chain(group(), s("total", "x")))
    assert table == [("total", ([], "x"), [], NONE, "value")]
    assert out == [0]
    steps, _, _ = plan_workflow(chain(group(), s("total")))
    assert steps[0].signature.immutable  # the list is in its arguments already: nothing more is prepended


def test_an_empty_group_in_the_middle_of_a_chain_still_runs_the_next_step_after_the_previous_ones() -> None:
    table, _, _ = rows(chain(s("a"), group(), s("total")))
    assert table == [("a", (), [], NONE, ""), ("total", ([],), [0], NONE, "value")]


def test_a_chord_with_an_empty_header_calls_its_body_with_an_empty_list() -> None:
    assert rows(chord([], s("body")))[0] == [("body", ([],), [], NONE, "value")]


def test_an_empty_group_inside_a_group_adds_nothing_to_its_list_even_after_a_previous_step() -> None:
    table, out, many = rows(chain(s("a"), group(group(), s("c"))))
    assert table == [("a", (), [], NONE, ""), ("c", (), [0], ONE, "item")]
    assert (out, many) == ([1], True)  # [c's], not [a's, c's]
    table, out, many = rows(chain(s("a"), group(group(), group())))
    assert (out, many) == ([], True)  # an empty list, as for one empty group


def test_a_group_member_chain_that_ends_in_an_empty_group_is_refused() -> None:
    with pytest.raises(ValueError, match="ends in an empty group"):
        plan_workflow(group(chain(s("a"), group()), s("b")))
    with pytest.raises(ValueError, match="ends in an empty group"):
        plan_workflow(chord([chain(s("a"), group()), s("b")], s("body")))


def test_nested_groups_run_all_their_members_in_parallel_and_their_result_is_one_flat_list() -> None:
    table, out, many = rows(group(group(s("a"), s("b")), group(s("c")), s("d")))
    assert table == [
        ("a", (), [], NONE, "item"),
        ("b", (), [], NONE, "item"),
        ("c", (), [], NONE, "item"),
        ("d", (), [], NONE, "item"),
    ]
    assert (out, many) == ([0, 1, 2, 3], True)
    # in a chain, every member of the nested groups gets the previous result, and the next step all of theirs
    table, _, _ = rows(chain(s("x"), group(group(s("a"), s("b")), s("c")), s("y")))
    assert [(row[0], row[2], row[3]) for row in table] == [
        ("x", [], NONE),
        ("a", [0], ONE),
        ("b", [0], ONE),
        ("c", [0], ONE),
        ("y", [1, 2, 3], LIST),
    ]


def test_a_group_of_chains_runs_each_chain_in_order_and_collects_their_last_steps() -> None:
    table, out, many = rows(group(chain(s("a1"), s("a2")), chain(s("b1"), s("b2"), s("b3"))))
    assert [(row[0], row[2]) for row in table] == [("a1", []), ("a2", [0]), ("b1", []), ("b2", [2]), ("b3", [3])]
    assert (out, many) == ([1, 4], True)


def test_a_group_of_100_keeps_its_members_in_order() -> None:
    table, out, many = rows(group([s("item", i) for i in range(100)]))
    assert [row[1] for row in table] == [(i,) for i in range(100)]
    assert (out, many) == (list(range(100)), True)


def test_every_plan_has_fresh_step_ids_unless_a_signature_names_its_own() -> None:
    workflow = chain(s("a"), s("b").set(task_id="mine"))
    first, _, _ = plan_workflow(workflow)
    second, _, _ = plan_workflow(workflow)
    assert first[0].task_id != second[0].task_id
    assert first[1].task_id == second[1].task_id == "mine"


def test_a_workflow_without_any_task_is_refused() -> None:
    with pytest.raises(ValueError, match="at least one task"):
        plan_workflow(group())
    with pytest.raises(ValueError, match="at least one task"):
        plan_workflow(group(group(), group()))
    with pytest.raises(ValueError, match="at least one step"):
        chain()


# -------------------------------------------------------------------------------------- signatures


def test_signature_by_name_and_from_a_task_function() -> None:
    registry = TaskRegistry()
    add = registry.register(SyncTaskFunction(lambda x, y: x + y, "add", TaskOptions()))
    assert add.s(1, 2) == Signature("add", (1, 2), {})
    assert add.s(1, y=2).kwargs == {"y": 2}
    assert add.si(1, 2).immutable and not add.s(1, 2).immutable
    assert signature("add", [1, 2], {"z": 3}) == Signature("add", (1, 2), {"z": 3})
    assert signature("add", args=(1,), kwargs=None, immutable=True).immutable


def test_set_replaces_submission_options_and_keeps_the_call() -> None:
    sig = signature("add", (1,), immutable=True).set(priority="high", countdown=5)
    assert sig.options.priority is Priority.HIGH
    assert sig.options.countdown == 5 and sig.immutable and sig.args == (1,)
    assert sig.set(eta=1_900_000_000.0).options.countdown is None  # countdown and eta are one choice


@pytest.mark.parametrize("name", ["", None, 3])
def test_a_signature_names_its_task_with_a_non_empty_string(name: Any) -> None:
    with pytest.raises(ValueError, match="non-empty string"):
        Signature(name)


@pytest.mark.parametrize("option", [{"unique_key": "k"}, {"depends_on": ["t1"]}])
def test_a_step_takes_no_unique_key_or_depends_on(option: dict[str, Any]) -> None:
    with pytest.raises(ValueError, match="workflow orders its steps"):
        signature("add").set(**option)


def test_bad_option_values_are_refused_when_set() -> None:
    with pytest.raises(ValueError, match="priority"):
        signature("add").set(priority="urgent")


@pytest.mark.parametrize(
    "make",
    [
        lambda: chain(s("a"), "b"),  # type: ignore[arg-type]
        lambda: group(s("a"), [s("b"), 3]),  # type: ignore[list-item]
        lambda: chord([s("a")], lambda x: x),  # type: ignore[arg-type]
    ],
)
def test_workflows_are_made_of_signatures_and_workflows_only(make: Callable[[], Any]) -> None:
    with pytest.raises(TypeError, match="made of signatures"):
        make()


def test_a_group_takes_members_or_iterables_of_them() -> None:
    assert group(s("a"), [s("b"), s("c")], (x for x in [s("d")])).members == (s("a"), s("b"), s("c"), s("d"))


# ----------------------------------------------------------------------------------------- handles


class FakeBackend:
    """Answers result() from a dict, after an optional pause per call; records what it was asked."""

    def __init__(self, values: dict[str, Any], pause: float = 0.0) -> None:
        self.values = values
        self.pause = pause
        self.timeouts: list[float | None] = []
        self.cancelled: list[str] = []

    async def delay_workflow(self, workflow: Workflow) -> WorkflowHandle:
        steps, outputs, many = plan_workflow(workflow)
        return WorkflowHandle("wf", tuple(step.task_id for step in steps), outputs, many, self)

    async def workflow(self, workflow_id: str) -> WorkflowInfo:
        raise AssertionError("not used")

    async def cancel_workflow(self, workflow_id: str) -> int:
        self.cancelled.append(workflow_id)
        return 2

    async def results(self, task_ids: Sequence[str], *, timeout: float | None = None) -> list[Any]:
        self.timeouts.append(timeout)
        await asyncio.sleep(self.pause)
        return [self.values[task_id] for task_id in task_ids]


async def test_a_handle_returns_its_one_value_or_its_list_in_order() -> None:
    backend = FakeBackend({"a": 1, "b": 2})
    assert await WorkflowHandle("w", ("a",), ("a",), False, backend).result() == 1
    assert await WorkflowHandle("w", ("a", "b"), ("b", "a"), True, backend).result() == [2, 1]
    assert await WorkflowHandle("w", ("a", "b"), ("b", "a"), True, backend).cancel() == 2
    assert backend.cancelled == ["w"]
    assert str(WorkflowHandle("w", (), (), False, backend)) == "w"


async def test_a_handle_waits_for_all_its_result_steps_at_once_within_one_timeout() -> None:
    backend = FakeBackend({"a": 1, "b": 2, "c": 3}, pause=0.05)
    assert await WorkflowHandle("w", ("a", "b", "c"), ("a", "b", "c"), True, backend).result(timeout=10.0) == [1, 2, 3]
    assert backend.timeouts == [10.0]  # one wait for every step, bounded by the caller's timeout


async def test_delay_on_a_workflow_submits_through_the_current_client() -> None:
    backend = FakeBackend({})
    with use_client(backend):  # type: ignore[arg-type]
        handle = await chain(s("a"), s("b")).delay()
    assert handle.id == "wf" and len(handle.task_ids) == 2 and not handle.output_is_list


async def test_delay_through_a_client_that_cannot_run_workflows_says_so() -> None:
    class TasksOnly:
        async def delay(self, name: str, *args: Any) -> str:
            return "t"

    with use_client(TasksOnly()), pytest.raises(ClientError, match="cannot run workflows"):  # type: ignore[arg-type]
        await s("a").delay()


async def test_a_client_sends_every_step_with_its_dependencies_in_one_request(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    client = Client("tcp://127.0.0.1:1")
    sent: list[Envelope] = []

    async def request(build: Callable[[Envelope], None], **_: Any) -> Envelope:
        envelope = Envelope()
        build(envelope)
        sent.append(envelope)
        reply = Envelope()
        body = envelope.submit_workflow
        reply.submit_workflow_reply.workflow_id = body.workflow_id
        reply.submit_workflow_reply.task_ids.extend(step.task_id for step in body.steps)
        return reply

    monkeypatch.setattr(client, "_request", request)
    try:
        handle = await client.delay_workflow(
            chain(s("a", 1), group(s("b").set(priority="high"), signature("c", (2,), immutable=True)), s("d"))
        )
    finally:
        await client.aclose()

    (envelope,) = sent
    steps = list(envelope.submit_workflow.steps)
    assert handle.id == envelope.submit_workflow.workflow_id and handle.task_ids == tuple(t.task_id for t in steps)
    assert [t.name for t in steps] == ["a", "b", "c", "d"]
    assert [list(t.dependencies.task_ids) for t in steps] == [
        [],
        [steps[0].task_id],
        [steps[0].task_id],
        [steps[1].task_id, steps[2].task_id],
    ]
    assert [INPUTS[t.dependencies.input] for t in steps] == [NONE, ONE, NONE, LIST]
    assert not steps[0].HasField("dependencies")  # a step without any sends none
    assert [OUTPUTS[t.output] for t in steps] == ["", "", "", "value"]
    assert steps[1].priority == task_pb2.PRIORITY_HIGH
    assert decode_arguments(steps[2].arguments) == ((2,), {})
    assert handle.output_ids == (steps[3].task_id,) and not handle.output_is_list


@pytest.mark.filterwarnings("error")  # a coroutine made and dropped would warn "never awaited"
def test_a_workflow_delayed_from_sync_code_is_refused_at_once_naming_the_sync_way() -> None:
    for workflow in (s("a"), chain(s("a"), s("b")), group([s("a")]), chord(group([s("a")]), s("b"))):
        with pytest.raises(CallContextError, match=r"nothing was submitted.*delay_sync\(\)"):
            workflow.delay()


def test_the_pipe_operator_builds_workflows_as_celery_does() -> None:
    a, b, c = signature("add", (1, 2)), signature("add", (10,)), signature("tsum")
    assert a | b == chain(a, b)
    assert a | b | c == chain(a, b, c)  # one flat chain, not a chain in a chain
    assert chain(a, b) | chain(c, a) == chain(a, b, c, a)
    assert group([a, b]) | c == chord(group([a, b]), c)  # a group then a step: a chord
    assert chord(group([a]), c) | b == chain(chord(group([a]), c), b)
    with pytest.raises(TypeError, match="followed by a signature"):
        a | 3  # type: ignore[operator]


def test_a_workflow_nested_too_deeply_to_walk_is_refused_with_a_value_error() -> None:
    nested: Workflow = s("a")
    for _ in range(5_000):
        nested = chain(nested, s("b"))
    with pytest.raises(ValueError, match="nested too deeply"):
        plan_workflow(nested)
