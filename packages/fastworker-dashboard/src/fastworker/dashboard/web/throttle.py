"""Slows down password guessing: per client address, a growing wait after a few failed logins.

The first ``free_failures`` wrong passwords cost nothing; after that each failure makes the address
wait 1 s, 2 s, 4 s, ... (capped) before its next password is even checked, so one address gets at
most a few guesses per second at first and one per ``max_delay`` later. Attempts made during the
wait are refused without looking at the password and do not extend it. IPv6 clients are counted
per /64 (one host usually owns the whole prefix). The table is bounded: the least recently seen
addresses are forgotten first, and an address is forgotten after ``forget_after`` quiet seconds.
"""

from __future__ import annotations

import ipaddress
import time
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass

#: Wrong passwords an address may send before it has to wait.
FREE_FAILURES = 3
#: The first wait, in seconds; each further failure doubles it.
BASE_DELAY = 1.0
#: The longest wait, in seconds.
MAX_DELAY = 30.0
#: Seconds without a failure after which an address starts afresh.
FORGET_AFTER = 15 * 60.0
#: Most addresses remembered at once.
MAX_ADDRESSES = 10_000


def delay_after(failures: int, *, free: int = FREE_FAILURES, base: float = BASE_DELAY, cap: float = MAX_DELAY) -> float:
    """Seconds an address waits after its ``failures``-th failure in a row (0 while still free)."""
    if failures < free:
        return 0.0
    return float(min(cap, base * 2.0 ** min(failures - free, 32)))


def most_attempts(window: float, *, free: int = FREE_FAILURES, base: float = BASE_DELAY, cap: float = MAX_DELAY) -> int:
    """The most passwords one address can have checked within ``window`` seconds (all of them wrong)."""
    at, attempts = 0.0, 0
    while at <= window:
        attempts += 1
        at += delay_after(attempts, free=free, base=base, cap=cap)
    return attempts


def address_key(address: str) -> str:
    """The throttle's key for a client address: itself for IPv4 and names, the /64 for IPv6."""
    try:
        ip = ipaddress.ip_address(address)
    except ValueError:
        return address
    if isinstance(ip, ipaddress.IPv6Address):
        if ip.ipv4_mapped is not None:
            return str(ip.ipv4_mapped)
        return str(ipaddress.ip_network(f"{ip}/64", strict=False))
    return str(ip)


@dataclass
class _Record:
    failures: int
    allowed_at: float
    last_failure: float


class LoginThrottle:
    """The per-address table of failed logins.

    Args:
        free_failures, base_delay, max_delay: The delay schedule (see :func:`delay_after`).
        forget_after: Quiet seconds after which an address's failures are forgotten.
        max_addresses: Bound on the table; the least recently failing address goes first.
        clock: Monotonic seconds (tests pass a fake).
    """

    def __init__(
        self,
        *,
        free_failures: int = FREE_FAILURES,
        base_delay: float = BASE_DELAY,
        max_delay: float = MAX_DELAY,
        forget_after: float = FORGET_AFTER,
        max_addresses: int = MAX_ADDRESSES,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.free_failures = free_failures
        self.base_delay = base_delay
        self.max_delay = max_delay
        self.forget_after = forget_after
        self.max_addresses = max_addresses
        self._clock = clock
        self._table: OrderedDict[str, _Record] = OrderedDict()

    def __len__(self) -> int:
        return len(self._table)

    def wait_left(self, address: str) -> float:
        """Seconds before ``address`` may try a password again (0 when it may now)."""
        record = self._table.get(address_key(address))
        if record is None:
            return 0.0
        return max(0.0, record.allowed_at - self._clock())

    def failed(self, address: str) -> tuple[int, float]:
        """Count a wrong password from ``address``; returns (failures in a row, seconds it must now wait)."""
        now = self._clock()
        self._forget_stale(now)
        key = address_key(address)
        record = self._table.pop(key, None)
        failures = (record.failures if record is not None else 0) + 1
        wait = delay_after(failures, free=self.free_failures, base=self.base_delay, cap=self.max_delay)
        self._table[key] = _Record(failures, now + wait, now)
        while len(self._table) > self.max_addresses:
            self._table.popitem(last=False)
        return failures, wait

    def succeeded(self, address: str) -> None:
        """A right password: ``address`` starts afresh."""
        self._table.pop(address_key(address), None)

    def _forget_stale(self, now: float) -> None:
        # Oldest first (the table is in order of last failure): stop at the first fresh one.
        while self._table:
            key, record = next(iter(self._table.items()))
            if now - record.last_failure < self.forget_after:
                break
            del self._table[key]
