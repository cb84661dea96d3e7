"""Bounded rendering of task payloads: pages and live panels show a preview, downloads have a size cap.

A task's arguments or result can be megabytes. Rendering all of it as indented JSON on every page
view (and once more per live viewer) costs memory and CPU in the process that also dispatches
tasks, and no one reads 7 MB in a ``<pre>``. So values are first cut to a budget (long strings and
bytes shortened, long containers clipped), only then rendered, and the text is cut to the preview
size; the full value stays available as a download up to :data:`DOWNLOAD_CAP`.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from fastworker.client.jsonshape import jsonable

#: Characters of rendered payload a page or a live panel shows.
PREVIEW_CHARS = 4096
#: Characters of a traceback shown (tracebacks are read from the end too, so they get more room).
TRACEBACK_CHARS = 16384
#: Largest download of a full value, in bytes of rendered JSON.
DOWNLOAD_CAP = 16 * 1024 * 1024


@dataclass(frozen=True)
class Preview:
    """The start of a rendered value: ``text``; ``truncated`` when there is more, ``size`` about how much in all."""

    text: str
    truncated: bool
    size: int


class _Budget:
    """Characters of leaf content still allowed while cutting a value down."""

    def __init__(self, chars: int) -> None:
        self.left = chars
        self.cut = False

    def take(self, wanted: int) -> int:
        granted = max(0, min(wanted, self.left))
        self.left -= granted
        if granted < wanted:
            self.cut = True
        return granted


def _cut(value: Any, budget: _Budget) -> Any:
    """``value`` with at most the budget's characters of strings and bytes, and items beyond it dropped."""
    if isinstance(value, str):
        return value[: budget.take(len(value))]
    if isinstance(value, bytes | bytearray):
        return bytes(value[: budget.take(len(value))])
    if isinstance(value, Mapping):
        out: dict[Any, Any] = {}
        for key, item in value.items():
            if budget.take(1) == 0:
                break
            # The key first: in ``out[k] = v`` Python evaluates v first, which spent the budget the key needed.
            shown_key = _cut(key, budget) if isinstance(key, str) else key
            out[shown_key] = _cut(item, budget)
        return out
    if isinstance(value, list | tuple | set | frozenset):
        items: list[Any] = []
        for item in value:
            if budget.take(1) == 0:
                break
            items.append(_cut(item, budget))
        return items
    return value


def size_of(value: Any) -> int:
    """About how many bytes ``value`` holds (string and bytes lengths plus a little per item); cheap, no copies."""
    if isinstance(value, str | bytes | bytearray):
        return len(value)
    if isinstance(value, Mapping):
        return sum(size_of(k) + size_of(v) + 4 for k, v in value.items()) + 2
    if isinstance(value, list | tuple | set | frozenset):
        return sum(size_of(v) + 2 for v in value) + 2
    return 8


def _dump(value: Any) -> str:
    try:
        return json.dumps(value, indent=2, ensure_ascii=False, default=repr)
    except (TypeError, ValueError):
        return repr(value)


def preview(value: Any, limit: int = PREVIEW_CHARS) -> Preview:
    """The first ``limit`` characters of ``value`` as indented JSON, at bounded cost.

    In the API's shapes (``fastworker.client.jsonshape``: bytes as base64), as its download is.
    """
    budget = _Budget(limit)
    text = _dump(jsonable(_cut(value, budget)))
    truncated = budget.cut or len(text) > limit
    return Preview(text[:limit], truncated, size_of(value) if truncated else len(text))


def clip(text: str | None, limit: int = PREVIEW_CHARS) -> Preview:
    """A plain string cut to ``limit`` characters (error messages, tracebacks)."""
    text = text or ""
    return Preview(text[:limit], len(text) > limit, len(text))


def render_capped(value: Any, cap: int = DOWNLOAD_CAP) -> str | None:
    """``value`` in full as indented JSON, or None when that would exceed ``cap`` characters (checked before rendering all).

    Valid JSON in the API's shapes (``fastworker.client.jsonshape``: bytes as base64, NaN as null),
    since it is downloaded as ``application/json``: ``json.dumps`` alone wrote bare ``NaN``.
    """
    budget = _Budget(cap)
    shortened = _cut(value, budget)
    if budget.cut:
        return None
    text = json.dumps(jsonable(shortened), indent=2, ensure_ascii=False, allow_nan=False)
    return text if len(text) <= cap else None
