"""FastWorker(app): lifespan wiring, the dependency, health and error answers, without a control plane.

A control plane that never answers (nothing listens on the address) or an in-memory stand-in is
enough here; tests/examples/test_fastapi_app.py runs the example app under uvicorn against real
processes.
"""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator
from typing import Any

import httpx
import pytest
from fastapi import FastAPI

from fastworker.client import (
    Client,
    ControlPlaneUnavailable,
    QueueFull,
    TaskRegistry,
    current_client,
    set_default_client,
    set_default_sync_client,
)
from fastworker.client.fastapi import FastWorker, FastWorkerClient
from fastworker.client.task import SyncTaskFunction, TaskOptions

NOWHERE = "tcp://127.0.0.1:9"  # the discard port: no control plane announces itself there


def _double(x: int) -> int:
    return 2 * x


DOUBLE = TaskRegistry().register(SyncTaskFunction(_double, "tests.double", TaskOptions()))


class FakeClient:
    """Answers stats and typed submissions like a control plane with two workers."""

    address = "tcp://fake:5550"

    def __init__(self) -> None:
        self.closed = False
        self.sent: list[tuple[str, tuple[Any, ...]]] = []

    async def stats(self) -> dict[str, Any]:
        return {"workers": 2, "queued": 5, "running": 1}

    async def send(self, name: str, args: Any = (), kwargs: Any = None, **options: Any) -> str:
        self.sent.append((name, tuple(args)))
        return f"id-{len(self.sent)}"

    async def aclose(self) -> None:
        self.closed = True


@contextlib.asynccontextmanager
async def serve(app: FastAPI, raise_app_exceptions: bool = True) -> AsyncIterator[httpx.AsyncClient]:
    """Run the app's lifespan and talk HTTP to it in-process (what uvicorn would do around it)."""
    async with app.router.lifespan_context(app):
        transport = httpx.ASGITransport(app=app, raise_app_exceptions=raise_app_exceptions)
        async with httpx.AsyncClient(transport=transport, base_url="http://testserver") as http:
            yield http


@pytest.fixture(autouse=True)
def no_default_client() -> Any:
    previous = set_default_client(None)
    yield
    set_default_client(previous)


async def test_the_client_lives_exactly_as_long_as_the_app_and_is_the_default_meanwhile() -> None:
    app = FastAPI()
    fastworker = FastWorker(app, NOWHERE, connect_timeout=0.2)
    seen: dict[str, Any] = {}

    @app.get("/which")
    async def which(client: FastWorkerClient) -> dict[str, bool]:
        seen["client"] = client
        return {"same": client is fastworker.client and current_client() is client}

    with pytest.raises(RuntimeError, match="only while the app runs"):
        _ = fastworker.client
    async with serve(app) as http:
        assert (await http.get("/which")).json() == {"same": True}
        assert isinstance(seen["client"], Client) and seen["client"].address == NOWHERE
    with pytest.raises(RuntimeError, match="only while the app runs"):
        _ = fastworker.client
    assert seen["client"]._closed  # closed at shutdown
    with pytest.raises(Exception, match="no client"):
        current_client()  # the previous default (none) is back


async def test_the_apps_own_lifespan_runs_inside_and_can_use_the_client() -> None:
    events: list[str] = []

    @contextlib.asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        events.append(f"startup with {type(app.state.fastworker.client).__name__}")
        yield
        events.append("shutdown")

    app = FastAPI(lifespan=lifespan)
    FastWorker(app, NOWHERE, connect_timeout=0.2)
    async with serve(app):
        events.append("serving")
    assert events == ["startup with Client", "serving", "shutdown"]


async def test_startup_does_not_wait_for_an_unreachable_control_plane_and_health_says_disconnected() -> None:
    app = FastAPI()
    FastWorker(app, NOWHERE, health_path="/healthz", health_timeout=0.3, connect_timeout=30)
    async with serve(app) as http:  # a 30 s connect timeout would show here if startup waited for it
        response = await http.get("/healthz")
    assert response.status_code == 503
    body = response.json()
    assert body["connected"] is False and body["workers_online"] == 0 and body["control_plane"] == NOWHERE
    assert "0.3 s" in body["error"]


async def test_health_reports_workers_online_when_connected() -> None:
    app = FastAPI()
    fake = FakeClient()
    FastWorker(app, client=fake, health_path="/healthz")  # type: ignore[arg-type]
    async with serve(app) as http:
        response = await http.get("/healthz")
    assert response.status_code == 200
    assert response.json() == {
        "connected": True,
        "control_plane": "tcp://fake:5550",
        "workers_online": 2,
        "queued": 5,
        "running": 1,
        "error": None,
    }
    assert not fake.closed  # a client given to FastWorker belongs to the caller


async def test_typed_submissions_in_handlers_use_the_apps_client() -> None:
    app = FastAPI()
    fake = FakeClient()
    FastWorker(app, client=fake)  # type: ignore[arg-type]

    @app.post("/double/{x}")
    async def double(x: int) -> dict[str, str]:
        handle = await DOUBLE.delay(x)
        return {"task_id": handle.id}

    async with serve(app) as http:
        assert (await http.post("/double/21")).json() == {"task_id": "id-1"}
    assert fake.sent == [("tests.double", (21,))]


async def test_typed_submissions_in_plain_def_handlers_use_the_apps_client_too() -> None:
    app = FastAPI()
    fake = FakeClient()
    FastWorker(app, client=fake)  # type: ignore[arg-type]

    @app.post("/double/{x}")
    def double(x: int) -> dict[str, str]:  # FastAPI runs it on a thread pool, with no event loop
        return {"task_id": DOUBLE.delay_sync(x).id}

    async with serve(app) as http:
        assert (await http.post("/double/21")).json() == {"task_id": "id-1"}
    assert fake.sent == [("tests.double", (21,))]  # not a SyncClient of FASTWORKER_CONTROL_PLANE's
    assert set_default_sync_client(None) is None  # the app stopped: its sync default went with it


@pytest.mark.parametrize("error", [ControlPlaneUnavailable("down"), QueueFull("full")])
async def test_an_unavailable_control_plane_or_full_queue_answers_503_with_retry_after(error: Exception) -> None:
    app = FastAPI()
    FastWorker(app, client=FakeClient())  # type: ignore[arg-type]

    @app.get("/boom")
    async def boom() -> None:
        raise error

    async with serve(app) as http:
        response = await http.get("/boom")
    assert response.status_code == 503
    assert response.headers["retry-after"] == "5"
    assert response.json() == {"detail": str(error), "error": type(error).__name__}


async def test_handle_errors_false_leaves_errors_to_the_app() -> None:
    app = FastAPI()
    FastWorker(app, client=FakeClient(), handle_errors=False)  # type: ignore[arg-type]

    @app.get("/boom")
    async def boom() -> None:
        raise ControlPlaneUnavailable("down")

    async with serve(app, raise_app_exceptions=False) as http:
        assert (await http.get("/boom")).status_code == 500


async def test_one_fastworker_per_app() -> None:
    app = FastAPI()
    FastWorker(app, NOWHERE)
    with pytest.raises(RuntimeError, match="already has a FastWorker"):
        FastWorker(app, NOWHERE)


async def test_the_dependency_explains_a_missing_fastworker() -> None:
    app = FastAPI()

    @app.get("/client")
    async def client(client: FastWorkerClient) -> None:
        return None

    async with serve(app) as http:
        with pytest.raises(RuntimeError, match="has no FastWorker"):
            await http.get("/client")


async def test_a_handler_calling_an_unreachable_control_plane_gets_503_not_a_hang() -> None:
    app = FastAPI()
    FastWorker(app, NOWHERE, connect_timeout=0.3)

    @app.post("/enqueue")
    async def enqueue() -> dict[str, str]:
        return {"task_id": (await DOUBLE.delay(1)).id}

    async with serve(app) as http:
        response = await http.post("/enqueue")
    assert response.status_code == 503 and response.json()["error"] == "ControlPlaneUnavailable"


class StandIn:
    """A task backend without a control plane (like the control plane package's EagerClient)."""

    async def send(self, name: str, args: Any = (), kwargs: Any = None, **options: Any) -> str:
        return "eager-1"


async def test_use_swaps_in_a_stand_in_client_for_tests_from_the_next_startup_on() -> None:
    app = FastAPI()
    fastworker = FastWorker(app, NOWHERE, health_path="/healthz", connect_timeout=0.2)

    @app.post("/double/{x}")
    async def double(x: int) -> dict[str, str]:
        return {"task_id": (await DOUBLE.delay(x)).id}

    stand_in = StandIn()
    fastworker.use(stand_in)  # type: ignore[arg-type]
    async with serve(app) as http:
        assert fastworker.client is stand_in
        assert (await http.post("/double/2")).json() == {"task_id": "eager-1"}
        health = (await http.get("/healthz")).json()
        assert health["connected"] is True and health["workers_online"] == 0
    fastworker.use(None)
    async with serve(app):
        assert isinstance(fastworker.client, Client)
