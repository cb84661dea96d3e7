"""Ids as requests give them: what is accepted, and how an error message shows one."""

from __future__ import annotations

from fastworker.protocol.ids import MAX_SHOWN, shown, shown_id, task_id_problem


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
