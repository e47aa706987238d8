"""Two real server processes (`python -m chatbot_server`) on one private Redis act as one server."""

from __future__ import annotations

import asyncio
import signal
import subprocess
import sys
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest
import redis.asyncio as aioredis

from chatbot_server.layers.base import process_of
from chatbot_server.layers.redis import RedisChannelLayer

from .helpers import stop_process, wait_healthy
from .redis_server import free_port, unique_prefix

pytestmark = pytest.mark.timeout(40)

HEARTBEAT = 0.3  # the heartbeat key lives 1 s (the layer's minimum TTL)


class Server:
    """One `python -m chatbot_server` subprocess on its own port."""

    def __init__(
        self, tmp: Path, name: str, redis_url: str, prefix: str, *, bot: str = "{name: echo}", extra: str = ""
    ) -> None:
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        config = tmp / f"{name}.yaml"
        config.write_text(
            f"server: {{host: 127.0.0.1, port: {self.port}, shutdown_timeout: 1}}\n"
            f"layer:\n  backend: redis\n"
            f"  redis: {{url: '{redis_url}', prefix: {prefix}, heartbeat_interval: {HEARTBEAT}, required: true}}\n"
            f"bot: {bot}\n"
            f"logging: {{level: WARNING}}\n{extra}",
            encoding="utf-8",
        )
        self.log = tmp / f"{name}.log"
        with self.log.open("wb") as out:
            self.proc = subprocess.Popen(
                [sys.executable, "-m", "chatbot_server", "--config", str(config)],
                stdout=out,
                stderr=subprocess.STDOUT,
                cwd=Path(__file__).resolve().parents[1],  # test bots load by path: tests.stream_bots
            )

    async def wait_ready(self, session: aiohttp.ClientSession) -> None:
        """Wait until /healthz says 200 (once Redis is connected)."""
        await wait_healthy(session, f"{self.url}/healthz", exited=self.exited)

    def exited(self) -> str | None:
        """Why the server is gone (its log), or None while it runs."""
        if self.proc.poll() is None:
            return None
        return f"server exited early:\n{self.log.read_text(errors='replace')}"

    def stop(self) -> None:
        stop_process(self.proc)


@pytest.fixture
def prefix() -> str:
    return unique_prefix()


@pytest.fixture
def servers(tmp_path: Path, redis_server: str, prefix: str) -> Iterator[tuple[Server, Server]]:
    one = Server(tmp_path, "one", redis_server, prefix)
    two = Server(tmp_path, "two", redis_server, prefix)
    try:
        yield one, two
    finally:
        one.stop()
        two.stop()


@pytest.fixture
async def session() -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession() as client:
        yield client


@pytest.fixture
async def trigger(redis_server: str, prefix: str) -> AsyncIterator[RedisChannelLayer]:
    """A third "process": the test's own layer on the same Redis and prefix."""
    layer = RedisChannelLayer(url=redis_server, prefix=prefix, required=True)
    await layer.start()
    yield layer
    await layer.close()


async def next_frame(ws: aiohttp.ClientWebSocketResponse) -> dict[str, Any]:
    frame: dict[str, Any] = await ws.receive_json(timeout=5)
    return frame


async def connect(session: aiohttp.ClientSession, server: Server) -> aiohttp.ClientWebSocketResponse:
    ws = await session.ws_connect(f"{server.url}/ws")
    assert (await next_frame(ws))["type"] == "greeting"  # sent after the socket joined its groups
    return ws


async def new_member(layer: RedisChannelLayer, known: set[str]) -> str:
    members = set(await layer.group_members("users")) - known
    assert len(members) == 1, members
    return members.pop()


async def test_two_processes_act_as_one(
    servers: tuple[Server, Server], session: aiohttp.ClientSession, trigger: RedisChannelLayer
) -> None:
    one, two = servers
    await one.wait_ready(session)
    await two.wait_ready(session)
    client_a = await connect(session, one)
    channel_a = await new_member(trigger, set())
    client_b = await connect(session, two)
    channel_b = await new_member(trigger, {channel_a})
    assert process_of(channel_a) != process_of(channel_b)

    await trigger.group_send("users", {"type": "chat.broadcast", "text": "系统维护通知"})
    for ws in (client_a, client_b):
        frame = await next_frame(ws)
        assert frame["type"] == "system" and frame["msg"] == "系统维护通知"

    # A direct send to a channel owned by the other server process.
    await trigger.send(channel_b, {"type": "chat.broadcast", "text": "只给你"})
    assert (await next_frame(client_b))["msg"] == "只给你"
    await trigger.send(channel_a, {"type": "chat.broadcast", "text": "给 A"})
    assert (await next_frame(client_a))["msg"] == "给 A"
    await client_a.close()
    await client_b.close()


async def test_sigkilled_process_leaves_no_members(
    servers: tuple[Server, Server],
    session: aiohttp.ClientSession,
    trigger: RedisChannelLayer,
    redis_server: str,
    prefix: str,
) -> None:
    one, two = servers
    await one.wait_ready(session)
    await two.wait_ready(session)
    client_a = await connect(session, one)
    channel_a = await new_member(trigger, set())
    client_b = await connect(session, two)
    channel_b = await new_member(trigger, {channel_a})

    inspect = aioredis.Redis.from_url(redis_server)
    expired = inspect.pubsub()
    try:
        # Await the heartbeat key's expiry as an event (keyspace notification), not by polling.
        await inspect.config_set("notify-keyspace-events", "Ex")
        await expired.subscribe("__keyevent@0__:expired")
        two.proc.send_signal(signal.SIGKILL)
        two.proc.wait()
        heartbeat = f"{prefix}:process:{{{process_of(channel_b)}}}".encode()
        async with asyncio.timeout(10):
            async for event in expired.listen():
                if event["type"] == "message" and event["data"] == heartbeat:
                    break
        await trigger.group_send("users", {"type": "chat.broadcast", "text": "after the crash"})
        assert await trigger.group_members("users") == [channel_a]
        targets = await inspect.zrange(f"{prefix}:targets:{{users}}", 0, -1)
        assert f"p:{process_of(channel_b)}".encode() not in targets
        assert await inspect.exists(f"{prefix}:inbox:{{{process_of(channel_b)}}}") == 0
    finally:
        await expired.aclose()
        await inspect.aclose()
    assert (await next_frame(client_a))["msg"] == "after the crash"
    await client_a.close()
    await client_b.close()
