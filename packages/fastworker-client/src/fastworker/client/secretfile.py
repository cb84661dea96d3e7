"""Reads a secret from a file, so that it never appears on a command line (``ps``) or in the environment.

Shared by every daemon and CLI for ``--secret-file`` and the dashboard's ``--dashboard-password-file``.

Where the shared secret comes from, first found wins: ``--secret``, ``--secret-file``, the file
named by ``FASTWORKER_SECRET_FILE``, ``FASTWORKER_SECRET``. Flags beat env vars; between env vars
the file wins (docs/reference.md). Giving both flags is a usage error: one of them would be silently ignored.

A secret from a file is a :class:`SecretFiles`: read again when the file changes, with the secrets
of ``--secret-fallbacks-file`` also accepted, so that a fleet rotates its secret without a restart
(docs/security.md).
"""

from __future__ import annotations

import logging
import os
import sys
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, TypeVar

if TYPE_CHECKING:  # the client reads the secret's env var without loading argparse
    import argparse

    from fastworker.protocol.auth import Secret

#: Largest secret file read, in bytes: a secret is a line, not a document.
MAX_SECRET_FILE_BYTES = 64 * 1024
#: Most secrets a fallbacks file may hold: a frame that fails is checked against each of them, so
#: a long list would let garbage cost the receiver that many MACs (a rotation needs one).
MAX_SECRET_FALLBACKS = 8
#: The env vars of the shared secret and of a file holding it (docs/reference.md).
ENV_SECRET = "FASTWORKER_SECRET"
ENV_SECRET_FILE = "FASTWORKER_SECRET_FILE"
#: The env var of a file of further secrets accepted (not used to seal) during a rotation.
ENV_SECRET_FALLBACKS_FILE = "FASTWORKER_SECRET_FALLBACKS_FILE"

logger = logging.getLogger(__name__)
_T = TypeVar("_T")


def read_secret_file(path: str, what: str = "secret file") -> str:
    r"""The secret in ``path``, with one trailing newline (``\n`` or ``\r\n``) stripped.

    ``what`` names the file in errors (``"dashboard password file"``: which of several files is wrong).

    Raises:
        ValueError: the file cannot be read, is too large, is not UTF-8, or holds an empty (or blank) secret;
            the message names the path.
    """
    text = _read_text(path, what)
    if text.endswith("\r\n"):
        text = text[:-2]
    elif text.endswith("\n"):
        text = text[:-1]
    if not text.strip():
        raise ValueError(f"the {what} {path} is empty" + (" (only white space)" if text else ""))
    return text


def read_fallbacks_file(path: str) -> tuple[str, ...]:
    """The secrets in a fallbacks file: one per line, blank lines skipped (an empty file holds none).

    Raises:
        ValueError: the file cannot be read, is too large, is not UTF-8 or holds more than
            :data:`MAX_SECRET_FALLBACKS` secrets; the message names the path.
    """
    secrets = tuple(line for line in _read_text(path, "secret fallbacks file").splitlines() if line.strip())
    if len(secrets) > MAX_SECRET_FALLBACKS:
        raise ValueError(
            f"the secret fallbacks file {path} holds {len(secrets)} secrets; at most {MAX_SECRET_FALLBACKS} are allowed"
        )
    return secrets


def _read_text(path: str, what: str) -> str:
    try:
        with Path(path).open("rb") as handle:
            data = handle.read(MAX_SECRET_FILE_BYTES + 1)
    except OSError as exc:
        raise ValueError(f"cannot read the {what} {path}: {exc.strerror or exc}") from exc
    if len(data) > MAX_SECRET_FILE_BYTES:
        raise ValueError(f"the {what} {path} is larger than {MAX_SECRET_FILE_BYTES} bytes")
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise ValueError(f"the {what} {path} is not UTF-8 text") from exc


class SecretFiles:
    """The shared secret from a file (or given), and fallbacks from another file, read again when a file changes.

    A :class:`~fastworker.protocol.auth.SecretSource`: the secret seals, it and every fallback open.
    A file is read again when its inode, size or modification time changes (a Kubernetes Secret
    volume swaps a symlink); one that cannot be read then, or holds no secret, leaves the last
    good secrets in force and logs a warning, so a half-done edit never locks the process out.
    """

    def __init__(
        self, secret_file: str | None = None, fallbacks_file: str | None = None, *, secret: str | None = None
    ) -> None:
        """Read the files now.

        Raises:
            ValueError: neither or both of ``secret_file`` and ``secret``, or a file that cannot be used
                (the message names it).
        """
        if (secret_file is None) == (secret is None):
            raise ValueError("give the shared secret either as a file or as a value")
        self.secret_file = secret_file
        self.fallbacks_file = fallbacks_file
        # Stamped before reading: a file replaced in between is read again at the next ask.
        self._stamps = {path: _stamp(path) for path in (secret_file, fallbacks_file) if path}
        self._secret = secret if secret is not None else read_secret_file(str(secret_file))
        self._fallbacks = read_fallbacks_file(fallbacks_file) if fallbacks_file else ()
        self._complaints: set[str] = set()

    def secrets(self) -> tuple[str, ...]:
        """The secret, then the fallbacks that differ from it (files read again if they changed)."""
        if self.secret_file is not None and self._changed(self.secret_file):
            self._secret = self._reread(self.secret_file, read_secret_file, self._secret)
        if self.fallbacks_file is not None and self._changed(self.fallbacks_file):
            self._fallbacks = self._reread(self.fallbacks_file, read_fallbacks_file, self._fallbacks)
        return (self._secret, *(secret for secret in self._fallbacks if secret != self._secret))

    def _changed(self, path: str) -> bool:
        stamp = _stamp(path)
        if stamp == self._stamps.get(path):
            return False
        self._stamps[path] = stamp
        return True

    def _reread(self, path: str, read: Callable[[str], _T], last: _T) -> _T:
        try:
            value = read(path)
        except ValueError as exc:
            if str(exc) not in self._complaints:
                self._complaints.add(str(exc))
                logger.warning("%s: keeping the secrets in force", exc)
            return last
        self._complaints.clear()
        logger.info("read %s again: its secrets are in force now", path)
        return value

    def __repr__(self) -> str:  # never the secrets
        return f"SecretFiles(secret_file={self.secret_file!r}, fallbacks_file={self.fallbacks_file!r})"


def _stamp(path: str) -> tuple[int, int, int, int] | None:
    """What tells a changed file: device, inode, size, modification time (None: cannot stat it now)."""
    try:
        st = os.stat(path)
    except OSError:
        return None
    return (st.st_dev, st.st_ino, st.st_size, st.st_mtime_ns)


def secret_from_env(environ: Mapping[str, str] | None = None) -> Secret | None:
    """The shared secret the environment gives: the file named by ``FASTWORKER_SECRET_FILE``, else ``FASTWORKER_SECRET``.

    A file (or ``FASTWORKER_SECRET_FALLBACKS_FILE``) gives a :class:`SecretFiles`, read again when it changes.

    Raises:
        ValueError: a file named there cannot be used, or fallbacks come without a secret (the message names it).
    """
    env = os.environ if environ is None else environ
    return _secrets(env.get(ENV_SECRET) or None, env.get(ENV_SECRET_FILE) or None, env.get(ENV_SECRET_FALLBACKS_FILE))


def _secrets(secret: str | None, secret_file: str | None, fallbacks_file: str | None) -> Secret | None:
    """The secret to use: from the file if one is named (it wins), else the value; with fallbacks, a source of both.

    Raises:
        ValueError: a file cannot be used, or fallbacks come without a secret.
    """
    if secret_file:
        return SecretFiles(secret_file, fallbacks_file or None)
    if fallbacks_file:
        if not secret:
            raise ValueError(f"the secret fallbacks file {fallbacks_file} is given, but no shared secret")
        return SecretFiles(None, fallbacks_file, secret=secret)
    return secret or None


def add_secret_file_flag(parser: argparse.ArgumentParser) -> None:
    """Add ``--secret-file`` and ``--secret-fallbacks-file`` (read by :func:`resolve_secret`; env vars from ``apply_env_defaults``)."""
    parser.add_argument(
        "--secret-file",
        default=None,
        metavar="PATH",
        help="read the shared secret from PATH (trailing newline stripped), so that ps never shows it; "
        "read again when it changes",
    )
    parser.add_argument(
        "--secret-fallbacks-file",
        default=None,
        metavar="PATH",
        help="further secrets accepted, one per line, never used to seal (a rotation's old or next secret); "
        "read again when it changes",
    )


def resolve_secret(
    parser: argparse.ArgumentParser, args: argparse.Namespace, argv: Sequence[str] | None = None
) -> Secret | None:
    """The shared secret for parsed ``args``: ``--secret``, else ``--secret-file`` (flag or env var), else ``FASTWORKER_SECRET``.

    A secret file, or ``--secret-fallbacks-file``, gives a :class:`SecretFiles`. ``argv`` (default
    ``sys.argv[1:]``) tells a flag from its env var, which ``apply_env_defaults`` made
    indistinguishable in ``args``.

    Raises:
        SystemExit: both flags were given, a file is missing, unreadable or empty, or fallbacks come
            without a secret (argparse's usage error, exit 2, naming the path).
    """
    arguments = sys.argv[1:] if argv is None else argv
    secret_given, file_given = _secret_flags_given(arguments)
    if secret_given and file_given:
        parser.error("give the shared secret with --secret or --secret-file, not both")
    secret_file = None if secret_given else getattr(args, "secret_file", None)
    fallbacks_file = getattr(args, "secret_fallbacks_file", None)
    try:
        return _secrets(
            str(args.secret) if args.secret else None,
            str(secret_file) if secret_file else None,
            str(fallbacks_file) if fallbacks_file else None,
        )
    except ValueError as exc:
        from fastworker.client.envflags import name_env_origins

        message = str(exc)
        files = (("secret_file", secret_file), ("secret_fallbacks_file", fallbacks_file))
        about = [dest for dest, path in files if path and str(path) in message]  # (the message names the path)
        parser.error(name_env_origins(parser, arguments, message, about=about))


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
