"""The conversation store when Redis restarts empty or hangs (issue #14), on real redis-server processes.

- Killed and restarted without persistence: the process holding a conversation notices that Redis
  lost its data and writes the whole conversation (and its ownership) again, so a resume on another
  process replays every frame.
- Paused (SIGSTOP): a new socket is greeted at once; a resume of a conversation nobody holds gives up
  after a short deadline with a clear error frame, and the socket still answers.
"""

from __future__ import annotations

import asyncio
import time
from typing import Any

import aiohttp
import redis.asyncio as aioredis
from aiohttp import web
from aiohttp.test_utils import TestClient
from redis.exceptions import RedisError

from chatbot_server import setup
from chatbot_server.errors import StoreUnavailableError
from chatbot_server.keys import LAYER_KEY, STORE_KEY
from chatbot_server.store.redis import RedisConversationStore, conversation_keys

from .helpers import make_settings, receive_json, receive_until, until
from .redis_server import RedisProcess, unique_prefix

DEADLINE = 20.0  # generous: the machine is shared and loaded


async def redis_app(aiohttp_client: Any, url: str, prefix: str, **history: Any) -> TestClient:
    app = web.Application()
    redis = {"url": url, "prefix": prefix, "heartbeat_interval": 0.2, "connect_timeout": 1.0}
    settings = make_settings(
        layer={"backend": "redis", "redis": redis}, history={"backend": "redis", **history}, limits={"rate_burst": 100}
    )
    setup(app, settings)
    return await aiohttp_client(app)


async def replay(ws: aiohttp.ClientWebSocketResponse) -> list[dict[str, Any]]:
    """The frames a resume replays, up to its "resumed" frame."""
    frames = []
    while True:
        data = await receive_json(ws, DEADLINE)
        if data.get("event") == "resumed":
            return frames
        frames.append(data)


async def test_restart_without_persistence_rewrites_held_conversations(
    aiohttp_client: Any, redis_process: RedisProcess
) -> None:
    prefix = unique_prefix()
    one = await redis_app(aiohttp_client, redis_process.url, prefix)
    two = await redis_app(aiohttp_client, redis_process.url, prefix)
    store = one.app[STORE_KEY]
    assert isinstance(store, RedisConversationStore)
    async with one.ws_connect("/ws") as ws:
        conversation = (await receive_json(ws))["conversation"]
        for n in range(10):
            await ws.send_json({"text": f"问题{n}"})
            await receive_until(ws, "reply")
        await store.flush()  # frames 1..21 are in Redis now

        redis_process.kill()
        redis_process.start()  # empty: the tests' redis-server runs with save "" and appendonly no
        async with asyncio.timeout(DEADLINE):
            await one.app[LAYER_KEY].wait_connected()  # type: ignore[attr-defined]
            await two.app[LAYER_KEY].wait_connected()  # type: ignore[attr-defined]
        await ws.send_json({"text": "恢复了吗"})  # a little traffic after the restart
        await receive_until(ws, "reply")
        total = 23

        client = aioredis.Redis.from_url(redis_process.url)
        try:
            frames_key = f"{prefix}:conv:{{{conversation}}}:frames"
            await until(lambda: _has_length(client, frames_key, total), "the holder to rewrite the conversation")
            assert await client.get(f"{prefix}:conv:{{{conversation}}}:owner") == one.app[LAYER_KEY].process_id.encode()
        finally:
            await client.aclose()

        # A resume on the other process takes the conversation over and replays all of it.
        async with two.ws_connect(f"/ws?conversation={conversation}&last_seq=0") as other:
            replayed = await replay(other)
            assert [f["seq"] for f in replayed] == list(range(1, total + 1))
            assert next(f["msg"] for f in replayed if f["type"] == "user") == "问题0"
    metrics = await (await one.get("/metrics")).text()
    assert "chatbot_store_data_lost_total 1.0" in metrics
    assert "chatbot_store_rewritten_total 1.0" in metrics


async def _has_length(client: aioredis.Redis, key: str, length: int) -> bool:
    return int(await client.llen(key)) == length


async def test_paused_redis_greets_at_once_and_degrades_a_resume(
    aiohttp_client: Any, redis_process: RedisProcess
) -> None:
    prefix = unique_prefix()
    one = await redis_app(aiohttp_client, redis_process.url, prefix)
    # A conversation stored earlier and held by nobody now.
    async with one.ws_connect("/ws") as ws:
        conversation = (await receive_json(ws))["conversation"]
        await ws.send_json({"text": "你好"})
        await receive_until(ws, "reply")
    await one.app[STORE_KEY].flush()

    redis_process.freeze()
    try:
        started = time.monotonic()
        async with one.ws_connect("/ws") as fresh:
            greeting = await receive_json(fresh, DEADLINE)
            assert greeting["type"] == "greeting"
            assert time.monotonic() - started < 1.5, "the greeting waited for Redis"

        started = time.monotonic()
        async with one.ws_connect(f"/ws?conversation={conversation}&last_seq=0") as resumed:
            error = await receive_until(resumed, "error", DEADLINE)
            assert error["code"] == "history_unavailable"
            assert "聊天记录" in error["msg"]
            assert time.monotonic() - started < 8.0, "the resume waited for Redis"
            greeting = await receive_until(resumed, "greeting", DEADLINE)
            assert greeting["conversation"] != conversation
            await resumed.send_json({"text": "还在吗"})
            assert (await receive_until(resumed, "reply", DEADLINE))["msg"] == "我正在思考你的问题{还在吗}"
    finally:
        redis_process.thaw()

    # Redis is back: the conversation was never taken by anyone; a resume replays it all.
    async with asyncio.timeout(DEADLINE):
        await one.app[LAYER_KEY].wait_connected()  # type: ignore[attr-defined]
    client = aioredis.Redis.from_url(redis_process.url)
    try:
        assert await client.get(f"{prefix}:conv:{{{conversation}}}:owner") is None
    finally:
        await client.aclose()
    async with one.ws_connect(f"/ws?conversation={conversation}&last_seq=0") as again:
        replayed = await replay(again)
        assert [f["seq"] for f in replayed] == [1, 2, 3]
        await again.send_json({"text": "好了"})
        assert (await receive_until(again, "reply", DEADLINE))["msg"] == "我正在思考你的问题{好了}"
    metrics = await (await one.get("/metrics")).text()
    assert 'chatbot_errors_total{code="history_unavailable"} 1.0' in metrics


async def test_a_takeover_cut_short_by_a_paused_redis_leaves_no_owner(redis_process: RedisProcess) -> None:
    """The acquire's SET is sent, Redis is paused, the call gives up: when Redis resumes it runs
    the SET, naming a process where nobody holds the conversation. The store undoes it."""
    prefix = unique_prefix()
    writer = RedisConversationStore(url=redis_process.url, prefix=prefix, process_id="writer")
    store = RedisConversationStore(url=redis_process.url, prefix=prefix, process_id="p1")
    client = aioredis.Redis.from_url(redis_process.url)
    await writer.start()
    await store.start()
    try:
        conversation = await writer.create()
        writer.append(conversation, {"type": "greeting", "msg": "您好"})
        await writer.release(conversation)  # stored, held by nobody
        owner_key = f"{prefix}:conv:{{{conversation}}}:owner"
        assert await client.get(owner_key) is None
        # A connection open and the acquire script cached in Redis: the EVALSHA below is sent and
        # runs as soon as Redis resumes.
        assert await store.acquire("warm-up") is None
        redis_process.freeze()
        try:
            started = time.monotonic()
            try:
                await store.acquire(conversation)
            except StoreUnavailableError as exc:
                assert "no answer" in str(exc)
            else:
                raise AssertionError("acquire answered while Redis was paused")
            assert time.monotonic() - started < 8.0
            store.abandon(conversation)
        finally:
            redis_process.thaw()
        await until(lambda: _flushed(store), "Redis to answer the store again")
        await store.flush()  # the second delete goes out after Redis answered the first
        assert await client.get(owner_key) is None
        assert [f["seq"] for f in await store.transcript(conversation)] == [1]
    finally:
        await store.close()
        await writer.close()
        await client.aclose()


async def _flushed(store: RedisConversationStore) -> bool:
    try:
        await store.flush()
    except (RedisError, OSError):
        return False
    return True


async def test_a_conversation_taken_back_while_its_release_is_written_keeps_its_owner(redis_server: str) -> None:
    # A page that drops its socket and comes straight back to the same process: the release of
    # the old socket is written behind, and the new socket takes the conversation back meanwhile.
    # The release deleted the owner key the take-back had just set, so another process could take
    # the conversation without asking (two holders: seen under reconnect churn, #18).
    prefix = unique_prefix()
    store = RedisConversationStore(url=redis_server, prefix=prefix, process_id="p1")
    await store.start()
    client = aioredis.Redis.from_url(redis_server)
    try:
        conversation = await store.create()
        store.append(conversation, {"type": "user", "msg": "你好", "id": "m1"})
        await store.flush()
        releasing = asyncio.ensure_future(store.release(conversation))
        await asyncio.sleep(0)  # one loop turn: the release task runs up to its wait for the write
        assert not store.owns(conversation)  # let go here; its owner key still names us
        assert await store.acquire(conversation) is None  # ours: the key names us until the release
        await store.adopt(conversation)
        await releasing
        await store.flush()  # the write after the release
        owner_key = conversation_keys(prefix, conversation)[1]
        assert await client.get(owner_key) == b"p1"
        other = RedisConversationStore(url=redis_server, prefix=prefix, process_id="p2")
        await other.start()
        try:
            assert await other.acquire(conversation) == "p1"  # asks the holder, as it must
        finally:
            await other.close()
    finally:
        await store.close()
        await client.aclose()
