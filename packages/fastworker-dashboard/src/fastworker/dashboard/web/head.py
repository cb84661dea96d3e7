"""``HEAD`` answered wherever ``GET`` is: FastAPI's ``@router.get`` routes accept GET only, so a HEAD got 405.

Monitoring probes and link checkers send HEAD. Rather than registering every route twice, one
middleware runs a HEAD request as a GET, so it passes through the same host check, route, error
handling and security headers and gets the same status and headers, and sends only the headers.
The response ends as soon as its headers are out and the app is told that the client has gone, so
a response that never ends by itself (the live SSE stream) stops at once instead of hanging.
"""

from __future__ import annotations

import asyncio

from starlette.types import ASGIApp, Message, Receive, Scope, Send

_END = {"type": "http.response.body", "body": b"", "more_body": False}
_GONE = {"type": "http.disconnect"}


class HeadAsGet:
    """ASGI middleware answering HEAD like GET, without the body. Add it outermost."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        """Run a HEAD as a GET (the server still logs HEAD: the scope is copied) and send only its headers."""
        if scope["type"] != "http" or scope["method"] != "HEAD":
            await self.app(scope, receive, send)
            return
        answered = asyncio.Event()

        async def headers_only(message: Message) -> None:
            if answered.is_set():
                return  # the body, or the rest of a stream: nobody asked for it
            if message["type"] == "http.response.start":
                await send(message)
                await send(_END)
                answered.set()

        async def until_answered() -> Message:
            """The client's next message, or a disconnect once the answer is out (ends a streaming response)."""
            if answered.is_set():
                return _GONE
            reader = asyncio.ensure_future(receive())
            waiter = asyncio.ensure_future(answered.wait())
            try:
                await asyncio.wait({reader, waiter}, return_when=asyncio.FIRST_COMPLETED)
            finally:
                waiter.cancel()
            if reader.done():
                return reader.result()
            reader.cancel()
            return _GONE

        await self.app({**scope, "method": "GET"}, until_answered, headers_only)
