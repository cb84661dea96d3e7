"""A subworker's definitions of the policy test tasks: no retries and no time limit (the control plane's differ)."""

from __future__ import annotations

import asyncio

from fastworker.client import task


@task(name="fwtests_policy.always_fails", retries=0)
def always_fails() -> None:
    """Fail every attempt."""
    raise ValueError("fails on purpose")


@task(name="fwtests_policy.too_slow")
async def too_slow() -> str:
    """Sleep long: only a time limit from elsewhere stops it."""
    await asyncio.sleep(60)
    return "finished"
