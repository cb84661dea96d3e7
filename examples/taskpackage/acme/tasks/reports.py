"""Report tasks: sync and CPU-bound, so workers run them in child processes; low priority and time-limited."""

from __future__ import annotations

import hashlib
from decimal import Decimal

from fastworker.client import task


@task(name="reports.monthly", priority="low", timeout=60)
def monthly_report(year: int, month: int, sales: list[Decimal]) -> dict[str, object]:
    """Sum a month's sales exactly (Decimals survive the codec) and fingerprint the input."""
    digest = hashlib.sha256(f"{year}-{month}:{[str(s) for s in sales]}".encode()).hexdigest()
    return {"period": f"{year}-{month:02d}", "total": sum(sales, Decimal("0")), "count": len(sales), "digest": digest}


@task(name="reports.checksum", priority="low")
def checksum(text: str, rounds: int = 10_000) -> str:
    """A little CPU work: hash the text repeatedly."""
    data = text.encode()
    for _ in range(rounds):
        data = hashlib.sha256(data).digest()
    return data.hex()
