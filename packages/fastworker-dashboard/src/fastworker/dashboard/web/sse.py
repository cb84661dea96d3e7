"""A Server-Sent Events response with a bounded queue per viewer: a viewer that stops reading is dropped.

The viewer's messages are produced into a queue of at most ``max_queued`` messages and written
from it. A browser that stops reading (a stalled tab, a hostile client that never reads) blocks
only the writer; once the queue is full the producer stops, the queue is emptied and the viewer
no longer costs renders or memory. Its connection is finished when it reads again or goes away
(at most ``drop_grace`` seconds later, the server closes it).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncGenerator, Mapping

from starlette.responses import Response
from starlette.types import Receive, Scope, Send

logger = logging.getLogger(__name__)

#: Messages one viewer may have waiting before it counts as stalled.
MAX_QUEUED = 32
#: Seconds a dropped viewer's connection gets to take its last message before the server gives up on it.
DROP_GRACE = 30.0


class BoundedEventStream(Response):
    """``text/event-stream`` from an async generator of messages, through a bounded per-viewer queue.

    Args:
        messages: The viewer's SSE messages; it is closed when the viewer leaves or is dropped.
        headers: Extra response headers.
        max_queued: Messages that may wait for a slow viewer before it is dropped.
        drop_grace: Seconds a dropped viewer gets to finish reading before the response ends.
    """

    media_type = "text/event-stream"

    def __init__(
        self,
        messages: AsyncGenerator[str, None],
        *,
        headers: Mapping[str, str] | None = None,
        max_queued: int = MAX_QUEUED,
        drop_grace: float = DROP_GRACE,
    ) -> None:
        super().__init__(content=b"", headers=headers, media_type=self.media_type)
        del self.headers["content-length"]  # a stream: no length
        self.messages = messages
        self.max_queued = max_queued
        self.drop_grace = drop_grace
        #: True once the viewer was dropped for not reading.
        self.dropped = False

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        """Produce into the queue, write from it, and stop at disconnect, end of messages or a full queue."""
        queue: asyncio.Queue[bytes | None] = asyncio.Queue()
        ended = asyncio.Event()

        async def produce() -> None:
            try:
                async for message in self.messages:
                    if queue.qsize() >= self.max_queued:
                        self.dropped = True
                        logger.info("dropping a live viewer that stopped reading (%d messages waiting)", queue.qsize())
                        while not queue.empty():
                            queue.get_nowait()
                        break
                    queue.put_nowait(message.encode())
            finally:
                queue.put_nowait(None)
                with contextlib.suppress(Exception):
                    await self.messages.aclose()
                ended.set()

        async def deliver() -> None:
            await send({"type": "http.response.start", "status": self.status_code, "headers": self.raw_headers})
            while (chunk := await queue.get()) is not None:
                await send({"type": "http.response.body", "body": chunk, "more_body": True})
            await send({"type": "http.response.body", "body": b"", "more_body": False})

        async def until_disconnect() -> None:
            while (await receive())["type"] != "http.disconnect":
                pass

        producer = asyncio.create_task(produce())
        writer = asyncio.create_task(deliver())
        watcher = asyncio.create_task(until_disconnect())
        try:
            done, _ = await asyncio.wait({writer, watcher, producer}, return_when=asyncio.FIRST_COMPLETED)
            if producer in done and writer not in done and watcher not in done:
                # Messages ended (feed closed, or the viewer was dropped): let the writer finish, bounded.
                await asyncio.wait({writer, watcher}, timeout=self.drop_grace, return_when=asyncio.FIRST_COMPLETED)
        finally:
            for task in (producer, writer, watcher):
                task.cancel()
            for task in (producer, writer, watcher):
                with contextlib.suppress(asyncio.CancelledError, Exception):
                    await task
