"""OpenTelemetry spans: a submission's context rides in the task's headers and parents the run's span."""

from __future__ import annotations

import sys
import time
from collections.abc import Iterator

import pytest
from opentelemetry import trace
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

from fastworker.client import _tracing
from fastworker.protocol.v1 import task_pb2

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


@pytest.fixture
def spans() -> Iterator[InMemorySpanExporter]:
    _export_to(_EXPORTER)
    _EXPORTER.clear()
    yield _EXPORTER


def test_a_send_span_writes_its_context_and_the_process_span_is_its_child(spans: InMemorySpanExporter) -> None:
    spec = task_pb2.TaskSpec(task_id="t-1", name="reports.build")
    with trace.get_tracer("app").start_as_current_span("request"):
        _tracing.inject_send(spec)
    assert spec.headers["traceparent"].startswith("00-")

    with _tracing.process(spec, 2, "w-1") as span:
        span.ended("retry", "Retry", "again later")

    by_name = {s.name: s for s in spans.get_finished_spans()}
    send, process, request = by_name["send reports.build"], by_name["process reports.build"], by_name["request"]
    assert send.kind is trace.SpanKind.PRODUCER and process.kind is trace.SpanKind.CONSUMER
    assert send.parent is not None and send.parent.span_id == request.context.span_id
    assert process.parent is not None and process.parent.span_id == send.context.span_id
    assert process.context.trace_id == request.context.trace_id
    assert dict(process.attributes or {}) == {
        "messaging.system": "fastworker",
        "messaging.operation": "process",
        "messaging.message.id": "t-1",
        "fastworker.task.name": "reports.build",
        "fastworker.task.attempt": 2,
        "fastworker.worker.id": "w-1",
        "fastworker.task.outcome": "retry",
        "error.type": "Retry",
    }
    assert process.status.status_code is trace.StatusCode.ERROR


def test_a_run_without_a_context_is_a_root_span(spans: InMemorySpanExporter) -> None:
    with _tracing.process(task_pb2.TaskSpec(task_id="t-2", name="n"), 1, "controlplane") as span:
        span.ended("success")
    (process,) = spans.get_finished_spans()
    assert process.parent is None
    assert process.attributes is not None and process.attributes["fastworker.task.outcome"] == "success"
    assert process.status.status_code is trace.StatusCode.UNSET


def test_without_opentelemetry_nothing_is_recorded_or_written(
    spans: InMemorySpanExporter, monkeypatch: pytest.MonkeyPatch
) -> None:
    # As where the application does not use OpenTelemetry: never imported, never loaded here.
    monkeypatch.setattr(_tracing, "_modules", None)
    monkeypatch.delitem(sys.modules, "opentelemetry.trace")
    spec = task_pb2.TaskSpec(task_id="t-3", name="n")
    _tracing.inject_send(spec)
    with _tracing.process(spec, 1, "w") as span:
        span.ended("failure", "KeyError", "x")
    assert spans.get_finished_spans() == ()
    assert dict(spec.headers) == {}


def test_the_wait_in_the_queue_is_a_span_between_ready_and_the_run_for_a_traced_task(
    spans: InMemorySpanExporter,
) -> None:
    # Given a traced submission that the control plane stamped as ready 2.5 s before the run
    spec = task_pb2.TaskSpec(task_id="t-4", name="reports.build")
    with trace.get_tracer("app").start_as_current_span("request"):
        _tracing.inject_send(spec)
    ready = time.time() - 2.5
    _tracing.stamp_ready(spec, ready)
    assert spec.headers[_tracing.READY_AT] == f"{ready:.6f}"

    with _tracing.process(spec, 1, "w-1") as span:
        span.ended("success")

    # Then a `wait` span, a sibling of `process` under `send`, runs from ready to the run's start
    by_name = {s.name: s for s in spans.get_finished_spans()}
    send, wait, process = by_name["send reports.build"], by_name["wait reports.build"], by_name["process reports.build"]
    assert wait.parent is not None and wait.parent.span_id == send.context.span_id
    assert wait.context.trace_id == send.context.trace_id
    assert wait.kind is trace.SpanKind.INTERNAL
    assert wait.start_time is not None and wait.end_time == process.start_time
    assert abs(wait.start_time / 1e9 - ready) < 0.001
    waited = (process.attributes or {})["fastworker.task.queue_wait_seconds"]
    assert isinstance(waited, float) and 2.5 <= waited < 10
    assert dict(wait.attributes or {}) == {
        "messaging.system": "fastworker",
        "messaging.message.id": "t-4",
        "fastworker.task.name": "reports.build",
        "fastworker.task.attempt": 1,
        "fastworker.worker.id": "w-1",
    }


def test_a_ready_time_given_by_the_local_slots_and_a_clock_ahead_never_make_a_negative_wait(
    spans: InMemorySpanExporter,
) -> None:
    spec = task_pb2.TaskSpec(task_id="t-5", name="n")
    with trace.get_tracer("app").start_as_current_span("request"):
        _tracing.inject_send(spec)
    with _tracing.process(spec, 1, "controlplane", ready_at=time.time() + 60):  # another host's clock, ahead
        pass
    by_name = {s.name: s for s in spans.get_finished_spans()}
    assert by_name["wait n"].start_time == by_name["wait n"].end_time == by_name["process n"].start_time
    assert (by_name["process n"].attributes or {})["fastworker.task.queue_wait_seconds"] == 0.0


def test_an_untraced_task_gets_no_ready_header_and_no_wait_span(spans: InMemorySpanExporter) -> None:
    spec = task_pb2.TaskSpec(task_id="t-6", name="n")
    _tracing.stamp_ready(spec, time.time())
    assert dict(spec.headers) == {}  # the control plane adds nothing to untraced tasks
    with _tracing.process(spec, 1, "controlplane", ready_at=time.time() - 1):
        pass
    (process,) = spans.get_finished_spans()
    assert process.name == "process n" and "fastworker.task.queue_wait_seconds" not in (process.attributes or {})
