"""The ``fastworker-dashboard`` command: serve the web dashboard standalone against a (remote) control plane."""

from __future__ import annotations

import argparse
import logging
import logging.config
import signal
import sys
import threading
from collections.abc import Sequence
from types import FrameType

from fastworker.client._readyfile import (
    check_ready_file,
    remove_own_ready_file,
    remove_ready_file,
    write_ready_file,
)
from fastworker.client.completion import add_completion_flag
from fastworker.client.dashboardflags import add_dashboard_flags, dashboard_password
from fastworker.client.envflags import apply_env_defaults, name_env_origins
from fastworker.client.logsetup import add_logging_flags, configure_logging
from fastworker.client.options import address_argument
from fastworker.client.secretfile import add_secret_file_flag, resolve_secret
from fastworker.dashboard.version import __version__
from fastworker.dashboard.web.exposure import UnprotectedDashboard, refuse_unprotected
from fastworker.dashboard.web.listen import parse_address

#: Exit codes.
RET_OK = 0
RET_ERROR = 1
RET_USAGE = 2

#: Defaults (docs/reference.md, "Defaults and limits").
DEFAULT_CONTROL_PLANE = "tcp://127.0.0.1:5550"
DEFAULT_DASHBOARD_ADDRESS = "127.0.0.1:8080"

_EPILOG = """examples:
  fastworker-dashboard
  fastworker-dashboard --control-plane tcp://10.0.0.5:5550 --dashboard-address 127.0.0.1:9000 --read-only
  FASTWORKER_SECRET=s3cret fastworker-dashboard      # actions then need the secret (log in on /login)
  fastworker-dashboard --dashboard-address 0.0.0.0:8080 --dashboard-password-file /run/dash.pw \
      --dashboard-host dash.example.com                 # served beyond loopback: a password is required
"""


def _address(value: str) -> tuple[str, int]:
    try:
        return parse_address(value)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def make_parser() -> argparse.ArgumentParser:
    """The argument parser (env vars are applied by ``main``)."""
    p = argparse.ArgumentParser(
        prog="fastworker-dashboard",
        description="FastWorker web dashboard: pages, live updates, JSON API and /metrics for one control plane.",
        epilog=_EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    add_completion_flag(p)
    p.add_argument(
        "--control-plane",
        type=address_argument,
        default=DEFAULT_CONTROL_PLANE,
        help="the control plane's discovery address",
    )
    p.add_argument(
        "--dashboard-address",
        type=_address,
        default=DEFAULT_DASHBOARD_ADDRESS,
        metavar="HOST:PORT",
        help=f"where to serve HTTP (default {DEFAULT_DASHBOARD_ADDRESS}; port 0 picks a free port)",
    )
    p.add_argument(
        "--secret",
        default=None,
        help="the control plane's shared secret; also the dashboard's password (reads and actions) when --dashboard-password is not set",
    )
    add_secret_file_flag(p)
    p.add_argument("--read-only", action="store_true", help="no action buttons; every action answers 403")
    add_dashboard_flags(p)
    p.add_argument("--ready-file", default=None, metavar="PATH", help="write {pid, dashboard} as JSON once serving")
    add_logging_flags(p)
    return p


def main(argv: Sequence[str] | None = None) -> int:
    """Serve until SIGTERM/SIGINT (exit 0); usage errors exit 2, a failure to serve exits 1."""
    parser = make_parser()
    apply_env_defaults(parser, argv=argv)
    args = parser.parse_args(argv)
    args.secret = resolve_secret(parser, args, argv)
    configure_logging(args.log_level, args.log_format)
    logger = logging.getLogger("fastworker.dashboard")
    host, port = args.dashboard_address
    # Loaded once the flags are read: --help, --version and usage errors answer without the web stack.
    from fastworker.dashboard.web.app import create_app
    from fastworker.dashboard.web.server import start_in_thread

    try:
        try:
            check_ready_file(args.ready_file)
        except ValueError as exc:
            raise ValueError(name_env_origins(parser, sys.argv[1:] if argv is None else argv, str(exc))) from None
        password = dashboard_password(args)
        exposed = refuse_unprotected(
            host, port, protected=bool(password or args.secret), insecure=args.dashboard_insecure
        )
        app = create_app(
            control_plane=args.control_plane,
            secret=args.secret,
            read_only=args.read_only,
            password=password,
            hosts=args.dashboard_host,
            bind_host=host,
        )
    except (UnprotectedDashboard, ValueError) as exc:
        usage = isinstance(exc, ValueError)
        print(f"fastworker-dashboard: {'error: ' if usage else ''}{exc}", file=sys.stderr)
        return RET_USAGE if usage else RET_ERROR
    stop = threading.Event()

    def on_signal(signum: int, frame: FrameType | None) -> None:
        stop.set()

    previous = {sig: signal.signal(sig, on_signal) for sig in (signal.SIGTERM, signal.SIGINT)}
    if args.ready_file:
        remove_ready_file(args.ready_file)  # a killed predecessor's must not say this one serves
    try:
        try:
            running = start_in_thread(app, host, port, log_level=args.log_level.lower())
        except (OSError, RuntimeError) as exc:
            print(f"fastworker-dashboard: cannot serve on {host}:{port}: {exc}", file=sys.stderr)
            return RET_ERROR
        logger.info("dashboard for %s serving on %s (bound to %s)", args.control_plane, running.url, running.bound)
        if exposed and not (password or args.secret):
            logger.warning(
                "the dashboard listens on %s with neither secret nor password (--dashboard-insecure): "
                "anyone who reaches it can read tasks and act",
                running.bound,
            )
        if args.ready_file:
            try:
                write_ready_file(args.ready_file, {"dashboard": running.url})
            except OSError as exc:
                print(f"fastworker-dashboard: {exc.strerror}", file=sys.stderr)
                running.stop()
                return RET_ERROR
        while not stop.wait(0.5):
            if not running.alive:
                logger.error("the dashboard server stopped unexpectedly")
                return RET_ERROR
        logger.info("stopping the dashboard")
        running.stop()
        return RET_OK
    finally:
        if args.ready_file:
            remove_own_ready_file(args.ready_file)  # it serves no more, as for the daemons
        for sig, handler in previous.items():
            signal.signal(sig, handler)
