"""A client in a process forked after a client ran: a typed error, never nng's abort of the whole process."""

from __future__ import annotations

import asyncio
import os
import sys
from collections.abc import Callable

import pytest

from fastworker.client import Client, SyncClient

pytestmark = pytest.mark.skipif(not hasattr(os, "fork") or sys.platform == "darwin", reason="fork: Linux")


def in_forked_child(body: Callable[[], str]) -> tuple[str, int]:
    """Run ``body`` in a forked child; return what it reported and its wait status (os._exit: no finalizers there)."""
    read, write = os.pipe()
    pid = os.fork()
    if pid == 0:
        try:
            answer = body()
        except BaseException as exc:  # reported, whatever it is
            answer = f"{type(exc).__name__}: {exc}"
        os.write(write, answer.encode()[:4000])
        os._exit(0)
    os.close(write)
    try:
        answer = os.read(read, 4096).decode()
    finally:
        os.close(read)
        _, status = os.waitpid(pid, 0)
    return answer, status


def test_a_client_in_a_child_forked_after_a_client_connected_raises_forked_process_error() -> None:
    async def used_in_the_parent() -> None:
        client = Client("tcp://127.0.0.1:9", connect_timeout=0.05)
        with pytest.raises(Exception):  # noqa: B017 - nothing listens: any failure, once its sockets exist
            await client.status("x")
        await client.aclose()

    asyncio.run(used_in_the_parent())

    def child() -> str:
        async def call() -> None:
            await Client("tcp://127.0.0.1:9", connect_timeout=0.05).status("x")

        asyncio.run(call())
        return "no error"

    answer, status = in_forked_child(child)
    assert os.WIFEXITED(status) and os.WEXITSTATUS(status) == 0  # not aborted by nng
    assert answer.startswith("ForkedProcessError:"), answer
    assert "forked from a process that had already used" in answer and "'spawn'" in answer


def test_a_sync_client_made_before_a_fork_raises_in_the_child_instead_of_waiting_for_ever() -> None:
    client = SyncClient("tcp://127.0.0.1:9", connect_timeout=0.05)
    try:
        answer, status = in_forked_child(lambda: repr(client.status("x")))
    finally:
        client.close()
    assert os.WIFEXITED(status)
    assert answer.startswith("ForkedProcessError:") and "its thread did not survive the fork" in answer, answer
