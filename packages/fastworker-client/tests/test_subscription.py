"""A subscription whose connection died silently dials again.

A subscriber never writes, so when the path to its publisher dies without a FIN or RST (a cut link,
a peer host that vanished), TCP never tells it: it would wait forever for announcements, and a
worker would never learn that its control plane restarted. Reproduced on loopback with a proxy
that stops forwarding on the connections it holds (keeping them open) while accepting new ones.
"""

from __future__ import annotations

import asyncio
import socket
from collections.abc import AsyncIterator
from dataclasses import dataclass

import pynng
import pytest

from fastworker.client._transport import Subscription

BOUND = 10.0


class FreezingProxy:
    """Forwards TCP between accepted connections and an upstream; ``freeze()`` silences the live ones."""

    def __init__(self, upstream_port: int) -> None:
        self.upstream_port = upstream_port
        self.connections = 0
        self._frozen: set[int] = set()
        self._server: asyncio.Server | None = None
        self._tasks: set[asyncio.Task[None]] = set()
        self._writers: list[asyncio.StreamWriter] = []

    async def start(self) -> int:
        self._server = await asyncio.start_server(self._serve, "127.0.0.1", 0)
        port: int = self._server.sockets[0].getsockname()[1]
        return port

    def freeze(self) -> None:
        self._frozen.update(range(self.connections))

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        number = self.connections
        self.connections += 1
        up_reader, up_writer = await asyncio.open_connection("127.0.0.1", self.upstream_port)
        self._writers += [writer, up_writer]
        for source, sink in ((reader, up_writer), (up_reader, writer)):
            task = asyncio.ensure_future(self._pipe(number, source, sink))
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)

    async def _pipe(self, number: int, source: asyncio.StreamReader, sink: asyncio.StreamWriter) -> None:
        while data := await source.read(65536):
            if number in self._frozen:
                continue  # swallowed: the connection stays open and says nothing
            sink.write(data)
            await sink.drain()

    async def close(self) -> None:
        if self._server is not None:
            self._server.close()
            await self._server.wait_closed()
        for task in list(self._tasks):
            task.cancel()
        for writer in self._writers:
            writer.close()
        for writer in self._writers:
            try:
                await writer.wait_closed()
            except OSError:
                pass


@pytest.fixture
async def publisher() -> AsyncIterator[tuple[pynng.Pub0, int]]:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    pub = pynng.Pub0()
    pub.listen(f"tcp://127.0.0.1:{port}")
    try:
        yield pub, port
    finally:
        pub.close()


@dataclass
class Proxied:
    """A subscription (stale_after 0.5 s) reaching its publisher through a FreezingProxy."""

    pub: pynng.Pub0
    proxy: FreezingProxy
    received: list[bytes]
    subscription: Subscription


@pytest.fixture
async def proxied(publisher: tuple[pynng.Pub0, int], request: pytest.FixtureRequest) -> AsyncIterator[Proxied]:
    """The subscription is a ``Subscription``, or the class given by indirect parametrization."""
    pub, port = publisher
    proxy = FreezingProxy(port)
    proxy_port = await proxy.start()
    received: list[bytes] = []
    kind: type[Subscription] = getattr(request, "param", Subscription)
    subscription = kind(
        asyncio.get_running_loop(), f"tcp://127.0.0.1:{proxy_port}", b"", received.append, stale_after=0.5
    )
    try:
        yield Proxied(pub, proxy, received, subscription)
    finally:
        subscription.close()
        await proxy.close()


async def test_a_subscription_silent_past_stale_after_dials_again_and_hears_the_publisher(proxied: Proxied) -> None:
    await hear_again_after_a_silent_death(proxied)
    # It heard nothing for half a second, so it dialed again and hears the publisher anew
    assert proxied.proxy.connections >= 2


async def hear_again_after_a_silent_death(proxied: Proxied) -> None:
    """Hear the publisher, let the path die silently (open but mute), then hear it again (bounded)."""
    pub, proxy, received = proxied.pub, proxied.proxy, proxied.received
    async with asyncio.timeout(BOUND):
        while not received:
            pub.send(b"before")
            await asyncio.sleep(0.02)
    assert proxy.connections == 1
    proxy.freeze()
    received.clear()
    async with asyncio.timeout(BOUND):
        while b"after" not in received:
            pub.send(b"after")
            await asyncio.sleep(0.02)


async def test_a_subscription_that_hears_its_publisher_keeps_its_connection(proxied: Proxied) -> None:
    for _ in range(100):  # 2 s of messages every 20 ms
        proxied.pub.send(b"tick")
        await asyncio.sleep(0.02)
    assert proxied.received and proxied.proxy.connections == 1


class FailingOnceSubscription(Subscription):
    """Its first re-dial fails as nng can fail (a closed library, an exhausted fd table)."""

    opens = 0

    def _open(self) -> None:
        self.opens += 1
        if self.opens == 2:
            raise pynng.NotSupported("Not supported", 9)
        super()._open()


@pytest.mark.parametrize("proxied", [FailingOnceSubscription], indirect=True)
async def test_a_re_dial_that_fails_is_tried_again_rather_than_leaving_the_subscription_deaf(proxied: Proxied) -> None:
    await hear_again_after_a_silent_death(proxied)
    # The first re-dial failed; the watchdog kept going and the next one reached the publisher
    assert isinstance(proxied.subscription, FailingOnceSubscription) and proxied.subscription.opens >= 3
