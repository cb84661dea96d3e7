"""The web dashboard's flags, shared by ``fastworker-controlplane`` (in-process dashboard) and ``fastworker-dashboard``.

One definition, so that both daemons take the same names, env vars and precedence (docs/reference.md).
"""

from __future__ import annotations

import argparse

from fastworker.client.secretfile import read_secret_file


def _host_list(value: str) -> list[str]:
    """One ``--dashboard-host`` value (or env var) as names: commas and spaces separate several."""
    return value.replace(",", " ").split()


def add_dashboard_flags(parser: argparse.ArgumentParser) -> None:
    """Add the dashboard's password, Host names and exposure flags."""
    parser.add_argument(
        "--dashboard-password",
        default=None,
        help="password for the dashboard's actions and /login (default: the secret); separate from the frame secret",
    )
    parser.add_argument(
        "--dashboard-password-file",
        default=None,
        metavar="PATH",
        help="read the dashboard password from a file (trailing newline stripped); beats --dashboard-password",
    )
    parser.add_argument(
        "--dashboard-host",
        action="extend",
        type=_host_list,
        default=[],
        metavar="NAME",
        help="extra Host name the dashboard answers to, NAME (any port) or NAME:PORT; repeatable (the env var "
        "takes a comma-separated list, added to the flags); other Hosts get 400",
    )
    parser.add_argument(
        "--dashboard-insecure",
        action="store_true",
        help="serve the dashboard on a non-loopback address even with neither secret nor password "
        "(anyone reaching it can act)",
    )


def dashboard_password(args: argparse.Namespace) -> str | None:
    """The dashboard password the parsed flags give: the file's, else ``--dashboard-password``, else None.

    Raises:
        ValueError: the password file cannot be used (the message names it).
    """
    if args.dashboard_password_file:
        return read_secret_file(
            str(args.dashboard_password_file), "dashboard password file (--dashboard-password-file)"
        )
    return str(args.dashboard_password) if args.dashboard_password else None
