"""Tasks for the tracing test, loaded by a subworker that exports its spans to a file.

With ``FWTESTS_SPANS`` set, importing this module configures OpenTelemetry's SDK in that process
(as an application's task module would) with an exporter that appends each finished span to that
file as one JSON line, for the test to read.
"""

from __future__ import annotations

import asyncio
import json
import os
import time
from collections.abc import Sequence

from opentelemetry import trace
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor, SpanExporter, SpanExportResult

from fastworker.client import task


class JsonLinesExporter(SpanExporter):
    """Appends each span to a file as one JSON object per line."""

    def __init__(self, path: str) -> None:
        self.path = path

    def export(self, spans: Sequence[ReadableSpan]) -> SpanExportResult:
        lines = []
        for span in spans:
            context = span.get_span_context()
            lines.append(
                json.dumps(
                    {
                        "name": span.name,
                        "kind": span.kind.name,
                        "trace_id": format(context.trace_id, "032x"),
                        "span_id": format(context.span_id, "016x"),
                        "parent_id": format(span.parent.span_id, "016x") if span.parent else None,
                        "attributes": dict(span.attributes or {}),
                        "status": span.status.status_code.name,
                        "start": span.start_time,
                        "end": span.end_time,
                        "pid": os.getpid(),
                    }
                )
            )
        with open(self.path, "a", encoding="utf-8") as out:
            out.write("".join(line + "\n" for line in lines))
        return SpanExportResult.SUCCESS


if os.environ.get("FWTESTS_SPANS"):
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(JsonLinesExporter(os.environ["FWTESTS_SPANS"])))
    trace.set_tracer_provider(provider)


@task(name="tracing.add")
def add(x: int, y: int) -> int:
    with trace.get_tracer("fwtests").start_as_current_span("inside add"):
        return x + y


@task(name="tracing.sleep")
def sleep(seconds: float) -> float:
    """Holds its slot, so that the next task waits in the queue for about ``seconds``."""
    time.sleep(seconds)
    return seconds


@task(name="tracing.fail")
def fail() -> None:
    raise ValueError("traced failure")


@task(name="tracing.spin")
def spin() -> None:
    """Runs until cancelled (short sleeps: the cancel lands between them)."""
    while True:
        time.sleep(0.01)


@task(name="tracing.wait_async")
async def wait_async() -> None:
    """Runs on the event loop until cancelled."""
    await asyncio.sleep(60)
