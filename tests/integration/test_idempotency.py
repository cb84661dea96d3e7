"""A task id names one task: submitting it again returns the same id and runs nothing more."""

from __future__ import annotations

import uuid

from fastworker.client import TaskState


async def test_submitting_twice_with_one_task_id_runs_the_task_once_and_returns_that_id(start_cp, make_client):
    control_plane = start_cp()
    client = make_client(control_plane)
    task_id = f"fwtests-idempotent-{uuid.uuid4()}"
    tag = f"idempotent-{task_id}"

    first = await client.delay("fwtests.record", tag, task_id=task_id)
    second = await client.delay("fwtests.record", tag, task_id=task_id)
    assert first == second == task_id
    assert await client.result(task_id, timeout=10) == tag

    # Once more after it finished: still the same task, still not run again.
    third = await client.delay("fwtests.record", tag, task_id=task_id)
    assert third == task_id
    info = await client.status(task_id)
    assert (info.state, info.attempts, info.result) == (TaskState.SUCCESS, 1, tag)
    assert await client.submit("fwtests.execution_counts", tag, timeout=10) == {tag: 1}
    assert (await client.stats())["submitted"] == 2  # the task and the execution_counts call


async def test_a_unique_submission_twice_while_live_returns_one_id_and_runs_once(start_cp, make_client, tmp_path):
    control_plane = start_cp()
    client = make_client(control_plane)
    release = tmp_path / "release"

    # By a key the submitter chooses, whatever the arguments
    keyed = await client.delay("fwtests.block_until", str(release), "unique-keyed", unique_key="nightly-7")
    again = await client.delay("fwtests.block_until", str(release), "unique-keyed-2", unique_key="nightly-7")
    # By a task declared unique=True, over its arguments
    declared = await client.delay("fwtests.unique_block_until", str(release), "unique-declared")
    declared_again = await client.delay("fwtests.unique_block_until", str(release), "unique-declared")

    assert again == keyed
    assert declared_again == declared
    release.touch()
    assert await client.result(keyed, timeout=10) is True
    assert await client.result(declared, timeout=10) is True
    counts = await client.submit("fwtests.execution_counts", "unique-", timeout=10)
    assert counts == {"unique-keyed": 1, "unique-declared": 1}
    # Once final, the key is free again
    fresh = await client.delay("fwtests.block_until", str(release), "unique-keyed", unique_key="nightly-7")
    assert fresh != keyed
