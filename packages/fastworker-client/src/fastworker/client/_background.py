"""Background tasks a component starts and must keep alive (the loop holds only weak references) and end.

Private, and shared by FastWorker's own distributions only (the client, the subworker; see
``SHARED_INTERNALS`` in ``scripts/check_layout.py``): no compatibility promise.
"""

from __future__ import annotations

import asyncio
from collections.abc import Coroutine
from typing import Any, TypeVar

T = TypeVar("T")


def spawn(coroutine: Coroutine[Any, Any, T], tasks: set[asyncio.Task[Any]]) -> asyncio.Task[T]:
    """Run ``coroutine`` as a task on the running loop, held in ``tasks`` until it finishes."""
    task = asyncio.get_running_loop().create_task(coroutine)
    tasks.add(task)
    task.add_done_callback(tasks.discard)
    return task


async def cancel_all(tasks: set[asyncio.Task[Any]]) -> None:
    """Cancel every task in ``tasks`` and wait until each has ended, however it ends."""
    running = list(tasks)
    for task in running:
        task.cancel()
    for task in running:
        try:
            await task
        except (asyncio.CancelledError, Exception):
            pass
