"""What the control plane reports, made safe for the terminal before ``fastworker-top`` shows it.

Task names, error messages and tracebacks, progress messages, worker ids and queue names come from
tasks and workers: escape sequences in them reached the operator's terminal raw (a task named with
one cleared the screen, or set the window's title). Every answer the view reads goes through
:class:`SafeClient`, which escapes the control characters of every string in it, as the ``fastworker``
command does (``fastworker.client._terminal.visible``).
"""

from __future__ import annotations

import dataclasses
import functools
import inspect
from collections.abc import Callable, Coroutine
from typing import Any

from fastworker.client._terminal import visible


def shown(value: Any) -> Any:
    """``value`` with the control characters of every string in it escaped (dataclasses, mappings, sequences)."""
    if type(value) is str:  # (not a str enum: a TaskState stays one)
        return visible(value)
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        changes = {
            field.name: shown(getattr(value, field.name))
            for field in dataclasses.fields(value)
            if field.init and _holds_text(getattr(value, field.name))
        }
        return dataclasses.replace(value, **changes) if changes else value
    if isinstance(value, dict):
        return {shown(key): shown(item) for key, item in value.items()}
    if isinstance(value, list | tuple) and not hasattr(value, "_fields"):
        return type(value)(shown(item) for item in value)
    return value


def _holds_text(value: Any) -> bool:
    return (
        type(value) is str
        or isinstance(value, dict | list | tuple)
        or (dataclasses.is_dataclass(value) and not isinstance(value, type))
    )


class SafeClient:
    """The admin client, with every answer passed through :func:`shown`; anything else as the client has it."""

    def __init__(self, client: Any) -> None:
        self._client = client

    def __getattr__(self, name: str) -> Any:
        attribute = getattr(self._client, name)
        if not inspect.iscoroutinefunction(attribute):
            return attribute
        return _shown_answers(attribute)


def _shown_answers(method: Callable[..., Coroutine[Any, Any, Any]]) -> Callable[..., Coroutine[Any, Any, Any]]:
    @functools.wraps(method)
    async def call(*args: Any, **kwargs: Any) -> Any:
        return shown(await method(*args, **kwargs))

    return call
