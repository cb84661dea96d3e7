"""Waiting on a running app and pressing fastworker-top's action keys (each asks before it acts) in Pilot tests."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

import pytest
from textual.pilot import Pilot

from fastworker.dashboard.tui.screens import ConfirmScreen


async def wait_until(pilot: Pilot[Any], predicate: Callable[[], object], what: str, timeout: float = 5.0) -> None:
    """Let the app run until predicate() is truthy; fail with `what` after timeout seconds."""
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            pytest.fail(f"timed out after {timeout:g} s waiting for: {what}")
        await pilot.pause(0.02)


async def press_confirmed(pilot: Pilot[Any], key: str, answer: str = "y") -> None:
    """Press an action key (c, r, p), wait for its question, and answer it (``y``: yes)."""
    await pilot.press(key)
    await wait_until(pilot, lambda: isinstance(pilot.app.screen, ConfirmScreen), f"the question after {key!r}")
    await pilot.press(answer)
    await wait_until(pilot, lambda: not isinstance(pilot.app.screen, ConfirmScreen), "the question closed")
