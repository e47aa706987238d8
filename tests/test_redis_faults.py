"""Redis misbehaving while reachable (#14): writes refused under maxmemory (OOM), a paused server.

Each test gets its own redis-server (it changes its config or SIGSTOPs it). The apps run the
Redis channel layer and (history "auto") the Redis store; the layer tests use two layers, each
standing for one server process.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Awaitable
from contextlib import asynccontextmanager
from typing import Any

import pytest
import redis.asyncio as aioredis
from aiohttp import web
from aiohttp.test_utils import TestClient

from chatbot_server import setup
from chatbot_server.errors import LayerUnavailableError
from chatbot_server.keys import LAYER_KEY
from chatbot_server.layers.redis import RedisChannelLayer

from .helpers import make_settings, receive_json, receive_until, until
from .redis_server import RedisProcess, unique_prefix

pytestmark = pytest.mark.timeout(60)

DEADLINE = 20.0  # generous: the machine is shared; a pass takes a second or two


async def redis_app(aiohttp_client: Any, url: str, prefix: str) -> TestClient:
    app = web.Application()
    redis = {"url": url, "prefix": prefix, "heartbeat_interval": 0.2, "connect_timeout": 1.0}
    setup(app, make_settings(layer={"backend": "redis", "redis": redis}))
    return await aiohttp_client(app)


def layer_of(client: TestClient) -> RedisChannelLayer:
    layer = client.app[LAYER_KEY]
    assert isinstance(layer, RedisChannelLayer)
    return layer


@asynccontextmanager
async def out_of_memory(url: str) -> AsyncIterator[aioredis.Redis]:
    """Redis refuses every write (used memory > maxmemory, noeviction) until lift() or the end."""
    admin = aioredis.Redis.from_url(url)
    try:
        await admin.set("ballast", b"x" * 1024)  # some data exists, so used memory > 1 byte
        await admin.config_set("maxmemory-policy", "noeviction")
        await admin.config_set("maxmemory", 1)
        try:
            yield admin
        finally:
            await admin.config_set("maxmemory", 0)
    finally:
        await admin.aclose()


async def lift(admin: aioredis.Redis) -> None:
    await admin.config_set("maxmemory", 0)


async def healthz(client: TestClient) -> tuple[int, dict[str, Any]]:
    response = await client.get("/healthz")
    body: dict[str, Any] = await response.json()
    return response.status, body


async def healthy(client: TestClient) -> bool:
    return (await healthz(client))[0] == 200


async def connected(*layers: RedisChannelLayer) -> None:
    """Every layer reachable and all its memberships registered (an event, not a poll)."""
    async with asyncio.timeout(DEADLINE):
        for layer in layers:
            await layer.wait_connected()


async def test_membership_refused_under_oom_lands_once_writes_work(
    aiohttp_client: Any, redis_process: RedisProcess
) -> None:
    prefix = unique_prefix()
    one = await redis_app(aiohttp_client, redis_process.url, prefix)
    two = await redis_app(aiohttp_client, redis_process.url, prefix)
    await connected(layer_of(one), layer_of(two))
    assert (await healthz(one))[0] == 200
    async with out_of_memory(redis_process.url) as admin, one.ws_connect("/ws") as a:
        assert (await receive_json(a))["type"] == "greeting"  # local chat goes on
        status, body = await healthz(one)
        assert status == 503 and body["layer"]["ok"] is False, body
        assert "group memberships not yet registered" in body["layer"]["detail"], body
        assert await layer_of(two).group_members("users") == []
        # The store cannot write the greeting behind either: it says so instead of "ok".
        await until(lambda: store_failing(one), "the store to report its failing writes")
        assert "maxmemory" in (await healthz(one))[1]["store"]["detail"]

        await lift(admin)
        # The refused memberships are retried until they land; only then is the layer healthy.
        await connected(layer_of(one))
        assert len(await layer_of(two).group_members("users")) == 1
        await until(lambda: healthy(one), "/healthz to be ok again")
        await layer_of(two).group_send("users", {"type": "chat.broadcast", "text": "恢复通知"})
        assert (await receive_until(a, "system"))["msg"] == "恢复通知"
    assert layer_of(one).stats.write_failures > 0
    metrics = await (await one.get("/metrics")).text()
    assert "chatbot_layer_pending_writes 0.0" in metrics


async def store_failing(client: TestClient) -> bool:
    return not (await healthz(client))[1]["store"]["ok"]


async def test_healthz_reports_refused_writes_until_they_work(aiohttp_client: Any, redis_process: RedisProcess) -> None:
    client = await redis_app(aiohttp_client, redis_process.url, unique_prefix())
    await connected(layer_of(client))
    assert (await healthz(client))[0] == 200
    async with out_of_memory(redis_process.url) as admin:
        status, body = await healthz(client)
        assert status == 503 and body["status"] == "degraded"
        detail = body["layer"]["detail"]
        assert "refuses writes" in detail and "OutOfMemoryError" in detail and "maxmemory" in detail, detail
        await lift(admin)
        status, body = await healthz(client)  # no sockets, nothing pending: ok at once
        assert status == 200, body
    metrics = await (await client.get("/metrics")).text()
    assert 'chatbot_layer_messages_total{backend="redis",op="write_failure"}' in metrics


async def test_healthz_answers_fast_while_redis_is_paused(aiohttp_client: Any, redis_process: RedisProcess) -> None:
    client = await redis_app(aiohttp_client, redis_process.url, unique_prefix())
    await connected(layer_of(client))
    assert (await healthz(client))[0] == 200
    redis_process.freeze()
    try:
        started = time.monotonic()
        status, body = await healthz(client)
        elapsed = time.monotonic() - started
        assert status == 503, body
        assert elapsed < 1.5, f"/healthz took {elapsed:.2f} s while Redis was paused"
        assert "did not answer within 0.5 s" in body["layer"]["detail"], body
    finally:
        redis_process.thaw()  # never leave a stopped server behind
    await until(lambda: healthy(client), "/healthz to be ok after SIGCONT")


@pytest.fixture
async def two_layers(redis_process: RedisProcess) -> AsyncIterator[tuple[RedisChannelLayer, RedisChannelLayer]]:
    """Two layers ("processes") on a private redis-server the test may pause or fill up."""
    prefix = unique_prefix()
    one = RedisChannelLayer(url=redis_process.url, prefix=prefix)
    two = RedisChannelLayer(url=redis_process.url, prefix=prefix)
    await one.start()
    await two.start()
    try:
        yield one, two
    finally:
        redis_process.thaw()  # a failed test never leaves a stopped server behind
        await one.close()
        await two.close()


async def elapsed(call: Awaitable[object]) -> float:
    started = time.monotonic()
    await call
    return time.monotonic() - started


async def test_layer_calls_do_not_hang_on_a_paused_redis(
    two_layers: tuple[RedisChannelLayer, RedisChannelLayer], redis_process: RedisProcess
) -> None:
    one, two = two_layers
    mine, theirs = await one.new_channel("chat"), await two.new_channel("chat")
    redis_process.freeze()
    try:
        # A connecting socket joins its groups: past a short deadline the writes go on in the
        # background instead of holding the socket for the whole socket timeout (5 s, retried).
        assert await elapsed(one.group_add("users", mine)) < 1.5
        assert await elapsed(one.group_add("conv.x", mine)) < 1.5
        assert await elapsed(one.group_send("users", {"type": "chat.broadcast", "text": "x"})) < 2.5
        started = time.monotonic()
        with pytest.raises(LayerUnavailableError, match="did not answer within"):
            await one.send(theirs, {"type": "chat.message"})
        assert time.monotonic() - started < 2.5
    finally:
        redis_process.thaw()
    # Nothing was dropped: both memberships land once Redis answers again.
    await connected(one)
    assert await two.group_members("users") == [mine]
    assert await two.group_members("conv.x") == [mine]
    assert one.stats.late_writes >= 2


async def test_layer_reports_refused_writes_instead_of_raising_redis_errors(
    two_layers: tuple[RedisChannelLayer, RedisChannelLayer], redis_process: RedisProcess
) -> None:
    one, two = two_layers
    mine, theirs = await one.new_channel("chat"), await two.new_channel("chat")
    async with out_of_memory(redis_process.url) as admin:
        with pytest.raises(LayerUnavailableError, match="refuses writes"):
            await one.send(theirs, {"type": "chat.message"})
        await one.group_send("users", {"type": "chat.broadcast", "text": "x"})  # counted, not raised
        await one.group_add("users", mine)  # kept and retried, not lost
        health = await one.health()
        assert not health.ok and "1 group memberships not yet registered" in health.detail, health
        await lift(admin)
        await connected(one)
    assert (await one.health()).ok
    assert await two.group_members("users") == [mine]
    assert one.stats.write_failures >= 3


async def test_new_socket_is_greeted_while_redis_is_paused(aiohttp_client: Any, redis_process: RedisProcess) -> None:
    client = await redis_app(aiohttp_client, redis_process.url, unique_prefix())
    await connected(layer_of(client))
    redis_process.freeze()
    try:
        started = time.monotonic()
        async with client.ws_connect("/ws") as ws:
            assert (await receive_json(ws, DEADLINE))["type"] == "greeting"
        # The layer's calls on the connect path wait at most their short deadline (was 15 s).
        assert time.monotonic() - started < 3.0
    finally:
        redis_process.thaw()
