"""Gives every command-line flag an environment variable: ``--flag-name`` reads ``FASTWORKER_FLAG_NAME``.

Precedence is flag, then env var, then default (docs/reference.md). Shared by every FastWorker daemon and CLI.

Also the one place that reads a parser's arguments and subcommands (argparse has no public way to),
for this module, the ``fastworker`` CLI and :mod:`fastworker.client.completion`.
"""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Mapping, Sequence
from typing import NamedTuple

_TRUE = {"1", "true", "yes", "on"}
_FALSE = {"0", "false", "no", "off", ""}

#: Destinations of the flags that read no env var: they act at once (print and exit) rather than set a value.
WITHOUT_ENV = frozenset({"help", "version", "completion"})


def env_true(text: str) -> bool:
    """True for the words an on/off env var takes as on (``1``, ``true``, ``yes``, ``on``; any case)."""
    return text.strip().lower() in _TRUE


def env_name(dest: str) -> str:
    """The env var for an argparse destination, e.g. ``local_concurrency`` -> ``FASTWORKER_LOCAL_CONCURRENCY``."""
    return "FASTWORKER_" + dest.upper()


def apply_env_defaults(
    parser: argparse.ArgumentParser,
    environ: Mapping[str, str] | None = None,
    argv: Sequence[str] | None = None,
) -> None:
    """Replace each flag's default with its env var's value, converted by the flag's type.

    A flag given on the command line (``argv``, default ``sys.argv[1:]``, before or after a
    subcommand) beats its variable, which is then not read at all: a bad value there is no error.
    A repeatable flag (``--dashboard-host``) adds to its variable's values instead.

    Raises:
        SystemExit: an env var holds a value the flag would refuse (argparse's usage error, exit 2).
    """
    env = os.environ if environ is None else environ
    flags = _flags(parser)
    given = _given_flags(parser, sys.argv[1:] if argv is None else argv)
    for action in flags:
        name = env_name(action.dest)
        if name not in env:
            continue
        if given & set(action.option_strings) and not _repeatable(action):
            continue  # the flag's value wins; argparse sets it
        raw = env[name]
        if action.nargs == 0 and isinstance(action.const, bool):  # store_true / store_false
            lowered = raw.strip().lower()
            if lowered not in _TRUE | _FALSE:
                parser.error(f"{name}={raw!r} is not a boolean (use 1/0, true/false)")
            value: object = (lowered in _TRUE) == action.const
        elif action.nargs in ("+", "*"):
            parts = raw.replace(",", " ").split()
            value = [_convert(parser, action, name, part) for part in parts]
        else:
            value = _convert(parser, action, name, raw)
        action.default = value
        action.required = False
    for action in flags:
        if action.help:
            action.help = f"{action.help} [env {env_name(action.dest)}]"


def name_env_origins(
    parser: argparse.ArgumentParser,
    argv: Sequence[str],
    message: str,
    environ: Mapping[str, str] | None = None,
    *,
    about: Sequence[str] | None = None,
) -> str:
    """``message`` (a refused setting, naming flags) saying which of those flags' values came from env vars.

    A value checked after parsing (a range, two flags together) is refused naming its flag; when the
    operator set its env var instead, the message names the variable too: ``... (from FASTWORKER_X)``.
    ``about``: the destinations the message is about, for one that names a value (a file's path)
    rather than its flag.
    """
    env = os.environ if environ is None else environ
    given = _given_flags(parser, argv)
    origins = []
    for action in _flags(parser):
        name = env_name(action.dest)
        if name in env and not given & set(action.option_strings):
            named = [
                flag
                for flag in action.option_strings
                if flag.startswith("--") and (flag in message if about is None else action.dest in about)
            ]
            if named:
                origins.append(f"{named[0]} from {name}")  # (not its value: it may be a secret)
    return f"{message} ({'; '.join(origins)})" if origins else message


def _given_flags(parser: argparse.ArgumentParser, argv: Sequence[str]) -> set[str]:
    """The long flags on the command line, each abbreviation (``--max-q``) read as the flag it stands for."""
    flags = {flag for action in _flags(parser) for flag in action.option_strings if flag.startswith("--")}
    given = set()
    for arg in argv:
        if arg == "--":
            break
        if not arg.startswith("--"):
            continue
        typed = arg.split("=", 1)[0]
        if typed in flags or not parser.allow_abbrev:
            given.add(typed)
            continue
        meant = [flag for flag in flags if flag.startswith(typed)]
        # An ambiguous one counts as each flag it may mean: argparse refuses it, naming them, before
        # any of their env vars could be blamed.
        given.update(meant or [typed])
    return given


def _flags(parser: argparse.ArgumentParser) -> Sequence[argparse.Action]:
    """The parser's optional arguments, but those in ``WITHOUT_ENV`` (--help, --version, --completion)."""
    return [a for a in _arguments(parser) if a.option_strings and a.dest not in WITHOUT_ENV]


# ----------------------------------------------------------------------------- reading a parser
# argparse has no public way to list a parser's arguments or subcommands (checked on CPython 3.11
# to 3.13), and every FastWorker CLI builds a plain ArgumentParser. ``_actions``, ``_SubParsersAction``
# (with its ``choices`` and ``_choices_actions``) and the append/extend/count action classes have
# kept their meaning since Python 2.7/3.8. These functions are the only places they are read.


class _Subcommand(NamedTuple):
    """One name a subparsers action takes (an alias is one more, with the same parser)."""

    name: str
    help: str
    parser: argparse.ArgumentParser


def _arguments(parser: argparse.ArgumentParser) -> Sequence[argparse.Action]:
    """Every argument of the parser in the order added: flags, positionals, the subparsers action."""
    return list(parser._actions)


def _subcommands(action: argparse.Action) -> list[_Subcommand] | None:
    """The subcommands of a subparsers action in the order added (None for any other action)."""
    if not isinstance(action, argparse._SubParsersAction):
        return None
    helps = {id(action.choices[choice.dest]): choice.help or "" for choice in action._choices_actions}
    return [_Subcommand(name, helps.get(id(sub), ""), sub) for name, sub in action.choices.items()]


def _repeatable(action: argparse.Action) -> bool:
    """Whether giving the flag again adds to its value (append, extend, count) rather than replacing it."""
    return isinstance(action, argparse._AppendAction | argparse._AppendConstAction | argparse._CountAction)


def _convert(parser: argparse.ArgumentParser, action: argparse.Action, name: str, raw: str) -> object:
    value: object = raw
    if action.type is not None:
        try:
            value = action.type(raw)  # type: ignore[operator]
        except argparse.ArgumentTypeError as exc:
            parser.error(f"{name}={raw!r}: {exc}")
        except (TypeError, ValueError):
            # int("abc")'s own words ("invalid literal for int() with base 10") say nothing to an operator.
            kind = {int: "a whole number", float: "a number"}.get(action.type, "a valid value")  # type: ignore[call-overload]
            parser.error(f"{name}={raw!r} is not {kind} (the value of {'/'.join(action.option_strings)})")
    if action.choices is not None and value not in action.choices:
        choices = ", ".join(repr(c) for c in action.choices)
        parser.error(f"{name}={raw!r}: invalid choice (choose from {choices})")
    return value
