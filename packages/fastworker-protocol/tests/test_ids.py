"""Ids as requests give them: what is accepted, and how an error message shows one."""

from __future__ import annotations

import os
import threading
from uuid import RFC_4122, UUID

import pytest

from fastworker.protocol.ids import (
    IDS_PER_DRAW,
    LOCAL_WORKER_ID,
    MAX_SHOWN,
    new_task_id,
    shown,
    shown_id,
    task_id_problem,
    worker_id_problem,
)


def test_plain_ids_are_shown_as_they_are_and_odd_ones_quoted_and_cut() -> None:
    uuid = "4f1e5a52-5c1e-4d6a-9f55-7b0c2f6f0a11"
    assert shown_id(uuid) == uuid
    assert shown_id("") == "''"
    assert shown_id("\x00") == "'\\x00'"
    assert shown_id("two words") == "'two words'"
    long = "x" * 300
    assert shown_id(long) == shown(long) == f"{'x' * MAX_SHOWN!r}... (300 characters)"
    assert shown("name") == "'name'"


def test_an_id_must_be_printable_and_at_most_200_characters() -> None:
    assert task_id_problem("ok-1") is None
    assert task_id_problem("") is not None and task_id_problem("x" * 201) is not None
    assert task_id_problem("a/b") is not None and task_id_problem("..") is not None


def test_no_subworker_may_take_the_id_of_the_control_planes_own_runs() -> None:
    # Its tasks would be listed as the control plane's (``fastworker list --worker controlplane``).
    problem = worker_id_problem(LOCAL_WORKER_ID)
    assert problem is not None and "'controlplane' is reserved" in problem
    assert worker_id_problem("controlplane-2") is None
    assert task_id_problem(LOCAL_WORKER_ID) is None  # only worker ids are reserved


def test_new_task_ids_are_uuid4_strings_and_never_repeat_across_draws() -> None:
    ids = [new_task_id() for _ in range(3 * IDS_PER_DRAW + 7)]
    assert len(set(ids)) == len(ids)
    for task_id in ids:
        parsed = UUID(task_id)
        assert str(parsed) == task_id and parsed.version == 4 and parsed.variant == RFC_4122
        assert task_id_problem(task_id) is None


def test_threads_drawing_ids_at_once_never_get_the_same_one() -> None:
    drawn: list[list[str]] = [[] for _ in range(8)]

    def draw(into: list[str]) -> None:
        for _ in range(2 * IDS_PER_DRAW):
            into.append(new_task_id())

    threads = [threading.Thread(target=draw, args=(into,)) for into in drawn]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=30)
    every = [task_id for into in drawn for task_id in into]
    assert len(every) == 16 * IDS_PER_DRAW and len(set(every)) == len(every)


@pytest.mark.skipif(not hasattr(os, "fork"), reason="needs fork")
def test_a_forked_child_never_hands_out_the_ids_its_parent_drew() -> None:
    # Given ids drawn and not handed out yet
    new_task_id()
    read_end, write_end = os.pipe()
    pid = os.fork()
    if pid == 0:  # the child: its next ids, to the parent
        os.close(read_end)
        os.write(write_end, " ".join(new_task_id() for _ in range(20)).encode())
        os._exit(0)
    os.close(write_end)
    with os.fdopen(read_end) as pipe:
        child = pipe.read().split()
    os.waitpid(pid, 0)
    # Then the child's ids are none of the parent's next ones
    parent = [new_task_id() for _ in range(20)]
    assert len(child) == 20 and not set(child) & set(parent)
