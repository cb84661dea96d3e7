"""``python -m fastworker.dashboard.web``: the same as the ``fastworker-dashboard`` command."""

from fastworker.dashboard.web.cli import main

raise SystemExit(main())
