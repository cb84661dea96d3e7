"""The process-wide SyncClient made on first use: one at a time, made again once closed, never shared with a forked child."""

from __future__ import annotations

import os
import sys
import threading
from typing import Any

import pytest

from fastworker.client._lazysync import LazySyncClient


class FakeClient:
    made = 0

    def __init__(self, *, fail_close: bool = False) -> None:
        FakeClient.made += 1
        self.closed = False
        self.fail_close = fail_close

    def close(self) -> None:
        self.closed = True
        if self.fail_close:
            raise OSError("socket already gone")


@pytest.fixture(autouse=True)
def count_from_zero() -> None:
    FakeClient.made = 0


def test_one_client_is_made_on_first_use_and_shared_by_every_thread() -> None:
    holder = LazySyncClient("a test client")
    assert holder.current is None  # nothing made before a call
    got: list[Any] = []
    threads = [threading.Thread(target=lambda: got.append(holder.get(FakeClient))) for _ in range(16)]  # type: ignore[arg-type]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=10)

    assert FakeClient.made == 1 and len(got) == 16 and all(client is got[0] for client in got)
    assert holder.current is got[0]


def test_a_closed_client_is_replaced_and_close_forgets_it() -> None:
    holder = LazySyncClient("a test client")
    first = holder.get(FakeClient)  # type: ignore[arg-type]
    first.close()  # closed by its user
    second = holder.get(FakeClient)  # type: ignore[arg-type]
    assert second is not first and FakeClient.made == 2

    holder.close()
    assert second.closed and holder.current is None
    holder.close()  # nothing open: nothing to do


def test_what_make_raises_propagates_and_nothing_is_kept() -> None:
    holder = LazySyncClient("a test client")

    def broken() -> Any:
        raise ValueError("bad setting")

    with pytest.raises(ValueError, match="bad setting"):
        holder.get(broken)
    assert holder.current is None
    assert holder.get(FakeClient) is holder.current  # type: ignore[arg-type]


def test_a_failing_close_is_logged_not_raised(caplog: pytest.LogCaptureFixture) -> None:
    holder = LazySyncClient("the test's SyncClient")
    holder.get(lambda: FakeClient(fail_close=True))  # type: ignore[arg-type,return-value]

    holder.close()

    assert holder.current is None
    assert "closing the test's SyncClient failed" in caplog.text


@pytest.mark.skipif(not hasattr(os, "fork") or sys.platform == "darwin", reason="fork: Linux")
def test_a_forked_child_makes_its_own_client() -> None:
    holder = LazySyncClient("a test client")
    parent = holder.get(FakeClient)  # type: ignore[arg-type]
    read, write = os.pipe()
    pid = os.fork()
    if pid == 0:  # the child: the parent's client is not used, a new one is made
        try:
            child = holder.get(FakeClient)  # type: ignore[arg-type]
            os.write(write, b"fresh" if child is not parent and FakeClient.made == 2 else b"shared")
        finally:
            os._exit(0)
    os.close(write)
    try:
        answer = os.read(read, 16)
    finally:
        os.close(read)
        os.waitpid(pid, 0)
    assert answer == b"fresh"
    assert holder.current is parent and not parent.closed  # the parent's own is untouched
