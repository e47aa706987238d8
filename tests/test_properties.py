"""Property-based: arbitrary frames never crash the server, and a well-behaved client keeps chatting.

A live server runs in a background thread; Hypothesis throws random JSON (deep nesting, huge numbers,
control characters), random text, invalid UTF-8 and random binary frames at it, each on a fresh
socket, and checks that every answer is a valid protocol frame or a clean close.
"""

from __future__ import annotations

import asyncio
import json
import threading
from collections.abc import Iterator
from concurrent.futures import Future
from typing import Any

import aiohttp
import pytest
from aiohttp import WSMsgType, web
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from chatbot_server import setup

from .helpers import make_settings

FRAME_TYPES = {"greeting", "reply", "user", "typing", "agent", "system", "error"}
CLEAN_CLOSES = {1000, 1001, 1007, 1008, 1009}


class LiveServer:
    """A chatbot server and a client session on their own event loop, in a thread."""

    def __init__(self) -> None:
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, daemon=True)
        self.thread.start()
        self.url = self.call(self._start())

    def call(self, coro: Any, timeout: float = 30) -> Any:
        future: Future[Any] = asyncio.run_coroutine_threadsafe(coro, self.loop)
        return future.result(timeout)

    async def _start(self) -> str:
        app = web.Application()
        limits = {"rate_per_second": 100000.0, "rate_burst": 100000, "max_msg_size": 65536}
        setup(app, make_settings(limits=limits))
        self.runner = web.AppRunner(app)
        await self.runner.setup()
        site = web.TCPSite(self.runner, "127.0.0.1", 0)
        await site.start()
        port = self.runner.addresses[0][1]
        self.session = aiohttp.ClientSession()
        return f"http://127.0.0.1:{port}/ws"

    async def _stop(self) -> None:
        await self.session.close()
        await self.runner.cleanup()

    def stop(self) -> None:
        self.call(self._stop())
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(10)
        self.loop.close()


@pytest.fixture(scope="module")
def live() -> Iterator[LiveServer]:
    server = LiveServer()
    yield server
    server.stop()


json_values = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(min_value=-(10**30), max_value=10**30)
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(max_size=50),
    lambda children: st.lists(children, max_size=5) | st.dictionaries(st.text(max_size=10), children, max_size=5),
    max_leaves=30,
)
message_like = st.fixed_dictionaries(
    {},
    optional={
        "type": st.sampled_from(["message", "resume", "handoff", "x", ""]) | st.integers() | st.none(),
        "text": st.text(max_size=600) | json_values,
        "id": st.text(max_size=80) | st.integers(),
        "conversation": st.text(max_size=200) | st.integers(),
        "last_seq": st.integers(min_value=-5, max_value=2**60) | st.text(max_size=5),
    },
)
text_frames = st.one_of(
    json_values.map(lambda v: json.dumps(v)),
    message_like.map(lambda v: json.dumps(v, ensure_ascii=False)),
    st.text(max_size=300),  # arbitrary text, usually not JSON, with control characters
    st.integers(min_value=1, max_value=400).map(lambda depth: "[" * depth + "]" * depth),
    st.integers(min_value=1, max_value=300).map(lambda depth: '{"a":' * depth + "1" + "}" * depth),
    st.just('{"text": 1e999999}'),
    st.just('{"text": "' + "\\u0000" * 10 + '"}'),
)
frames = st.one_of(
    text_frames.map(lambda t: ("text", t.encode("utf-8", "surrogatepass"))),
    st.binary(max_size=300).map(lambda b: ("binary", b)),
    st.binary(min_size=1, max_size=50).map(lambda b: ("bad-utf8", b"\xff\xfe" + b)),
)


async def exchange(live: LiveServer, kind: str, payload: bytes) -> list[Any]:
    """Send one frame on a fresh socket; return what came back until the answer ends it: a reply,
    an error, a close, or for a resume its "resumed" notice or the new conversation's greeting."""
    seen: list[Any] = []
    async with live.session.ws_connect(live.url) as ws:
        greeting = await ws.receive_json(timeout=5)
        assert greeting["type"] == "greeting"
        if kind == "binary":
            await ws.send_bytes(payload)
        else:
            # Sent as a raw text frame so that invalid UTF-8 reaches the server as it is.
            await ws.send_frame(payload, WSMsgType.TEXT)
        while True:
            msg = await ws.receive(timeout=5)
            if msg.type is WSMsgType.TEXT:
                frame = json.loads(msg.data)
                seen.append(frame)
                if frame["type"] in ("reply", "error", "greeting") or frame.get("event") == "resumed":
                    break
            else:
                seen.append((msg.type, ws.close_code))
                break
    return seen


async def well_behaved(live: LiveServer) -> str:
    async with live.session.ws_connect(live.url) as ws:
        await ws.receive_json(timeout=5)
        await ws.send_json({"type": "message", "text": "你好", "id": "ok"})
        while True:
            frame = await ws.receive_json(timeout=5)
            if frame["type"] == "reply":
                return str(frame["msg"])


@settings(max_examples=120, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(frame=frames)
def test_any_frame_gets_a_valid_answer_or_a_clean_close(live: LiveServer, frame: tuple[str, bytes]) -> None:
    kind, payload = frame
    seen = live.call(exchange(live, kind, payload))
    assert seen, "the server answered nothing"
    for item in seen:
        if isinstance(item, dict):
            assert item["type"] in FRAME_TYPES
            assert isinstance(item["msg"], str) and isinstance(item["talk"], bool) and isinstance(item["ts"], int)
            if item["type"] == "error":
                assert isinstance(item["code"], str) and item["msg"]
        else:
            msg_type, code = item
            assert msg_type in (WSMsgType.CLOSE, WSMsgType.CLOSED, WSMsgType.CLOSING)
            assert code in CLEAN_CLOSES, f"unclean close {code}"
    if kind == "bad-utf8":
        assert seen[-1] == (WSMsgType.CLOSE, 1007) or isinstance(seen[-1], dict)
    # Whatever was thrown at it, a normal customer on the same server is still answered.
    assert live.call(well_behaved(live)) == "我正在思考你的问题{你好}"
