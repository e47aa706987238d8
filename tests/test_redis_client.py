"""One Redis client per process: the app's layer, history and handoff queue share one pool."""

from __future__ import annotations

import ast
import asyncio
import os
import socket
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
import redis.asyncio as aioredis
from aiohttp import web

import chatbot_server.layers
from chatbot_server import setup
from chatbot_server.keys import LAYER_KEY, QUEUE_KEY, STORE_KEY
from chatbot_server.ops.redis import BLOCK_SECONDS, blocking_client, client_name, redis_client

from .agent_support import agent_section
from .helpers import make_settings, receive_json, receive_until
from .redis_server import RedisProcess, unique_prefix

POOL_SIZE = 3
BLOCKING_COMMANDS = ("blmpop", "blpop")


@pytest.fixture
async def inspector(redis_process: RedisProcess) -> AsyncIterator[aioredis.Redis]:
    """A client of the test's own (named "inspector") on a private redis-server."""
    client = aioredis.Redis.from_url(redis_process.url, client_name="inspector")
    yield client
    await client.aclose()


async def connections(inspector: aioredis.Redis) -> list[dict[str, Any]]:
    """CLIENT LIST without the inspector's own connection."""
    listed: list[dict[str, Any]] = await inspector.client_list()
    return [c for c in listed if c["name"] != "inspector"]


async def test_an_app_on_redis_shares_one_pool_and_closes_every_connection(
    aiohttp_client: Any, redis_process: RedisProcess, inspector: aioredis.Redis
) -> None:
    redis = {
        "url": redis_process.url,
        "prefix": unique_prefix(),
        "pool_size": POOL_SIZE,
        "heartbeat_interval": 0.2,
        "connect_timeout": 1.0,
    }
    app = web.Application()
    setup(app, make_settings(layer={"backend": "redis", "redis": redis}, agents=agent_section()))
    client = await aiohttp_client(app)
    layer, store, queue = app[LAYER_KEY], app[STORE_KEY], app[QUEUE_KEY]
    assert (layer.backend, store.backend, queue.backend) == ("redis", "redis", "redis")
    async with asyncio.timeout(5):
        await layer.wait_connected()  # type: ignore[attr-defined]

    # Work on all three at once, more than the pool holds, and a chat over the socket.
    await asyncio.gather(
        *(queue.enqueue(f"conversation-{n}", "预览") for n in range(20)),
        *(store.health() for _ in range(20)),
        *(layer.group_send(f"group-{n}", {"type": "chat.broadcast", "text": "x"}) for n in range(20)),
    )
    assert [entry.preview for entry in await queue.waiting()] == ["预览"] * 20  # decoded from bytes
    async with client.ws_connect("/ws") as ws:
        await receive_json(ws)
        await ws.send_json({"text": "你好"})
        await receive_until(ws, "reply")
    await store.flush()

    listed = await connections(inspector)
    assert listed and {c["name"] for c in listed} == {client_name()}  # every one is this process's
    parked = [c for c in listed if c["cmd"] in BLOCKING_COMMANDS]
    ordinary = [c for c in listed if c["cmd"] not in BLOCKING_COMMANDS]
    assert len(parked) == 1  # the inbox reader, on the small pool of its own
    # Layer, history and queue all drew from one pool of POOL_SIZE connections (three pools could
    # have opened three times as many).
    assert 1 <= len(ordinary) <= POOL_SIZE

    await client.close()  # the app's cleanup: layer, store and queue close, then the client
    for _ in range(250):  # the server notices closed sockets asynchronously: poll, up to 5 s
        if not await connections(inspector):
            break
        await asyncio.sleep(0.02)
    assert await connections(inspector) == []


async def test_a_memory_app_makes_no_redis_client(aiohttp_client: Any) -> None:
    app = web.Application()
    setup(app, make_settings(agents=agent_section()))
    await aiohttp_client(app)
    assert app[STORE_KEY].backend == "memory" and app[QUEUE_KEY].backend == "memory"
    assert not hasattr(app[LAYER_KEY], "_client")


async def test_the_blocking_client_has_its_own_pool_to_the_same_server(
    redis_process: RedisProcess, inspector: aioredis.Redis
) -> None:
    shared = redis_client(redis_process.url, pool_size=2, connect_timeout=1.0, socket_timeout=3.0)
    blocking = blocking_client(shared)
    assert blocking.connection_pool is not shared.connection_pool
    kwargs = blocking.connection_pool.connection_kwargs
    assert kwargs["socket_timeout"] == BLOCK_SECONDS + 3.0  # a full block is not a timeout
    assert kwargs["port"] == redis_process.port and kwargs["client_name"] == client_name()
    assert await blocking.blpop(["nothing-here"], timeout=0.1) is None
    await blocking.aclose()
    assert await shared.ping()  # closing the blocking client leaves the shared one alone
    assert [c["name"] for c in await connections(inspector)] == [client_name()]
    await shared.aclose()


def _imported_modules(path: Path) -> set[str]:
    """Every module `path` imports, relative imports resolved against its package."""
    package = "chatbot_server.layers"
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = package.rsplit(".", node.level - 1)[0] if node.level else ""
            module = ".".join(part for part in (base, node.module or "") if part)
            found.add(module)
            found.update(f"{module}.{alias.name}" for alias in node.names)
    return found


def test_the_layers_package_does_not_import_the_apps_config() -> None:
    folder = Path(chatbot_server.layers.__file__).parent
    files = sorted(folder.glob("*.py"))
    assert files
    for path in files:
        imported = _imported_modules(path)
        assert not {m for m in imported if m == "chatbot_server.config" or m.startswith("chatbot_server.config.")}, (
            f"{path.name} imports chatbot_server.config: a layer takes plain arguments"
        )


def test_process_name_carries_the_pid() -> None:
    assert client_name() == f"chatbot_server:{os.getpid()}"


@pytest.mark.parametrize(
    ("url", "shown"),
    [
        ("redis://127.0.0.1:6379/0", "redis://127.0.0.1:6379/0"),
        ("redis://:s3cret@h:1/0", "redis://:***@h:1/0"),
        ("redis://user:s3cret@h/0", "redis://user:***@h/0"),
        ("redis://s3cret@h/0", "redis://***@h/0"),
        ("redis://h:6379/0?password=s3cret&db=1", "redis://h:6379/0?password=***&db=1"),
        ("unix:///run/redis.sock?password=s3cret", "unix:///run/redis.sock?password=***"),
        ("rediss://u:p%40ss@h:6380/0?ssl_cert_reqs=none", "rediss://u:***@h:6380/0?ssl_cert_reqs=none"),
    ],
)
def test_redact_hides_every_credential_redis_py_accepts(url: str, shown: str) -> None:
    from chatbot_server.ops.redis import redact

    assert redact(url) == shown


async def test_healthz_and_logs_never_show_the_redis_password(
    aiohttp_client: Any, caplog: pytest.LogCaptureFixture
) -> None:
    with socket.socket() as s:  # a port nobody listens on: the layer is down, and says where
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    url = f"redis://:s3cret@127.0.0.1:{port}/0?password=s3cret2"
    redis = {"url": url, "prefix": unique_prefix(), "connect_timeout": 0.2, "socket_timeout": 0.2}
    app = web.Application()
    setup(app, make_settings(layer={"backend": "redis", "redis": redis}, history={"backend": "memory"}))
    client = await aiohttp_client(app)
    response = await client.get("/healthz")
    body = await response.text()
    assert response.status == 503 and "127.0.0.1" in body
    assert "s3cret" not in body and "s3cret" not in caplog.text
