"""The ``fastworker-top`` command: parse flags (and their ``FASTWORKER_*`` env vars) and run the terminal UI."""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Sequence

from fastworker.client.completion import add_completion_flag
from fastworker.client.envflags import apply_env_defaults
from fastworker.client.logsetup import add_logging_flags, configure_logging
from fastworker.client.options import address_argument, positive_seconds_argument
from fastworker.client.secretfile import add_secret_file_flag, resolve_secret
from fastworker.dashboard.version import __version__

#: Exit codes.
RET_OK = 0
RET_ERROR = 1
RET_USAGE = 2
#: Interrupted (Ctrl-C) before the view started: 128 + SIGINT, as shells report it.
RET_INTERRUPTED = 130

DEFAULT_CONTROL_PLANE = "tcp://127.0.0.1:5550"

_EPILOG = """\
examples:
  fastworker-top                                   # the control plane on this machine
  fastworker-top --control-plane tcp://10.0.0.5:5550 --secret s3cret
  FASTWORKER_CONTROL_PLANE=tcp://cp:5550 fastworker-top --refresh 0.5

keys: enter details, w workflow (of the selected task), c cancel, r retry, p pause/resume level, f state filter,
  / search, ? help, q quit
"""


def make_parser(argv: Sequence[str] = ()) -> argparse.ArgumentParser:
    """The command-line parser, with env-var defaults applied (flag > env var > default)."""
    parser = argparse.ArgumentParser(
        prog="fastworker-top",
        description="A live terminal view of a FastWorker control plane: queues, workers and tasks.",
        epilog=_EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    add_completion_flag(parser)
    parser.add_argument(
        "--control-plane",
        type=address_argument,
        default=DEFAULT_CONTROL_PLANE,
        metavar="ADDRESS",
        help=f"the control plane's discovery address (default {DEFAULT_CONTROL_PLANE})",
    )
    parser.add_argument("--secret", default=None, help="shared secret, if the control plane requires one")
    add_secret_file_flag(parser)
    parser.add_argument(
        "--refresh",
        type=positive_seconds_argument,
        default=1.0,
        metavar="SECONDS",
        help="seconds between polls (default 1)",
    )
    # Records go to Textual's devtools log (`textual console`), never onto the screen being drawn.
    add_logging_flags(parser, default_level="WARNING")
    apply_env_defaults(parser, argv=argv)  # (a flag in argv beats its env var, which is then not read)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Run fastworker-top until the user quits; returns the exit code."""
    try:
        # Env vars are read here: a bad one is a usage error too, unless its flag is given.
        parser = make_parser(sys.argv[1:] if argv is None else argv)
        args = parser.parse_args(argv)
        args.secret = resolve_secret(parser, args, argv)
    except SystemExit as exc:
        return int(exc.code) if isinstance(exc.code, int) else RET_USAGE
    if not sys.stdout.isatty():
        # A full-screen UI piped into a file or another program is kilobytes of escape codes.
        print(
            "fastworker-top: standard output is not a terminal; for scripts use "
            "`fastworker stats --json`, `fastworker list --json` or `fastworker workers --json`",
            file=sys.stderr,
        )
        return RET_ERROR
    if os.environ.get("TERM") == "dumb":
        # A terminal that takes no cursor moves (an editor's shell, a CI log) shows the escape codes.
        print(
            "fastworker-top: this terminal (TERM=dumb) cannot show a full-screen view; use `fastworker stats`,"
            " `fastworker list` or `fastworker workers`, or a terminal that can",
            file=sys.stderr,
        )
        return RET_ERROR
    try:
        # Imported here so that --help stays fast and needs no terminal.
        from textual.logging import TextualHandler

        from fastworker.dashboard.tui.app import make_app
    except KeyboardInterrupt:  # Ctrl-C while Textual loads (once it runs, Ctrl-C is its quit key)
        return RET_INTERRUPTED
    # Library log records go to Textual's devtools log, never onto the screen being drawn.
    configure_logging(args.log_level, args.log_format, handler=TextualHandler())
    app = make_app(args.control_plane, args.secret, refresh_interval=args.refresh)
    app.run()
    if app.quit_deadline is not None:
        app.quit_deadline.cancel()  # it quit in time
    return app.return_code or RET_OK


if __name__ == "__main__":  # pragma: no cover
    raise SystemExit(main())
