"""Email tasks: async (I/O-bound), high priority, retried when the mail server is busy."""

from __future__ import annotations

import asyncio

from fastworker.client import task


class MailServerBusy(Exception):
    """The (pretend) mail server asked us to come back later: worth another attempt."""


@task(name="emails.send_welcome", priority="high", retries=3, retry_backoff=0.5, retry_on=(MailServerBusy,))
async def send_welcome(address: str, name: str) -> dict[str, str]:
    """Pretend to send a welcome email; a bad address fails at once (no retry: it is not MailServerBusy)."""
    await asyncio.sleep(0.01)
    if "@" not in address:
        raise ValueError(f"not an email address: {address!r}")
    return {"to": address, "subject": f"Welcome, {name}!"}
