"""Fixtures for the web dashboard's unit tests: a fake admin client and started apps around it."""

from __future__ import annotations

import contextlib
import sys
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any

import httpx
import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent))  # tests import web_fakes (no package here)

from web_fakes import NOW, FakeAdminClient, failing_task, make_task

from fastworker.client import TaskState
from fastworker.dashboard.web.app import create_app


@pytest.fixture
def fake() -> FakeAdminClient:
    fake = FakeAdminClient()
    fake.add(make_task("a" * 8 + "-0000-4000-8000-000000000001"), args=[1, 2])
    fake.add(failing_task())
    fake.add(make_task("b" * 8 + "-0000-4000-8000-000000000001", state=TaskState.RUNNING, queued_at=NOW + 5))
    return fake


AppFactory = Callable[..., Awaitable[httpx.AsyncClient]]


@pytest.fixture
async def make_client(fake: FakeAdminClient) -> AsyncIterator[AppFactory]:
    """``await make_client(read_only=..., secret=...)``: an HTTP client for a started app around ``fake``."""
    async with contextlib.AsyncExitStack() as stack:

        async def make(**kwargs: Any) -> httpx.AsyncClient:
            app = create_app(control_plane="tcp://127.0.0.1:5550", client=fake, **kwargs)
            await stack.enter_async_context(app.router.lifespan_context(app))
            client = httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://testserver")
            client.app = app  # type: ignore[attr-defined]
            return await stack.enter_async_context(client)

        yield make


@pytest.fixture
async def web(make_client: AppFactory) -> httpx.AsyncClient:
    """An HTTP client for a writable dashboard without a secret."""
    return await make_client()
