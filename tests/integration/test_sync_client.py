"""The blocking client does the same round trips as the asyncio one."""

from __future__ import annotations

from fastworker.client import SyncClient, TaskState


def test_the_sync_client_submits_delays_reads_results_and_status(start_cp):
    control_plane = start_cp()
    with SyncClient(control_plane.discovery) as client:
        assert client.submit("fwtests.add", 2, 3, timeout=10) == 5

        task_id = client.delay("fwtests.add", 40, 2)
        assert isinstance(task_id, str)
        assert client.result(task_id, timeout=10) == 42

        info = client.status(task_id)
        assert info.id == task_id
        assert info.name == "fwtests.add"
        assert info.state is TaskState.SUCCESS
        assert info.result == 42
        assert info.attempts == 1
        assert info.worker == "controlplane"
        assert info.queued_at is not None and info.started_at is not None and info.finished_at is not None
        assert info.queued_at <= info.started_at <= info.finished_at
