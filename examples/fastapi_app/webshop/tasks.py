"""The shop's background tasks.

Workers import this module (``--task-modules webshop.tasks``); so does the app, but only to submit
them with typed handles.
"""

from __future__ import annotations

import asyncio
import hashlib
from decimal import Decimal

from fastworker.client import task


@task(name="emails.send_welcome", priority="high", retries=3, retry_backoff=1.0, retry_on=(ConnectionError,))
async def send_welcome_email(address: str) -> dict[str, str]:
    """Pretend to talk to a mail server (I/O-bound: an async task)."""
    await asyncio.sleep(0.05)
    return {"to": address, "subject": "Welcome to the shop!"}


@task(name="reports.sales", priority="low", timeout=120)
def build_sales_report(month: str, amounts: list[Decimal]) -> dict[str, object]:
    """Crunch numbers (CPU-bound: a sync task, run in a worker's child process, killed after 120 s)."""
    fingerprint = hashlib.sha256(month.encode())
    for _ in range(20_000):
        fingerprint = hashlib.sha256(fingerprint.digest())
    total = sum(amounts, Decimal("0"))
    return {"month": month, "orders": len(amounts), "total": str(total), "fingerprint": fingerprint.hexdigest()[:16]}
