"""OpenTelemetry spans and W3C trace-context propagation, when the application uses ``opentelemetry-api``.

Private, shared by the client (``send <task>`` spans, the context written into the task's headers),
the control plane (when a traced attempt became ready, written into the spec it dispatches) and
the executing sides, the control plane's slots and subworkers (``wait <task>`` and ``process
<task>`` spans whose parent is that context). OpenTelemetry is never imported here first: only once the application
(or its task modules) imported it, so a process that does not trace pays neither its ~90 ms import
nor more than a dictionary lookup per submission and per run; nor does one whose tracer provider
is not configured (the API's no-op), beyond reading the provider.
"""

from __future__ import annotations

import contextlib
import sys
import time
from collections.abc import Iterator
from typing import Any

from fastworker.client.version import __version__
from fastworker.protocol.v1 import task_pb2

#: ``messaging.system`` of every span.
SYSTEM = "fastworker"
#: The header the submitting client's trace context travels in (W3C trace context).
TRACEPARENT = "traceparent"
#: The header the control plane writes into a traced task it dispatches: when the attempt became
#: ready to run (Unix seconds, the control plane's clock), for the executing side's ``wait`` span.
READY_AT = "fastworker-ready-at"
#: The OpenTelemetry modules (context, propagate, trace), once the application imported them.
_modules: tuple[Any, Any, Any] | None = None


def _loaded() -> tuple[Any, Any, Any] | None:
    global _modules
    if _modules is None:
        if "opentelemetry.trace" not in sys.modules:
            return None  # the application does not trace
        from opentelemetry import context, propagate, trace

        _modules = (context, propagate, trace)
    return _modules


def _required() -> tuple[Any, Any, Any]:
    """The OpenTelemetry modules, where :func:`tracer` returned one (they are loaded then)."""
    assert _modules is not None
    return _modules


def tracer() -> Any | None:
    """The tracer to use, or None when tracing is off (OpenTelemetry unused, or no provider configured)."""
    modules = _modules
    if modules is None:
        if "opentelemetry.trace" not in sys.modules:
            return None  # the common case, asked once per run: decided without a further call
        modules = _loaded()
        assert modules is not None
    trace = modules[2]
    provider = trace.get_tracer_provider()
    if isinstance(provider, trace.ProxyTracerProvider | trace.NoOpTracerProvider):
        return None
    return provider.get_tracer("fastworker", __version__)


def _attributes(operation: str, spec: task_pb2.TaskSpec) -> dict[str, Any]:
    """The attributes every span of a task carries (messaging conventions, plus the task's name)."""
    return {
        "messaging.system": SYSTEM,
        "messaging.operation": operation,
        "messaging.message.id": spec.task_id,
        "fastworker.task.name": spec.name,
    }


def inject_send(spec: task_pb2.TaskSpec) -> None:
    """Record a ``send <name>`` PRODUCER span for a submission and write its context into the spec's headers.

    The span is a child of whatever span is current in the submitting code; the task's execution
    (``process`` below) becomes its child, in another process perhaps. The headers are not touched
    when tracing is off (reading a protobuf map makes one).
    """
    active = tracer()
    if active is None:
        return
    _, propagate, trace = _required()
    with active.start_as_current_span(
        f"send {spec.name}", kind=trace.SpanKind.PRODUCER, attributes=_attributes("send", spec)
    ):
        propagate.inject(spec.headers)


def stamp_ready(spec: task_pb2.TaskSpec, ready_at: float) -> None:
    """Write when this attempt became ready into a traced spec's headers (the control plane, on dispatch).

    Only a spec that carries the submitter's trace context gets it, whether or not the control
    plane itself traces: the queue wait belongs to that trace, and untraced tasks pay one lookup.
    """
    headers = spec.headers
    if TRACEPARENT in headers:
        headers[READY_AT] = f"{ready_at:.6f}"


def _ready_at(spec: task_pb2.TaskSpec) -> float | None:
    """The ready time the control plane wrote (None when absent or not a number)."""
    try:
        return float(spec.headers[READY_AT])
    except (KeyError, ValueError):
        return None


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
            trace = sys.modules["opentelemetry.trace"]
            span.set_status(trace.Status(trace.StatusCode.ERROR, f"{error_type}: {message}"[:500]))


_OFF = ProcessSpan(None)


class _Untraced:
    """The context manager :func:`process` returns when tracing is off: no generator, no span, per run."""

    __slots__ = ()

    def __enter__(self) -> ProcessSpan:
        return _OFF

    def __exit__(self, *exc_info: object) -> None:
        return None


_UNTRACED = _Untraced()


def process(
    spec: task_pb2.TaskSpec, attempt: int, worker_id: str, ready_at: float | None = None
) -> contextlib.AbstractContextManager[ProcessSpan]:
    """A ``process <name>`` CONSUMER span around one run, current inside the block (the task's own spans nest).

    Its parent is the context the submitting client wrote into the task's headers, if any. For
    such a traced task, the time since the attempt became ready (``ready_at``, else the control
    plane's header from :func:`stamp_ready`) is a ``wait <name>`` span ending where this one
    starts, and the ``fastworker.task.queue_wait_seconds`` attribute of this one. With tracing off
    this is a shared do-nothing context manager: the hot path pays a lookup, not a span.
    """
    active = tracer()
    if active is None:
        return _UNTRACED
    return _traced_process(active, spec, attempt, worker_id, ready_at)


@contextlib.contextmanager
def _traced_process(
    active: Any, spec: task_pb2.TaskSpec, attempt: int, worker_id: str, ready_at: float | None
) -> Iterator[ProcessSpan]:
    _, propagate, trace = _required()
    headers = spec.headers
    parent = propagate.extract(headers) if headers else None
    attributes = _attributes("process", spec)
    attributes["fastworker.task.attempt"] = attempt
    attributes["fastworker.worker.id"] = worker_id
    start = time.time_ns()
    if headers and TRACEPARENT in headers:
        waited = _record_wait(active, spec, parent, attempt, worker_id, ready_at, start)
        if waited is not None:
            attributes["fastworker.task.queue_wait_seconds"] = waited / 1e9
    with active.start_as_current_span(
        f"process {spec.name}",
        context=parent,
        kind=trace.SpanKind.CONSUMER,
        attributes=attributes,
        start_time=start,
        record_exception=False,
        set_status_on_exception=False,
    ) as span:
        yield ProcessSpan(span)


def _record_wait(
    active: Any,
    spec: task_pb2.TaskSpec,
    parent: Any,
    attempt: int,
    worker_id: str,
    ready_at: float | None,
    start: int,
) -> int | None:
    """Record the ``wait <name>`` span from ready to ``start`` (ns); returns its length in ns (None: ready unknown).

    A span with explicit times, ended at once: the wait is over when the run starts, and a span
    the control plane would have to keep open across processes would cost every task.
    """
    if ready_at is None:
        ready_at = _ready_at(spec)
        if ready_at is None:
            return None
    # Another host's clock may be ahead: a wait is never negative (as in the histogram).
    waited = max(0, start - int(ready_at * 1e9))
    attributes = {
        "messaging.system": SYSTEM,
        "messaging.message.id": spec.task_id,
        "fastworker.task.name": spec.name,
        "fastworker.task.attempt": attempt,
        "fastworker.worker.id": worker_id,
    }
    kind = _required()[2].SpanKind.INTERNAL
    span = active.start_span(
        f"wait {spec.name}", context=parent, kind=kind, attributes=attributes, start_time=start - waited
    )
    span.end(end_time=start)
    return waited


def carrier() -> dict[str, str]:
    """The current trace context as W3C headers, to hand to another process ({} when tracing is off)."""
    headers: dict[str, str] = {}
    if tracer() is not None:
        _required()[1].inject(headers)
    return headers


@contextlib.contextmanager
def attached(headers: dict[str, str] | None) -> Iterator[None]:
    """Within the block, the context in ``headers`` (from :func:`carrier`) is current: spans made there nest under it."""
    if not headers or tracer() is None:
        yield
        return
    context, propagate, _ = _required()
    token = context.attach(propagate.extract(headers))
    try:
        yield
    finally:
        context.detach(token)
