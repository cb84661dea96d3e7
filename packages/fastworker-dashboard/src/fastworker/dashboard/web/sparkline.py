"""Turns the control plane's per-second history into the geometry of an inline SVG sparkline (numbers only)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

#: The SVG's coordinate system; it scales to its box in the page.
WIDTH = 600
HEIGHT = 90
#: Room kept free above the highest point, in SVG units.
_HEADROOM = 6


@dataclass(frozen=True)
class Sparkline:
    """Polyline points and area paths for succeeded and failed tasks per second, plus the totals shown beside it."""

    succeeded_points: str
    failed_points: str
    succeeded_area: str
    failed_area: str
    peak: int
    total_succeeded: int
    total_failed: int
    seconds: int
    width: int = WIDTH
    height: int = HEIGHT

    @property
    def empty(self) -> bool:
        """True when there is no history to draw."""
        return self.seconds == 0


def _count(entry: Mapping[str, Any], key: str) -> int:
    value = entry.get(key, 0)
    try:
        return max(0, int(value))
    except (TypeError, ValueError):
        return 0


def build_sparkline(
    history: Sequence[Mapping[str, Any]] | None, *, width: int = WIDTH, height: int = HEIGHT
) -> Sparkline:
    """The sparkline for ``history`` (oldest first, one ``{"at", "succeeded", "failed"}`` per second)."""
    entries = list(history or [])
    succeeded = [_count(e, "succeeded") for e in entries]
    failed = [_count(e, "failed") for e in entries]
    if not entries:
        return Sparkline("", "", "", "", 0, 0, 0, 0, width, height)
    peak = max(max(succeeded), max(failed), 1)
    step = width / max(1, len(entries) - 1)
    usable = height - _HEADROOM

    def points(values: list[int]) -> list[tuple[float, float]]:
        return [(round(i * step, 1), round(height - usable * v / peak, 1)) for i, v in enumerate(values)]

    def polyline(coords: list[tuple[float, float]]) -> str:
        return " ".join(f"{x:g},{y:g}" for x, y in coords)

    def area(coords: list[tuple[float, float]]) -> str:
        body = " L ".join(f"{x:g} {y:g}" for x, y in coords)
        return f"M 0 {height} L {body} L {coords[-1][0]:g} {height} Z"

    ok, bad = points(succeeded), points(failed)
    return Sparkline(
        succeeded_points=polyline(ok),
        failed_points=polyline(bad),
        succeeded_area=area(ok),
        failed_area=area(bad),
        peak=peak,
        total_succeeded=sum(succeeded),
        total_failed=sum(failed),
        seconds=len(entries),
        width=width,
        height=height,
    )
