"""Read an OpenAI-compatible `/chat/completions` stream: server-sent events, then their JSON chunks.

The body arrives in TCP-sized pieces that may cut a line, a CRLF or a UTF-8 character anywhere, so
`SseDecoder` keeps bytes until a line is complete and only then decodes it. Anything that is not
what such an endpoint sends (an HTML error page, a JSON body, a non-JSON `data:` line, a chunk
without `choices`) raises `LlmError("llm_malformed")`: the bot then answers from the FAQ instead.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

from ..errors import BotError
from ..jsonutil import loads

DONE = "[DONE]"
# A line longer than this is not a chunk of an answer (those are well under 1 KiB): a server that
# sends an endless line must not make us buffer it.
MAX_LINE = 1 << 20
_EOL = re.compile(rb"\r\n|\r|\n")
# SSE fields other than `data` that an endpoint may send; they carry nothing for us.
_IGNORED_FIELDS = frozenset({"event", "id", "retry"})

#: Why a model answer was given up, the `event` label of chatbot_bot_events_total.
FAULT_KINDS = (
    "llm_connect_error",  # no connection, or it failed before the response headers
    "llm_http_error",  # HTTP status >= 400, or an error object in the stream
    "llm_timeout",  # no first piece of text within first_token_timeout
    "llm_stalled",  # no new chunk within stall_timeout once the text had started
    "llm_total_timeout",  # the answer not finished within total_timeout
    "llm_malformed",  # not SSE, not JSON, or a chunk without choices/delta
    "llm_truncated",  # the connection closed before [DONE] or a finish_reason
    "llm_empty",  # the stream finished without any text
    "llm_filtered",  # finish_reason content_filter: the endpoint withheld (part of) the answer
)


class LlmError(BotError):
    """The endpoint failed to give an answer; `kind` is one of FAULT_KINDS, `detail` is safe to log
    (a status or an exception class, never prompt text or the key)."""

    def __init__(self, kind: str, detail: str = "") -> None:
        assert kind in FAULT_KINDS, kind
        super().__init__(f"{kind}: {detail}" if detail else kind)
        self.kind = kind
        self.detail = detail


@dataclass(frozen=True, slots=True)
class Chunk:
    """What one streamed chunk adds: a piece of text and, on the last one, why it ended."""

    text: str = ""
    finish_reason: str | None = None


class SseDecoder:
    """Turns the bytes of an event stream into the payloads of its `data:` lines, in order.

    Each `data:` line is one payload: OpenAI-compatible servers send one JSON chunk per line, and
    some leave out the blank line between events, which strict SSE dispatch would then glue together.
    """

    def __init__(self) -> None:
        self._buffer = b""
        self._started = False

    def feed(self, data: bytes) -> list[str]:
        """The payloads of the lines `data` completes; LlmError for a line that is not SSE."""
        buffer = self._buffer + data
        payloads: list[str] = []
        start = 0
        for eol in _EOL.finditer(buffer):
            if eol.group() == b"\r" and eol.end() == len(buffer):
                break  # perhaps the first half of a CRLF cut by the chunk boundary
            self._line(buffer[start : eol.start()], payloads)
            start = eol.end()
        self._buffer = buffer[start:]
        if len(self._buffer) > MAX_LINE:
            raise LlmError("llm_malformed", "line too long")
        return payloads

    def finish(self) -> list[str]:
        """The payload of a last line the server ended without a newline (the body is over)."""
        rest, self._buffer = self._buffer, b""
        payloads: list[str] = []
        if rest.strip(b"\r"):
            self._line(rest.rstrip(b"\r"), payloads)
        return payloads

    def _line(self, raw: bytes, payloads: list[str]) -> None:
        try:
            line = raw.decode("utf-8")
        except UnicodeDecodeError:
            raise LlmError("llm_malformed", "not UTF-8") from None
        if not self._started:
            self._started = True
            line = line.removeprefix("\ufeff")  # SSE allows a byte-order mark before the first line
        if not line or line.startswith(":"):
            return  # an event boundary, or a comment (keep-alives are comments)
        field, _, value = line.partition(":")
        if field == "data":
            payloads.append(value.removeprefix(" "))
        elif field not in _IGNORED_FIELDS:
            raise LlmError("llm_malformed", "not an event stream")


def parse_chunk(payload: str) -> Chunk:
    """Read one `data:` payload (not [DONE]) as a chat.completion.chunk; LlmError if it is not one."""
    try:
        chunk = loads(payload)
    except ValueError:
        raise LlmError("llm_malformed", "data is not JSON") from None
    if not isinstance(chunk, dict):
        raise LlmError("llm_malformed", "chunk is not an object")
    if "error" in chunk:  # vLLM and others report a failure mid-stream this way
        raise LlmError("llm_http_error", "error in stream")
    choices = chunk.get("choices")
    if not isinstance(choices, list):
        raise LlmError("llm_malformed", "chunk without choices")
    if not choices:
        return Chunk()  # a usage or prompt-filter chunk: no choice, nothing to add
    return _choice(choices[0])


def _choice(choice: Any) -> Chunk:
    if not isinstance(choice, dict):
        raise LlmError("llm_malformed", "choice is not an object")
    finish = choice.get("finish_reason")
    if finish is not None and not isinstance(finish, str):
        raise LlmError("llm_malformed", "bad finish_reason")
    delta = choice.get("delta")
    if delta is None and finish is not None:
        return Chunk(finish_reason=finish)  # a last chunk without a delta says all it has to say
    if not isinstance(delta, dict):
        raise LlmError("llm_malformed", "choice without delta")
    text = delta.get("content")
    if text is None:
        text = ""  # a role-only chunk, or a reasoning model's reasoning_content: not the answer
    if not isinstance(text, str):
        raise LlmError("llm_malformed", "content is not text")
    return Chunk(text, finish)
