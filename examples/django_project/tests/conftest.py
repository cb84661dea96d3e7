"""Every test runs twice: with tasks run eagerly in the test's process, and on a real control plane.

``tasks`` is the mode: eager (``"EAGER": True`` in the ``FASTWORKER`` setting) or live (the setting
points at the session's control plane, started by FastWorker's pytest plugin with
``fastworker.client.django.setup``, which runs the tasks with the ORM on the same database file).
The views submit through the client the app makes from the setting, as in production; the
tests observe the tasks through the mode.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass

import pytest
from django.conf import settings
from django.test import override_settings

from fastworker.client import SyncClient, TaskInfo
from fastworker.client.django.testing import EagerBackend, eager_client

#: Longest wait for one task, in seconds.
WAIT = 30.0


@dataclass
class EagerTasks:
    """Eager mode: each task ran before the submitting call returned."""

    client: EagerBackend
    worker: str = "eager"

    def submitted(self) -> int:
        """How many tasks were submitted so far (each ran at once)."""
        return len(self.client.history)

    def wait(self, task_id: str) -> TaskInfo:
        """The task's final info."""
        return next(info for info in self.client.history if info.id == task_id)


@dataclass
class LiveTasks:
    """Live mode: a control plane process runs the tasks; a client of our own watches it."""

    observer: SyncClient
    worker: str = "controlplane"

    def submitted(self) -> int:
        """How many tasks the control plane accepted so far (its own counter)."""
        return int(self.observer.stats()["submitted"])

    def wait(self, task_id: str) -> TaskInfo:
        """The task's final info, waited for (bounded)."""
        return self.observer.wait(task_id, timeout=WAIT)


@pytest.fixture(params=["eager", "live"])
def tasks(request: pytest.FixtureRequest) -> Iterator[EagerTasks | LiveTasks]:
    """The mode of this run of the test, with the ``FASTWORKER`` setting to match (restored after)."""
    if request.param == "eager":
        with override_settings(FASTWORKER={**settings.FASTWORKER, "EAGER": True}):
            eager = eager_client()
            assert eager is not None
            yield EagerTasks(eager)
        return
    control_plane = request.getfixturevalue("fastworker_controlplane")
    observer = SyncClient(control_plane.discovery)  # not `with`: the views must use the app's client
    try:
        with override_settings(FASTWORKER={**settings.FASTWORKER, "CONTROL_PLANE": control_plane.discovery}):
            yield LiveTasks(observer)
    finally:
        observer.close()
