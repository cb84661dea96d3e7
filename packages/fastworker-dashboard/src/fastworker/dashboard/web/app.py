"""``create_app``: assembles the dashboard (routers, templates, static files, error pages) around one shared client."""

from __future__ import annotations

from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from pathlib import Path

from fastapi import Depends, FastAPI
from starlette.staticfiles import StaticFiles

from fastworker.client import Client
from fastworker.client.tls import TlsFiles
from fastworker.dashboard.source import AdminClient
from fastworker.dashboard.version import __version__
from fastworker.dashboard.web.bodylimit import BodyLimit
from fastworker.dashboard.web.config import DashboardConfig
from fastworker.dashboard.web.deps import DashboardState, require_reader
from fastworker.dashboard.web.errors import install_error_handlers
from fastworker.dashboard.web.head import HeadAsGet
from fastworker.dashboard.web.headers import SecurityHeaders
from fastworker.dashboard.web.hosts import HostAllowList, TrustedHosts
from fastworker.dashboard.web.live import LiveFeed
from fastworker.dashboard.web.routes import actions, api, auth, metrics, overview, stream, tasks, workers, workflows
from fastworker.dashboard.web.templating import Renderer
from fastworker.dashboard.web.throttle import LoginThrottle
from fastworker.protocol.auth import Secret

#: The vendored CSS, JS and icon.
STATIC_DIR = Path(__file__).resolve().parent / "static"


def create_app(
    *,
    control_plane: str,
    secret: Secret | None = None,
    read_only: bool = False,
    client: AdminClient | None = None,
    refresh_interval: float = 1.0,
    tls: TlsFiles | None = None,
    password: str | None = None,
    hosts: Sequence[str] = (),
    bind_host: str | None = None,
) -> FastAPI:
    """The dashboard as an ASGI app for one control plane.

    Args:
        control_plane: The control plane's discovery address.
        secret: The control plane's shared secret (the client's); also the password for actions unless
            ``password`` is given (a rotating secret: any secret in force).
        read_only: Hide action buttons and answer every action with 403.
        client: A client to use instead of opening one (the caller keeps ownership and closes it).
        refresh_interval: Seconds between live snapshots, and the least time between two redraws of a panel.
        tls: TLS files for a ``tls+tcp://`` control plane (default: the ``FASTWORKER_TLS_*`` env vars).
        password: The password every action needs (``--dashboard-password``); default: ``secret``.
        hosts: Extra ``Host`` names to answer to (``--dashboard-host``), ``NAME`` or ``NAME:PORT``.
        bind_host: The host the server binds (its name is allowed; a wildcard allows this machine's names).

    Raises:
        ValueError: a ``hosts`` value is not a host name.
    """
    config = DashboardConfig(
        control_plane=control_plane,
        password=password or secret or None,
        read_only=read_only,
        refresh_interval=refresh_interval,
        hosts=HostAllowList(bind_host=bind_host, extra=tuple(hosts)),
    )
    renderer = Renderer()

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        own_client = client is None
        admin: AdminClient = Client(control_plane, secret=secret, tls=tls) if client is None else client
        feed = LiveFeed(admin, interval=config.refresh_interval)
        app.state.dashboard = DashboardState(
            config=config, client=admin, feed=feed, renderer=renderer, throttle=LoginThrottle()
        )
        # The server calls this (on its loop) before shutting down, so open live streams end at once.
        app.state.stop_streams = feed.close
        try:
            yield
        finally:
            await feed.aclose()
            if own_client:
                await admin.aclose()

    app = FastAPI(
        title="FastWorker dashboard",
        version=__version__,
        lifespan=lifespan,
        docs_url=None,
        redoc_url=None,
        openapi_url="/api/openapi.json",
    )
    app.add_middleware(SecurityHeaders)
    app.add_middleware(BodyLimit)  # before any route reads a body (forms, JSON actions: a few hundred bytes)
    app.add_middleware(TrustedHosts, allow=config.hosts)  # outermost but one: before any route or header
    app.add_middleware(HeadAsGet)  # added last: outermost, so a HEAD gets exactly what a GET gets, minus the body
    install_error_handlers(app)
    # With a password, reading needs it too (security.authorize_read); logging in, health, metrics do not.
    for module in (overview, tasks, workflows, workers, actions, api, stream):
        app.include_router(module.router, dependencies=[Depends(require_reader)])
    for module in (auth, metrics):
        app.include_router(module.router)
    app.mount("/static", StaticFiles(directory=STATIC_DIR), name="static")
    return app
