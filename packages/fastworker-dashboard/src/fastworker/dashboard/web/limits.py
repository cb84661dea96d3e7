"""A change of one task name's flow-control limits, read from the form or the API body.

The rules are ``fastworker limit``'s: a limit not given keeps its value, ``none`` (or JSON null)
removes it, ``clear`` first goes back to the task's definition, and a change that changes nothing
is refused. Values are checked here, so a bad one is reported before the control plane is asked.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

from fastworker.client.limits import UNSET, Rate, TaskLimits, Unset, check_concurrency
from fastworker.dashboard.source import AdminClient
from fastworker.dashboard.web.query import BadQuery

_TRUE = {"1", "on", "true", "yes"}


class BadLimits(BadQuery):
    """The change is malformed or changes nothing (400, 422 in the API); the message names the bad value."""


@dataclass(frozen=True)
class LimitsChange:
    """What to change: each limit's new value (None: no limit) or ``UNSET`` (keep it)."""

    rate_limit: str | None | Unset = UNSET
    max_concurrency: int | None | Unset = UNSET
    clear: bool = False

    def __post_init__(self) -> None:
        if isinstance(self.rate_limit, Unset) and isinstance(self.max_concurrency, Unset) and not self.clear:
            raise BadLimits("give a rate, a concurrency or clear")

    @classmethod
    def from_form(cls, form: Mapping[str, str]) -> LimitsChange:
        """From the overview's form: empty fields keep, ``none`` removes, ``clear`` is a checkbox.

        Raises:
            BadLimits: a value is malformed, or nothing would change.
        """
        rate = form.get("rate_limit", "").strip()
        concurrency = form.get("max_concurrency", "").strip()
        return cls(
            rate_limit=UNSET if not rate else _rate(rate),
            max_concurrency=UNSET if not concurrency else _concurrency_text(concurrency),
            clear=form.get("clear", "").strip().lower() in _TRUE,
        )

    @classmethod
    def from_json(cls, body: object) -> LimitsChange:
        """From the API's JSON object ``{"rate_limit", "max_concurrency", "clear"}`` (absent keys keep).

        Raises:
            BadLimits: not such an object, a value is malformed, or nothing would change.
        """
        if not isinstance(body, dict):
            raise BadLimits('expected a JSON object such as {"rate_limit": "10/s", "max_concurrency": 3}')
        unknown = sorted(set(body) - {"rate_limit", "max_concurrency", "clear"})
        if unknown:
            raise BadLimits(f"unknown field {unknown[0]!r}: expected rate_limit, max_concurrency or clear")
        rate_limit: str | None | Unset = UNSET
        if "rate_limit" in body:
            raw = body["rate_limit"]
            if raw is not None and not isinstance(raw, str):
                raise BadLimits(f"rate_limit must be a string such as '10/s' or null, not {raw!r}")
            rate_limit = None if raw is None else _rate(raw)
        max_concurrency: int | None | Unset = UNSET
        if "max_concurrency" in body:
            raw = body["max_concurrency"]
            max_concurrency = None if raw is None else _concurrency(raw)
        clear = body.get("clear", False)
        if not isinstance(clear, bool):
            raise BadLimits(f"clear must be true or false, not {clear!r}")
        return cls(rate_limit=rate_limit, max_concurrency=max_concurrency, clear=clear)

    async def apply(self, client: AdminClient, name: str) -> TaskLimits:
        """Send the change; returns the name's limits as they now hold."""
        return await client.set_limits(
            name, rate_limit=self.rate_limit, max_concurrency=self.max_concurrency, clear=self.clear
        )


def _rate(text: str) -> str | None:
    if text.strip().lower() == "none":
        return None
    try:
        return Rate.parse(text).text
    except ValueError:
        raise BadLimits(f"rate must be N/s, N/m or N/h with N above 0, or none, not {text!r}") from None


def _concurrency_text(text: str) -> int | None:
    if text.lower() == "none":
        return None
    try:
        value = int(text)
    except ValueError:
        raise BadLimits(f"concurrency must be a whole number from 1, or none, not {text!r}") from None
    return _concurrency(value)


def _concurrency(value: object) -> int:
    try:
        return check_concurrency(value)
    except (TypeError, ValueError):
        raise BadLimits(f"concurrency must be a whole number from 1, or none, not {value!r}") from None


def describe(limits: TaskLimits) -> str:
    """A name's limits in words, for the flash message after a change."""
    rate = f"rate {limits.rate_limit}" if limits.rate_limit else "no rate limit"
    concurrency = f"concurrency {limits.max_concurrency}" if limits.max_concurrency else "no concurrency limit"
    origin = " (set at run time)" if limits.overridden else ""
    return f"limits of {limits.name}: {rate}, {concurrency}{origin}"
