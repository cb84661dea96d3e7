"""The control plane's definitions of the policy test tasks (a subworker loads ``fwtests_policy_worker``).

Same names, different retries and time limits: the policy test shows that the control plane's
definition applies wherever the task runs.
"""

from __future__ import annotations

import asyncio

from fastworker.client import task


@task(name="fwtests_policy.always_fails", retries=2, retry_backoff=0.0)
def always_fails() -> None:
    """Fail every attempt."""
    raise ValueError("fails on purpose")


@task(name="fwtests_policy.too_slow", timeout=1.0)
async def too_slow() -> str:
    """Outlive the control plane's time limit (the subworker's definition has none)."""
    await asyncio.sleep(60)
    return "finished"
