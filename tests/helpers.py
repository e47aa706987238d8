"""Test helpers: build chatbot apps with settings overrides and talk to them over real sockets."""

from __future__ import annotations

import asyncio
import base64
import contextlib
import os
import signal
import socket
import subprocess
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping
from typing import Any

import aiohttp

from chatbot_server import Settings, settings_from_dict
from chatbot_server.layers.redis import RedisChannelLayer

from .redis_server import unique_prefix


def make_settings(**sections: Mapping[str, Any]) -> Settings:
    """Settings shaped like config.yaml; the echo bot unless another is asked for."""
    data: dict[str, Any] = {"bot": {"name": "echo"}}
    for name, values in sections.items():
        data[name] = {**data.get(name, {}), **values}
    return settings_from_dict(data)


async def receive_json(ws: aiohttp.ClientWebSocketResponse, timeout: float = 5) -> dict[str, Any]:
    """The next JSON frame, failing the test if none comes within `timeout`."""
    async with asyncio.timeout(timeout):
        msg = await ws.receive()
    assert msg.type is aiohttp.WSMsgType.TEXT, f"expected a text frame, got {msg.type} {msg.data!r}"
    data = msg.json()
    assert isinstance(data, dict)
    return data


async def receive_until(ws: aiohttp.ClientWebSocketResponse, kind: str, timeout: float = 5) -> dict[str, Any]:
    """Skip frames until one of type `kind` arrives."""
    async with asyncio.timeout(timeout):
        while True:
            data = await receive_json(ws, timeout)
            if data["type"] == kind:
                return data


async def receive_close(ws: aiohttp.ClientWebSocketResponse, timeout: float = 5) -> aiohttp.WSMessage:
    """Skip frames until the server closes; return the close message."""
    async with asyncio.timeout(timeout):
        while True:
            msg = await ws.receive()
            if msg.type in (aiohttp.WSMsgType.CLOSE, aiohttp.WSMsgType.CLOSED, aiohttp.WSMsgType.CLOSING):
                return msg


def raw_websocket_that_never_reads(host: str, port: int, path: str) -> socket.socket:
    """A plain socket that completes a websocket handshake on `path` and then reads nothing (a
    4 KiB receive buffer), so the server's buffers for it fill up."""
    raw = socket.socket()
    raw.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    raw.connect((host, port))
    key = base64.b64encode(os.urandom(16)).decode()
    raw.sendall(
        (
            f"GET {path} HTTP/1.1\r\nHost: {host}:{port}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
            f"Sec-WebSocket-Key: {key}\r\nSec-WebSocket-Version: 13\r\n\r\n"
        ).encode()
    )
    return raw


async def wait_healthy(
    session: aiohttp.ClientSession, url: str, *, exited: Callable[[], str | None], deadline: float = 20.0
) -> None:
    """Poll `url` (a child server's /healthz) until it answers 200; a child process offers no
    readiness event. `exited()` says why the child is gone (then this fails at once), or None."""
    async with asyncio.timeout(deadline):
        while True:
            gone = exited()
            if gone is not None:
                raise AssertionError(gone)
            try:
                async with session.get(url) as response:
                    if response.status == 200:
                        return
            except aiohttp.ClientConnectionError:
                pass
            await asyncio.sleep(0.1)


MakeLayer = Callable[..., Awaitable[RedisChannelLayer]]


@contextlib.asynccontextmanager
async def started_layers(url: str) -> AsyncIterator[MakeLayer]:
    """Start Redis layers ("processes") on `url` sharing one fresh prefix; all closed at the end."""
    prefix = unique_prefix()
    made: list[RedisChannelLayer] = []

    async def make(**settings: Any) -> RedisChannelLayer:
        settings.setdefault("url", url)
        settings.setdefault("prefix", prefix)
        layer = RedisChannelLayer(**settings)
        made.append(layer)
        await layer.start()
        return layer

    try:
        yield make
    finally:
        for layer in made:
            await layer.close()


def stop_process(proc: subprocess.Popen[bytes], timeout: float = 10.0) -> None:
    """SIGTERM a child server (it drains), then SIGKILL if it is still there after `timeout`."""
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


async def until(
    condition: Callable[[], Awaitable[bool] | bool], what: str, deadline: float = 20.0, every: float = 0.01
) -> float:
    """Poll a condition that has no event to await (Redis state, a store's repairs, a layer's
    health) until it holds, or fail naming `what`; the seconds until the poll that found it true
    began (a health() call that answers "not ok" was not ok when it was asked)."""
    start = time.monotonic()
    while True:
        asked = time.monotonic()
        value = condition()
        if not isinstance(value, bool):
            value = await value
        if value:
            return asked - start
        assert time.monotonic() - start < deadline, f"timed out after {deadline} s waiting for {what}"
        await asyncio.sleep(every)
