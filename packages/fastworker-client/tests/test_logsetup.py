"""--log-level and --log-format: text lines for people, one JSON object per line with task fields for shippers."""

from __future__ import annotations

import argparse
import io
import json
import logging
import threading
import warnings
from collections.abc import Iterator

import pytest

from fastworker.client.envflags import apply_env_defaults
from fastworker.client.logsetup import add_logging_flags, configure_logging, log_fields, set_process_log_fields


@pytest.fixture(autouse=True)
def restore_root_logging() -> Iterator[None]:
    root = logging.getLogger()
    handlers, level = list(root.handlers), root.level
    yield
    for handler in list(root.handlers):
        root.removeHandler(handler)
    for handler in handlers:
        root.addHandler(handler)
    root.setLevel(level)
    logging.captureWarnings(False)
    set_process_log_fields(worker_id=None)


def parse(argv: list[str], environ: dict[str, str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser()
    add_logging_flags(parser)
    apply_env_defaults(parser, environ or {})
    return parser.parse_args(argv)


def test_flags_and_env_vars_accept_either_case_and_refuse_other_formats(capsys: pytest.CaptureFixture[str]) -> None:
    args = parse([])
    assert (args.log_level, args.log_format) == ("INFO", "text")
    args = parse(["--log-format", "JSON", "--log-level", "debug"])
    assert (args.log_level, args.log_format) == ("DEBUG", "json")
    assert parse([], {"FASTWORKER_LOG_FORMAT": "json"}).log_format == "json"
    with pytest.raises(SystemExit) as exited:
        parse(["--log-format", "xml"])
    assert exited.value.code == 2
    assert "--log-format" in capsys.readouterr().err


def test_json_is_one_object_per_line_with_task_fields_where_they_apply() -> None:
    out = io.StringIO()
    configure_logging("INFO", "json", stream=out)
    logger = logging.getLogger("fastworker.test")
    set_process_log_fields(worker_id="w-1")
    logger.info("plain %s", "message")
    with log_fields(task_id="t-1", task_name="reports.build", attempt=2):
        logger.warning("inside a task")
    logger.debug("below the level")
    try:
        raise ValueError("multi\nline")
    except ValueError:
        logger.exception("failed")
    lines = out.getvalue().splitlines()
    assert len(lines) == 3  # the traceback stays inside its object: one line per record
    first, second, third = (json.loads(line) for line in lines)
    assert first["message"] == "plain message" and first["level"] == "INFO" and first["logger"] == "fastworker.test"
    assert first["worker_id"] == "w-1" and "task_id" not in first
    assert first["time"].endswith("+00:00")
    assert {k: second[k] for k in ("task_id", "task_name", "attempt", "worker_id")} == {
        "task_id": "t-1",
        "task_name": "reports.build",
        "attempt": 2,
        "worker_id": "w-1",
    }
    assert "task_id" not in third and "ValueError: multi\nline" in third["exception"]


def test_fields_belong_to_the_thread_or_task_that_set_them() -> None:
    out = io.StringIO()
    configure_logging("INFO", "json", stream=out)
    logger = logging.getLogger("fastworker.test")
    ready, done = threading.Event(), threading.Event()

    def other() -> None:
        ready.wait(5)
        logger.info("other thread")
        done.set()

    thread = threading.Thread(target=other)
    thread.start()
    with log_fields(task_id="mine"):
        ready.set()
        done.wait(5)
    thread.join()
    (record,) = (json.loads(line) for line in out.getvalue().splitlines())
    assert "task_id" not in record


def test_text_appends_task_fields_to_the_line() -> None:
    out = io.StringIO()
    configure_logging("INFO", "text", stream=out)
    with log_fields(task_id="t-9", attempt=1):
        logging.getLogger("fastworker.test").info("ran")
    line = out.getvalue().rstrip("\n")
    assert line.endswith("INFO fastworker.test: ran [task_id=t-9 attempt=1]")
    assert "\n" not in line


def test_an_extra_given_with_the_call_wins_over_the_context() -> None:
    out = io.StringIO()
    configure_logging("INFO", "json", stream=out)
    with log_fields(task_id="context"):
        logging.getLogger("x").info("m", extra={"task_id": "explicit"})
    assert json.loads(out.getvalue())["task_id"] == "explicit"


def test_the_level_holds_for_a_logger_that_sets_its_own_lower_level() -> None:
    out = io.StringIO()
    configure_logging("WARNING", stream=out)
    chatty = logging.getLogger("fastworker.test.chatty")
    chatty.setLevel(logging.DEBUG)  # as task code or a library may
    try:
        chatty.debug("debug below the process's level")
        chatty.info("info below the process's level")
        chatty.warning("a warning")
    finally:
        chatty.setLevel(logging.NOTSET)
    lines = out.getvalue().splitlines()
    assert len(lines) == 1 and "a warning" in lines[0]


def test_warnings_are_log_records_in_the_chosen_format() -> None:
    out = io.StringIO()
    configure_logging("INFO", "json", stream=out)
    with warnings.catch_warnings():
        warnings.simplefilter("always")
        warnings.warn("deprecated thing", UserWarning, stacklevel=1)
    (line,) = out.getvalue().splitlines()
    record = json.loads(line)
    assert (record["level"], record["logger"]) == ("WARNING", "py.warnings")
    assert "UserWarning: deprecated thing" in record["message"]
