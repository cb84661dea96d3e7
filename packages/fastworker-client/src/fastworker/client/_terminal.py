"""Text from tasks made safe for a terminal: control characters and bidirectional overrides shown as escapes, never sent raw."""

from __future__ import annotations

#: Control characters (C0 but tab and newline, DEL, C1) as the escapes Python writes for them; the
#: line and paragraph separators (U+2028, U+2029), which break a table's row; and the bidirectional
#: overrides and isolates (U+202A-U+202E, U+2066-U+2069), which reorder what follows them on the
#: line: a name could otherwise show another task's id or state ("Trojan Source").
_CONTROL_ESCAPES = {
    **{code: f"\\x{code:02x}" for code in (*range(0x20), *range(0x7F, 0xA0)) if code not in (0x09, 0x0A)},
    **{code: f"\\u{code:04x}" for code in (0x2028, 0x2029, *range(0x202A, 0x202F), *range(0x2066, 0x206A))},
}


def visible(text: str) -> str:
    """``text`` with its control characters escaped.

    A result, argument, name, progress or error message could otherwise carry escape sequences or
    carriage returns that recolour, move the cursor or rewrite what the operator reads (``--json``
    escapes them as JSON does).
    """
    return text.translate(_CONTROL_ESCAPES)


#: The same, with newlines escaped too: text that must stay on one line (a log record's message).
_LINE_ESCAPES = {**_CONTROL_ESCAPES, 0x0A: "\\n"}


def one_line(text: str) -> str:
    """``text`` with its control characters, newlines included, escaped: it cannot start a line of its own."""
    return text.translate(_LINE_ESCAPES)


#: The same, with tabs escaped too: a field of a tab-separated line (a table printed into a pipe).
_FIELD_ESCAPES = {**_LINE_ESCAPES, 0x09: "\\t"}


def one_field(text: str) -> str:
    """``text`` with its control characters, newlines and tabs included, escaped: it cannot split a line or a column."""
    return text.translate(_FIELD_ESCAPES)
