"""FastAPI integration: one shared :class:`~fastworker.client.Client` per app, opened and closed with its lifespan.

::

    from fastapi import FastAPI
    from fastworker.client.fastapi import FastWorker, FastWorkerClient

    app = FastAPI()
    fastworker = FastWorker(app, health_path="/healthz")  # address: FASTWORKER_CONTROL_PLANE


    @app.post("/signup")
    async def signup(user_id: int) -> dict[str, str]:
        handle = await send_welcome.delay(user_id)  # typed; goes through the app's client
        return {"task_id": handle.id}


    @app.get("/tasks/{task_id}")
    async def task_state(task_id: str, client: FastWorkerClient) -> dict[str, str]:
        return {"state": (await client.status(task_id)).state}

What it does: at startup (before the app's own lifespan, so that can use it) it creates the
client, starts connecting in the background without delaying startup, and makes the client the
process default for typed submissions (``add.delay(...)``, and ``add.delay_sync(...)`` in plain
``def`` endpoints, run on the app's loop); at shutdown it closes it. The client
is asyncio-native (nng sockets watched by the event loop), so handlers never block on it.
:class:`~fastworker.client.ControlPlaneUnavailable` and :class:`~fastworker.client.QueueFull`
raised by a handler become ``503 Service Unavailable`` answers with ``Retry-After`` (turn off
with ``handle_errors=False``). ``health()`` reports whether the control plane answers and how
many subworkers are online; ``health_path`` serves it as JSON (503 while disconnected).

Needs FastAPI: ``pip install 'fastworker-client[fastapi]'``.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator, Coroutine
from typing import Annotated, Any, TypeVar, cast

try:
    from fastapi import Depends, FastAPI, Request
    from fastapi.responses import JSONResponse
except ImportError as exc:  # pragma: no cover - depends on the environment
    raise ImportError("fastworker.client.fastapi needs FastAPI: pip install 'fastworker-client[fastapi]'") from exc

from fastworker.client._async import Client
from fastworker.client._eagersync import BlockingBackend
from fastworker.client.errors import ControlPlaneUnavailable, FastworkerError, QueueFull
from fastworker.client.handles import TaskBackend, set_default_client, set_default_sync_client
from fastworker.protocol.auth import Secret

__all__ = ["FastWorker", "FastWorkerClient", "get_client"]

logger = logging.getLogger(__name__)

T = TypeVar("T")

#: Seconds ``Retry-After`` suggests when the control plane is unavailable or its queue is full.
RETRY_AFTER_SECONDS = 5


class FastWorker:
    """Wire a shared FastWorker client into a FastAPI app's lifespan.

    Args:
        app: The app to wire into now; or call :meth:`init_app` later.
        address: The control plane's discovery address (default: ``FASTWORKER_CONTROL_PLANE``,
            then ``tcp://127.0.0.1:5550``).
        secret: Shared secret (default: ``FASTWORKER_SECRET``).
        client: Use this client instead of creating one per startup; the app then neither
            connects nor closes it (also: :meth:`use`).
        health_path: Serve :meth:`health` as JSON on this GET route (e.g. ``"/healthz"``); None: no route.
        set_default: Make the client the process default for typed submissions while the app runs.
        handle_errors: Answer ControlPlaneUnavailable and QueueFull with 503 and ``Retry-After``.
        health_timeout: Longest a health check waits for the control plane, in seconds.
        **client_options: More ``Client`` arguments (``connect_timeout``, ``request_timeout``, ...).
    """

    def __init__(
        self,
        app: FastAPI | None = None,
        address: str | None = None,
        *,
        secret: Secret | None = None,
        client: Client | TaskBackend | None = None,
        health_path: str | None = None,
        set_default: bool = True,
        handle_errors: bool = True,
        health_timeout: float = 2.0,
        **client_options: Any,
    ) -> None:
        self.address = address
        self.secret = secret
        self.health_path = health_path
        self.set_default = set_default
        self.handle_errors = handle_errors
        self.health_timeout = health_timeout
        self._client_options = client_options
        self._given_client = client
        self._client: Client | TaskBackend | None = None
        self._connecting: asyncio.Task[None] | None = None
        if app is not None:
            self.init_app(app)

    # ------------------------------------------------------------------------------------------ wiring

    def init_app(self, app: FastAPI) -> None:
        """Wrap the app's lifespan, and add the error handlers and the health route as configured.

        Raises:
            RuntimeError: the app already has a FastWorker.
        """
        if getattr(app.state, "fastworker", None) is not None:
            raise RuntimeError("this app already has a FastWorker")
        app.state.fastworker = self
        inner = app.router.lifespan_context

        @contextlib.asynccontextmanager
        async def lifespan(app_: Any) -> AsyncIterator[Any]:
            async with self.running():
                async with inner(app_) as state:
                    yield state

        app.router.lifespan_context = lifespan
        if self.handle_errors:
            app.add_exception_handler(ControlPlaneUnavailable, _unavailable)
            app.add_exception_handler(QueueFull, _unavailable)
        if self.health_path is not None:
            app.add_api_route(self.health_path, self._health_response, methods=["GET"], include_in_schema=False)

    def use(self, client: Client | TaskBackend | None) -> None:
        """Serve this client from the next startup on, instead of creating one (None: create one again).

        For tests: ``main.fastworker.use(EagerClient())`` runs the app's tasks in the test process.
        The app neither connects nor closes a client given here.
        """
        self._given_client = client

    @contextlib.asynccontextmanager
    async def running(self) -> AsyncIterator[Client]:
        """Open the client for as long as the block runs (the app's lifespan uses this)."""
        given = self._given_client
        client = Client(self.address, secret=self.secret, **self._client_options) if given is None else given
        self._client = client
        if isinstance(client, Client) and given is None:
            self._connecting = asyncio.get_running_loop().create_task(self._connect(client))
        previous = set_default_client(client) if self.set_default else None
        # Plain ``def`` endpoints run on a thread pool: their ``add.delay_sync(...)`` goes through the
        # same client, on the app's loop.
        previous_sync = (
            set_default_sync_client(_OnLoop(client, asyncio.get_running_loop())) if self.set_default else None
        )
        try:
            yield cast(Client, client)
        finally:
            if self.set_default:
                set_default_client(previous)
                set_default_sync_client(previous_sync)
            if self._connecting is not None:
                self._connecting.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await self._connecting
                self._connecting = None
            self._client = None
            if given is None and isinstance(client, Client):
                await client.aclose()

    @staticmethod
    async def _connect(client: Client) -> None:
        """Connect in the background so that startup does not wait; calls connect lazily anyway."""
        try:
            await client.connect()
        except FastworkerError as exc:
            logger.warning("FastWorker: control plane not reachable yet (%s); calls will keep trying", exc)

    # -------------------------------------------------------------------------------------------- use

    @property
    def client(self) -> Client:
        """The app's client while it runs.

        Raises:
            RuntimeError: the app is not running (its lifespan has not started, or has ended).
        """
        if self._client is None:
            raise RuntimeError("the FastWorker client exists only while the app runs (inside its lifespan)")
        return cast(Client, self._client)  # or a stand-in given for tests (an EagerClient has the same task API)

    async def get_client(self) -> Client:
        """The app's client, as a dependency: ``client: Client = Depends(fastworker.get_client)``."""
        return self.client

    async def health(self) -> dict[str, Any]:
        """Whether the control plane answers, and what it reports, within ``health_timeout`` seconds.

        Returns:
            ``{"connected": bool, "control_plane": address, "workers_online": int, "queued": int,
            "running": int, "error": str | None}`` (counts are 0 while disconnected).
        """
        client = cast(Client | None, self._client)
        report: dict[str, Any] = {
            "connected": False,
            "control_plane": getattr(client, "address", self.address) if client is not None else self.address,
            "workers_online": 0,
            "queued": 0,
            "running": 0,
            "error": None,
        }
        if client is None:
            report["error"] = "the app is not running"
            return report
        if not hasattr(client, "stats"):  # a stand-in without a control plane (EagerClient): always there
            report["connected"] = True
            return report
        try:
            async with asyncio.timeout(self.health_timeout):
                stats = await client.stats()
        except TimeoutError:
            report["error"] = f"no answer within {self.health_timeout:g} s"
        except FastworkerError as exc:
            report["error"] = f"{type(exc).__name__}: {exc}"
        else:
            report.update(
                connected=True,
                workers_online=int(stats.get("workers", 0)),
                queued=int(stats.get("queued", 0)),
                running=int(stats.get("running", 0)),
            )
        return report

    async def _health_response(self) -> JSONResponse:
        report = await self.health()
        return JSONResponse(report, status_code=200 if report["connected"] else 503)


class _OnLoop(BlockingBackend):
    """The blocking face of the app's client for ``def`` endpoints: each call runs on the app's loop.

    Called from the thread pool FastAPI runs ``def`` endpoints on; sharing the app's one client
    means its address, secret, timeouts (or an ``EagerClient`` given with :meth:`FastWorker.use`)
    apply to sync code too.
    """

    def __init__(self, client: TaskBackend, loop: asyncio.AbstractEventLoop) -> None:
        super().__init__(client)
        self._loop = loop

    def _run(self, name: str, coroutine: Coroutine[Any, Any, T]) -> T:
        return asyncio.run_coroutine_threadsafe(coroutine, self._loop).result()


async def _unavailable(request: Request, exc: Exception) -> JSONResponse:
    """503 for a control plane that is down or whose queue is full: the client should retry later."""
    return JSONResponse(
        {"detail": str(exc), "error": type(exc).__name__},
        status_code=503,
        headers={"Retry-After": str(RETRY_AFTER_SECONDS)},
    )


async def get_client(request: Request) -> Client:
    """The client of the app's FastWorker, as a dependency (see :data:`FastWorkerClient`).

    Raises:
        RuntimeError: the app has no FastWorker, or it is not running.
    """
    fastworker = getattr(request.app.state, "fastworker", None)
    if not isinstance(fastworker, FastWorker):
        raise RuntimeError("this app has no FastWorker: call FastWorker(app) where the app is created")
    return fastworker.client


#: ``client: FastWorkerClient`` in a handler's parameters gives it the app's client.
FastWorkerClient = Annotated[Client, Depends(get_client)]
