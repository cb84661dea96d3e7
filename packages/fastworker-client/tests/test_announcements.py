"""Discovery frames a client or worker cannot use say why, once, instead of "nothing announced a control plane"."""

from __future__ import annotations

import logging

import pytest

from fastworker.client.announcements import AnnouncementReader, why_unheard
from fastworker.protocol.framing import encode_frame, new_envelope


def announcement_frame(protocol_version: int) -> bytes:
    envelope = new_envelope()
    envelope.protocol_version = protocol_version
    envelope.announcement.instance_id = "cp-1"
    return encode_frame(envelope)


def test_an_announcement_of_another_protocol_version_is_ignored_and_named_once(
    caplog: pytest.LogCaptureFixture,
) -> None:
    reader = AnnouncementReader(None)
    with caplog.at_level(logging.WARNING, logger="fastworker.client.announcements"):
        for _ in range(3):
            assert reader.announcement(announcement_frame(2)) is None
    assert "protocol version 2" in reader.incompatible
    assert [r.getMessage() for r in caplog.records] == [f"ignored a discovery announcement: {reader.incompatible}"]
    assert reader.problem == ""  # not an authentication problem

    said = why_unheard("tcp://h:5550", reached=True, tls=False, incompatible=reader.incompatible)
    assert said.startswith("connected to tcp://h:5550, but what announces itself there speaks another protocol:")
    assert "protocol version 2" in said

    # Garbage stays quiet (any service may send it); a good announcement is read as before
    assert reader.announcement(b"\x00garbage") is None
    assert reader.announcement(announcement_frame(1)) is not None


def test_a_shutdown_notice_heard_instead_of_an_announcement_is_the_reason_given() -> None:
    # Given a reader that hears a draining control plane's notice (a client connecting during a drain)
    reader = AnnouncementReader(None)
    envelope = new_envelope()
    envelope.shutdown_notice.instance_id = "cp-1"
    envelope.shutdown_notice.reason = "SIGTERM"
    assert reader.announcement(encode_frame(envelope)) is None
    assert reader.shutting_down == "SIGTERM"

    # Then the reason for hearing no announcement is that one, not a wrong port or version
    said = why_unheard("tcp://h:5550", reached=True, tls=False, shutting_down=reader.shutting_down)
    assert said == (
        "connected to tcp://h:5550, but the control plane there is shutting down (SIGTERM) and takes no new"
        " work; the one that replaces it announces itself there"
    )

    # And an announcement (the next control plane) clears it
    assert reader.announcement(announcement_frame(1)) is not None
    assert reader.shutting_down == ""
