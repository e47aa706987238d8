"""The whole server on the Redis layer: two app instances on one private redis-server, then an outage."""

from __future__ import annotations

import asyncio
from typing import Any

from aiohttp import web
from aiohttp.test_utils import TestClient

from chatbot_server import setup
from chatbot_server.keys import LAYER_KEY, STORE_KEY
from chatbot_server.store.redis import RedisConversationStore

from .helpers import make_settings, receive_json, receive_until
from .redis_server import RedisProcess, unique_prefix


async def redis_app(aiohttp_client: Any, url: str, prefix: str) -> TestClient:
    app = web.Application()
    redis = {"url": url, "prefix": prefix, "heartbeat_interval": 0.2, "connect_timeout": 1.0}
    setup(app, make_settings(layer={"backend": "redis", "redis": redis}))
    return await aiohttp_client(app)


async def test_broadcast_reaches_users_on_both_processes(aiohttp_client: Any, redis_server: str) -> None:
    prefix = unique_prefix()
    one = await redis_app(aiohttp_client, redis_server, prefix)
    two = await redis_app(aiohttp_client, redis_server, prefix)
    async with one.ws_connect("/ws") as a, two.ws_connect("/ws") as b:
        await receive_json(a)
        await receive_json(b)
        await one.app[LAYER_KEY].group_send("users", {"type": "chat.broadcast", "text": "全体通知"})
        assert (await receive_until(a, "system"))["msg"] == "全体通知"
        assert (await receive_until(b, "system"))["msg"] == "全体通知"


async def test_redis_outage_keeps_local_chat_and_recovers(aiohttp_client: Any, redis_process: RedisProcess) -> None:
    prefix = unique_prefix()
    one = await redis_app(aiohttp_client, redis_process.url, prefix)
    two = await redis_app(aiohttp_client, redis_process.url, prefix)
    async with one.ws_connect("/ws") as a, two.ws_connect("/ws") as b:
        conversation = (await receive_json(a))["conversation"]
        await receive_json(b)

        redis_process.kill()
        health = await one.get("/healthz")
        assert health.status == 503
        body = await health.json()
        assert body["layer"]["ok"] is False and "unreachable" in body["layer"]["detail"]
        # Local chat goes on: new sockets are greeted and questions answered.
        await a.send_json({"text": "断网了吗"})
        assert (await receive_until(a, "reply"))["msg"] == "我正在思考你的问题{断网了吗}"
        async with one.ws_connect("/ws") as late:
            assert (await receive_json(late))["type"] == "greeting"

            redis_process.start()
            async with asyncio.timeout(15):
                await one.app[LAYER_KEY].wait_connected()  # type: ignore[attr-defined]
                await two.app[LAYER_KEY].wait_connected()  # type: ignore[attr-defined]
            assert (await one.get("/healthz")).status == 200
            # Memberships were re-registered: a broadcast from process two reaches every socket.
            await two.app[LAYER_KEY].group_send("users", {"type": "chat.broadcast", "text": "恢复"})
            for ws in (a, b, late):
                assert (await receive_until(ws, "system"))["msg"] == "恢复"
        metrics = await (await one.get("/metrics")).text()
        assert "chatbot_layer_reconnects_total 1.0" in metrics
        # What was said during the outage was kept and written once Redis came back.
        await one.app[STORE_KEY].flush()
        reader = RedisConversationStore(url=redis_process.url, prefix=prefix, process_id="reader")
        await reader.start()
        stored = [(f["type"], f["msg"]) for f in await reader.transcript(conversation)]
        await reader.close()
        assert ("user", "断网了吗") in stored and ("reply", "我正在思考你的问题{断网了吗}") in stored
