"""A workflow's steps as an indented list: under what they wait for, a chord's callback once, every step exactly once."""

from __future__ import annotations

from fastworker.client import Priority, TaskInfo, TaskState
from fastworker.client.workflowtree import MAX_INDENT, state_counts, workflow_tree


def step(task_id: str, *depends_on: str, state: TaskState = TaskState.PENDING) -> TaskInfo:
    return TaskInfo(task_id, "add", state, Priority.NORMAL, 0, None, 1.0, None, None, depends_on=depends_on)


def layout(steps: list[TaskInfo]) -> list[tuple[str, int, str]]:
    return [(row.step.id, row.depth, row.after_note) for row in workflow_tree(steps)]


def test_a_chain_steps_in_one_level_at_a_time() -> None:
    assert layout([step("a"), step("b", "a"), step("c", "b")]) == [("a", 0, ""), ("b", 1, ""), ("c", 2, "")]


def test_a_group_after_a_step_hangs_under_it_in_step_order() -> None:
    steps = [step("a"), step("m1", "a"), step("m2", "a"), step("m3", "a")]
    assert layout(steps) == [("a", 0, ""), ("m1", 1, ""), ("m2", 1, ""), ("m3", 1, "")]


def test_a_chord_callback_shows_once_after_its_last_dependency_and_says_how_many_it_waits_for() -> None:
    # chord(group(chain(a1, a2), b), cb), then d after cb
    steps = [step("a1"), step("a2", "a1"), step("b"), step("cb", "a2", "b"), step("d", "cb")]
    assert layout(steps) == [
        ("a1", 0, ""),
        ("a2", 1, ""),
        ("b", 0, ""),
        ("cb", 1, "after 2 steps"),
        ("d", 2, ""),
    ]


def test_unknown_later_and_repeated_dependencies_never_lose_or_repeat_a_step() -> None:
    steps = [step("a", "elsewhere"), step("b", "c"), step("c", "a", "a")]
    assert layout(steps) == [("a", 0, ""), ("c", 1, ""), ("b", 0, "")]
    assert workflow_tree([]) == []


def test_a_long_chain_is_drawn_no_deeper_than_the_cap() -> None:
    steps = [step("s0")] + [step(f"s{i}", f"s{i - 1}") for i in range(1, 40)]
    rows = workflow_tree(steps)
    assert [row.depth for row in rows] == list(range(40))
    assert max(row.indent for row in rows) == MAX_INDENT


def test_state_counts_follow_the_state_order_and_leave_out_zeros() -> None:
    steps = [
        step("a", state=TaskState.SUCCESS),
        step("b", state=TaskState.RUNNING),
        step("c", state=TaskState.SUCCESS),
        step("d", state=TaskState.PENDING),
    ]
    assert state_counts(steps) == [(TaskState.PENDING, 1), (TaskState.RUNNING, 1), (TaskState.SUCCESS, 2)]
