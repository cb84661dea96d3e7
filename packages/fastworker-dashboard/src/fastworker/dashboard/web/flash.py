"""One-shot flash messages carried across an action's 303 redirect in a short-lived cookie."""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Literal
from urllib.parse import quote, unquote

from starlette.requests import Request
from starlette.responses import Response

#: The cookie that holds the pending message.
FLASH_COOKIE = "fastworker_flash"
#: Longest message kept, in characters.
_MAX_TEXT = 500

FlashKind = Literal["success", "error", "info"]


@dataclass(frozen=True)
class Flash:
    """A message to show once on the next page: its text and how to colour it."""

    text: str
    kind: FlashKind = "success"


def set_flash(response: Response, flash: Flash) -> None:
    """Attach ``flash`` to a (redirect) response."""
    value = quote(json.dumps({"text": flash.text[:_MAX_TEXT], "kind": flash.kind}), safe="")
    response.set_cookie(FLASH_COOKIE, value, max_age=60, path="/", httponly=True, samesite="strict")


def peek_flash(request: Request) -> Flash | None:
    """The pending message without clearing it (pages render it, then clear it with ``clear_flash``)."""
    raw = request.cookies.get(FLASH_COOKIE)
    return read_flash(raw) if raw is not None else None


def clear_flash(request: Request, response: Response) -> None:
    """Clear the pending message on ``response`` if the request had one."""
    if FLASH_COOKIE in request.cookies:
        response.delete_cookie(FLASH_COOKIE, path="/")


def read_flash(raw: str) -> Flash | None:
    """Decode a cookie value; anything malformed reads as no message."""
    try:
        data = json.loads(unquote(raw))
    except ValueError:
        return None
    if not isinstance(data, dict) or not isinstance(data.get("text"), str):
        return None
    kinds: dict[str, FlashKind] = {"success": "success", "error": "error", "info": "info"}
    return Flash(data["text"][:_MAX_TEXT], kinds.get(str(data.get("kind")), "info"))
