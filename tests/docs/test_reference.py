"""docs/reference.md against the code: the real argument parsers, the packages' ``__all__``, task states and wire error codes.

So a flag, subcommand, public name, state or error code that changes fails here until the
reference changes with it. The reference's structure is what makes it checkable:

- one second-level heading per console script (``## fastworker-worker``) and per Python module
  (``## fastworker.client``); ``## Task states`` and ``## Errors``;
- in a script's section, *flag tables* (header's first cell ``flag``): first column the flag
  (```--name VALUE```) or a positional argument (```TASK_ID```), then ``default``, then (for
  parsers that read env vars) ``env var``. A table describes the subcommand named by the nearest
  third-level heading above it (``### fastworker submit``), else the script's own parser. Every
  subcommand without subcommands of its own has such a heading. *Exit code tables* (header
  ``exit code``) list the exit codes;
- in a module's section, *names tables* (header ``name``): first column a public name or
  ``Class.member``, with its call signature where it has one (parameter names are checked).

Argparse has no public API to list a parser's arguments and subcommands, so this test reads
``parser._actions`` (it is a test: when argparse changes, this fails loudly rather than lying).
"""

from __future__ import annotations

import argparse
import dataclasses
import importlib
import inspect
import os
import re
import tomllib
import typing
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest

from fastworker.client import Client, TaskState, envflags, task
from fastworker.client import cli as client_cli
from fastworker.client.cpus import available_cpus
from fastworker.client.options import SUBMIT_OPTION_NAMES
from fastworker.controlplane import cli as controlplane_cli
from fastworker.dashboard.tui import cli as top_cli
from fastworker.dashboard.web import cli as dashboard_cli
from fastworker.protocol.v1 import error_pb2
from fastworker.worker import cli as worker_cli

ROOT = Path(__file__).resolve().parents[2]
REFERENCE = ROOT / "docs" / "reference.md"

ParserFactory = Callable[[], argparse.ArgumentParser]

#: Each console script: its cli module, and its parsers by the words that lead to them
#: (``fastworker-controlplane journal ...`` is a parser of its own).
SCRIPTS: dict[str, tuple[ModuleType, dict[tuple[str, ...], ParserFactory]]] = {
    "fastworker": (client_cli, {(): client_cli.make_parser}),
    "fastworker-controlplane": (
        controlplane_cli,
        {(): controlplane_cli.make_parser, ("journal",): controlplane_cli.make_journal_parser},
    ),
    "fastworker-worker": (worker_cli, {(): worker_cli.make_parser}),
    "fastworker-dashboard": (dashboard_cli, {(): dashboard_cli.make_parser}),
    "fastworker-top": (top_cli, {(): top_cli.make_parser}),
}

#: The modules whose public names the reference lists (``__all__``, else the public classes and
#: functions the module defines).
MODULES = [
    "fastworker.client",
    "fastworker.client.home",
    "fastworker.client.fastapi",
    "fastworker.client.django",
    "fastworker.client.django.testing",
    "fastworker.worker",
    "fastworker.controlplane",
    "fastworker.controlplane.testing",
    "fastworker.controlplane.pytest_plugin",
    "fastworker.controlplane.eager",
    "fastworker.dashboard",
    "fastworker.dashboard.web",
    "fastworker.dashboard.tui",
    "fastworker.protocol",
]

MODULE_TITLE = re.compile(r"fastworker(\.\w+)+")
CODE = re.compile(r"`([^`]+)`")
POSITIONAL = re.compile(r"[A-Z][A-Z0-9_]*")
NONE = "—"


# ------------------------------------------------------------------------------------ the document


@dataclass
class Table:
    """A markdown table and the nearest third-level heading above it."""

    heading: str
    header: list[str]
    rows: list[list[str]]

    def column(self, name: str) -> int | None:
        return self.header.index(name) if name in self.header else None


@dataclass
class Section:
    """The text of one second-level section, its tables and its third-level headings."""

    title: str
    lines: list[str] = field(default_factory=list)
    tables: list[Table] = field(default_factory=list)
    headings: list[str] = field(default_factory=list)

    @property
    def text(self) -> str:
        return "\n".join(self.lines)

    def tables_of(self, first_column: str) -> list[Table]:
        return [t for t in self.tables if t.header and t.header[0] == first_column]


def _cells(line: str) -> list[str]:
    """A table row's cells (``\\|`` is a pipe inside a cell)."""
    inner = line.strip().removeprefix("|").removesuffix("|")
    return [cell.strip().replace("\\|", "|") for cell in re.split(r"(?<!\\)\|", inner)]


def _plain(heading: str) -> str:
    return heading.replace("`", "").strip()


def parse_reference(text: str) -> dict[str, Section]:
    """Second-level sections by title (backticks dropped), each with its tables; fenced code skipped."""
    sections: dict[str, Section] = {}
    current = Section("")
    heading = ""
    lines = text.splitlines()
    fenced = False
    index = 0
    while index < len(lines):
        line = lines[index]
        index += 1
        if line.startswith("```"):
            fenced = not fenced
        if fenced or line.startswith("```"):
            current.lines.append(line)
            continue
        if line.startswith("## "):
            current = sections.setdefault(_plain(line[3:]), Section(_plain(line[3:])))
            heading = ""
            continue
        if line.startswith("### "):
            heading = _plain(line[4:])
            current.headings.append(heading)
            continue
        current.lines.append(line)
        if line.startswith("|") and index < len(lines) and re.match(r"^\|[\s|:-]+\|\s*$", lines[index]):
            header = [cell.lower() for cell in _cells(line)]
            index += 1
            rows = []
            while index < len(lines) and lines[index].startswith("|"):
                current.lines.append(lines[index])
                rows.append(_cells(lines[index]))
                index += 1
            current.tables.append(Table(heading, header, rows))
    return sections


def code_of(cell: str) -> str:
    """The first code span of a cell ("" when it has none)."""
    match = CODE.search(cell)
    return match.group(1) if match else ""


@pytest.fixture(scope="module")
def sections() -> dict[str, Section]:
    return parse_reference(REFERENCE.read_text())


# ------------------------------------------------------------------------------------- the parsers


def walk(parser: argparse.ArgumentParser, path: tuple[str, ...] = ()) -> Iterator[tuple[tuple[str, ...], Any]]:
    """Every parser under this one (itself first), with the subcommand words that lead to it."""
    yield path, parser
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            seen: set[int] = set()
            for name, sub in action.choices.items():
                if id(sub) not in seen:  # aliases map to the same parser
                    seen.add(id(sub))
                    yield from walk(sub, (*path, name))


def has_subcommands(parser: argparse.ArgumentParser) -> bool:
    return any(isinstance(action, argparse._SubParsersAction) for action in parser._actions)


def arguments(parser: argparse.ArgumentParser) -> dict[str, argparse.Action]:
    """A parser's own flags (by their long name) and positional arguments (by their upper-case name)."""
    found: dict[str, argparse.Action] = {}
    for action in parser._actions:
        if isinstance(action, argparse._HelpAction | argparse._VersionAction | argparse._SubParsersAction):
            continue
        if action.option_strings:
            found[max(action.option_strings, key=len)] = action
        else:
            name = action.metavar if isinstance(action.metavar, str) else action.dest
            found[name.upper()] = action
    return found


def parsers_of(script: str) -> dict[tuple[str, ...], argparse.ArgumentParser]:
    """Every parser of a console script by its subcommand words."""
    parsers: dict[tuple[str, ...], argparse.ArgumentParser] = {}
    for prefix, factory in SCRIPTS[script][1].items():
        for path, parser in walk(factory()):
            parsers[(*prefix, *path)] = parser
    return parsers


def common_flags(script: str, path: tuple[str, ...]) -> set[str]:
    """Flags a subcommand inherits from the parser it hangs under (documented once, with that parser)."""
    for prefix, factory in SCRIPTS[script][1].items():
        if path[: len(prefix)] == prefix and len(path) > len(prefix):
            return {key for key in arguments(factory()) if key.startswith("--")}
    return set()


@pytest.fixture(autouse=True)
def no_fastworker_env(monkeypatch: pytest.MonkeyPatch) -> None:
    """Parsers read FASTWORKER_* variables into their defaults: keep the real defaults."""
    for key in [key for key in os.environ if key.startswith("FASTWORKER_")]:
        monkeypatch.delenv(key)


def env_enabled_progs(
    module: ModuleType, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> set[str]:
    """The parsers (by prog) that the script's ``main`` gives env-var defaults: ask ``main`` itself (``--help``)."""
    seen: set[str] = set()
    real = envflags.apply_env_defaults

    def record(parser: argparse.ArgumentParser, environ: Any = None, argv: Any = None) -> None:
        seen.add(parser.prog)
        real(parser, {}, argv)

    monkeypatch.setattr(envflags, "apply_env_defaults", record)
    monkeypatch.setattr(module, "apply_env_defaults", record, raising=False)
    try:
        module.main(["--help"])
    except SystemExit:
        pass
    capsys.readouterr()
    return seen


def default_is_documented(action: argparse.Action, cell: str) -> bool:
    """Whether a default cell shows the flag's real default (none to show for None, off, empty)."""
    if action.required:
        return "required" in cell
    value = action.default
    if value is None or value is False or value in ("", [], argparse.SUPPRESS) or isinstance(value, bool):
        return True
    shown = {str(value)}
    if isinstance(value, float):
        shown.add(f"{value:g}")
    if isinstance(value, int):
        shown.add(f"{value:,}")
        if value == available_cpus() and "usable CPU" in cell:
            return True  # a default computed from this machine
    return any(f"`{text}`" in cell for text in shown)


# ----------------------------------------------------------------------------------- script tests


def test_the_scripts_are_the_distributions_console_scripts() -> None:
    declared: dict[str, str] = {}
    for pyproject in sorted(ROOT.glob("packages/*/pyproject.toml")):
        declared.update(tomllib.loads(pyproject.read_text())["project"].get("scripts", {}))
    assert sorted(declared) == sorted(SCRIPTS)
    # `fastworker` starts through a launcher that says which extra to install when rich is missing.
    launchers = {"fastworker": "fastworker.client.command"}
    for script, target in declared.items():
        assert target == f"{launchers.get(script, SCRIPTS[script][0].__name__)}:main", script


def test_the_reference_never_points_at_texts_outside_the_repository() -> None:
    assert not re.search(r"\bSPEC\b", REFERENCE.read_text()), "the reference must stand on its own"


@pytest.mark.parametrize("script", sorted(SCRIPTS))
def test_every_subcommand_and_flag_is_documented_and_nothing_else(
    script: str,
    sections: dict[str, Section],
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    assert script in sections, f"docs/reference.md has no '## {script}' section"
    section = sections[script]
    module = SCRIPTS[script][0]
    env_progs = env_enabled_progs(module, monkeypatch, capsys)
    parsers = parsers_of(script)

    documented_paths = {
        tuple(heading.split()[1:]) for heading in section.headings if heading.split()[:1] == [script] and " " in heading
    }
    stale = documented_paths - set(parsers)
    assert not stale, f"{script}: the reference documents subcommands that do not exist: {sorted(stale)}"
    for path, parser in parsers.items():
        if path and not has_subcommands(parser):
            assert path in documented_paths, f"{script}: no '### {script} {' '.join(path)}' heading"

    documented: dict[tuple[str, ...], set[str]] = {path: set() for path in parsers}
    for table in section.tables_of("flag"):
        words = table.heading.split()
        path = tuple(words[1:]) if words[:1] == [script] else ()
        parser = parsers[path]
        real = arguments(parser)
        env_column = table.column("env var")
        default_column = table.column("default")
        where = f"{script} {' '.join(path)}".strip()
        if parser.prog in env_progs:
            assert env_column is not None, f"{where}: its flags read env vars, so its table needs an 'env var' column"
        for row in table.rows:
            key = code_of(row[0]).split()[0] if code_of(row[0]) else ""
            assert key.startswith("--") or POSITIONAL.fullmatch(key), f"{where}: cannot read the flag in {row[0]!r}"
            assert key in real, f"{where}: the reference lists {key}, which the parser does not have"
            action = real[key]
            documented[path].add(key)
            if default_column is not None and key.startswith("--"):
                assert default_is_documented(action, row[default_column]), (
                    f"{where} {key}: default {action.default!r} is not shown in {row[default_column]!r}"
                )
            if env_column is None:
                continue
            env_cell = row[env_column]
            if parser.prog in env_progs and key.startswith("--") and action.dest not in envflags.WITHOUT_ENV:
                assert code_of(env_cell) == envflags.env_name(action.dest), f"{where} {key}: env var {env_cell!r}"
            else:
                assert env_cell == NONE, f"{where} {key} reads no env var, but the reference says {env_cell!r}"

    for path, parser in parsers.items():
        expected = set(arguments(parser)) - common_flags(script, path)
        missing = expected - documented[path]
        where = f"{script} {' '.join(path)}".strip()
        assert not missing, f"{where}: not in docs/reference.md: {sorted(missing)}"


def test_one_environment_variable_name_per_option_across_every_script(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """A flag spelt alike reads one env var everywhere, ``FASTWORKER_`` and its name; no env var serves two flags."""
    env_of: dict[str, set[str]] = {}
    flags_of: dict[str, set[str]] = {}
    for script, (module, _) in SCRIPTS.items():
        env_progs = env_enabled_progs(module, monkeypatch, capsys)
        for parser in parsers_of(script).values():
            if parser.prog not in env_progs:
                continue
            for action in parser._actions:
                if action.dest in envflags.WITHOUT_ENV:
                    continue
                for flag in (option for option in action.option_strings if option.startswith("--")):
                    name = envflags.env_name(action.dest)
                    assert name == "FASTWORKER_" + flag[2:].replace("-", "_").upper(), f"{parser.prog} {flag}: {name}"
                    env_of.setdefault(flag, set()).add(name)
                    flags_of.setdefault(name, set()).add(flag)
    assert len(env_of) > 40  # every script's flags were read
    assert not {flag: names for flag, names in env_of.items() if len(names) > 1}
    assert not {name: flags for name, flags in flags_of.items() if len(flags) > 1}


@pytest.mark.parametrize("script", sorted(SCRIPTS))
def test_every_script_takes_version_as_the_reference_says(script: str) -> None:
    parser = SCRIPTS[script][1][()]()
    assert any(isinstance(action, argparse._VersionAction) for action in parser._actions), script


@pytest.mark.parametrize("script", sorted(SCRIPTS))
def test_every_subcommand_has_a_description_and_every_argument_help(script: str) -> None:
    """``--help`` must say what a subcommand does and what each argument means, on every script."""
    missing = []
    for path, parser in parsers_of(script).items():
        words = " ".join((script, *path))
        if not parser.description:
            missing.append(f"{words}: no description")
        for action in parser._actions:
            if not isinstance(action, argparse._SubParsersAction) and not action.help:
                missing.append(f"{words}: {max(action.option_strings, key=len, default=action.dest)} has no help")
    assert not missing


@pytest.mark.parametrize("script", sorted(SCRIPTS))
def test_every_exit_code_is_documented(script: str, sections: dict[str, Section]) -> None:
    module = SCRIPTS[script][0]
    codes = {value for name, value in vars(module).items() if name.startswith("RET_") and isinstance(value, int)}
    documented = {
        int(code_of(row[0]))
        for table in sections[script].tables_of("exit code")
        for row in table.rows
        if code_of(row[0]).isdigit()
    }
    assert codes, f"{module.__name__} defines no RET_* exit codes"
    assert codes <= documented, f"{script}: exit codes {sorted(codes - documented)} are not in docs/reference.md"


def test_reading_the_parsers_sees_what_users_see() -> None:
    """The walk above is only as good as its reading of argparse: compare with the rendered help."""
    parsers = parsers_of("fastworker")
    assert ("submit",) in parsers and ("list",) in parsers
    for path, parser in parsers.items():
        text = parser.format_help()
        for key in arguments(parser):
            assert key in text or key.lower() in text, f"fastworker {' '.join(path)}: {key} not in --help"


# -------------------------------------------------------------------------------------- API tests


def public_names(module: ModuleType) -> list[str]:
    names = getattr(module, "__all__", None)
    if names is not None:
        return list(names)
    return [
        name
        for name, value in vars(module).items()
        if not name.startswith("_")
        and (inspect.isclass(value) or inspect.isfunction(value))
        and value.__module__ == module.__name__
    ]


def resolve(module: ModuleType, dotted: str) -> Any:
    """The object a dotted name in the reference means; a dataclass field or annotated attribute counts."""
    obj: Any = module
    parts = dotted.split(".")
    for index, part in enumerate(parts):
        if hasattr(obj, part):
            obj = getattr(obj, part)
            continue
        last = index == len(parts) - 1
        if last and inspect.isclass(obj):
            if dataclasses.is_dataclass(obj) and part in {f.name for f in dataclasses.fields(obj)}:
                return None
            if any(part in getattr(klass, "__annotations__", {}) for klass in inspect.getmro(obj)):
                return None
        raise AttributeError(f"{module.__name__}.{dotted}: no {part!r}")
    return obj


def parameters_of(signature: str) -> list[str]:
    """Parameter names of a documented call, ``f(a, /, *args, b=(1, 2), **kw) -> T`` -> ``[a, args, b, kw]``."""
    depth = 0
    quote = ""
    pieces: list[str] = []
    piece = ""
    for char in signature[signature.index("(") + 1 :]:
        if quote:
            quote = "" if char == quote else quote
        elif char in "'\"":
            quote = char
        elif char in "([{":
            depth += 1
        elif char in ")]}":
            if depth == 0:
                pieces.append(piece)
                break
            depth -= 1
        if char == "," and depth == 0 and not quote:
            pieces.append(piece)
            piece = ""
        else:
            piece += char
    names = []
    for text in (p.strip() for p in pieces):
        match = re.match(r"\*{0,2}([A-Za-z_]\w*)", text)
        if match:
            names.append(match.group(1))
    return names


def real_parameters(obj: Any, *, expand: bool = True) -> list[str]:
    """The parameter names of a callable, ``self`` dropped, and ``**options: Unpack[SomeTypedDict]`` as its keys.

    So the reference can show typed keyword options (``send(name, ..., *, priority=None, ...)``) by
    name, or (``expand=False``) as ``**options``, listed once in the options table.
    """
    try:
        signature = inspect.signature(obj, eval_str=True)
    except NameError:  # an annotation only importable while type checking
        signature = inspect.signature(obj)
    names: list[str] = []
    for parameter in signature.parameters.values():
        unpacked = typing.get_args(parameter.annotation) if parameter.kind is parameter.VAR_KEYWORD else ()
        if expand and typing.get_origin(parameter.annotation) is typing.Unpack and typing.is_typeddict(unpacked[0]):
            names += list(unpacked[0].__annotations__)
        else:
            names.append(parameter.name)
    return names[1:] if names[:1] in (["self"], ["cls"]) else names


def api_rows(section: Section) -> Iterator[str]:
    for table in section.tables_of("name"):
        for row in table.rows:
            yield code_of(row[0]).removeprefix("@")


def test_every_module_has_a_section_and_every_module_section_is_known(sections: dict[str, Section]) -> None:
    titled = {title for title in sections if MODULE_TITLE.fullmatch(title)}
    assert titled == set(MODULES), f"module sections {sorted(titled ^ set(MODULES))} differ from MODULES"


@pytest.mark.parametrize("module_name", MODULES)
def test_every_public_name_is_documented_and_every_documented_name_exists(
    module_name: str, sections: dict[str, Section]
) -> None:
    module = importlib.import_module(module_name)
    section = sections[module_name]
    rows = list(api_rows(section))
    assert rows, f"## {module_name} has no names table"
    documented = set()
    for row in rows:
        match = re.match(r"[A-Za-z_][\w.]*", row)
        assert match, f"{module_name}: cannot read the name in {row!r}"
        dotted = match.group(0)
        documented.add(dotted.split(".")[0])
        obj = resolve(module, dotted)
        rest = row[match.end() :]
        if rest.startswith("("):
            assert parameters_of(rest) in (real_parameters(obj), real_parameters(obj, expand=False)), (
                f"{module_name}.{dotted}: documented parameters {parameters_of(rest)}, real ones {real_parameters(obj)}"
            )
    missing = set(public_names(module)) - documented
    assert not missing, f"{module_name}: public names not in docs/reference.md: {sorted(missing)}"


def test_the_option_tables_list_every_option(sections: dict[str, Section]) -> None:
    """The submission options (``Client.send``'s keyword options) and ``@task``'s options each have a table."""
    tables = {t.heading: t for t in sections["fastworker.client"].tables_of("option")}
    submission = {code_of(row[0]) for row in tables["Clients"].rows}
    assert submission == set(real_parameters(Client.send)) - {"name", "args", "kwargs"}
    decorator = {code_of(row[0]) for row in tables["Tasks"].rows}
    assert decorator == set(real_parameters(task)) - {"fn"}


def test_the_clients_guide_lists_every_reserved_option_of_delay_and_says_timeout_is_not_one() -> None:
    """docs/clients.md's sentence naming the keyword options of by-name ``delay`` is the code's set, whole.

    A task parameter named like an option is taken as the option: a name left out of that list
    (``queue`` was) is one a reader passes to the task and silently loses.
    """
    text = " ".join((ROOT / "docs" / "clients.md").read_text().split())
    found = re.search(r"The reserved keyword-only options of `delay` and `submit` are (?P<names>[^;(]+)", text)
    assert found, "docs/clients.md no longer lists the reserved options of delay"
    assert set(CODE.findall(found.group("names"))) == SUBMIT_OPTION_NAMES
    assert "timeout" not in SUBMIT_OPTION_NAMES  # a task argument for delay: the guide says so
    assert "given to `delay`, which does not wait, it is a task argument" in text


def test_parameters_are_read_as_written() -> None:
    assert parameters_of("f(a, /, *args, b=(1, 2), c='x, y', **kw) -> T") == ["a", "args", "b", "c", "kw"]
    assert parameters_of("g() -> None") == []


# ---------------------------------------------------------------------------------- states, errors


def test_every_task_state_is_documented(sections: dict[str, Section]) -> None:
    tables = sections["Task states"].tables_of("state")
    documented = {code_of(row[0]) for table in tables for row in table.rows}
    assert documented == {state.value for state in TaskState}


def client_error_for(code: error_pb2.ErrorCode.ValueType) -> str:
    """The exception class the client raises for an Error reply with this code (the requester is private)."""
    for name in ("fastworker.client._requester", "fastworker.client.requester"):
        try:
            requester = importlib.import_module(name)
        except ModuleNotFoundError:
            continue
        return type(requester.error_from_wire(error_pb2.Error(code=code, message="m"), "task", "id")).__name__
    raise AssertionError("cannot find the client's error_from_wire")


def test_every_wire_error_code_is_documented_with_the_exception_the_client_raises(
    sections: dict[str, Section],
) -> None:
    rows = {code_of(row[0]): row for table in sections["Errors"].tables_of("code") for row in table.rows}
    assert set(rows) == set(error_pb2.ErrorCode.keys())
    for name, value in error_pb2.ErrorCode.items():
        raised = client_error_for(value)
        assert f"`{raised}`" in rows[name][-1], (
            f"{name}: the client raises {raised}, the reference says {rows[name][-1]}"
        )
