"""OpenTelemetry spans and W3C trace-context propagation, when the application uses ``opentelemetry-api``.

Private, shared by the client (``send <task>`` spans, the context written into the task's headers)
and the executing sides, the control plane's slots and subworkers (``process <task>`` spans whose
parent is that context). OpenTelemetry is never imported here first: only once the application
(or its task modules) imported it, so a process that does not trace pays neither its ~90 ms import
nor more than a dictionary lookup per submission and per run; nor does one whose tracer provider
is not configured (the API's no-op), beyond reading the provider.
"""

from __future__ import annotations

import contextlib
import sys
from collections.abc import Iterator
from typing import Any

from fastworker.client.version import __version__
from fastworker.protocol.v1 import task_pb2

#: ``messaging.system`` of every span.
SYSTEM = "fastworker"
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
    modules = _loaded()
    if modules is None:
        return None
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


def process(spec: task_pb2.TaskSpec, attempt: int, worker_id: str) -> contextlib.AbstractContextManager[ProcessSpan]:
    """A ``process <name>`` CONSUMER span around one run, current inside the block (the task's own spans nest).

    Its parent is the context the submitting client wrote into the task's headers, if any. With
    tracing off this is a shared do-nothing context manager: the hot path pays a lookup, not a span.
    """
    active = tracer()
    if active is None:
        return _UNTRACED
    return _traced_process(active, spec, attempt, worker_id)


@contextlib.contextmanager
def _traced_process(active: Any, spec: task_pb2.TaskSpec, attempt: int, worker_id: str) -> Iterator[ProcessSpan]:
    _, propagate, trace = _required()
    attributes = _attributes("process", spec)
    attributes["fastworker.task.attempt"] = attempt
    attributes["fastworker.worker.id"] = worker_id
    with active.start_as_current_span(
        f"process {spec.name}",
        context=propagate.extract(spec.headers) if spec.headers else None,
        kind=trace.SpanKind.CONSUMER,
        attributes=attributes,
        record_exception=False,
        set_status_on_exception=False,
    ) as span:
        yield ProcessSpan(span)


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
