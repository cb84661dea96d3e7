"""Waits answer from the records they collected as tasks finished, without looking every asked-for id up again."""

from __future__ import annotations

import asyncio

import pytest

from fastworker.controlplane.records import PENDING, RUNNING, SUCCESS, TaskRecord
from fastworker.controlplane.waits import WaitCallback, Waits
from fastworker.protocol.v1 import task_pb2

Answer = tuple[list[str], list[str], list[str]]


class Tasks:
    """Records by id, as the coordinator's active table (the result cache here is empty)."""

    def __init__(self, *ids: str) -> None:
        self.active = {task_id: TaskRecord(task_pb2.TaskSpec(task_id=task_id, name="t"), 0, 0.0) for task_id in ids}

    def finish(self, waits: Waits, task_id: str) -> TaskRecord:
        record = self.active.pop(task_id)  # a final task leaves the active table, as in the coordinator
        record.state = SUCCESS
        waits.task_finished(record)
        return record


def waits_on(tasks: Tasks) -> tuple[Waits, list[Answer]]:
    answers: list[Answer] = []
    waits = Waits(asyncio.get_running_loop(), tasks.active, lambda task_id, now: None, lambda: 0.0)
    return waits, answers


def recorder(answers: list[Answer]) -> WaitCallback:
    def answer(finished: list[TaskRecord], pending: list[str], missing: list[str]) -> None:
        answers.append(([r.task_id for r in finished], pending, missing))

    return answer


async def test_a_wait_is_answered_with_what_finished_while_it_waited_even_after_the_cache_forgot_it() -> None:
    # Given a wait on three running tasks
    tasks = Tasks("a", "b", "c")
    waits, answers = waits_on(tasks)
    waits.wait(["a", "b", "c"], 5.0, recorder(answers))

    # When all three finish (their records are in neither the active table nor the cache afterwards)
    for task_id in ("a", "b", "c"):
        tasks.finish(waits, task_id)

    # Then it is answered at once with the three
    assert answers == [(["a", "b", "c"], [], [])]


async def test_a_task_reopened_before_the_answer_is_reported_pending_once() -> None:
    # Given a wait on two tasks, one of which finished while it waited
    tasks = Tasks("a", "b")
    waits, answers = waits_on(tasks)
    waits.wait(["a", "b"], 0.05, recorder(answers))
    first = tasks.finish(waits, "a")

    # When an operator's retry puts it back to PENDING before the wait answers (at its timeout)
    first.state = PENDING
    tasks.active["a"] = first
    tasks.active["b"].state = RUNNING
    async with asyncio.timeout(5):
        while not answers:
            await asyncio.sleep(0.01)

    # Then both are pending, each named once, and nothing is reported finished
    assert answers == [([], ["a", "b"], [])]


async def test_a_task_final_when_asked_and_retried_before_the_answer_is_pending() -> None:
    # Given a wait on a finished task and 15 running ones (one of 16 final is too few for an answer
    # at once)
    others = [f"busy-{n}" for n in range(15)]
    tasks = Tasks("done", *others)
    waits, answers = waits_on(tasks)
    done = tasks.active["done"]
    done.state = SUCCESS
    waits.wait(["done", *others], 0.05, recorder(answers))
    assert answers == []

    # When the finished one is retried before the answer
    done.state = PENDING
    async with asyncio.timeout(5):
        while not answers:
            await asyncio.sleep(0.01)

    # Then it is reported pending with the running ones, once
    assert answers == [([], ["done", *others], [])]


async def test_a_wait_for_all_is_answered_once_every_task_is_final_and_not_before() -> None:
    # Given 16 tasks, 8 final already, and a wait that needs them all beside one that does not
    ids = [f"t{n}" for n in range(16)]
    tasks = Tasks(*ids)
    for task_id in ids[:8]:
        tasks.active[task_id].state = SUCCESS
    waits, answers = waits_on(tasks)
    eager: list[Answer] = []
    waits.wait(ids, 5.0, recorder(answers), all_final=True)
    waits.wait(ids, 5.0, recorder(eager))

    # When all but one of the rest finish, with time to gather
    for task_id in ids[8:15]:
        tasks.finish(waits, task_id)
    await asyncio.sleep(0.2)  # (beyond the gather and patience windows)

    # Then the ordinary wait answered early with the 8 final when asked, the wait for all did not
    assert eager == [(ids[:8], ids[8:], [])]
    assert answers == []

    # And the last one's end answers it at once, with all 16
    tasks.finish(waits, ids[15])
    assert len(answers) == 1
    assert sorted(answers[0][0]) == sorted(ids) and answers[0][1:] == ([], [])


async def test_a_wait_for_all_ends_at_its_timeout_with_what_is_final_then() -> None:
    # Given a wait for all of two tasks, one of which finishes
    tasks = Tasks("a", "b")
    waits, answers = waits_on(tasks)
    waits.wait(["a", "b"], 0.05, recorder(answers), all_final=True)
    tasks.finish(waits, "a")

    # When its timeout passes
    async with asyncio.timeout(5):
        while not answers:
            await asyncio.sleep(0.01)

    # Then it is answered with the final one and the other pending (the client asks again)
    assert answers == [(["a"], ["b"], [])]


@pytest.mark.parametrize("all_final", [True, False])
async def test_a_wait_with_an_unknown_id_is_answered_at_once(all_final: bool) -> None:
    # Its caller fails on the unknown id: holding the answer until others finish only delayed that
    # (5 s, a poll's hold, when a wait_many shared its ids with another wait)
    tasks = Tasks("a", "b")
    waits, answers = waits_on(tasks)
    waits.wait(["a", "nope", "b"], 5.0, recorder(answers), all_final=all_final)
    assert answers == [([], ["a", "b"], ["nope"])]
