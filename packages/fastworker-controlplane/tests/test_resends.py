"""The answers kept for actions sent again: shared by every attempt of one request, bounded in time and bytes."""

from __future__ import annotations

from fastworker.controlplane import resends
from fastworker.controlplane.resends import ResendGuard
from fastworker.protocol.framing import new_envelope
from fastworker.protocol.v1.envelope_pb2 import Envelope


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def cancel_request(correlation_id: int, task_id: str = "t1") -> Envelope:
    envelope = new_envelope(correlation_id)
    envelope.cancel.task_id = task_id
    return envelope


def test_an_attempt_arriving_while_the_first_is_being_answered_gets_that_answer_when_it_comes() -> None:
    guard = ResendGuard(Clock())
    request = cancel_request(5)
    first_got: list[bytes] = []
    second_got: list[bytes] = []

    act = guard.admit(request, "cancel", first_got.append)
    assert act is not None
    assert guard.admit(request, "cancel", second_got.append) is None  # the same attempt, sent again: waits
    assert second_got == []

    act(b"answer")  # the first attempt's answer (a cancel waits for a running task to stop)

    assert first_got == second_got == [b"answer"]
    third: list[bytes] = []
    assert guard.admit(request, "cancel", third.append) is None and third == [b"answer"]
    assert guard.replayed == 2


def test_another_request_or_another_task_is_not_answered_from_a_kept_answer() -> None:
    guard = ResendGuard(Clock())
    act = guard.admit(cancel_request(5), "cancel", lambda frame: None)
    assert act is not None
    act(b"answer")
    assert guard.admit(cancel_request(6), "cancel", lambda frame: None) is not None  # another call
    assert guard.admit(cancel_request(5, "t2"), "cancel", lambda frame: None) is not None  # another body
    assert guard.admit(new_envelope(0), "cancel", lambda frame: None) is not None  # no correlation id: not told apart


def test_answers_are_dropped_after_their_time_and_beyond_their_bytes() -> None:
    clock = Clock()
    guard = ResendGuard(clock)
    old = cancel_request(1)
    act = guard.admit(old, "cancel", lambda frame: None)
    assert act is not None
    act(b"old")
    clock.now += resends.KEEP_SECONDS - 1
    assert guard.admit(old, "cancel", lambda frame: None) is None  # still kept
    clock.now += 2
    assert guard.admit(old, "cancel", lambda frame: None) is not None  # expired: acted on afresh

    # A flood of actions keeps at most the budget's worth of answers, the newest
    frame = b"x" * 100
    count = 2 * resends.BUDGET_BYTES // (len(frame) + resends.ENTRY_BYTES)
    for correlation_id in range(10, 10 + count):
        last = cancel_request(correlation_id)
        act = guard.admit(last, "cancel", lambda frame: None)
        assert act is not None
        act(frame)
    assert guard._bytes <= resends.BUDGET_BYTES
    assert len(guard._answers) <= resends.BUDGET_BYTES // (len(frame) + resends.ENTRY_BYTES) + 2
    newest: list[bytes] = []
    assert guard.admit(last, "cancel", newest.append) is None and newest == [frame]
