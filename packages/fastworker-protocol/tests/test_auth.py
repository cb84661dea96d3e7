"""Sealed frames: round trip, and every way a frame can fail the check."""

from __future__ import annotations

import pytest

from fastworker.protocol import auth as auth_module
from fastworker.protocol import decode_frame, encode_frame, new_envelope
from fastworker.protocol.auth import (
    REFUSED_BY_DETAIL,
    SEALED_PREFIX,
    FrameAuth,
    authentication_error_frame,
    is_sealed,
)
from fastworker.protocol.errors import AuthenticationError
from fastworker.protocol.v1 import error_pb2


class Clock:
    def __init__(self, now: float = 1_000_000.0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


def frame(task_id: str = "t-1") -> bytes:
    envelope = new_envelope(42)
    envelope.sent_at = 1.0  # the same bytes every call
    envelope.status.task_ids.append(task_id)
    return encode_frame(envelope)


def test_a_sealed_frame_opens_to_the_same_plain_frame() -> None:
    clock = Clock()
    sender, receiver = FrameAuth("s3cret", clock=clock), FrameAuth("s3cret", clock=clock)
    sealed = sender.seal(frame())
    assert is_sealed(sealed) and sealed.startswith(SEALED_PREFIX) and not is_sealed(frame())
    assert receiver.open(sealed) == frame()
    assert decode_frame(receiver.open(sender.seal(frame()))).status.task_ids == ["t-1"]


def test_the_secret_appears_nowhere_in_a_sealed_frame() -> None:
    sealed = FrameAuth("very-distinctive-secret").seal(frame())
    assert b"very-distinctive-secret" not in sealed


def test_sealing_the_same_frame_twice_gives_two_distinct_frames_both_accepted() -> None:
    sender, receiver = FrameAuth("k"), FrameAuth("k")
    first, second = sender.seal(frame()), sender.seal(frame())
    assert first != second
    assert receiver.open(first) == receiver.open(second) == frame()


@pytest.mark.parametrize(
    ("data", "reason"),
    [
        (frame(), "not authenticated"),
        (b"", "not authenticated"),
        (b"garbage", "not authenticated"),
        (SEALED_PREFIX + b"\x00" * 10, "truncated"),
    ],
)
def test_unsealed_and_truncated_frames_are_refused(data: bytes, reason: str) -> None:
    with pytest.raises(AuthenticationError, match=reason):
        FrameAuth("k").open(data)


def test_a_wrong_secret_or_any_altered_byte_fails_the_mac() -> None:
    sealed = FrameAuth("right").seal(frame())
    with pytest.raises(AuthenticationError, match="authentication failed"):
        FrameAuth("wrong").open(sealed)
    receiver = FrameAuth("right")
    for index in (3, 12, 30, 60, len(sealed) - 1):  # time, nonce, MAC, body
        altered = bytearray(sealed)
        altered[index] ^= 0x01
        with pytest.raises(AuthenticationError, match="authentication failed"):
            receiver.open(bytes(altered))


def test_frames_outside_the_time_window_are_refused_both_ways() -> None:
    clock = Clock()
    receiver = FrameAuth("k", clock=clock, window=30)
    old = FrameAuth("k", clock=Clock(clock.now - 31)).seal(frame())
    future = FrameAuth("k", clock=Clock(clock.now + 31)).seal(frame())
    for sealed, said in ((old, "31.0 s behind this clock"), (future, "31.0 s ahead of this clock")):
        with pytest.raises(AuthenticationError, match=f"{said} .window 30 s.: a replay or clock skew"):
            receiver.open(sealed)
    assert receiver.open(FrameAuth("k", clock=Clock(clock.now - 29)).seal(frame())) == frame()


def test_a_replayed_frame_is_refused_while_it_is_within_the_window() -> None:
    clock = Clock()
    sender, receiver = FrameAuth("k", clock=clock), FrameAuth("k", clock=clock, window=10)
    sealed = sender.seal(frame())
    receiver.open(sealed)
    with pytest.raises(AuthenticationError, match="replayed"):
        receiver.open(sealed)
    clock.now += 11  # later still, the time check refuses it (its nonce was forgotten)
    with pytest.raises(AuthenticationError, match="clock skew"):
        receiver.open(sealed)


def test_the_replay_memory_is_bounded_and_a_frame_it_had_to_forget_early_is_still_refused() -> None:
    clock = Clock()
    sender, receiver = FrameAuth("k", clock=clock), FrameAuth("k", clock=clock, replay_capacity=100)
    first = sender.seal(frame())
    receiver.open(first)
    for _ in range(1_000):
        clock.now += 0.001
        receiver.open(sender.seal(frame()))
    assert len(receiver._seen) <= 100
    with pytest.raises(AuthenticationError, match="replayed"):
        receiver.open(first)  # its nonce was forgotten within the window, its time is below the floor


def test_an_empty_secret_is_refused() -> None:
    with pytest.raises(ValueError, match="empty"):
        FrameAuth("")


def test_the_refusal_frame_is_a_plain_authentication_error() -> None:
    refusal = decode_frame(authentication_error_frame("no secret", correlation_id=3))
    assert refusal.error.code == error_pb2.ERROR_CODE_AUTHENTICATION
    assert refusal.error.message == "no secret" and refusal.correlation_id == 3
    assert dict(refusal.error.details) == {}


def test_a_refusal_names_the_instance_that_refused_so_a_sender_tells_a_restart_from_a_bad_seal() -> None:
    refusal = decode_frame(authentication_error_frame("wrong secret", refused_by="instance-a"))
    assert refusal.error.details[REFUSED_BY_DETAIL] == "instance-a"


def test_a_frame_addressed_to_an_identity_opens_only_there() -> None:
    clock = Clock()
    sender = FrameAuth("k", clock=clock)
    first_instance, restarted = FrameAuth("k", clock=clock, identity="a1"), FrameAuth("k", clock=clock, identity="b2")
    addressed = sender.seal(frame(), recipient="a1")
    assert first_instance.open(addressed) == frame()
    for receiver in (restarted, FrameAuth("k", clock=clock)):  # a restart forgets nonces; the address still holds
        with pytest.raises(AuthenticationError, match="authentication failed"):
            receiver.open(addressed)
    with pytest.raises(AuthenticationError, match="another control plane instance"):
        restarted.open(sender.seal(frame()))  # an unaddressed frame is refused where an identity is set
    assert restarted.open(sender.seal(frame(), recipient="b2")) == frame()


class Rotating:
    """A SecretSource whose secrets the test changes; counts how often it is asked."""

    def __init__(self, *secrets: str) -> None:
        self.current = secrets
        self.asked = 0

    def secrets(self) -> tuple[str, ...]:
        self.asked += 1
        return self.current


def test_a_rotation_in_three_steps_refuses_no_frame_between_peers_at_different_steps() -> None:
    # Each step reaches the peers one after the other; every pair of adjacent steps must interoperate.
    steps = [("old",), ("old", "new"), ("new", "old"), ("new",)]
    for before, after in zip(steps, steps[1:], strict=False):
        early, late = FrameAuth(Rotating(*after)), FrameAuth(Rotating(*before))
        assert late.open(early.seal(frame("a"))) == frame("a")
        assert early.open(late.seal(frame("b"))) == frame("b")
    # Skipping the middle steps is what refuses frames: a peer that seals with "new" before the
    # other accepts it.
    with pytest.raises(AuthenticationError, match="wrong shared secret"):
        FrameAuth("old").open(FrameAuth(Rotating("new", "old")).seal(frame()))


def test_frames_addressed_to_an_instance_open_under_a_fallback_secret_too() -> None:
    receiver = FrameAuth(Rotating("new", "old"), identity="instance-1")
    assert receiver.open(FrameAuth("old").seal(frame(), recipient="instance-1")) == frame()
    with pytest.raises(AuthenticationError, match="addressed to another"):
        receiver.open(FrameAuth("old").seal(frame(), recipient="instance-0"))


def test_a_source_is_asked_again_once_per_interval_and_its_change_applies_to_both_directions() -> None:
    source, reload_clock = Rotating("old"), Clock(0.0)
    auth = FrameAuth(source, reload_clock=reload_clock)
    asked = source.asked
    for _ in range(100):
        auth.seal(frame())
    assert source.asked == asked  # not per frame

    source.current = ("new",)
    assert FrameAuth("old").open(auth.seal(frame()))  # still sealing with the old one within the interval
    reload_clock.now += auth_module.RELOAD_INTERVAL
    sealed = auth.seal(frame())
    assert source.asked == asked + 1
    assert FrameAuth("new").open(sealed) == frame()
    with pytest.raises(AuthenticationError):
        auth.open(FrameAuth("old").seal(frame()))  # the old one is not accepted any more


def test_a_source_that_fails_or_gives_nothing_leaves_the_secrets_in_force() -> None:
    class Failing(Rotating):
        def secrets(self) -> tuple[str, ...]:
            self.asked += 1
            if self.asked > 1:
                raise OSError("the file went away")
            return self.current

    reload_clock = Clock(0.0)
    failing, emptied = Failing("old"), Rotating("old")
    auths = [FrameAuth(failing, reload_clock=reload_clock), FrameAuth(emptied, reload_clock=reload_clock)]
    emptied.current = ()
    reload_clock.now += auth_module.RELOAD_INTERVAL
    for auth in auths:
        assert FrameAuth("old").open(auth.seal(frame())) == frame()
    assert failing.asked == 2 and emptied.asked == 2  # both were asked again
