"""The shop's HTTP API: enqueue background work, report on it. Run: ``uvicorn webshop.main:app``.

The control plane's address comes from ``FASTWORKER_CONTROL_PLANE`` (default
``tcp://127.0.0.1:5550``); ``GET /healthz`` says whether it answers and how many workers are online.
"""

from __future__ import annotations

from decimal import Decimal
from typing import Any

from fastapi import FastAPI, HTTPException, Response, status
from pydantic import BaseModel, Field

from fastworker.client import TaskNotFound, TaskState, TaskTimeout
from fastworker.client.fastapi import FastWorker, FastWorkerClient
from webshop.tasks import build_sales_report, send_welcome_email

app = FastAPI(title="webshop")
fastworker = FastWorker(app, health_path="/healthz")  # one shared client, opened and closed with the app


class Signup(BaseModel):
    """A new customer."""

    email: str = Field(pattern=r".+@.+")


class ReportRequest(BaseModel):
    """A month's order amounts to report on."""

    month: str = Field(pattern=r"^\d{4}-\d{2}$")
    amounts: list[Decimal]


class Accepted(BaseModel):
    """A queued task, and where to read how it went."""

    task_id: str
    status_url: str


@app.post("/signup", status_code=status.HTTP_202_ACCEPTED)
async def signup(body: Signup) -> Accepted:
    """Register a customer; the welcome email goes out in the background."""
    handle = await send_welcome_email.delay(body.email)  # typed: TaskHandle[dict[str, str]]
    return Accepted(task_id=handle.id, status_url=f"/tasks/{handle.id}")


@app.post("/reports", status_code=status.HTTP_202_ACCEPTED)
async def request_report(body: ReportRequest) -> Accepted:
    """Queue a sales report (low priority: it never delays emails)."""
    handle = await build_sales_report.delay(body.month, body.amounts)
    return Accepted(task_id=handle.id, status_url=f"/reports/{handle.id}")


@app.get("/reports/{task_id}")
async def get_report(task_id: str, response: Response, wait: float = 0.0) -> dict[str, Any]:
    """The finished report (200), or 202 while it is being built; ``wait`` holds the request up to that many seconds."""
    handle = build_sales_report.handle(task_id)  # a typed handle for an id from the URL
    try:
        info = await handle.wait(timeout=min(wait, 10.0)) if wait > 0 else await handle.status()
    except TaskTimeout:
        info = await handle.status()
    except TaskNotFound:
        raise HTTPException(status.HTTP_404_NOT_FOUND, "no such report") from None
    if not info.state.is_final:
        response.status_code = status.HTTP_202_ACCEPTED
        return {"task_id": task_id, "state": info.state}
    if info.state is not TaskState.SUCCESS:
        raise HTTPException(status.HTTP_500_INTERNAL_SERVER_ERROR, f"the report failed: {info.error}")
    return {"task_id": task_id, "state": info.state, "report": info.result}


@app.post("/preview-email")
async def preview_email(body: Signup) -> dict[str, str]:
    """Render the welcome email through the task and wait for it (typed ``submit``: the result is a dict[str, str])."""
    return await send_welcome_email.with_options(timeout=10).submit(body.email)


@app.get("/tasks/{task_id}")
async def task_status(task_id: str, client: FastWorkerClient) -> dict[str, Any]:
    """Any task's state, result and error, read through the app's shared client."""
    try:
        info = await client.status(task_id)
    except TaskNotFound:
        raise HTTPException(status.HTTP_404_NOT_FOUND, "no such task") from None
    error = {"type": info.error.type, "message": info.error.message} if info.error else None
    return {"task_id": info.id, "name": info.name, "state": info.state, "result": info.result, "error": error}
