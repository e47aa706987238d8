"""A fake OpenAI-compatible `/chat/completions` endpoint for the llm bot's tests (aiohttp.web).

Each request takes the next script given to `FakeOpenAI.script()`: an HTTP status and, for a 200,
the steps of the body: bytes to write, a `Gate` to wait for (the test opens it, so a later piece is
sent only once the bot has shown the earlier one), `CLOSE` (drop the connection mid-body) or `HANG`
(write nothing more until the fake closes). Every request is recorded with its JSON and headers.
"""

from __future__ import annotations

import asyncio
import json
import socket
from collections import deque
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Literal

from aiohttp import web

Step = bytes | asyncio.Event | Literal["close", "hang"]
CLOSE: Literal["close"] = "close"
HANG: Literal["hang"] = "hang"


@dataclass(frozen=True)
class Received:
    """One request as the fake saw it."""

    path: str
    body: dict[str, Any]
    headers: Mapping[str, str]


@dataclass
class Script:
    """How to answer one request."""

    steps: tuple[Step, ...] = ()
    status: int = 200
    content_type: str = "text/event-stream"
    done: asyncio.Event = field(default_factory=asyncio.Event)  # set once the steps ran out


def event(payload: Any) -> bytes:
    """One server-sent event carrying `payload` (JSON unless it is a str already)."""
    text = payload if isinstance(payload, str) else json.dumps(payload, ensure_ascii=False)
    return f"data: {text}\n\n".encode()


def chunk(text: str | None = None, *, finish: str | None = None, role: str | None = None) -> dict[str, Any]:
    """A chat.completion.chunk as vLLM sends it."""
    delta: dict[str, Any] = {}
    if role is not None:
        delta["role"] = role
    if text is not None:
        delta["content"] = text
    return {
        "id": "chatcmpl-fake",
        "object": "chat.completion.chunk",
        "created": 1795718433,
        "model": "fake",
        "choices": [{"index": 0, "delta": delta, "logprobs": None, "finish_reason": finish}],
    }


def answer(*pieces: str, finish: str | None = "stop", done: bool = True) -> tuple[bytes, ...]:
    """The events of a whole streamed answer: the role, each piece, the finish, then [DONE]."""
    events = [event(chunk("", role="assistant")), *(event(chunk(p)) for p in pieces)]
    if finish is not None:
        events.append(event(chunk(finish=finish)))
    if done:
        events.append(event("[DONE]"))
    return tuple(events)


class FakeOpenAI:
    """The fake endpoint on a free loopback port; `url` is its base URL (…/v1)."""

    def __init__(self) -> None:
        self.requests: list[Received] = []
        self._scripts: deque[Script] = deque()
        self._closing = asyncio.Event()
        self._gates: list[asyncio.Event] = []
        self._runner: web.AppRunner | None = None
        self.port = 0

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/v1"

    def gate(self) -> asyncio.Event:
        """A step that waits until the test sets it (or the fake closes)."""
        gate = asyncio.Event()
        self._gates.append(gate)
        return gate

    def script(self, *steps: Step, status: int = 200, content_type: str = "text/event-stream") -> Script:
        """Queue the answer to the next request."""
        script = Script(steps, status, content_type)
        self._scripts.append(script)
        return script

    async def start(self) -> None:
        app = web.Application()
        app.router.add_post("/v1/chat/completions", self._handle)
        self._runner = web.AppRunner(app, handle_signals=False, shutdown_timeout=1.0)
        await self._runner.setup()
        sock = socket.socket()
        sock.bind(("127.0.0.1", 0))
        self.port = sock.getsockname()[1]
        await web.SockSite(self._runner, sock).start()

    async def close(self) -> None:
        self._closing.set()  # releases HANG steps and gates the test never opened
        for gate in self._gates:
            gate.set()
        if self._runner is not None:
            await self._runner.cleanup()

    async def _handle(self, request: web.Request) -> web.StreamResponse:
        self.requests.append(Received(request.path, await request.json(), dict(request.headers)))
        script = self._scripts.popleft() if self._scripts else Script(status=599)
        if script.status != 200:
            script.done.set()
            error = {"error": {"message": "scripted failure", "type": "server_error", "code": script.status}}
            return web.json_response(error, status=script.status)
        response = web.StreamResponse(headers={"Content-Type": script.content_type, "Cache-Control": "no-cache"})
        await response.prepare(request)
        try:
            for step in script.steps:
                if isinstance(step, bytes):
                    await response.write(step)
                elif isinstance(step, asyncio.Event):
                    await step.wait()
                elif step == HANG:
                    await self._closing.wait()
                elif step == CLOSE:
                    assert request.transport is not None
                    request.transport.close()  # mid-body: no last chunk of the chunked encoding
                    return response
            await response.write_eof()
        except ConnectionResetError:  # the bot gave up and closed the connection: fine
            pass
        finally:
            script.done.set()
        return response
