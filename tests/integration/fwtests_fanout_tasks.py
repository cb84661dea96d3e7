"""Tasks that submit tasks, as Celery code fans out: loaded by the control plane and by subworkers."""

from __future__ import annotations

from fastworker.client import task


@task(name="fanout.add")
def add(x: int, y: int) -> int:
    return x + y


@task(name="fanout.spawn_sync")
def spawn_sync(x: int) -> str:
    """Submit ``add(x, 1)`` from sync task code; its id (not waited for: a slot waiting on a slot can starve)."""
    return add.delay_sync(x, 1).id


@task(name="fanout.spawn_async")
async def spawn_async(x: int) -> str:
    """Submit ``add(x, 2)`` from async task code; its id."""
    return (await add.delay(x, 2)).id


@task(name="fanout.spawn_workflow_sync")
def spawn_workflow_sync(x: int) -> str:
    """Submit the workflow ``add(x, 3) | add(0)`` from sync task code; its last step's id."""
    return (add.s(x, 3) | add.s(0)).delay_sync().task_ids[-1]
