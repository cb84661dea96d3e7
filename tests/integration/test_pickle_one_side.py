"""A fleet turning pickle on one side at a time: a client that did not opt in still reads every task's state."""

from __future__ import annotations

import pytest

from fastworker.client import PayloadError, TaskState


async def test_a_client_without_pickle_reads_the_state_of_a_task_whose_result_was_pickled(start_cp, make_client):
    control_plane = start_cp("--allow-pickle")
    opted_in, plain = make_client(control_plane, allow_pickle=True), make_client(control_plane)
    pickled = await opted_in.delay("fwtests.add", 1j, 1)  # a complex: only pickle carries it
    assert await opted_in.result(pickled, timeout=10) == 1 + 1j
    good = [await opted_in.delay("fwtests.add", i, i) for i in range(3)]

    info = await plain.status(pickled)
    assert info.state is TaskState.SUCCESS and info.result is None and "pickle" in (info.result_error or "")
    assert (await plain.wait(pickled, timeout=10)).result_error == info.result_error
    watched = [step async for step in plain.watch(pickled, timeout=10)]
    assert [(step.state, step.result_error) for step in watched] == [(TaskState.SUCCESS, info.result_error)]
    infos = await plain.wait_many([*good, pickled], timeout=10)
    assert [(i.state, i.result, i.result_error) for i in infos] == [
        *((TaskState.SUCCESS, 2 * n, None) for n in range(3)),
        (TaskState.SUCCESS, None, info.result_error),
    ]
    assert await plain.results(good, timeout=10) == [0, 2, 4]
    for read in (plain.result(pickled, timeout=10), plain.results([*good, pickled], timeout=10)):
        with pytest.raises(PayloadError, match=f"the result of task {pickled} cannot be decoded here"):
            await read
    detail = await plain.task_detail(pickled)
    assert detail.info.result is None and detail.info.result_error == info.result_error
    assert detail.arguments_error is not None  # its arguments were pickled too: said, not shown
