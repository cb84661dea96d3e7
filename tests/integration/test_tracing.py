"""OpenTelemetry across real processes: the client's ``send`` span, a subworker's ``process`` span and the task's own spans are one trace.

The test process uses the SDK's in-memory exporter; the subworker (a real process) exports its
spans as JSON lines to a file (``fwtests_tracing_tasks``).
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
    """The worker's spans for one task, once ``count`` of them were written (bounded wait)."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + bound
    while True:
        spans = []
        if path.exists():
            spans = [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
        mine = [s for s in spans if s["attributes"].get("messaging.message.id") == task_id]
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
    assert process["attributes"] == {
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
    (failed,) = [s for s in spans if s["attributes"].get("messaging.message.id") == failing_id]
    assert failed["status"] == "ERROR" and failed["attributes"]["fastworker.task.outcome"] == "failure"
    assert failed["attributes"]["error.type"] == "ValueError"
    assert failed["trace_id"] == trace_id
