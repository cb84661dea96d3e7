"""``python -m fastworker.controlplane`` runs the daemon."""

from fastworker.controlplane.cli import main

raise SystemExit(main())
