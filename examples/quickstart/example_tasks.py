"""Example tasks for the README's demo: sync, async, CPU-bound, failing, and typed-value tasks."""

from __future__ import annotations

import asyncio
import datetime as dt
import hashlib
from decimal import Decimal

from fastworker.client import Priority, task


@task
def add(x: int, y: int) -> int:
    """Add two numbers (the classic)."""
    return x + y


@task(name="reports.checksum", priority=Priority.LOW)
def checksum(text: str, rounds: int = 1000) -> str:
    """A little CPU work: hash the text repeatedly."""
    digest = text.encode()
    for _ in range(rounds):
        digest = hashlib.sha256(digest).digest()
    return digest.hex()


@task(name="emails.send", priority="high")
async def send_email(user_id: int, subject: str) -> dict[str, object]:
    """Pretend to send an email without blocking the control plane's event loop."""
    await asyncio.sleep(0.01)
    return {"user_id": user_id, "subject": subject, "sent_at": dt.datetime.now(dt.UTC)}


@task
def invoice_total(lines: list[tuple[str, Decimal]]) -> Decimal:
    """Sum invoice lines exactly: Decimals and tuples survive the safe codec."""
    return sum((amount for _, amount in lines), Decimal("0"))


@task
def fail(reason: str) -> None:
    """Always raises, to show how failures reach the client."""
    raise RuntimeError(reason)
