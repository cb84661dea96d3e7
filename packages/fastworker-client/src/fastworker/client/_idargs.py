"""Checks of the ids a caller passes to the client: a wrong type is named before anything is sent."""

from __future__ import annotations

from collections.abc import Iterable

__all__ = ["id_arg", "ids_arg"]


def id_arg(value: object, what: str = "task_id") -> str:
    """``value`` if it is an id (a str that UTF-8 can encode); else a TypeError (ValueError) naming it.

    Checked before anything is sent: a non-str id would fail deep in the protobuf layer, or (bytes)
    be sent as text and never match the answer, leaving a wait without an end.
    """
    if isinstance(value, str):
        if not value.isascii():
            try:
                value.encode("utf-8")
            except UnicodeEncodeError:
                raise ValueError(f"{what} is not valid text (it holds a lone surrogate): {value!r:.80}") from None
        return value
    hint = " (a handle: pass handle.id)" if hasattr(value, "id") else ""
    raise TypeError(f"{what} must be a str, not {type(value).__name__}: {value!r:.80}{hint}")


def ids_arg(values: object, what: str = "task_ids") -> list[str]:
    """``values`` as a list of ids; a lone str (whose characters would be taken as ids) is refused."""
    if isinstance(values, str | bytes) or not isinstance(values, Iterable):
        raise TypeError(f"{what} must be a sequence of str ids, not {type(values).__name__}: {values!r:.80}")
    return [id_arg(value, f"each of {what}") for value in values]
