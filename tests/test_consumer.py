"""Writing your own consumer: hooks, groups cleaned up on disconnect, dispatch by message type."""

from __future__ import annotations

import asyncio
from typing import Any, ClassVar

import pytest
from aiohttp import web

from chatbot_server import NotSetUpError, WebsocketConsumer, get_layer, message_handler, setup
from chatbot_server.keys import CONNECTIONS_KEY
from chatbot_server.layers import Message

from .helpers import make_settings, raw_websocket_that_never_reads, receive_json


class RoomConsumer(WebsocketConsumer):
    """A tiny chat room: everyone in group "room" hears every line."""

    groups: ClassVar[tuple[str, ...]] = ("lobby",)
    events: ClassVar[list[str]] = []

    async def on_connect(self) -> None:
        self.events.append("connect")
        await self.group_add("room")
        await self.send_json({"hello": self.channel_name})

    async def on_receive_text(self, text: str) -> None:
        await self.layer.group_send("room", {"type": "room.line", "text": text})

    async def shout(self, message: Message) -> None:
        """Public, but not a handler: no message can call it."""
        await self.send_json({"line": "SHOUTED"})

    async def on_disconnect(self, code: int | None) -> None:
        self.events.append(f"disconnect {code}")

    @message_handler
    async def room_line(self, message: Message) -> None:
        await self.send_json({"line": message["text"]})


@pytest.fixture
async def room_client(aiohttp_client: Any) -> Any:
    RoomConsumer.events = []
    app = web.Application()
    setup(app, make_settings())
    app.router.add_get("/room", RoomConsumer.as_handler())  # the one line a user writes
    return await aiohttp_client(app)


async def test_custom_consumer_hooks_and_dispatch(room_client: Any) -> None:
    async with room_client.ws_connect("/room") as a, room_client.ws_connect("/room") as b:
        await receive_json(a)
        await receive_json(b)
        await a.send_str("大家好")
        assert await receive_json(a) == {"line": "大家好"}
        assert await receive_json(b) == {"line": "大家好"}
    async with asyncio.timeout(5):
        await room_client.app[CONNECTIONS_KEY].wait_until(0)
    assert RoomConsumer.events.count("connect") == 2
    assert sum(e.startswith("disconnect") for e in RoomConsumer.events) == 2


async def test_groups_are_left_on_disconnect(room_client: Any) -> None:
    layer = get_layer(room_client.app)
    async with room_client.ws_connect("/room") as ws:
        await receive_json(ws)
        assert len(layer.group_members("room")) == 1  # type: ignore[attr-defined]
        assert len(layer.group_members("lobby")) == 1  # type: ignore[attr-defined]
    async with asyncio.timeout(5):
        await room_client.app[CONNECTIONS_KEY].wait_until(0)
    assert layer.group_members("room") == [] and layer.group_members("lobby") == []  # type: ignore[attr-defined]


async def test_layer_messages_cannot_reach_base_methods(room_client: Any) -> None:
    layer = get_layer(room_client.app)
    async with room_client.ws_connect("/room") as ws:
        await receive_json(ws)
        for kind in ("close", "run", "on.disconnect", "group.discard", "_drain", "dispatch", "send.json", "shout"):
            await layer.group_send("room", {"type": kind})
        await layer.group_send("room", {"type": "room.line", "text": "still here"})
        assert await receive_json(ws) == {"line": "still here"}
    assert "disconnect" not in " ".join(RoomConsumer.events[:-1])


async def test_a_consumer_on_an_app_without_setup_is_a_clear_error(aiohttp_client: Any) -> None:
    app = web.Application()
    app.router.add_get("/room", RoomConsumer.as_handler())
    client = await aiohttp_client(app)
    response = await client.get("/room")
    assert response.status == 500
    with pytest.raises(NotSetUpError, match=r"chatbot_server.setup\(app, ...\) must be called first"):
        get_layer(app)


class OrderConsumer(WebsocketConsumer):
    """Sync and async handlers mixed: frames must still come out in the order messages arrived."""

    release: ClassVar[asyncio.Event]
    opened: ClassVar[list[WebsocketConsumer]] = []

    async def on_connect(self) -> None:
        OrderConsumer.opened.append(self)
        await self.send_json({"ready": True})

    @message_handler
    def fast(self, message: Message) -> None:
        self.send_json_nowait({"n": message["n"]})

    @message_handler
    async def slow(self, message: Message) -> None:
        await self.release.wait()
        await self.send_json({"n": message["n"]})

    @message_handler
    def broken(self, message: Message) -> None:
        raise RuntimeError("handler bug")

    @message_handler
    def echo_self(self, message: Message) -> None:
        # Re-entrant: a sync handler that sends to its own channel is handled after it, in order.
        self.send_json_nowait({"n": message["n"]})
        asyncio.get_running_loop().create_task(self.layer.send(self.channel_name, {"type": "fast", "n": 99}))


async def test_sync_and_async_handlers_keep_the_order(aiohttp_client: Any) -> None:
    OrderConsumer.release = asyncio.Event()
    OrderConsumer.opened = []
    app = web.Application()
    setup(app, make_settings())
    app.router.add_get("/order", OrderConsumer.as_handler())
    client = await aiohttp_client(app)
    layer = get_layer(app)
    async with client.ws_connect("/order") as ws:
        await receive_json(ws)
        group = "order-test"
        (consumer,) = OrderConsumer.opened
        await layer.group_add(group, consumer.channel_name)
        await layer.group_send(group, {"type": "fast", "n": 1})
        await layer.group_send(group, {"type": "slow", "n": 2})
        await layer.group_send(group, {"type": "broken", "n": 0})
        await layer.group_send(group, {"type": "fast", "n": 3})
        OrderConsumer.release.set()
        await layer.group_send(group, {"type": "echo.self", "n": 4})
        assert [(await receive_json(ws))["n"] for _ in range(5)] == [1, 2, 3, 4, 99]


async def test_frames_sent_after_the_peer_is_gone_are_not_counted(aiohttp_client: Any) -> None:
    counted: asyncio.Future[int] = asyncio.get_running_loop().create_future()

    class Lost(WebsocketConsumer):
        async def on_connect(self) -> None:
            assert self.request.transport is not None
            self.request.transport.abort()  # the peer is gone; the receive loop has not noticed yet
            before = self.stats.messages_out
            for n in range(5):
                self.send_json_nowait({"n": n})
            await self.send_json({"n": 5})
            counted.set_result(self.stats.messages_out - before)

    app = web.Application()
    setup(app, make_settings())
    app.router.add_get("/lost", Lost.as_handler())
    client = await aiohttp_client(app)
    ws = await client.ws_connect("/lost")
    assert await asyncio.wait_for(counted, 5) == 0  # /metrics' messages_out counts frames written
    await ws.close()


async def test_frames_of_every_header_size_arrive_whole_and_in_order(aiohttp_client: Any) -> None:
    """Frames written straight to the transport (7- and 16-bit lengths) and frames too big for that
    (aiohttp's own writer, which waits for the client) arrive whole, and in the order sent."""
    sizes = [0, 1, 124, 125, 126, 127, 255, 256, 1000, 16_383, 16_384, 65_535, 65_536, 200_000]

    class Sizes(WebsocketConsumer):
        async def on_connect(self) -> None:
            for size in sizes:
                await self.send_encoded(b"x" * size)
            for size in sizes:
                self.send_encoded_nowait("汉".encode() * (size // 3))
            # A frame too big for the direct path, then small ones: the big one keeps its place.
            self.send_encoded_nowait(b"1" * 20_000)
            self.send_encoded_nowait(b"2")
            await self.send_encoded(b"3")

    app = web.Application()
    setup(app, make_settings())
    app.router.add_get("/sizes", Sizes.as_handler())
    client = await aiohttp_client(app)
    async with client.ws_connect("/sizes", max_msg_size=1 << 20) as ws:
        assert [len((await ws.receive()).data) for _ in sizes] == sizes
        assert [(await ws.receive()).data for _ in sizes] == ["汉" * (size // 3) for size in sizes]
        assert [(await ws.receive()).data[0] for _ in range(3)] == ["1", "2", "3"]
        assert client.app[CONNECTIONS_KEY].stats.messages_out == 2 * len(sizes) + 3


async def test_sends_never_wait_and_a_client_that_leaves_too_much_unread_is_dropped_at_once(
    aiohttp_client: Any,
) -> None:
    """A send never waits for the client (so no sender's deadline or cancellation can reach any
    shared wait): frames go to the transport, and a client that leaves more than the writer's
    bound unread is dropped at once, long before send_timeout."""
    outcome: asyncio.Future[tuple[int, bool]] = asyncio.get_running_loop().create_future()

    class Flood(WebsocketConsumer):
        async def on_connect(self) -> None:
            sent = 0
            async with asyncio.timeout(5):  # sends that waited would trip this
                for _ in range(1000):  # bounded
                    await self.send_encoded(b"x" * 60_000)
                    sent += 1
                    if self.request.transport is None or self.request.transport.is_closing():
                        break
            outcome.set_result((sent, self.request.transport is None or self.request.transport.is_closing()))

    app = web.Application()
    setup(app, make_settings(limits={"send_timeout": 60, "heartbeat": 0}))
    app.router.add_get("/flood", Flood.as_handler())
    client = await aiohttp_client(app)
    raw = raw_websocket_that_never_reads(client.host, client.port, "/flood")
    try:
        sent, dropped = await asyncio.wait_for(outcome, 10)
        assert dropped and sent < 1000
        assert sent * 60_000 <= 8 * 1024 * 1024  # the bound (MAX_BUFFERED), plus what the kernel took
        assert client.app[CONNECTIONS_KEY].stats.errors["slow_reader"] == 1
    finally:
        raw.close()


async def test_a_client_that_reads_late_but_within_send_timeout_gets_every_frame(aiohttp_client: Any) -> None:
    """Behind for a while (less than send_timeout) and under the bound: nothing is dropped."""
    all_sent = asyncio.Event()

    class Patient(WebsocketConsumer):
        async def on_connect(self) -> None:
            for n in range(8):
                await self.send_encoded(b"%d" % n + b"p" * 60_000)
            all_sent.set()

    app = web.Application()
    setup(app, make_settings(limits={"send_timeout": 10, "heartbeat": 0}))
    app.router.add_get("/patient", Patient.as_handler())
    client = await aiohttp_client(app)
    raw = raw_websocket_that_never_reads(client.host, client.port, "/patient")
    raw.setblocking(False)  # until the test reads
    loop = asyncio.get_running_loop()
    try:
        async with asyncio.timeout(10):
            await all_sent.wait()  # all written while the client read nothing
            received = b""
            while received.count(b"p" * 60_000) < 8:
                chunk = await loop.sock_recv(raw, 1 << 20)
                assert chunk, "the server closed the connection"
                received += chunk
        assert client.app[CONNECTIONS_KEY].stats.errors["slow_reader"] == 0
    finally:
        raw.close()


async def test_a_client_that_floods_pings_and_never_reads_is_dropped(aiohttp_client: Any) -> None:
    """Pongs go through the same bounded writer as every other frame: a client that pings and
    never reads cannot make the server buffer pongs for it without bound (or block on them)."""
    app = web.Application()
    setup(app, make_settings(limits={"send_timeout": 60, "heartbeat": 0, "idle_timeout": 0}))
    client = await aiohttp_client(app)
    raw = raw_websocket_that_never_reads(client.host, client.port, "/ws")
    raw.setblocking(False)
    loop = asyncio.get_running_loop()
    # A masked ping with a 125-byte payload (mask key 0: the payload goes as it is).
    ping = bytes((0x89, 0x80 | 125)) + b"\x00\x00\x00\x00" + b"p" * 125
    try:
        async with asyncio.timeout(20):
            for _ in range(200):  # bounded: up to 200 x 64 KiB of pings
                try:
                    await loop.sock_sendall(raw, ping * 500)
                except (ConnectionResetError, BrokenPipeError):
                    break
                if client.app[CONNECTIONS_KEY].stats.errors["slow_reader"]:
                    break
            await client.app[CONNECTIONS_KEY].wait_until(0)
        assert client.app[CONNECTIONS_KEY].stats.errors["slow_reader"] == 1
    finally:
        raw.close()
