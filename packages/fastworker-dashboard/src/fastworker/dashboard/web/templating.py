"""The Jinja2 environment (autoescaping always on) and the two ways pages use it: whole pages and live fragments."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

import jinja2
from markupsafe import Markup
from starlette.requests import Request
from starlette.responses import HTMLResponse

from fastworker.client._terminal import visible
from fastworker.dashboard.web import formatting
from fastworker.dashboard.web.flash import clear_flash, peek_flash

#: Where the templates live (shipped inside the package).
TEMPLATE_DIR = Path(__file__).resolve().parent / "templates"


def shown(value: Any) -> Any:
    """What a template prints of ``value``: text with its control characters and bidirectional overrides escaped.

    Escaping HTML is not enough: a right-to-left override in a task's error or name would reorder
    what follows it on the page, as in a terminal, so pages show them as escapes, as the CLI does.
    Markup the templates built themselves is left as it is.
    """
    if isinstance(value, str) and not isinstance(value, Markup):
        return visible(value)
    return value


def make_environment() -> jinja2.Environment:
    """A Jinja environment that escapes everything by default, with the dashboard's filters."""
    env = jinja2.Environment(
        loader=jinja2.FileSystemLoader(TEMPLATE_DIR),
        finalize=shown,
        autoescape=True,
        trim_blocks=True,
        lstrip_blocks=True,
        auto_reload=False,
    )
    env.filters.update(formatting.FILTERS)
    env.globals.update(formatting.GLOBALS)
    return env


class Renderer:
    """Renders full pages (with flash messages) and the fragments the live stream pushes."""

    def __init__(self, env: jinja2.Environment | None = None) -> None:
        self.env = env or make_environment()

    def fragment(self, template: str, context: Mapping[str, Any]) -> str:
        """One template rendered to a string (used for the live panels)."""
        return self.env.get_template(template).render(context)

    def page(
        self, request: Request, template: str, context: Mapping[str, Any], *, status_code: int = 200
    ) -> HTMLResponse:
        """A full page; shows and then clears a pending flash message."""
        flash = peek_flash(request)
        html = self.env.get_template(template).render({**context, "flash": flash})
        response = HTMLResponse(html, status_code=status_code)
        clear_flash(request, response)
        return response
