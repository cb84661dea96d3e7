"""``python -m fastworker.worker`` runs the subworker daemon."""

from fastworker.worker.cli import main

raise SystemExit(main())
