"""FastAPI dependencies: the app's shared state (config, client, live feed, renderer, login throttle) and parsed task filters."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field
from typing import Annotated, cast

from fastapi import Depends, Request

from fastworker.dashboard.source import AdminClient
from fastworker.dashboard.web.config import DashboardConfig
from fastworker.dashboard.web.live import LiveFeed
from fastworker.dashboard.web.query import TaskFilters
from fastworker.dashboard.web.security import authorize_read
from fastworker.dashboard.web.templating import Renderer
from fastworker.dashboard.web.throttle import LoginThrottle


@dataclass
class DashboardState:
    """What one app instance shares between requests (stored on ``app.state.dashboard``)."""

    config: DashboardConfig
    client: AdminClient
    feed: LiveFeed
    renderer: Renderer
    throttle: LoginThrottle
    #: Full-value downloads rendered at once (each may hold up to the download cap in memory).
    downloads: asyncio.Semaphore = field(default_factory=lambda: asyncio.Semaphore(2))


def get_state(request: Request) -> DashboardState:
    """The app's shared state.

    Raises:
        RuntimeError: the app's lifespan has not run (use ``with TestClient(app)`` or an ASGI server).
    """
    state = getattr(request.app.state, "dashboard", None)
    if state is None:
        raise RuntimeError("the dashboard app is not started: its lifespan has not run")
    return cast(DashboardState, state)


def get_client(request: Request) -> AdminClient:
    """The app's one shared admin client."""
    return get_state(request).client


def get_config(request: Request) -> DashboardConfig:
    """The app's configuration."""
    return get_state(request).config


def get_throttle(request: Request) -> LoginThrottle:
    """The app's table of failed logins per client address."""
    return get_state(request).throttle


def require_reader(request: Request) -> None:
    """Every gated route's dependency: the password for a read when one is set (see ``security.authorize_read``)."""
    state = get_state(request)
    authorize_read(state.config, state.throttle, request)


def get_filters(request: Request) -> TaskFilters:
    """The task filters in the query string.

    Raises:
        BadQuery: a filter value is invalid.
    """
    return TaskFilters.from_query(request.query_params)


StateDep = Annotated[DashboardState, Depends(get_state)]
ClientDep = Annotated[AdminClient, Depends(get_client)]
ConfigDep = Annotated[DashboardConfig, Depends(get_config)]
ThrottleDep = Annotated[LoginThrottle, Depends(get_throttle)]
FiltersDep = Annotated[TaskFilters, Depends(get_filters)]
