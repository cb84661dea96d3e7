"""Every flag reads an env var FASTWORKER_<FLAG>; a flag beats its env var, which beats the default."""

from __future__ import annotations

import argparse

import pytest

from fastworker.client.envflags import apply_env_defaults, env_name, name_env_origins


def make_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="tool")
    p.add_argument("--version", action="version", version="tool 1.0")
    p.add_argument("--control-plane", default="tcp://127.0.0.1:5550", help="discovery address")
    p.add_argument("--concurrency", type=int, default=4, help="tasks at once")
    p.add_argument("--timeout", type=float, default=1.5, help="seconds")
    p.add_argument("--verbose", action="store_true", help="say more")
    p.add_argument("--no-color", dest="color", action="store_false", help="plain output")
    p.add_argument("--task-modules", nargs="+", default=[], help="modules")
    p.add_argument("--ports", nargs="*", type=int, default=[], help="ports")
    p.add_argument("--level", choices=["low", "high"], default="low", help="a level")
    p.add_argument("--worker-id", required=True, help="this worker's id")
    p.add_argument("name", nargs="?", help="a positional argument")
    return p


def parse(environ: dict[str, str], argv: list[str] | None = None) -> argparse.Namespace:
    parser = make_parser()
    arguments = ["--worker-id", "w"] if argv is None else argv
    apply_env_defaults(parser, environ=environ, argv=arguments)
    return parser.parse_args(arguments)


@pytest.mark.parametrize(
    ("dest", "variable"),
    [
        ("local_concurrency", "FASTWORKER_LOCAL_CONCURRENCY"),
        ("control_plane", "FASTWORKER_CONTROL_PLANE"),
        ("secret", "FASTWORKER_SECRET"),
        ("no_dashboard", "FASTWORKER_NO_DASHBOARD"),
    ],
)
def test_env_name_is_the_destination_upper_cased_under_the_fastworker_prefix(dest: str, variable: str) -> None:
    assert env_name(dest) == variable


def test_without_env_vars_the_defaults_stand() -> None:
    args = parse({})

    assert args.control_plane == "tcp://127.0.0.1:5550"
    assert args.concurrency == 4
    assert args.timeout == 1.5
    assert args.verbose is False
    assert args.color is True
    assert args.task_modules == []
    assert args.level == "low"


def test_env_vars_replace_the_defaults_converted_by_each_flags_type() -> None:
    args = parse(
        {
            "FASTWORKER_CONTROL_PLANE": "tcp://10.0.0.1:5550",
            "FASTWORKER_CONCURRENCY": "16",
            "FASTWORKER_TIMEOUT": "2.5",
            "FASTWORKER_LEVEL": "high",
        }
    )

    assert args.control_plane == "tcp://10.0.0.1:5550"
    assert args.concurrency == 16
    assert isinstance(args.concurrency, int)
    assert args.timeout == 2.5
    assert args.level == "high"


def test_a_flag_beats_its_env_var() -> None:
    args = parse(
        {"FASTWORKER_CONCURRENCY": "16", "FASTWORKER_CONTROL_PLANE": "tcp://env:1"},
        ["--worker-id", "w", "--concurrency", "2", "--control-plane", "tcp://flag:1"],
    )

    assert args.concurrency == 2
    assert args.control_plane == "tcp://flag:1"


def test_an_env_var_satisfies_a_required_flag() -> None:
    args = parse({"FASTWORKER_WORKER_ID": "from-env"}, [])

    assert args.worker_id == "from-env"


def test_a_required_flag_without_env_var_is_still_required(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as caught:
        parse({}, [])

    assert caught.value.code == 2
    assert "--worker-id" in capsys.readouterr().err


@pytest.mark.parametrize("raw", ["1", "true", "TRUE", "yes", "on", " On "])
def test_true_env_values_switch_a_store_true_flag_on(raw: str) -> None:
    assert parse({"FASTWORKER_VERBOSE": raw}).verbose is True


@pytest.mark.parametrize("raw", ["0", "false", "False", "no", "off", ""])
def test_false_env_values_leave_a_store_true_flag_off(raw: str) -> None:
    assert parse({"FASTWORKER_VERBOSE": raw}).verbose is False


def test_a_true_env_value_for_a_store_false_flag_applies_the_flag() -> None:
    # FASTWORKER_COLOR names the destination; "true" means "as if --no-color was given"
    assert parse({"FASTWORKER_COLOR": "1"}).color is False
    assert parse({"FASTWORKER_COLOR": "0"}).color is True


def test_a_boolean_flag_given_on_the_command_line_beats_a_false_env_var() -> None:
    assert parse({"FASTWORKER_VERBOSE": "false"}, ["--worker-id", "w", "--verbose"]).verbose is True


def test_a_non_boolean_env_value_for_a_switch_is_a_usage_error(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as caught:
        parse({"FASTWORKER_VERBOSE": "maybe"})

    assert caught.value.code == 2
    err = capsys.readouterr().err
    assert "FASTWORKER_VERBOSE" in err
    assert "boolean" in err


@pytest.mark.parametrize(
    "raw", ["a.tasks,b.tasks,c", "a.tasks b.tasks c", "a.tasks, b.tasks  c", " a.tasks ,b.tasks,,c "]
)
def test_a_list_flag_reads_comma_or_space_separated_values(raw: str) -> None:
    assert parse({"FASTWORKER_TASK_MODULES": raw}).task_modules == ["a.tasks", "b.tasks", "c"]


def test_list_items_are_converted_by_the_flags_type() -> None:
    assert parse({"FASTWORKER_PORTS": "5550,5551 5552"}).ports == [5550, 5551, 5552]


def test_a_list_flag_on_the_command_line_replaces_the_env_list() -> None:
    args = parse({"FASTWORKER_TASK_MODULES": "a,b"}, ["--worker-id", "w", "--task-modules", "c"])

    assert args.task_modules == ["c"]


@pytest.mark.parametrize(
    ("variable", "raw", "culprit"),
    [
        ("FASTWORKER_CONCURRENCY", "four", "four"),
        ("FASTWORKER_TIMEOUT", "later", "later"),
        ("FASTWORKER_PORTS", "5550,http", "http"),
    ],
)
def test_an_env_value_the_type_refuses_is_a_usage_error_naming_the_variable_and_value(
    variable: str, raw: str, culprit: str, capsys: pytest.CaptureFixture[str]
) -> None:
    with pytest.raises(SystemExit) as caught:
        parse({variable: raw})

    assert caught.value.code == 2
    err = capsys.readouterr().err
    assert variable in err
    assert repr(culprit) in err


def test_an_env_value_outside_the_flags_choices_is_a_usage_error(capsys: pytest.CaptureFixture[str]) -> None:
    # `--level medium` is refused by argparse; FASTWORKER_LEVEL=medium must be refused too
    with pytest.raises(SystemExit) as caught:
        parse({"FASTWORKER_LEVEL": "medium"})

    assert caught.value.code == 2
    assert "FASTWORKER_LEVEL" in capsys.readouterr().err


def test_env_vars_for_help_version_and_positionals_are_ignored() -> None:
    args = parse({"FASTWORKER_HELP": "1", "FASTWORKER_VERSION": "x", "FASTWORKER_NAME": "from-env"})

    assert args.name is None


def test_unrelated_env_vars_are_ignored() -> None:
    args = parse({"CONCURRENCY": "99", "fastworker_concurrency": "99", "FASTWORKER_UNKNOWN_FLAG": "1"})

    assert args.concurrency == 4


def test_the_help_of_every_flag_names_its_env_var() -> None:
    parser = make_parser()
    apply_env_defaults(parser, environ={})

    text = parser.format_help()

    for variable in (
        "FASTWORKER_CONTROL_PLANE",
        "FASTWORKER_CONCURRENCY",
        "FASTWORKER_TIMEOUT",
        "FASTWORKER_VERBOSE",
        "FASTWORKER_COLOR",
        "FASTWORKER_TASK_MODULES",
        "FASTWORKER_WORKER_ID",
    ):
        assert f"[env {variable}]" in text
    assert "FASTWORKER_HELP" not in text
    assert "FASTWORKER_VERSION" not in text
    assert "FASTWORKER_NAME" not in text


def test_the_os_environment_is_read_when_no_mapping_is_given(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("FASTWORKER_CONCURRENCY", "11")
    parser = make_parser()

    apply_env_defaults(parser)

    assert parser.parse_args(["--worker-id", "w"]).concurrency == 11


@pytest.mark.parametrize(
    ("variable", "value", "said"),
    [
        (
            "FASTWORKER_CONCURRENCY",
            "abc",
            "FASTWORKER_CONCURRENCY='abc' is not a whole number (the value of --concurrency)",
        ),
        ("FASTWORKER_TIMEOUT", "soon", "FASTWORKER_TIMEOUT='soon' is not a number (the value of --timeout)"),
    ],
)
def test_an_env_value_the_flag_cannot_read_names_what_it_should_be(
    variable: str, value: str, said: str, capsys: pytest.CaptureFixture[str]
) -> None:
    with pytest.raises(SystemExit) as caught:
        parse({variable: value})
    assert caught.value.code == 2
    err = capsys.readouterr().err
    assert said in err and "invalid literal" not in err


@pytest.mark.parametrize(
    ("argv", "named"),
    [
        ([], True),  # the value came from the env var
        (["--concurrency", "-3"], False),  # typed on the command line
        (["--concurrency=-3"], False),
        (["--conc", "-3"], False),  # an abbreviation argparse takes for --concurrency
        (["--", "--concurrency"], True),  # after --, not a flag
    ],
)
def test_a_refused_value_names_its_env_var_only_when_it_came_from_there(argv: list[str], named: bool) -> None:
    message = "--concurrency must be 1 or more, got -3"
    said = name_env_origins(make_parser(), argv, message, environ={"FASTWORKER_CONCURRENCY": "-3"})
    assert said == (f"{message} (--concurrency from FASTWORKER_CONCURRENCY)" if named else message)


@pytest.mark.parametrize(
    ("variable", "argv", "dest", "expected"),
    [
        ("FASTWORKER_CONCURRENCY", ["--concurrency", "2"], "concurrency", 2),
        ("FASTWORKER_CONCURRENCY", ["--concurrency=3"], "concurrency", 3),
        ("FASTWORKER_CONCURRENCY", ["--concurr", "5"], "concurrency", 5),  # an abbreviation is the flag too
        ("FASTWORKER_VERBOSE", ["--verbose"], "verbose", True),
        ("FASTWORKER_LEVEL", ["--level", "high"], "level", "high"),
        ("FASTWORKER_TIMEOUT", ["--timeout", "2"], "timeout", 2.0),
    ],
)
def test_a_bad_env_value_is_no_error_when_its_flag_is_given(
    variable: str, argv: list[str], dest: str, expected: object
) -> None:
    # "A flag beats its env var": the variable is not read at all, so a bad value there cannot stop
    # a command line that does not use it.
    assert getattr(parse({variable: "abc"}, ["--worker-id", "w", *argv]), dest) == expected
    with pytest.raises(SystemExit):  # and without the flag, the same value is the usage error it was
        parse({variable: "abc"})


def test_a_repeatable_flag_still_adds_to_its_env_values() -> None:
    parser = argparse.ArgumentParser(prog="tool")
    parser.add_argument("--host", action="extend", type=lambda text: text.split(","), default=[], help="extra names")
    apply_env_defaults(parser, environ={"FASTWORKER_HOST": "a.example"}, argv=["--host", "b.example"])
    assert parser.parse_args(["--host", "b.example"]).host == ["a.example", "b.example"]


def test_an_ambiguous_abbreviation_is_refused_by_argparse_not_blamed_on_an_env_var(
    capsys: pytest.CaptureFixture[str],
) -> None:
    # `--c 3` may mean --concurrency or --control-plane: a bad FASTWORKER_CONCURRENCY was reported instead.
    with pytest.raises(SystemExit):
        parse({"FASTWORKER_CONCURRENCY": "abc"}, ["--worker-id", "w", "--c", "3"])
    err = capsys.readouterr().err
    assert "ambiguous option: --c" in err and "FASTWORKER_CONCURRENCY" not in err
