"""The seam between the coordinator and remote execution: what the coordinator asks of the dispatcher.

A Protocol rather than the dispatcher class, so the coordinator (and its tests) need nothing of
the worker channel, and ``mypy --strict`` checks both sides of the seam.
"""

from __future__ import annotations

from typing import Protocol

from fastworker.controlplane.fleet import Fleet
from fastworker.controlplane.records import TaskRecord


class RemoteExecution(Protocol):
    """Runs tasks on subworkers; the coordinator tells it when there is work and what to stop."""

    @property
    def fleet(self) -> Fleet:
        """The registered subworkers."""

    @property
    def awaiting_adoption(self) -> int:
        """Tasks a journal replay found running on subworkers that no worker adopted yet (``adoption``)."""

    def schedule(self) -> None:
        """Hand waiting tasks to free subworkers soon (coalesced)."""

    def cancel_running(self, record: TaskRecord) -> bool:
        """Stop a task a subworker runs or holds; True if the order went out (the worker reports it)."""

    def abandon_unconfirmed_stop(self, record: TaskRecord) -> bool:
        """End as CANCELLED a task whose worker has not confirmed its stop within a cancel's grace; False if none holds it."""

    def runs_on_a_worker(self, record: TaskRecord) -> bool:
        """True while a subworker still holds a run of this task (ended CANCELLED before its stop was confirmed)."""

    def expire_unstarted(self, record: TaskRecord) -> None:
        """End a task waiting unstarted in a worker's prefetch queue whose expiry passed (CANCELLED, Expired)."""

    def request_drain(self, worker_id: str, timeout: float) -> bool:
        """Ask a worker to finish within ``timeout`` seconds, hand back the rest and leave; False if unknown."""
