"""``/metrics`` (Prometheus text format) and ``/healthz`` (is the control plane answering?)."""

from __future__ import annotations

import asyncio
from typing import Any

from fastapi import APIRouter
from starlette.responses import Response

from fastworker.dashboard.web.deps import ClientDep, ConfigDep
from fastworker.dashboard.web.exposition import CONTENT_TYPE, build_metrics, render

router = APIRouter()


@router.get("/metrics")
async def metrics(client: ClientDep) -> Response:
    """Counters and gauges for Prometheus, read fresh from the control plane on every scrape."""
    stats, queues, workers = await asyncio.gather(client.stats(), client.queues(), client.workers())
    return Response(render(build_metrics(stats, queues, workers)), media_type=CONTENT_TYPE)


@router.get("/healthz")
async def healthz(client: ClientDep, config: ConfigDep) -> dict[str, Any]:
    """200 with the control plane's uptime when it answers, 503 (JSON) when it does not."""
    stats = await client.stats()
    return {"status": "ok", "control_plane": config.control_plane, "uptime": stats.get("uptime")}
