"""Stream one chat completion from an OpenAI-compatible endpoint, within the bot's deadlines.

Each wait has its own deadline, never longer than what is left of `total_timeout`: the response
headers and the first piece of text must come within `first_token_timeout` of the request, each
later chunk within `stall_timeout` of the one before. Time the caller spends between two pieces
(sending them on) counts towards the total only. Every failure is an LlmError with its kind.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncGenerator, Awaitable, Sequence
from typing import Any, TypeVar

import aiohttp

from ..jsonutil import dumpb
from .llm_options import LlmOptions
from .llm_prompt import Message
from .llm_sse import DONE, LlmError, SseDecoder, parse_chunk

T = TypeVar("T")


class CompletionClient:
    """One aiohttp session to the endpoint, shared by every conversation of the bot."""

    def __init__(self, options: LlmOptions, api_key: str | None) -> None:
        self.options = options
        self._headers = {"Accept": "text/event-stream", "Content-Type": "application/json"}
        if api_key:
            self._headers["Authorization"] = f"Bearer {api_key}"
        # Pool waits are bounded by the first-token deadline; only opening a socket is "connecting".
        timeout = aiohttp.ClientTimeout(total=None, connect=None, sock_connect=options.connect_timeout)
        self._session = aiohttp.ClientSession(
            timeout=timeout, connector=aiohttp.TCPConnector(limit=options.max_connections)
        )

    def __repr__(self) -> str:  # the headers hold the key: show where it goes, nothing else
        return f"<CompletionClient {self.options.endpoint} model={self.options.model}>"

    async def close(self) -> None:
        """Close the session and its connections."""
        await self._session.close()

    def body(self, messages: Sequence[Message]) -> dict[str, Any]:
        """The request body for `messages`."""
        o = self.options
        return {
            **o.extra_body,
            "model": o.model,
            "messages": list(messages),
            "stream": True,
            "max_tokens": o.max_tokens,
            "temperature": o.temperature,
        }

    async def stream(self, messages: Sequence[Message]) -> AsyncGenerator[str, None]:
        """Yield the answer's text as it comes (non-empty pieces); LlmError on any failure.

        Close it with contextlib.aclosing when leaving early: that closes the connection at once.
        """
        o = self.options
        loop = asyncio.get_running_loop()
        end = loop.time() + o.total_timeout
        deadline = loop.time() + o.first_token_timeout
        started = False  # whether text has come: which deadline applies, and which fault it is
        try:
            # orjson keeps Chinese as UTF-8: a third of the size of json's \uXXXX escapes.
            request = self._session.post(o.endpoint, data=dumpb(self.body(messages)), headers=self._headers)
            response = await _within(request, deadline, end)
        except aiohttp.ClientError as exc:
            raise LlmError("llm_connect_error", type(exc).__name__) from None
        async with response:
            if response.status >= 400:
                raise LlmError("llm_http_error", f"HTTP {response.status}")
            decoder = SseDecoder()
            while True:
                try:
                    data = await _within(response.content.readany(), deadline, end, started=started)
                except aiohttp.ClientError as exc:  # the connection broke mid-body
                    raise LlmError("llm_truncated", type(exc).__name__) from None
                payloads = decoder.feed(data) if data else decoder.finish()
                for payload in payloads:
                    if payload == DONE:
                        return
                    chunk = parse_chunk(payload)
                    if chunk.finish_reason == "content_filter":
                        raise LlmError("llm_filtered")
                    if chunk.text:
                        started = True
                        yield chunk.text
                    if chunk.finish_reason is not None:
                        return
                if not data:
                    raise LlmError("llm_truncated", "no [DONE]")
                if started:
                    deadline = loop.time() + o.stall_timeout


async def _within(step: Awaitable[T], deadline: float, end: float, *, started: bool = False) -> T:
    """Await `step` until the nearer of `deadline` and `end`; LlmError naming which one passed."""
    try:
        async with asyncio.timeout_at(min(deadline, end)):
            return await step
    except TimeoutError as exc:
        if isinstance(exc, aiohttp.ClientError):  # aiohttp's own connect timeout
            raise
        if end <= deadline:
            raise LlmError("llm_total_timeout") from None
        raise LlmError("llm_stalled" if started else "llm_timeout") from None
