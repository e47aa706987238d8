"""sockets/wire.py writes server frames itself: pin that its bytes are exactly aiohttp's own."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest
from aiohttp import WSMsgType
from aiohttp.http import WebSocketWriter

from chatbot_server.sockets.wire import BEHIND, PING, FrameWriter, control_frame, text_frame


class _Capture(asyncio.Transport):
    """A transport that keeps what is written, and says how much is 'unread'."""

    def __init__(self) -> None:
        super().__init__()
        self.data = bytearray()
        self.unread = 0
        self.aborted = False

    def write(self, data: Any) -> None:
        self.data += data
        self.unread += len(data)

    def get_write_buffer_size(self) -> int:
        return self.unread

    def is_closing(self) -> bool:
        return self.aborted

    def abort(self) -> None:
        self.aborted = True


class _Protocol:
    _paused = False


async def aiohttp_bytes(payload: bytes, opcode: WSMsgType) -> bytes:
    transport = _Capture()
    writer = WebSocketWriter(_Protocol(), transport, use_mask=False, compress=0)  # type: ignore[arg-type]
    await writer.send_frame(payload, opcode)
    return bytes(transport.data)


@pytest.mark.parametrize("size", [0, 1, 125, 126, 127, 1000, 65_535, 65_536, 70_000])
async def test_text_frames_are_byte_for_byte_aiohttps(size: int) -> None:
    payload = ("汉" * size).encode()[:size]
    assert text_frame(payload) == await aiohttp_bytes(payload, WSMsgType.TEXT)
    transport = _Capture()
    FrameWriter(transport, send_timeout=1, on_stuck=lambda: None, max_buffered=1 << 30).text(payload)
    assert bytes(transport.data) == await aiohttp_bytes(payload, WSMsgType.TEXT)


@pytest.mark.parametrize("payload", [b"", b"x", b"p" * 125])
async def test_ping_and_pong_frames_are_aiohttps(payload: bytes) -> None:
    assert control_frame(0x9, payload) == await aiohttp_bytes(payload, WSMsgType.PING)
    assert control_frame(0xA, payload) == await aiohttp_bytes(payload, WSMsgType.PONG)
    assert PING == await aiohttp_bytes(b"", WSMsgType.PING)


async def test_a_client_too_far_behind_is_dropped_at_once_and_one_behind_for_too_long_later() -> None:
    dropped: list[str] = []
    transport = _Capture()
    writer = FrameWriter(transport, send_timeout=0.05, on_stuck=lambda: dropped.append("x"), max_buffered=BEHIND * 4)
    assert writer.text(b"a" * (BEHIND + 1))  # behind: a timer, nothing dropped yet
    assert dropped == []
    assert writer.text(b"b" * (BEHIND * 4))  # past the bound: dropped at once
    assert dropped == ["x"]

    later = _Capture()
    slow = FrameWriter(later, send_timeout=0.05, on_stuck=lambda: dropped.append("late"))
    slow.text(b"c" * BEHIND)
    await asyncio.sleep(0.1)  # the behaviour under test is a timeout
    assert dropped == ["x", "late"]

    caught_up = _Capture()
    fine = FrameWriter(caught_up, send_timeout=0.05, on_stuck=lambda: dropped.append("wrong"))
    fine.text(b"d" * BEHIND)
    caught_up.unread = 0  # the client read everything before the deadline
    await asyncio.sleep(0.1)
    assert dropped == ["x", "late"]
    caught_up.aborted = True
    assert not fine.text(b"e")  # a closing transport takes nothing
