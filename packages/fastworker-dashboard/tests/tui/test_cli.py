"""The fastworker-top command line: flags, env-var defaults, usage errors."""

from __future__ import annotations

import subprocess
import sys
import types

import pytest

from fastworker.dashboard.tui import cli


def test_defaults_point_at_the_local_control_plane(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("FASTWORKER_CONTROL_PLANE", raising=False)
    monkeypatch.delenv("FASTWORKER_SECRET", raising=False)
    monkeypatch.delenv("FASTWORKER_REFRESH", raising=False)
    args = cli.make_parser().parse_args([])
    assert args.control_plane == "tcp://127.0.0.1:5550"
    assert args.secret is None
    assert args.refresh == 1.0


def test_env_vars_set_defaults_and_flags_beat_them(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("FASTWORKER_CONTROL_PLANE", "tcp://10.1.2.3:5550")
    monkeypatch.setenv("FASTWORKER_SECRET", "s3cret")
    monkeypatch.setenv("FASTWORKER_REFRESH", "0.5")
    args = cli.make_parser().parse_args([])
    assert (args.control_plane, args.secret, args.refresh) == ("tcp://10.1.2.3:5550", "s3cret", 0.5)
    args = cli.make_parser().parse_args(["--control-plane", "tcp://127.0.0.1:9", "--refresh", "2"])
    assert (args.control_plane, args.refresh) == ("tcp://127.0.0.1:9", 2.0)


@pytest.mark.parametrize("value", ["0", "-1", "soon"])
def test_a_bad_refresh_is_a_usage_error(value: str, capsys: pytest.CaptureFixture[str]) -> None:
    assert cli.main(["--refresh", value]) == cli.RET_USAGE
    assert "--refresh" in capsys.readouterr().err


@pytest.mark.parametrize(
    "address", ["tcp://nope:x", "ipc://", "http://127.0.0.1:5550", "tcp://127.0.0.1:0", "tcp://[::1:5550"]
)
def test_a_bad_control_plane_address_is_a_usage_error_naming_it(
    address: str, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    assert cli.main(["--control-plane", address]) == cli.RET_USAGE
    error = capsys.readouterr().err.splitlines()[-1]
    assert error.startswith("fastworker-top: error: argument --control-plane: ") and repr(address) in error
    monkeypatch.setenv("FASTWORKER_CONTROL_PLANE", address)
    assert cli.main([]) == cli.RET_USAGE
    assert f"FASTWORKER_CONTROL_PLANE={address!r}" in capsys.readouterr().err


def test_a_dumb_terminal_is_refused_in_one_line(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(sys.stdout, "isatty", lambda: True)
    monkeypatch.setenv("TERM", "dumb")
    assert cli.main([]) == cli.RET_ERROR
    assert "this terminal (TERM=dumb) cannot show a full-screen view" in capsys.readouterr().err


def test_help_names_the_keys_and_env_vars(capsys: pytest.CaptureFixture[str]) -> None:
    assert cli.main(["--help"]) == cli.RET_OK
    out = capsys.readouterr().out
    assert "FASTWORKER_CONTROL_PLANE" in out and "FASTWORKER_SECRET" in out
    assert "c cancel" in out and "p pause/resume level" in out


def test_version_prints_the_program_and_its_version(capsys: pytest.CaptureFixture[str]) -> None:
    from fastworker.dashboard.version import __version__

    with pytest.raises(SystemExit) as exited:
        cli.make_parser().parse_args(["--version"])

    assert exited.value.code == 0
    assert capsys.readouterr().out.strip() == f"fastworker-top {__version__}"


def test_log_flags_and_their_env_vars_are_taken_as_on_every_command(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("FASTWORKER_LOG_LEVEL", raising=False)
    monkeypatch.delenv("FASTWORKER_LOG_FORMAT", raising=False)
    args = cli.make_parser().parse_args([])
    assert (args.log_level, args.log_format) == ("WARNING", "text")
    monkeypatch.setenv("FASTWORKER_LOG_FORMAT", "json")
    args = cli.make_parser().parse_args(["--log-level", "debug"])
    assert (args.log_level, args.log_format) == ("DEBUG", "json")


def test_log_records_go_to_textuals_log_in_the_format_asked_never_to_the_screen() -> None:
    import logging

    from textual.logging import TextualHandler

    from fastworker.client.logsetup import JsonFormatter, configure_logging

    root = logging.getLogger()
    saved = (list(root.handlers), root.level)
    try:
        configure_logging("DEBUG", "json", handler=TextualHandler())
        (handler,) = root.handlers
        assert isinstance(handler, TextualHandler) and isinstance(handler.formatter, JsonFormatter)
        assert root.level == logging.DEBUG
    finally:
        root.handlers[:], _ = saved[0], root.setLevel(saved[1])


def test_the_command_line_loads_without_textual() -> None:
    # --help, --version and usage errors answer at once: Textual (a third of a second) is loaded
    # only to run the view.
    probe = (
        "import sys; from fastworker.dashboard.tui import cli; code = cli.main(['--help']);"
        " print('textual' in sys.modules, code)"
    )
    out = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, timeout=60, check=True)
    assert out.stdout.splitlines()[-1] == "False 0"


class _Interrupting(types.ModuleType):
    def __getattr__(self, name: str) -> object:
        raise KeyboardInterrupt


def test_ctrl_c_while_the_view_loads_exits_130_without_a_traceback(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(sys.stdout, "isatty", lambda: True)
    monkeypatch.setenv("TERM", "xterm-256color")
    monkeypatch.setitem(sys.modules, "fastworker.dashboard.tui.app", _Interrupting("fastworker.dashboard.tui.app"))
    assert cli.main(["--control-plane", "tcp://127.0.0.1:9"]) == cli.RET_INTERRUPTED == 130
    assert "Traceback" not in capsys.readouterr().err
