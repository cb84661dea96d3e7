"""OpenTelemetry across real processes: the client's ``send`` span, the ``wait`` and ``process`` spans where the task runs and the task's own spans are one trace.

The test process uses the SDK's in-memory exporter; the subworker or the control plane running
the task (a real process) exports its spans as JSON lines to a file (``fwtests_tracing_tasks``).
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from opentelemetry import trace
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

from fastworker.client import Client, TaskFailed

_EXPORTER = InMemorySpanExporter()

_ATTACHED: set[int] = set()


def _export_to(exporter: InMemorySpanExporter) -> None:
    """Send this process's spans to ``exporter`` too (a provider is set once per process: others' may be first)."""
    provider = trace.get_tracer_provider()
    if not isinstance(provider, TracerProvider):
        provider = TracerProvider()
        trace.set_tracer_provider(provider)
    if id(exporter) not in _ATTACHED:
        provider.add_span_processor(SimpleSpanProcessor(exporter))
        _ATTACHED.add(id(exporter))


@pytest.fixture(scope="module")
def client_spans() -> Iterator[InMemorySpanExporter]:
    """The test process's spans (a tracer provider can be set once per process: this module owns it)."""
    _export_to(_EXPORTER)
    yield _EXPORTER


async def spans_of(path: Path, task_id: str, count: int, bound: float = 15.0) -> list[dict[str, Any]]:
    """The worker's spans, once ``count`` ``process`` spans of one task were written (bounded wait).

    A run's ``wait`` span is written before its ``process`` span (it ends where the run starts).
    """
    loop = asyncio.get_running_loop()
    deadline = loop.time() + bound
    while True:
        spans = []
        if path.exists():
            spans = [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
        mine = [
            s
            for s in spans
            if s["attributes"].get("messaging.message.id") == task_id and s["name"].startswith("process ")
        ]
        if len(mine) >= count or loop.time() > deadline:
            return spans
        await asyncio.sleep(0.05)


async def test_send_and_process_spans_form_one_trace_across_processes(
    start_cp_for_workers: Any,
    start_worker: Any,
    client_spans: InMemorySpanExporter,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    spans_file = tmp_path / "worker-spans.jsonl"
    monkeypatch.setenv("FWTESTS_SPANS", str(spans_file))
    control_plane = start_cp_for_workers()
    start_worker(control_plane, "trace-w1", task_modules=("fwtests_tracing_tasks",), concurrency=2)
    client_spans.clear()
    tracer = trace.get_tracer("fwtests")

    # When application code submits inside a span of its own
    async with Client(control_plane.discovery) as client:
        with tracer.start_as_current_span("handle request") as request:
            task_id = await client.delay("tracing.add", 1, 2)
            failing_id = await client.delay("tracing.fail")
        assert await client.result(task_id, timeout=15) == 3
        with pytest.raises(TaskFailed):
            await client.result(failing_id, timeout=15)

    # Then the client recorded a PRODUCER span per submission, a child of the request's span
    sends = {
        s.attributes["messaging.message.id"]: s for s in client_spans.get_finished_spans() if s.name.startswith("send ")
    }
    send = sends[task_id]
    assert send.name == "send tracing.add" and send.kind is trace.SpanKind.PRODUCER
    assert send.parent is not None and send.parent.span_id == request.get_span_context().span_id
    assert send.attributes["messaging.system"] == "fastworker"
    trace_id = format(request.get_span_context().trace_id, "032x")

    # and the subworker's CONSUMER span of the run is in the same trace, a child of that send span
    spans = await spans_of(spans_file, failing_id, 1)
    (process,) = [
        s for s in spans if s["name"] == "process tracing.add" and s["attributes"]["messaging.message.id"] == task_id
    ]
    assert process["kind"] == "CONSUMER"
    assert process["trace_id"] == trace_id
    assert process["parent_id"] == format(send.context.span_id, "016x")
    attributes = dict(process["attributes"])
    attributes.pop("fastworker.task.queue_wait_seconds", None)  # the wait's own test checks it
    assert attributes == {
        "messaging.system": "fastworker",
        "messaging.operation": "process",
        "messaging.message.id": task_id,
        "fastworker.task.name": "tracing.add",
        "fastworker.task.attempt": 1,
        "fastworker.worker.id": "trace-w1",
        "fastworker.task.outcome": "success",
    }
    # and the task's own span, made in the subworker's child process that ran it, nests under the run's span
    (inside,) = [s for s in spans if s["name"] == "inside add"]
    assert inside["trace_id"] == trace_id and inside["parent_id"] == process["span_id"]
    assert inside["pid"] != process["pid"]
    # and the failed run says so
    (failed,) = [s for s in spans if s["name"] == "process tracing.fail"]
    assert failed["status"] == "ERROR" and failed["attributes"]["fastworker.task.outcome"] == "failure"
    assert failed["attributes"]["error.type"] == "ValueError"
    assert failed["trace_id"] == trace_id


def check_wait(spans: list[dict[str, Any]], send: Any, worker_id: str, at_least: float) -> None:
    """The task's ``wait`` span: a sibling of its ``process`` span under ``send``, from ready to the run's start."""
    task_id = send.attributes["messaging.message.id"]
    mine = [s for s in spans if s["attributes"].get("messaging.message.id") == task_id]
    (wait,) = [s for s in mine if s["name"] == f"wait {send.attributes['fastworker.task.name']}"]
    (process,) = [s for s in mine if s["name"].startswith("process ")]
    assert wait["kind"] == "INTERNAL"
    assert wait["trace_id"] == process["trace_id"] == format(send.context.trace_id, "032x")
    assert wait["parent_id"] == process["parent_id"] == format(send.context.span_id, "016x")
    assert wait["attributes"]["fastworker.worker.id"] == worker_id
    assert wait["attributes"]["fastworker.task.attempt"] == 1
    # it ends where the run begins, and began once the control plane had the task (one host, one clock)
    assert wait["end"] == process["start"]
    assert wait["start"] >= send.start_time
    waited = process["attributes"]["fastworker.task.queue_wait_seconds"]
    assert waited == (wait["end"] - wait["start"]) / 1e9
    assert at_least <= waited < 15, waited


async def submit_behind_a_busy_slot(discovery: str) -> tuple[str, str]:
    """A traced request submits a task that holds the only slot for 0.6 s, then ``tracing.add``; both finish."""
    async with Client(discovery) as client:
        with trace.get_tracer("fwtests").start_as_current_span("handle request"):
            busy = await client.delay("tracing.sleep", 0.6)
            task_id = await client.delay("tracing.add", 1, 2)
        assert await client.result(task_id, timeout=15) == 3
        assert await client.result(busy, timeout=15) == 0.6
    return busy, task_id


async def test_the_wait_in_the_queue_is_a_span_on_the_control_plane_s_own_slots(
    start_cp: Any, client_spans: InMemorySpanExporter, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Given a control plane that runs the tasks itself, on one slot, and exports its spans
    spans_file = tmp_path / "controlplane-spans.jsonl"
    monkeypatch.setenv("FWTESTS_SPANS", str(spans_file))
    control_plane = start_cp("--local-concurrency", "1", task_modules=("fwtests_tracing_tasks",))
    client_spans.clear()
    # When a traced task waits behind a busy slot
    _, task_id = await submit_behind_a_busy_slot(control_plane.discovery)
    # Then its wait in the queue is a span of the caller's trace, as long as the slot was busy
    sends = {
        s.attributes["messaging.message.id"]: s for s in client_spans.get_finished_spans() if s.name.startswith("send ")
    }
    check_wait(await spans_of(spans_file, task_id, 1), sends[task_id], "controlplane", at_least=0.2)


async def test_the_wait_in_the_queue_is_a_span_on_a_subworker(
    start_cp_for_workers: Any,
    start_worker: Any,
    client_spans: InMemorySpanExporter,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # Given a subworker with one slot that exports its spans
    spans_file = tmp_path / "worker-spans.jsonl"
    monkeypatch.setenv("FWTESTS_SPANS", str(spans_file))
    control_plane = start_cp_for_workers()
    start_worker(control_plane, "wait-w1", task_modules=("fwtests_tracing_tasks",), concurrency=1)
    client_spans.clear()
    # When a traced task waits behind its busy slot
    _, task_id = await submit_behind_a_busy_slot(control_plane.discovery)
    # Then its wait (from the control plane's ready time to the subworker's start) is a span of the caller's trace
    sends = {
        s.attributes["messaging.message.id"]: s for s in client_spans.get_finished_spans() if s.name.startswith("send ")
    }
    check_wait(await spans_of(spans_file, task_id, 1), sends[task_id], "wait-w1", at_least=0.2)


async def test_runs_cancelled_on_the_control_plane_s_own_slots_end_their_spans_cancelled(
    start_cp: Any, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Given a control plane that runs a sync and an async task itself, and exports its spans
    spans_file = tmp_path / "controlplane-spans.jsonl"
    monkeypatch.setenv("FWTESTS_SPANS", str(spans_file))
    control_plane = start_cp("--local-concurrency", "2", task_modules=("fwtests_tracing_tasks",))
    async with Client(control_plane.discovery) as client:
        ids = [await client.delay("tracing.spin"), await client.delay("tracing.wait_async")]
        async with asyncio.timeout(15):
            while [(await client.status(task_id)).state.value for task_id in ids] != ["RUNNING", "RUNNING"]:
                await asyncio.sleep(0.05)
        # When both are cancelled while they run
        for task_id in ids:
            assert (await client.cancel(task_id)).cancelled
    # Then each run's process span says so, as a subworker's does
    for task_id in ids:
        spans = await spans_of(spans_file, task_id, 1)
        (process,) = [
            s for s in spans if s["name"].startswith("process ") and s["attributes"]["messaging.message.id"] == task_id
        ]
        assert process["attributes"]["fastworker.task.outcome"] == "cancelled", process
        assert process["attributes"]["error.type"] == "TaskCancelled"
