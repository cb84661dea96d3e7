"""A bound on request bodies: the dashboard's forms and JSON actions are a few hundred bytes.

Served inside the control plane, an unbounded body is the control plane's memory: two anonymous
``POST /login`` of 256 MiB each took it from 63 to 616 MiB. A body declared larger than the bound is
refused before any of it is read; one that grows past it while read (chunked) is refused there,
and the app sees the client gone.

A client that hangs up while sending its body is no error either: the route reading it raises
``ClientDisconnect``, which ends the request here, quietly. Let through, it reached the server as an
``ERROR Exception in ASGI application`` with a 70-line traceback, one per aborted ``POST /login``
(open to anyone): an anonymous peer wrote 300 KiB a second into the control plane's log.
"""

from __future__ import annotations

from starlette.requests import ClientDisconnect
from starlette.responses import PlainTextResponse
from starlette.types import ASGIApp, Message, Receive, Scope, Send

#: Largest request body accepted, in bytes.
MAX_REQUEST_BODY = 1024 * 1024

_GONE: Message = {"type": "http.disconnect"}


class BodyLimit:
    """ASGI middleware answering 413 to a request whose body is over ``limit`` bytes, and ending one whose client left."""

    def __init__(self, app: ASGIApp, limit: int = MAX_REQUEST_BODY) -> None:
        self.app = app
        self.limit = limit

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        """Refuse a body declared too large at once; cut one that grows too large while it is read; drop a hung-up one."""
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        declared = dict(scope["headers"]).get(b"content-length")
        if declared is not None and (not declared.isdigit() or int(declared) > self.limit):
            await self._too_large(scope, receive, send)
            return
        received = 0
        refused = False

        async def bounded() -> Message:
            nonlocal received, refused
            if refused:
                return _GONE
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > self.limit:
                    refused = True
                    await self._too_large(scope, receive, send)
                    return _GONE
            return message

        async def unless_refused(message: Message) -> None:
            if not refused:
                await send(message)

        try:
            await self.app(scope, bounded, unless_refused)
        except ClientDisconnect:
            pass  # gone before its body was read (or cut at the bound): nobody to answer, nothing failed
        except Exception:
            if not refused:
                raise
            # (the app reading on after the refusal sees the client gone: answered already, nothing to add)

    async def _too_large(self, scope: Scope, receive: Receive, send: Send) -> None:
        refusal = PlainTextResponse(f"request body over {self.limit} bytes\n", 413, headers={"connection": "close"})
        await refusal(scope, receive, send)
