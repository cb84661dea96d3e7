"""``python -m fastworker.client`` runs the ``fastworker`` operator command."""

from fastworker.client.command import main

raise SystemExit(main())
