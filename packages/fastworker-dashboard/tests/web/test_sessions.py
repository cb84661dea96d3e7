"""Login sessions: random per login, ended by logout, by their age, or by a new password."""

from __future__ import annotations

from fastworker.dashboard.web.sessions import LoginSessions


def test_a_login_is_valid_until_it_is_closed_expires_or_the_password_changes() -> None:
    now = [0.0]
    sessions = LoginSessions(ttl=100.0, clock=lambda: now[0])
    closed, aged, rekeyed = (sessions.open("key-1") for _ in range(3))
    assert len({closed, aged, rekeyed}) == 3
    assert all(sessions.valid(token, "key-1") for token in (closed, aged, rekeyed))

    sessions.close(closed)
    assert not sessions.valid(closed, "key-1")
    assert not sessions.valid(rekeyed, "key-2")  # a new password ends the logins made with the old one
    assert not sessions.valid(None, "key-1") and not sessions.valid("forged", "key-1")
    now[0] = 100.0
    assert not sessions.valid(aged, "key-1")
    assert len(sessions) == 0


def test_the_oldest_login_is_forgotten_when_the_limit_is_reached() -> None:
    sessions = LoginSessions(limit=3)
    tokens = [sessions.open("k") for _ in range(4)]
    assert [sessions.valid(token, "k") for token in tokens] == [False, True, True, True]
    assert len(sessions) == 3
