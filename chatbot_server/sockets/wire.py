"""Server frames written straight to the socket's transport, and the bound on what a client may
leave unread. The one place where chatbot_server writes websocket bytes itself.

Why: aiohttp's `send_frame` runs three coroutines per frame and, once its writer limit is
reached, waits on a drain future that every send on the socket shares (cancelling one waiter
cancels it for all in aiohttp 3.14: the behaviour changed in aiohttp PR #12307 and may change
again). Here a send never waits: the frame goes to `asyncio.Transport.write()` (public API), and
the transport's own buffer is the socket's send queue. A client that stops reading cannot make
the server hold more than `max_buffered` bytes for it, nor hold anything for longer than
`send_timeout` seconds: past either it is dropped (`on_stuck`).

What it relies on (pinned by tests/test_wire.py, which compares these bytes with aiohttp's own
writer): sockets are opened with `compress=False`, so a server frame is an unmasked, final frame
(RFC 6455 section 5.2) that aiohttp's writer would write the same way, and aiohttp's writer keeps
no per-frame state for uncompressed frames. aiohttp still writes its own close frames; nothing is
written once `ws.closed` is set (aiohttp sets it before writing the close frame).
"""

from __future__ import annotations

import asyncio
import struct
from collections.abc import Callable

# RFC 6455 opcodes, with the FIN bit.
_TEXT = 0x81
_PING = 0x89
_PONG = 0x8A

# Headers of text frames up to 125 bytes, made once (a chat frame is usually this small).
_SHORT_TEXT = [bytes((_TEXT, size)) for size in range(126)]
_HEADER_16 = struct.Struct("!BBH").pack
_HEADER_64 = struct.Struct("!BBQ").pack

#: A buffer this full means the client is not keeping up: a timer starts, and if it is still
#: this full after send_timeout, the client is dropped. asyncio's default high-water mark.
BEHIND = 64 * 1024
#: More than this unread and the client is dropped at once (a few full transcripts).
MAX_BUFFERED = 1024 * 1024


def text_frame(data: bytes) -> bytes:
    """An unmasked final text frame carrying `data` (already UTF-8 JSON)."""
    size = len(data)
    if size < 126:
        return _SHORT_TEXT[size] + data
    if size < 65536:
        return _HEADER_16(_TEXT, 126, size) + data
    return _HEADER_64(_TEXT, 127, size) + data


def control_frame(opcode: int, payload: bytes = b"") -> bytes:
    """A ping (0x9) or pong (0xA) frame; control payloads are at most 125 bytes (RFC 6455 5.5)."""
    return bytes((0x80 | opcode, len(payload[:125]))) + payload[:125]


PING = control_frame(0x9)


class FrameWriter:
    """One socket's outgoing frames: written at once, never awaited, bounded per client."""

    __slots__ = ("_stuck", "max_buffered", "on_stuck", "send_timeout", "transport")

    def __init__(
        self,
        transport: asyncio.Transport,
        *,
        send_timeout: float,
        on_stuck: Callable[[], None],
        max_buffered: int = MAX_BUFFERED,
    ) -> None:
        self.transport = transport
        self.send_timeout = send_timeout
        self.on_stuck = on_stuck
        self.max_buffered = max_buffered
        self._stuck: asyncio.TimerHandle | None = None

    def text(self, data: bytes) -> bool:
        """Write one text frame; False if the connection is closing (the frame is dropped)."""
        transport = self.transport
        if transport.is_closing():
            return False
        transport.write(text_frame(data))
        if transport.get_write_buffer_size() >= BEHIND:
            self._behind()
        return True

    def control(self, frame: bytes) -> None:
        """Write a ping or pong (never waits: a client that does not read gets no answer)."""
        transport = self.transport
        if not transport.is_closing():
            transport.write(frame)
            if transport.get_write_buffer_size() >= BEHIND:
                self._behind()

    def _behind(self) -> None:
        if self.transport.get_write_buffer_size() > self.max_buffered:
            self._drop()
        elif self._stuck is None:
            loop = asyncio.get_running_loop()
            self._stuck = loop.call_later(self.send_timeout, self._check)

    def _check(self) -> None:
        self._stuck = None
        transport = self.transport
        if transport.is_closing():
            return
        if transport.get_write_buffer_size() >= BEHIND:
            self._drop()  # nothing read for send_timeout seconds, or too little to catch up

    def _drop(self) -> None:
        self.cancel()
        self.on_stuck()

    def cancel(self) -> None:
        """Stop watching (the socket has closed)."""
        if self._stuck is not None:
            self._stuck.cancel()
            self._stuck = None
