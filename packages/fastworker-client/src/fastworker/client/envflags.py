"""Gives every command-line flag an environment variable: ``--flag-name`` reads ``FASTWORKER_FLAG_NAME``.

Precedence is flag, then env var, then default (docs/reference.md). Shared by every FastWorker daemon and CLI.
"""

from __future__ import annotations

import argparse
import os
from collections.abc import Mapping, Sequence

_TRUE = {"1", "true", "yes", "on"}
_FALSE = {"0", "false", "no", "off", ""}


def env_name(dest: str) -> str:
    """The env var for an argparse destination, e.g. ``local_concurrency`` -> ``FASTWORKER_LOCAL_CONCURRENCY``."""
    return "FASTWORKER_" + dest.upper()


def apply_env_defaults(parser: argparse.ArgumentParser, environ: Mapping[str, str] | None = None) -> None:
    """Replace each flag's default with its env var's value, converted by the flag's type.

    Raises:
        SystemExit: an env var holds a value the flag would refuse (argparse's usage error, exit 2).
    """
    env = os.environ if environ is None else environ
    flags = _flags(parser)
    for action in flags:
        name = env_name(action.dest)
        if name not in env:
            continue
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


def _flags(parser: argparse.ArgumentParser) -> Sequence[argparse.Action]:
    """The parser's optional arguments, but --help and --version.

    argparse has no public way to list a parser's arguments (checked on CPython 3.11 to 3.13), and
    every FastWorker CLI builds a plain ArgumentParser; ``_actions`` has kept its meaning since
    Python 2.7. This is the only place it is read.
    """
    return [a for a in parser._actions if a.option_strings and a.dest not in ("help", "version")]


def _convert(parser: argparse.ArgumentParser, action: argparse.Action, name: str, raw: str) -> object:
    value: object = raw
    if action.type is not None:
        try:
            value = action.type(raw)  # type: ignore[operator]
        except (TypeError, ValueError, argparse.ArgumentTypeError) as exc:
            parser.error(f"{name}={raw!r}: {exc}")
    if action.choices is not None and value not in action.choices:
        choices = ", ".join(repr(c) for c in action.choices)
        parser.error(f"{name}={raw!r}: invalid choice (choose from {choices})")
    return value
