"""Reads a secret from a file, so that it never appears on a command line (``ps``) or in the environment.

Shared by every daemon and CLI for ``--secret-file`` and the dashboard's ``--dashboard-password-file``.

Where the shared secret comes from, first found wins: ``--secret``, ``--secret-file``, the file
named by ``FASTWORKER_SECRET_FILE``, ``FASTWORKER_SECRET``. Flags beat env vars; between env vars
the file wins (docs/reference.md). Giving both flags is a usage error: one of them would be silently ignored.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:  # the client reads the secret's env var without loading argparse
    import argparse

#: Largest secret file read, in bytes: a secret is a line, not a document.
MAX_SECRET_FILE_BYTES = 64 * 1024
#: The env vars of the shared secret and of a file holding it (docs/reference.md).
ENV_SECRET = "FASTWORKER_SECRET"
ENV_SECRET_FILE = "FASTWORKER_SECRET_FILE"


def read_secret_file(path: str) -> str:
    r"""The secret in ``path``, with one trailing newline (``\n`` or ``\r\n``) stripped.

    Raises:
        ValueError: the file cannot be read, is too large, is not UTF-8, or holds an empty secret;
            the message names the path.
    """
    try:
        with Path(path).open("rb") as handle:
            data = handle.read(MAX_SECRET_FILE_BYTES + 1)
    except OSError as exc:
        raise ValueError(f"cannot read the secret file {path}: {exc.strerror or exc}") from exc
    if len(data) > MAX_SECRET_FILE_BYTES:
        raise ValueError(f"the secret file {path} is larger than {MAX_SECRET_FILE_BYTES} bytes")
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise ValueError(f"the secret file {path} is not UTF-8 text") from exc
    if text.endswith("\r\n"):
        text = text[:-2]
    elif text.endswith("\n"):
        text = text[:-1]
    if not text:
        raise ValueError(f"the secret file {path} is empty")
    return text


def secret_from_env(environ: Mapping[str, str] | None = None) -> str | None:
    """The shared secret the environment gives: the file named by ``FASTWORKER_SECRET_FILE``, else ``FASTWORKER_SECRET``.

    Raises:
        ValueError: ``FASTWORKER_SECRET_FILE`` names a file that cannot be used (the message names it).
    """
    env = os.environ if environ is None else environ
    path = env.get(ENV_SECRET_FILE)
    if path:
        return read_secret_file(path)
    return env.get(ENV_SECRET) or None


def add_secret_file_flag(parser: argparse.ArgumentParser) -> None:
    """Add ``--secret-file PATH`` (read by :func:`resolve_secret`; its env var comes from ``apply_env_defaults``)."""
    parser.add_argument(
        "--secret-file",
        default=None,
        metavar="PATH",
        help="read the shared secret from PATH (trailing newline stripped), so that ps never shows it",
    )


def resolve_secret(
    parser: argparse.ArgumentParser, args: argparse.Namespace, argv: Sequence[str] | None = None
) -> str | None:
    """The shared secret for parsed ``args``: ``--secret``, else ``--secret-file`` (flag or env var), else ``FASTWORKER_SECRET``.

    ``argv`` (default ``sys.argv[1:]``) tells a flag from its env var, which ``apply_env_defaults``
    made indistinguishable in ``args``.

    Raises:
        SystemExit: both flags were given, or the secret file is missing, unreadable or empty
            (argparse's usage error, exit 2, naming the path).
    """
    secret_given, file_given = _secret_flags_given(sys.argv[1:] if argv is None else argv)
    if secret_given and file_given:
        parser.error("give the shared secret with --secret or --secret-file, not both")
    if secret_given:
        return str(args.secret) or None
    path = getattr(args, "secret_file", None)
    if path:
        try:
            return read_secret_file(str(path))
        except ValueError as exc:
            parser.error(str(exc))
    return str(args.secret) if args.secret else None


def _secret_flags_given(argv: Sequence[str]) -> tuple[bool, bool]:
    """Whether ``--secret`` and ``--secret-file`` (or an abbreviation argparse accepts) are on the command line."""
    secret_given = file_given = False
    for token in argv:
        if token == "--":
            break
        name = token.partition("=")[0]
        if name == "--secret":
            secret_given = True
        elif len(name) > len("--secret") and "--secret-file".startswith(name):
            file_given = True
    return secret_given, file_given
