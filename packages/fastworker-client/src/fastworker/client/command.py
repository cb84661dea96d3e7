"""The ``fastworker`` console script's entry point: the operator CLI needs ``rich``, the ``cli`` extra.

An application that only submits tasks installs ``fastworker-client`` without it; running
``fastworker`` there says how to get the command instead of failing with a traceback.
"""

from __future__ import annotations

import sys
from collections.abc import Sequence

#: Exit code when the CLI's own dependencies are missing (as for any other failure to run).
RET_MISSING = 1


def main(argv: Sequence[str] | None = None) -> int:
    """Run ``fastworker`` (see ``fastworker.client.cli``); exit 1 with a hint when ``rich`` is not installed."""
    try:
        from fastworker.client.cli import main as run
    except ModuleNotFoundError as exc:
        if exc.name is None or exc.name.split(".")[0] != "rich":
            raise
        print("fastworker: the command line needs the cli extra: pip install 'fastworker-client[cli]'", file=sys.stderr)
        return RET_MISSING
    return run(argv)
