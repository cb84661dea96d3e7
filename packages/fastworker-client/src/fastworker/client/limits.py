"""Flow-control limits of a task name: the rate syntax (``"50/s"``) and what ``Client.limits()`` reports.

Both limits are enforced by the control plane across its own slots and every subworker together
(docs/flow-control.md). A rate is a token bucket: a start takes a token, tokens come back at the
rate, and the bucket holds :attr:`Rate.burst` tokens (a tenth of a second's worth, at least one),
so after an idle spell at most ``burst`` tasks start at once and then starts are spread evenly.
"""

from __future__ import annotations

import enum
import math
import re
from dataclasses import dataclass
from decimal import Decimal

from fastworker.client.errors import InvalidOptions

__all__ = ["MAX_CONCURRENCY", "UNSET", "Rate", "TaskLimits", "Unset", "check_concurrency"]

_UNITS = {"s": 1.0, "m": 60.0, "h": 3600.0}
_RATE = re.compile(r"\s*(\d+(?:\.\d+)?)\s*/\s*([smh])\s*")
#: Largest ``max_concurrency`` (a ``uint32`` on the wire, kept to a sane size).
MAX_CONCURRENCY = 1_000_000
#: The token bucket holds this many seconds of the rate (and at least one token).
BURST_SECONDS = 0.1


@dataclass(frozen=True, slots=True)
class Rate:
    """A parsed rate limit.

    Attributes:
        text: The rate as written, normalised (``"50/s"``).
        per_second: Starts allowed per second.
        burst: Most starts at once after an idle spell (the bucket's size).
    """

    text: str
    per_second: float
    burst: int

    @classmethod
    def parse(cls, text: str) -> Rate:
        """Parse ``"N/s"``, ``"N/m"`` or ``"N/h"`` (N a positive number).

        Raises:
            InvalidOptions: anything else, naming the bad value (also a ``ValueError``).
            TypeError: not a str.
        """
        if not isinstance(text, str):
            raise TypeError(f"rate_limit must be a str such as '50/s', not {type(text).__qualname__}")
        match = _RATE.fullmatch(text)
        if match is None:
            raise InvalidOptions(f"rate_limit must look like '50/s', '100/m' or '10/h', got {text!r}")
        count = float(match.group(1))
        if count <= 0 or not math.isfinite(count):
            raise InvalidOptions(f"rate_limit must allow at least some starts, got {text!r}")
        unit = match.group(2)
        per_second = count / _UNITS[unit]
        normalised = f"{_plain(count)}/{unit}"
        return cls(normalised, per_second, max(1, math.floor(per_second * BURST_SECONDS)))


def _plain(number: float) -> str:
    """A positive number in plain digits, as short as it reads back (never ``1e+06``, which no rate parses).

    The rate's text travels to the control plane and is parsed there again: it must stay a rate.
    """
    text = format(Decimal(repr(number)), "f")
    return text.rstrip("0").rstrip(".") if "." in text else text


class Unset(enum.Enum):
    """A limit not given in a change (``set_limits``): it keeps its current value."""

    UNSET = "unset"


#: The default of ``set_limits``' limit arguments: keep the current value.
UNSET = Unset.UNSET


def check_concurrency(value: object) -> int:
    """A valid ``max_concurrency`` (an int from 1 to :data:`MAX_CONCURRENCY`).

    Raises:
        TypeError: not an int.
        InvalidOptions: out of range, naming the value (also a ``ValueError``).
    """
    if not isinstance(value, int) or isinstance(value, bool):
        raise TypeError(f"max_concurrency must be an int, not {type(value).__qualname__}")
    if not 1 <= value <= MAX_CONCURRENCY:
        raise InvalidOptions(f"max_concurrency must be between 1 and {MAX_CONCURRENCY}, got {value}")
    return value


@dataclass(frozen=True, slots=True)
class TaskLimits:
    """One task name's limits and what they hold back now (``Client.limits()``).

    Attributes:
        name: The task name.
        rate_limit: Starts allowed, as ``"N/s"``, ``"N/m"`` or ``"N/h"``; None for no rate limit.
        max_concurrency: Most tasks of the name running at once; None for no limit.
        running: Tasks of the name running now, on subworkers and local slots together.
        waiting: Tasks of the name queued and held back by the limits.
        current_rate: Starts in the last second.
        burst: Most starts at once after an idle spell (0 without a rate limit).
        overridden: True when an operator set the limits at run time (they beat the definition).
    """

    name: str
    rate_limit: str | None
    max_concurrency: int | None
    running: int = 0
    waiting: int = 0
    current_rate: float = 0.0
    burst: int = 0
    overridden: bool = False
