"""The web dashboard's flags, shared by ``fastworker-controlplane`` (in-process dashboard) and ``fastworker-dashboard``.

One definition, so that both daemons take the same names, env vars and precedence (docs/reference.md).
"""

from __future__ import annotations

import argparse
import ipaddress

from fastworker.client.secretfile import read_secret_file


def canonical_name(name: str) -> str:
    """An IP literal in its one canonical spelling (``0:0:0:0:0:0:0:1`` -> ``::1``); names as they are."""
    try:
        return str(ipaddress.ip_address(name))
    except ValueError:
        return name


def split_host(value: str) -> tuple[str, int | None] | None:
    """``name[:port]`` or ``[v6][:port]`` as (lower-cased name without brackets, port or None); None when malformed."""
    text = value.strip().lower()
    if not text or any(c in text for c in "/?#@ \t\\"):
        return None
    if text.startswith("["):
        end = text.find("]")
        if end < 0:
            return None
        name, rest = text[1:end], text[end + 1 :]
        if rest and not rest.startswith(":"):
            return None
        port_text = rest[1:] if rest else None
    else:
        name, sep, port_text_raw = text.rpartition(":")
        if not sep:
            name, port_text = text, None
        elif ":" in name:  # a bare IPv6 address without brackets
            name, port_text = text, None
        else:
            port_text = port_text_raw
    if port_text is None:
        port = None
    elif port_text.isdigit() and int(port_text) <= 65535:
        port = int(port_text)
    else:
        return None
    if name.endswith("."):
        name = name[:-1]  # the root's dot: ``localhost.`` is ``localhost``, but ``localhost..`` is malformed
    return (name, port) if name and not name.endswith(".") else None


def _host_list(value: str) -> list[str]:
    """One ``--dashboard-host`` value (or env var) as names: commas and spaces separate several.

    Each checked here, so that a bad one is a usage error (exit 2) before any socket is bound.
    """
    names = value.replace(",", " ").split()
    for name in names:
        if split_host(name) is None:
            raise argparse.ArgumentTypeError(f"{name!r} is not a host name (NAME or NAME:PORT)")
    return names


def add_dashboard_flags(parser: argparse.ArgumentParser) -> None:
    """Add the dashboard's password, Host names and exposure flags."""
    parser.add_argument(
        "--dashboard-password",
        default=None,
        help="password for the dashboard's reads, actions and /login (default: the secret); separate from the frame secret",
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
