"""OpenTelemetry spans and W3C trace-context propagation, when ``opentelemetry-api`` is installed.

Private, shared by the client (``send <task>`` spans, the context written into the task's headers)
and the executing sides, the control plane's slots and subworkers (``process <task>`` spans whose
parent is that context). Without ``opentelemetry-api``, or with it but no tracer provider
configured, every function returns at once: one global read, no span, no header.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from typing import Any

try:  # an optional dependency: fastworker-client[otel]
    from opentelemetry import context as _context
    from opentelemetry import propagate as _propagate
    from opentelemetry import trace as _trace

    INSTALLED = True
except ImportError:  # pragma: no cover - exercised where opentelemetry is not installed
    INSTALLED = False

from fastworker.client.version import __version__
from fastworker.protocol.v1 import task_pb2

#: ``messaging.system`` of every span.
SYSTEM = "fastworker"
_NO_OP_PROVIDERS: tuple[type, ...] = (_trace.ProxyTracerProvider, _trace.NoOpTracerProvider) if INSTALLED else ()


def tracer() -> Any | None:
    """The tracer to use, or None when tracing is off (not installed, or no provider configured)."""
    if not INSTALLED:
        return None
    provider = _trace.get_tracer_provider()
    if isinstance(provider, _NO_OP_PROVIDERS):
        return None
    return provider.get_tracer("fastworker", __version__)


def inject_send(spec: task_pb2.TaskSpec) -> None:
    """Record a ``send <name>`` PRODUCER span for a submission and write its context into the spec's headers.

    The span is a child of whatever span is current in the submitting code; the task's execution
    (``process`` below) becomes its child, in another process perhaps. The headers are not touched
    when tracing is off (reading a protobuf map makes one).
    """
    active = tracer()
    if active is None:
        return
    name, task_id = spec.name, spec.task_id
    with active.start_as_current_span(
        f"send {name}",
        kind=_trace.SpanKind.PRODUCER,
        attributes={
            "messaging.system": SYSTEM,
            "messaging.operation": "send",
            "messaging.message.id": task_id,
            "fastworker.task.name": name,
        },
    ):
        _propagate.inject(spec.headers)


class ProcessSpan:
    """What the executing side tells the ``process`` span about the run's end."""

    __slots__ = ("_span",)

    def __init__(self, span: Any) -> None:
        self._span = span

    def ended(self, outcome: str, error_type: str = "", message: str = "") -> None:
        """The run's outcome: ``success``, ``failure``, ``retry`` or ``cancelled`` (with the error, if any)."""
        span = self._span
        if span is None:
            return
        span.set_attribute("fastworker.task.outcome", outcome)
        if error_type:
            span.set_attribute("error.type", error_type)
        if outcome in ("failure", "retry"):
            span.set_status(_trace.Status(_trace.StatusCode.ERROR, f"{error_type}: {message}"[:500]))


_OFF = ProcessSpan(None)


@contextlib.contextmanager
def process(spec: task_pb2.TaskSpec, attempt: int, worker_id: str) -> Iterator[ProcessSpan]:
    """A ``process <name>`` CONSUMER span around one run, current inside the block (the task's own spans nest).

    Its parent is the context the submitting client wrote into the task's headers, if any.
    """
    active = tracer()
    if active is None:
        yield _OFF
        return
    name, task_id = spec.name, spec.task_id
    with active.start_as_current_span(
        f"process {name}",
        context=_propagate.extract(spec.headers) if spec.headers else None,
        kind=_trace.SpanKind.CONSUMER,
        attributes={
            "messaging.system": SYSTEM,
            "messaging.operation": "process",
            "messaging.message.id": task_id,
            "fastworker.task.name": name,
            "fastworker.task.attempt": attempt,
            "fastworker.worker.id": worker_id,
        },
        record_exception=False,
        set_status_on_exception=False,
    ) as span:
        yield ProcessSpan(span)


def carrier() -> dict[str, str]:
    """The current trace context as W3C headers, to hand to another process ({} when tracing is off)."""
    headers: dict[str, str] = {}
    if tracer() is not None:
        _propagate.inject(headers)
    return headers


@contextlib.contextmanager
def attached(headers: dict[str, str] | None) -> Iterator[None]:
    """Within the block, the context in ``headers`` (from :func:`carrier`) is current: spans made there nest under it."""
    if not headers or tracer() is None:
        yield
        return
    token = _context.attach(_propagate.extract(headers))
    try:
        yield
    finally:
        _context.detach(token)
