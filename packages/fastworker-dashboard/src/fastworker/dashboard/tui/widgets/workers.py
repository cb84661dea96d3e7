"""The worker panel: connected subworkers with load bars, counters, memory, heartbeat age and draining."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from rich.text import Text

from fastworker.dashboard.tui.format import format_age, format_bytes, format_count, load_bar
from fastworker.dashboard.tui.widgets.table import KeyedTable, Row


class WorkerTable(KeyedTable):
    """One row per connected subworker, keyed by worker id."""

    CURSOR_WHEN_BLURRED = False
    COLUMNS = (
        ("worker", "Worker"),
        ("host", "Host"),
        ("pid", "PID"),
        ("load", "Load"),
        ("processed", "Processed"),
        ("failed", "Failed"),
        ("rss", "RSS"),
        ("heartbeat", "Heartbeat"),
        ("draining", "Draining"),
    )

    def show_workers(self, workers: Sequence[Mapping[str, Any]], now: float) -> None:
        """Show the workers, sorted by id."""
        rows: list[Row] = []
        for worker in sorted(workers, key=lambda w: str(w.get("worker_id", ""))):
            worker_id = str(worker.get("worker_id", ""))
            failed = int(worker.get("failed", 0) or 0)
            draining = bool(worker.get("draining", False))
            cells = (
                Text(worker_id, style="bold"),
                Text(str(worker.get("host", ""))),
                Text(str(worker.get("pid", ""))),
                load_bar(int(worker.get("in_flight", 0) or 0), int(worker.get("capacity", 0) or 0)),
                Text(format_count(worker.get("processed", 0))),
                Text(format_count(failed), style="red" if failed else ""),
                Text(format_bytes(worker.get("rss_bytes"))),
                Text(format_age(float(worker.get("last_heartbeat", 0.0) or 0.0), now)),
                Text("draining", style="bold yellow") if draining else Text(""),
            )
            rows.append((worker_id, cells))
        self.sync(rows)
