"""``python -m fastworker.client`` runs the ``fastworker`` operator command."""

from fastworker.client.cli import main

raise SystemExit(main())
