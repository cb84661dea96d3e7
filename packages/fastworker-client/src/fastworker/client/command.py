"""The ``fastworker`` console script's entry point (see ``fastworker.client.cli``).

An application that only submits tasks installs ``fastworker-client`` without the ``cli`` extra
(``rich``): there the command still answers ``--help``, ``--version``, ``--completion`` and every
``--json`` call, and says how to get tables and colours when asked for them.
"""

from __future__ import annotations

from collections.abc import Sequence


def main(argv: Sequence[str] | None = None) -> int:
    """Run ``fastworker``; returns its exit code."""
    from fastworker.client.cli import main as run

    return run(argv)
