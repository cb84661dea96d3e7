"""``python -m fastworker.dashboard.tui``: the same as the ``fastworker-top`` command."""

from fastworker.dashboard.tui.cli import main

raise SystemExit(main())
