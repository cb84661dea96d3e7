"""How every FastWorker daemon and CLI logs: ``--log-level``, ``--log-format text|json``, task fields.

Text is one line per record (the default, for people); JSON is one object per line with ``time``
(ISO-8601, UTC), ``level``, ``logger``, ``message`` and, where they apply, ``task_id``,
``task_name``, ``worker_id`` and ``attempt`` (for log shippers). Those fields come from the
running task (``fastworker.client.context``: everything a task logs while it runs carries them,
whatever logger it uses), from :func:`log_fields` (a context of one's own), from the process-wide
fields set with :func:`set_process_log_fields` (a subworker's id), or from a call's ``extra=``.
Shared by every distribution's command line; a subworker's child processes log the same way
(:func:`logging_settings` is what they are given).
"""

from __future__ import annotations

import argparse
import contextlib
import contextvars
import json
import logging
import sys
from collections.abc import Iterator
from datetime import UTC, datetime
from typing import IO, Any

from fastworker.client._terminal import one_line, visible
from fastworker.client.context import bound_task

LEVELS = ("DEBUG", "INFO", "WARNING", "ERROR")
FORMATS = ("text", "json")
#: Fields a JSON record carries when they apply (and the text format appends as ``key=value``).
TASK_FIELDS = ("task_id", "task_name", "worker_id", "attempt")
_TEXT_FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"

_context: contextvars.ContextVar[dict[str, Any] | None] = contextvars.ContextVar("fastworker_log_fields", default=None)
_process_fields: dict[str, Any] = {}


def add_logging_flags(parser: argparse.ArgumentParser, *, default_level: str = "INFO") -> None:
    """Add ``--log-level`` and ``--log-format`` (their env vars come from ``apply_env_defaults``)."""
    parser.add_argument(
        "--log-level", default=default_level, choices=LEVELS, type=str.upper, help="least severe level logged"
    )
    parser.add_argument(
        "--log-format",
        default="text",
        choices=FORMATS,
        type=str.lower,
        help="text: one line per record; json: one JSON object per line, with task_id, task_name, worker_id "
        "and attempt where they apply (for log shippers)",
    )


def configure_logging(
    level: str, log_format: str = "text", stream: IO[str] | None = None, *, handler: logging.Handler | None = None
) -> None:
    """Log every record at ``level`` or above to ``stream`` (stderr) in ``log_format``; libraries only log.

    ``handler``: where records go instead of a stream (``fastworker-top``: Textual's log, never the screen).
    """
    if handler is None:
        handler = logging.StreamHandler(stream if stream is not None else sys.stderr)
    handler.setFormatter(JsonFormatter() if log_format == "json" else TextFormatter(_TEXT_FORMAT))
    handler.addFilter(_add_fields)
    root = logging.getLogger()
    for old in list(root.handlers):
        root.removeHandler(old)
    # On the handler too: a logger that sets its own level (task code, a library) still logs
    # nothing below the process's --log-level.
    handler.setLevel(level.upper())
    root.addHandler(handler)
    root.setLevel(level.upper())
    logging.captureWarnings(True)  # warnings.warn() (task code, libraries) as log records, JSON included


def logging_settings() -> tuple[str, str, dict[str, Any]] | None:
    """``(level, format, process fields)`` of this process's logging, if :func:`configure_logging` set it up.

    What a child process needs to log as this one does (``configure_logging`` and
    ``set_process_log_fields`` with these), to the stderr it inherits. None when the root logger
    has no handler of ``configure_logging``'s (never called, or replaced since).
    """
    root = logging.getLogger()
    for handler in root.handlers:
        if _add_fields in handler.filters:
            log_format = "json" if isinstance(handler.formatter, JsonFormatter) else "text"
            return logging.getLevelName(root.level), log_format, dict(_process_fields)
    return None


def set_process_log_fields(**fields: Any) -> None:
    """Fields every record of this process carries (e.g. ``worker_id``); None removes one."""
    for key, value in fields.items():
        if value is None:
            _process_fields.pop(key, None)
        else:
            _process_fields[key] = value


@contextlib.contextmanager
def log_fields(**fields: Any) -> Iterator[None]:
    """Within the block (this thread or task), records carry these fields too, e.g. a running task's id."""
    current = _context.get()
    token = _context.set({**current, **fields} if current else fields)
    try:
        yield
    finally:
        _context.reset(token)


def _add_fields(record: logging.LogRecord) -> bool:
    """A handler filter: copy the context's, the running task's and the process's fields onto the record.

    A call's ``extra=`` wins over them all, :func:`log_fields` over the task's, the task's over the process's.
    """
    fields = record.__dict__
    extra = _context.get()
    if extra:
        for key, value in extra.items():
            if key not in fields:
                fields[key] = value
    task = bound_task()
    if task is not None:
        if "task_id" not in fields:
            fields["task_id"] = task.id
        if "task_name" not in fields:
            fields["task_name"] = task.name
        if "worker_id" not in fields:
            fields["worker_id"] = task.worker_id
        if "attempt" not in fields:
            fields["attempt"] = task.attempt
    for key, value in _process_fields.items():
        if key not in fields:
            fields[key] = value
    return True


class TextFormatter(logging.Formatter):
    """The plain line, with ``[task_id=... attempt=...]`` appended when a record has task fields.

    A message is one line whatever it holds (a task's error text is user input: a newline in it
    would forge a record of its own, an escape sequence would reach the terminal of whoever tails
    the log): control characters and newlines are escaped. A traceback follows on indented lines,
    so none of them can pass for a record either.
    """

    def formatMessage(self, record: logging.LogRecord) -> str:
        """The message part, on one line."""
        record.message = one_line(record.message)
        return super().formatMessage(record)

    def formatException(self, ei: Any) -> str:
        """The traceback, each line indented and its control characters escaped."""
        return _indented(super().formatException(ei))

    def formatStack(self, stack_info: str) -> str:
        """The stack, as a traceback."""
        return _indented(super().formatStack(stack_info))

    def format(self, record: logging.LogRecord) -> str:
        """The record as one line (a traceback follows on the next lines, as usual)."""
        line = super().format(record)
        fields = [f"{key}={record.__dict__[key]}" for key in TASK_FIELDS if record.__dict__.get(key) is not None]
        if not fields:
            return line
        first, newline, rest = line.partition("\n")
        return f"{first} [{' '.join(fields)}]{newline}{rest}"


def _indented(text: str) -> str:
    return "\n".join("    " + visible(line) for line in text.split("\n"))


class JsonFormatter(logging.Formatter):
    """One JSON object per record, on one line (a traceback is a string field, never extra lines)."""

    def format(self, record: logging.LogRecord) -> str:
        """The record as one line of JSON."""
        entry: dict[str, Any] = {
            "time": datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds"),
            "level": record.levelname,
            "logger": record.name,
            "message": record.getMessage(),
        }
        for key in TASK_FIELDS:
            value = record.__dict__.get(key)
            if value is not None:
                entry[key] = value
        if record.exc_info:
            entry["exception"] = self.formatException(record.exc_info)
        if record.stack_info:
            entry["stack"] = self.formatStack(record.stack_info)
        return json.dumps(entry, ensure_ascii=False, default=str)
