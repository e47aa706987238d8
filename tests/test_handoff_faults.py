"""The handoff queue under Redis faults: stopped, paused (SIGSTOP), out of memory; and a claim
whose reply is lost, which the shared client's retry policy then runs again."""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator, Iterator
from typing import Any

import aiohttp
import pytest
import redis.asyncio as aioredis
from aiohttp import web
from aiohttp.test_utils import TestClient

from chatbot_server import setup
from chatbot_server.ops.redis import redis_client
from chatbot_server.store.handoff import DEADLINE, QueueUnavailableError, RedisHandoffQueue

from .agent_support import AgentSocket, HandoffBot, agent_section, origin, session_cookie
from .helpers import make_settings, receive_json, receive_until
from .redis_server import RedisProcess, unique_prefix

pytestmark = pytest.mark.timeout(60)

UNAVAILABLE = "抱歉,转人工服务暂时不可用,请稍后再试。"


@contextlib.contextmanager
def paused(server: RedisProcess) -> Iterator[None]:
    """Redis hung (SIGSTOP): connections stay open, nothing is answered. Always resumed (SIGCONT)."""
    server.freeze()
    try:
        yield
    finally:
        server.thaw()


@contextlib.asynccontextmanager
async def out_of_memory(url: str) -> AsyncIterator[None]:
    """Redis refuses every write (maxmemory reached, no eviction)."""
    admin = aioredis.Redis.from_url(url)
    await admin.config_set("maxmemory-policy", "noeviction")
    await admin.config_set("maxmemory", "1")
    try:
        yield
    finally:
        await admin.config_set("maxmemory", "0")
        await admin.aclose()


async def chat_app(aiohttp_client: Any, url: str) -> TestClient:
    settings = make_settings(
        agents=agent_section(), layer={"backend": "redis", "redis": {"url": url, "prefix": unique_prefix()}}
    )
    app = web.Application()
    setup(app, settings, bot=HandoffBot())
    client: TestClient = await aiohttp_client(app)
    return client


async def assert_handoff_degrades(ws: aiohttp.ClientWebSocketResponse) -> None:
    """转人工 gets the polite error within a few seconds; the socket stays open."""
    started = time.monotonic()
    await ws.send_json({"type": "handoff"})
    error = await receive_json(ws, timeout=10)
    assert (error["type"], error["code"], error["msg"]) == ("error", "handoff_unavailable", UNAVAILABLE)
    assert time.monotonic() - started < 8


async def assert_bot_answers(ws: aiohttp.ClientWebSocketResponse, text: str) -> None:
    await ws.send_json({"type": "message", "text": text, "id": text})
    assert (await receive_until(ws, "reply", timeout=10))["msg"] == f"答:{text}"


async def test_handoff_while_redis_is_stopped(aiohttp_client: Any, redis_process: RedisProcess) -> None:
    client = await chat_app(aiohttp_client, redis_process.url)
    ws = await client.ws_connect("/ws")
    await receive_json(ws)
    redis_process.kill()
    await assert_handoff_degrades(ws)
    await assert_bot_answers(ws, "那先问问挂失")
    redis_process.start()
    await ws.send_json({"type": "handoff"})  # Redis is back: the handoff works again
    assert (await receive_until(ws, "system", timeout=10))["event"] == "queued"
    await ws.close()


async def test_handoff_while_redis_is_paused(aiohttp_client: Any, redis_process: RedisProcess) -> None:
    client = await chat_app(aiohttp_client, redis_process.url)
    ws = await client.ws_connect("/ws")
    await receive_json(ws)
    with paused(redis_process):
        await assert_handoff_degrades(ws)
        await assert_bot_answers(ws, "那先问问挂失")
    await ws.close()


async def test_handoff_while_redis_is_out_of_memory(aiohttp_client: Any, redis_process: RedisProcess) -> None:
    client = await chat_app(aiohttp_client, redis_process.url)
    ws = await client.ws_connect("/ws")
    await receive_json(ws)
    async with out_of_memory(redis_process.url):
        await assert_handoff_degrades(ws)
        await assert_bot_answers(ws, "那先问问挂失")
        metrics = await (await client.get("/metrics")).text()
        assert 'chatbot_errors_total{code="handoff_unavailable"} 1.0' in metrics
    await ws.close()


async def test_queue_calls_on_a_paused_redis_fail_within_the_deadline(
    redis_process: RedisProcess, caplog: pytest.LogCaptureFixture
) -> None:
    queue = RedisHandoffQueue(url=redis_process.url, prefix=unique_prefix())
    try:
        await queue.enqueue("c1", "你好")
        with paused(redis_process):
            for call in (
                queue.active("li"),
                queue.waiting(),
                queue.position("c1"),
                queue.enqueue("c2", "转人工", ip="10.0.0.1"),
                queue.claim("c1", "li", request_id="r1"),
            ):
                started = time.monotonic()
                with pytest.raises(QueueUnavailableError) as failed:
                    await call
                assert failed.value.kind == "timeout"
                assert time.monotonic() - started < DEADLINE + 2  # not the client's 5 s times 3 attempts
        warnings = [r for r in caplog.records if r.getMessage().startswith("handoff.queue_unavailable")]
        assert len(warnings) == 1 and not warnings[0].exc_info  # one line per outage, no tracebacks
        assert [e.conversation for e in await queue.waiting()] == ["c1"]  # and it works again
    finally:
        await queue.close()


async def test_console_connecting_while_redis_is_paused_gets_an_error_then_its_queue(
    aiohttp_client: Any, redis_process: RedisProcess
) -> None:
    client = await chat_app(aiohttp_client, redis_process.url)
    cookie = await session_cookie(client, "li")
    user = await client.ws_connect("/ws")
    conversation = (await receive_json(user))["conversation"]
    await user.send_json({"type": "handoff"})
    assert (await receive_until(user, "system"))["event"] == "queued"
    async with aiohttp.ClientSession(cookie_jar=aiohttp.DummyCookieJar()) as session:
        with paused(redis_process):
            ws = await session.ws_connect(
                client.make_url("/agent/ws"), headers={"Cookie": f"chatbot_agent={cookie}", "Origin": origin(client)}
            )
            # The socket's layer join waits at most 0.5 s (then lands in the background), the
            # console's first queue call DEADLINE (2 s): 2.5 s measured; 10 s is slack, not 15 s
            # of socket timeouts and retries as before.
            error = await receive_json(ws, timeout=10)
            assert (error["type"], error["code"]) == ("error", "queue_unavailable")  # not a 1011 close
        agent = AgentSocket(session, ws)
        assert (await agent.next("hello", timeout=15))["agent"]["username"] == "li"  # retried once Redis is back
        assert [i["conversation"] for i in (await agent.next("queue"))["items"]] == [conversation]
        await agent.send(type="claim", conversation=conversation)  # and it keeps working
        await agent.next("claimed")
        assert (await receive_until(user, "system", timeout=10))["event"] == "agent_joined"
        await ws.close()
    await user.close()


class LosingProxy:
    """A TCP proxy to Redis that, once armed, loses the reply to the next EVALSHA Redis runs (not
    a NOSCRIPT answer) and cuts that connection: the command ran, its caller never heard."""

    def __init__(self, port: int) -> None:
        self.port = port
        self.armed = False
        self.lost = 0
        self.server: asyncio.Server | None = None
        self.connections: set[asyncio.Task[None]] = set()

    async def start(self) -> str:
        self.server = await asyncio.start_server(self._serve, "127.0.0.1", 0)
        return f"redis://127.0.0.1:{self.server.sockets[0].getsockname()[1]}/0"

    async def close(self) -> None:
        """Stop listening and wait for every connection to end (the clients closed theirs first)."""
        if self.server is not None:
            self.server.close()
            await asyncio.gather(*self.connections, return_exceptions=True)
            await self.server.wait_closed()

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        assert task is not None
        self.connections.add(task)
        up_reader, up_writer = await asyncio.open_connection("127.0.0.1", self.port)
        waiting = False

        async def upstream() -> None:
            nonlocal waiting
            while data := await reader.read(65536):
                waiting = waiting or (self.armed and b"EVALSHA" in data)
                up_writer.write(data)
                await up_writer.drain()

        async def downstream() -> None:
            nonlocal waiting
            while data := await up_reader.read(65536):
                if waiting:
                    waiting = False
                    if not data.startswith(b"-NOSCRIPT"):
                        self.armed = False
                        self.lost += 1
                        writer.transport.abort()
                        return
                writer.write(data)
                await writer.drain()

        tasks = [asyncio.ensure_future(upstream()), asyncio.ensure_future(downstream())]
        await asyncio.wait(tasks, return_when=asyncio.FIRST_COMPLETED)
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        for end in (up_writer, writer):
            end.close()
            with contextlib.suppress(OSError):
                await end.wait_closed()


async def test_a_claim_retried_after_its_reply_was_lost_still_wins_and_only_once(redis_server: str) -> None:
    proxy = LosingProxy(int(redis_server.rsplit(":", 1)[1].split("/")[0]))
    url = await proxy.start()
    client = redis_client(url)  # the shared client's policy: a dropped connection is retried
    prefix = unique_prefix()
    queue = RedisHandoffQueue(prefix=prefix, client=client)
    direct = RedisHandoffQueue(url=redis_server, prefix=prefix)
    try:
        await queue.enqueue("c1", "卡被吞了")
        proxy.armed = True
        assert await queue.claim("c1", "li", request_id="r1")  # ran twice: lost reply, then the retry
        assert proxy.lost == 1
        assert await direct.agent_of("c1") == "li"
        assert await direct.active("li") == ["c1"]
        assert not await direct.claim("c1", "wang", request_id="r2")
        assert not await direct.claim("c1", "li", request_id="r3")  # a second click is not this claim
        assert await direct.agent_of("c1") == "li"
    finally:
        await queue.close()
        await direct.close()
        await client.aclose()
        await proxy.close()
