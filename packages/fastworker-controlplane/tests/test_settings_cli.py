"""Control-plane settings validate themselves; the command line reads flags, then env vars, then defaults."""

from __future__ import annotations

import logging
import os
import socket
import sys
from collections.abc import Iterator
from typing import Any

import pytest

from fastworker.client.envflags import apply_env_defaults
from fastworker.controlplane import cli
from fastworker.controlplane.settings import (
    DEFAULT_CLIENT_ADDRESS,
    DEFAULT_DASHBOARD_ADDRESS,
    DEFAULT_DISCOVERY_ADDRESS,
    DEFAULT_DISPATCH_ADDRESS,
    ControlPlaneSettings,
)


@pytest.fixture(autouse=True)
def clean_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    """No FASTWORKER_* variable of the machine running the tests leaks into them."""
    for name in list(os.environ):
        if name.startswith("FASTWORKER_"):
            monkeypatch.delenv(name)


@pytest.fixture
def restore_process_state(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """cli.main configures the root logger and edits sys.path: undo both."""
    root = logging.getLogger()
    handlers, level = root.handlers[:], root.level
    monkeypatch.setattr(sys, "path", sys.path[:])
    yield
    for handler in root.handlers:
        if handler not in handlers:
            root.removeHandler(handler)
    for handler in handlers:
        if handler not in root.handlers:
            root.addHandler(handler)
    root.setLevel(level)


# ---------------------------------------------------------------------------------------------- settings


def test_default_settings_follow_the_spec() -> None:
    settings = ControlPlaneSettings()

    assert settings.discovery_address == DEFAULT_DISCOVERY_ADDRESS == "tcp://127.0.0.1:5550"
    assert settings.client_address == DEFAULT_CLIENT_ADDRESS == "tcp://127.0.0.1:5551"
    assert settings.dispatch_address == DEFAULT_DISPATCH_ADDRESS == "tcp://127.0.0.1:5552"
    assert settings.dashboard_address == DEFAULT_DASHBOARD_ADDRESS == "127.0.0.1:8080"
    assert settings.local_concurrency == (os.cpu_count() or 1)
    assert settings.result_cache_size == 10_000
    assert settings.result_ttl == 3600.0
    assert settings.max_queue == 0
    assert settings.heartbeat_interval == 1.0
    assert settings.heartbeat_timeout == 5.0
    assert not settings.allow_pickle


def test_settings_are_frozen() -> None:
    settings = ControlPlaneSettings()

    with pytest.raises(AttributeError):
        settings.max_queue = 5  # type: ignore[misc]


@pytest.mark.parametrize(
    ("fields", "message"),
    [
        ({"local_concurrency": -1}, "--local-concurrency"),
        ({"result_cache_size": 0}, "--result-cache-size"),
        ({"result_ttl": 0.0}, "--result-ttl"),
        ({"max_queue": -1}, "--max-queue"),
        ({"heartbeat_interval": 0.0}, "--heartbeat-interval"),
        ({"heartbeat_interval": 5.0, "heartbeat_timeout": 5.0}, "--heartbeat-timeout"),
        ({"drain_timeout": -0.5}, "--drain-timeout"),
        ({"announce_interval": 0.0}, "--announce-interval"),
        ({"max_frame_size": 1023}, "--max-frame-size"),
        ({"max_frame_size": 10**20}, "--max-frame-size must be 1024..1,073,741,824 bytes"),  # not an OverflowError
        ({"local_concurrency": 10**11}, "--local-concurrency must be 0..10,000"),  # it allocated until killed
        ({"local_concurrency": -1}, "got -1"),  # and the value
        ({"discovery_address": "foo://bar"}, "--discovery-address: unsupported address 'foo://bar'"),
        ({"client_address": "tcp://127.0.0.1:99999"}, "--client-address: .* port out of range"),
        ({"dispatch_address": "tcp://nohost"}, "--dispatch-address: .* needs HOST:PORT"),
        ({"dashboard_address": "127.0.0.1:abc"}, "--dashboard-address: dashboard address '127.0.0.1:abc'"),
        ({"metrics_address": "nope"}, "--metrics-address: metrics address 'nope'"),
        (
            {"ready_file": "/nonexistent-fw/dir/r"},
            "--ready-file: cannot write /nonexistent-fw/dir/r: its folder /nonexistent-fw/dir does not exist",
        ),
        ({"local_pool": "fork"}, "--local-pool must be one of processes, threads, not 'fork'"),
        (
            {"client_address": "tls+tcp://127.0.0.1:7000"},
            "--client-address tls\\+tcp://127.0.0.1:7000 listens with TLS: give --tls-cert and --tls-key",
        ),
        (
            {"advertise_host": "127.0.0.1:999"},
            "--advertise-host '127.0.0.1:999': a host name or IP address, without a port",
        ),
        ({"advertise_host": "a b"}, "--advertise-host 'a b': not a host name or IP address"),
        ({"advertise_host": "host/path"}, "--advertise-host 'host/path'"),
    ],
)
def test_invalid_settings_are_refused_naming_the_flag(fields: dict[str, Any], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        ControlPlaneSettings(**fields)


@pytest.mark.parametrize(
    ("given", "kept"), [("[::1]", "::1"), ("::1", "::1"), ("10.0.0.7", "10.0.0.7"), ("cp-0.fw.svc", "cp-0.fw.svc")]
)
def test_an_ipv6_advertise_host_may_come_in_brackets_and_is_kept_bare(given: str, kept: str) -> None:
    # (The bracketed form was kept as given, and every peer dialed tcp://[[::1]]:PORT for ever.)
    assert ControlPlaneSettings(advertise_host=given).advertise_host == kept


def test_boundary_settings_are_accepted() -> None:
    settings = ControlPlaneSettings(
        local_concurrency=0, result_cache_size=1, max_queue=0, drain_timeout=0.0, max_frame_size=1024
    )

    assert settings.local_concurrency == 0


# ---------------------------------------------------------------------------------------- flags and env


def test_without_flags_or_env_vars_the_parser_gives_the_defaults() -> None:
    parser = cli.make_parser()
    apply_env_defaults(parser, environ={})

    args = parser.parse_args([])

    assert args.client_address == DEFAULT_CLIENT_ADDRESS
    assert args.local_concurrency is None  # resolved to the CPU count by main
    assert args.result_ttl == 3600.0
    assert args.task_modules == []
    assert args.no_dashboard is False
    assert args.log_level == "INFO"


def test_an_env_var_beats_the_default() -> None:
    parser = cli.make_parser()
    apply_env_defaults(
        parser,
        environ={
            "FASTWORKER_CLIENT_ADDRESS": "tcp://127.0.0.1:6001",
            "FASTWORKER_LOCAL_CONCURRENCY": "3",
            "FASTWORKER_RESULT_TTL": "2.5",
            "FASTWORKER_NO_DASHBOARD": "true",
            "FASTWORKER_TASK_MODULES": "app.tasks, other.tasks",
            "FASTWORKER_LOG_LEVEL": "debug",
        },
    )

    args = parser.parse_args([])

    assert args.client_address == "tcp://127.0.0.1:6001"
    assert args.local_concurrency == 3
    assert args.result_ttl == 2.5
    assert args.no_dashboard is True
    assert args.task_modules == ["app.tasks", "other.tasks"]
    assert args.log_level == "DEBUG"


def test_a_flag_beats_its_env_var() -> None:
    parser = cli.make_parser()
    apply_env_defaults(
        parser,
        environ={
            "FASTWORKER_CLIENT_ADDRESS": "tcp://127.0.0.1:6001",
            "FASTWORKER_LOCAL_CONCURRENCY": "3",
            "FASTWORKER_TASK_MODULES": "from.env",
        },
    )

    args = parser.parse_args(
        ["--client-address", "tcp://127.0.0.1:7001", "--local-concurrency", "8", "--task-modules", "from.flag"]
    )

    assert args.client_address == "tcp://127.0.0.1:7001"
    assert args.local_concurrency == 8
    assert args.task_modules == ["from.flag"]


@pytest.mark.parametrize(
    ("name", "value"),
    [
        ("FASTWORKER_LOCAL_CONCURRENCY", "many"),
        ("FASTWORKER_RESULT_TTL", "-1"),
        ("FASTWORKER_HEARTBEAT_INTERVAL", "soon"),
        ("FASTWORKER_NO_DASHBOARD", "maybe"),
        ("FASTWORKER_MAX_QUEUE", "1.5"),
    ],
)
def test_an_env_var_the_flag_would_refuse_is_a_usage_error(
    name: str, value: str, capsys: pytest.CaptureFixture[str]
) -> None:
    parser = cli.make_parser()

    with pytest.raises(SystemExit) as caught:
        apply_env_defaults(parser, environ={name: value})

    assert caught.value.code == 2
    assert name in capsys.readouterr().err


@pytest.mark.parametrize(
    ("name", "value", "flag"),
    [
        ("FASTWORKER_MAX_QUEUE", "-3", "--max-queue"),
        ("FASTWORKER_LOCAL_CONCURRENCY", "99999999999", "--local-concurrency"),
        ("FASTWORKER_HEARTBEAT_TIMEOUT", "0.5", "--heartbeat-timeout"),
        ("FASTWORKER_DISCOVERY_ADDRESS", "tcp://nope:x", "--discovery-address"),
    ],
)
@pytest.mark.usefixtures("restore_process_state")
def test_a_value_refused_after_parsing_names_the_env_var_it_came_from(
    name: str, value: str, flag: str, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    # (a range or two flags together is checked once the flags are parsed, naming the flag)
    monkeypatch.setenv(name, value)
    with pytest.raises(SystemExit) as caught:
        cli.main(["--no-dashboard"])
    assert caught.value.code == 2
    assert f"({flag} from {name})" in capsys.readouterr().err
    # given on the command line instead, the flag is the origin: no variable is named
    monkeypatch.delenv(name)
    with pytest.raises(SystemExit):
        cli.main(["--no-dashboard", f"{flag}={value}"])
    assert name not in capsys.readouterr().err


def test_an_env_var_outside_the_flags_choices_is_a_usage_error(capsys: pytest.CaptureFixture[str]) -> None:
    # Given `--log-level bogus` is refused by the parser (exit 2)...
    with pytest.raises(SystemExit) as flag:
        cli.make_parser().parse_args(["--log-level", "bogus"])
    assert flag.value.code == 2
    capsys.readouterr()

    # ...then FASTWORKER_LOG_LEVEL=bogus is refused the same way
    parser = cli.make_parser()
    with pytest.raises(SystemExit) as env:
        apply_env_defaults(parser, environ={"FASTWORKER_LOG_LEVEL": "bogus"})
        parser.parse_args([])
    assert env.value.code == 2
    assert "FASTWORKER_LOG_LEVEL" in capsys.readouterr().err


def test_every_flags_help_names_its_env_var() -> None:
    parser = cli.make_parser()
    apply_env_defaults(parser, environ={})

    text = parser.format_help()

    for variable in (
        "FASTWORKER_TASK_MODULES",
        "FASTWORKER_DISCOVERY_ADDRESS",
        "FASTWORKER_CLIENT_ADDRESS",
        "FASTWORKER_DISPATCH_ADDRESS",
        "FASTWORKER_LOCAL_CONCURRENCY",
        "FASTWORKER_MAX_QUEUE",
        "FASTWORKER_SECRET",
        "FASTWORKER_READY_FILE",
        "FASTWORKER_NO_DASHBOARD",
    ):
        assert variable in text


# ------------------------------------------------------------------------------------------------- main


@pytest.mark.parametrize(
    ("flags", "says"),
    [
        (["--tls-cert", "cert.pem"], "both a certificate and its key"),
        (["--tls-key", "key.pem"], "both a certificate and its key"),
        (["--tls-ca", "ca.pem"], "--tls-ca needs --tls-cert"),
        (["--tls-cert", "missing.pem", "--tls-key", "missing.key"], "not a readable file"),
    ],
)
@pytest.mark.usefixtures("restore_process_state")
def test_main_refuses_incomplete_or_missing_tls_files_with_a_usage_error(
    flags: list[str], says: str, capsys: pytest.CaptureFixture[str], tmp_path: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    with pytest.raises(SystemExit) as caught:
        cli.main(flags)

    assert caught.value.code == 2
    assert says in capsys.readouterr().err


def test_the_secret_comes_from_its_env_var_and_never_shows_in_the_settings_repr() -> None:
    parser = cli.make_parser()
    apply_env_defaults(parser, {"FASTWORKER_SECRET": "s3cret"})
    args = parser.parse_args([])
    assert args.secret == "s3cret"
    settings = ControlPlaneSettings(secret=args.secret)
    assert settings.secret == "s3cret" and "s3cret" not in repr(settings)


@pytest.mark.usefixtures("restore_process_state")
def test_main_exits_1_when_a_task_module_cannot_be_imported(capsys: pytest.CaptureFixture[str]) -> None:
    code = cli.main(["--task-modules", "fastworker_no_such_module_for_tests", "--no-dashboard"])

    assert code == cli.RET_ERROR == 1
    assert "fastworker_no_such_module_for_tests" in capsys.readouterr().err


@pytest.mark.parametrize(
    "flags",
    [
        ["--local-concurrency", "-1"],
        ["--result-cache-size", "0"],
        ["--max-queue", "-3"],
        ["--heartbeat-interval", "5", "--heartbeat-timeout", "2"],
        ["--drain-timeout", "-1"],
        ["--drain-timeout", "nan"],
        ["--result-ttl", "abc"],
        ["--max-frame-size", "10"],
        ["--max-frame-size", "99999999999999999999"],
        ["--local-concurrency", "99999999999"],
        ["--discovery-address", "foo://bar"],
        ["--dashboard-address", "127.0.0.1:abc"],
        ["--advertise-host", "127.0.0.1:5551"],
        ["--dispatch-address", "tls+tcp://127.0.0.1:0"],
    ],
)
@pytest.mark.usefixtures("restore_process_state")
def test_main_turns_invalid_settings_into_a_usage_error(flags: list[str], capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as caught:
        cli.main(flags)

    assert caught.value.code == 2
    assert "error:" in capsys.readouterr().err


@pytest.mark.parametrize(
    "flag", ["--result-ttl", "--heartbeat-interval", "--heartbeat-timeout", "--idle-connection-timeout"]
)
@pytest.mark.parametrize("value", ["-1", "0"])
def test_a_duration_that_must_be_positive_is_refused_with_the_same_bound_whatever_the_value(
    flag: str, value: str, capsys: pytest.CaptureFixture[str]
) -> None:
    # -1 was told "0 or more", then 0 "must be positive"
    with pytest.raises(SystemExit) as caught:
        cli.make_parser().parse_args([flag, value])
    assert caught.value.code == 2
    assert f"argument {flag}: expected a number of seconds above 0, got '{value}'" in capsys.readouterr().err


@pytest.mark.usefixtures("restore_process_state")
def test_main_turns_an_invalid_env_setting_into_a_usage_error(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("FASTWORKER_LOCAL_CONCURRENCY", "-2")

    with pytest.raises(SystemExit) as caught:
        cli.main([])

    assert caught.value.code == 2
    assert "--local-concurrency" in capsys.readouterr().err


@pytest.mark.usefixtures("restore_process_state")
def test_main_with_an_invalid_log_level_env_var_is_a_usage_error_not_a_crash(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    # Given FASTWORKER_LOG_LEVEL holds a value --log-level refuses
    monkeypatch.setenv("FASTWORKER_LOG_LEVEL", "bogus")

    # Then main exits with the usage-error code (2), like `--log-level bogus`, instead of raising
    with pytest.raises(SystemExit) as caught:
        cli.main(["--task-modules", "fastworker_no_such_module_for_tests"])

    assert caught.value.code == 2
    assert "FASTWORKER_LOG_LEVEL" in capsys.readouterr().err


@pytest.mark.usefixtures("restore_process_state")
def test_main_version_prints_the_version(capsys: pytest.CaptureFixture[str]) -> None:
    from fastworker.controlplane.version import __version__

    with pytest.raises(SystemExit) as caught:
        cli.main(["--version"])

    assert caught.value.code == 0
    assert __version__ in capsys.readouterr().out


@pytest.mark.usefixtures("restore_process_state")
@pytest.mark.parametrize("flag", ["--client-address", "--metrics-address"])  # the dashboard's: tests/integration
def test_a_listener_address_in_use_stops_the_start_naming_the_flag_and_the_address(
    flag: str, capsys: pytest.CaptureFixture[str]
) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        address = f"tcp://127.0.0.1:{port}" if flag == "--client-address" else f"127.0.0.1:{port}"
        flags = ["--local-concurrency", "0", "--discovery-address", "tcp://127.0.0.1:0"]
        flags += ["--client-address", "tcp://127.0.0.1:0", "--dispatch-address", "tcp://127.0.0.1:0"]
        flags += ["--metrics-address", "127.0.0.1:0", "--dashboard-address", "127.0.0.1:0", flag, address]
        code = cli.main(flags)
    assert code == cli.RET_ERROR
    assert f"cannot start: cannot listen on the {flag} {address}" in capsys.readouterr().err


def test_seconds_flags_name_a_bad_value() -> None:
    parser = cli.make_parser()
    with pytest.raises(SystemExit):
        parser.parse_args(["--result-ttl", "abc"])
    assert "_positive_float" not in parser.format_help()
