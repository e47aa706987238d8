"""Test helpers: build chatbot apps with settings overrides and talk to them over real sockets."""

from __future__ import annotations

import asyncio
import base64
import os
import socket
from collections.abc import Mapping
from typing import Any

import aiohttp

from chatbot_server import Settings, settings_from_dict


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
