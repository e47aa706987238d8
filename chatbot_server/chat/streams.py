"""Replies being written (streamed): their state, their frames, and what a takeover inherits.

A streamed reply is announced by `reply_start`, grows by `reply_delta` frames and ends with the
ordinary stored `reply` frame carrying the same `id` and the final text (docs/protocol.md). The
start and deltas are never stored: the socket that holds the conversation keeps each reply's text
so far, so that a page that reconnects — to this process or, through the takeover, any other —
gets that text at once and then the rest, each character once. Offsets count UTF-16 code units,
the unit of a JavaScript string's length, so the page can drop a delta it already has.
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass
from typing import Any

from ..protocol import Frame, now_ms


def utf16_length(text: str) -> int:
    """The length of `text` as JavaScript counts it (characters beyond the BMP count twice)."""
    return len(text.encode("utf-16-le")) // 2


@dataclass(slots=True)
class Stream:
    """One reply being written: its id, the message it answers, its text so far."""

    id: str
    reply_to: str | None = None
    text: str = ""
    units: int = 0  # utf16_length(text)

    def start_frame(self) -> Frame:
        out: Frame = {"type": "reply_start", "msg": "", "talk": True, "ts": now_ms(), "id": self.id}
        if self.reply_to is not None:
            out["reply_to"] = self.reply_to
        return out

    def grow(self, piece: str) -> Frame:
        """Add a piece written by our own turn; the delta frame that carries it."""
        out: Frame = {"type": "reply_delta", "msg": "", "talk": True, "ts": now_ms(), "id": self.id}
        out["offset"] = self.units
        out["text"] = piece
        self.text += piece
        self.units += utf16_length(piece)
        return out

    def whole(self) -> Frame:
        """The text so far as one delta at offset 0: what a writer that no longer holds the
        conversation sends its holder each time (whoever holds it then, even one that joined
        after the reply began, can show it whole: nothing depends on a snapshot having reached it)."""
        out: Frame = {"type": "reply_delta", "msg": "", "talk": True, "ts": now_ms(), "id": self.id}
        out["offset"] = 0
        out["text"] = self.text
        if self.reply_to is not None:
            out["reply_to"] = self.reply_to
        return out

    def follow(self, delta: Frame) -> Frame | None:
        """Take in a delta written elsewhere; the part we lacked as a delta at our offset (None if
        it brought nothing new, or would leave a gap)."""
        offset = delta.get("offset", 0)
        if offset > self.units:
            return None
        encoded = delta.get("text", "").encode("utf-16-le")
        skip = 2 * (self.units - offset)
        if skip >= len(encoded):
            return None
        return self.grow(encoded[skip:].decode("utf-16-le"))

    def catch_up(self) -> list[Frame]:
        """What a page that just (re)connected needs: the start, and the text so far in one delta."""
        frames = [self.start_frame()]
        if self.text:
            caught = Stream(self.id, self.reply_to)
            frames.append(caught.grow(self.text))
        return frames

    def snapshot(self) -> dict[str, Any]:
        return {"id": self.id, "reply_to": self.reply_to, "text": self.text}

    @classmethod
    def from_snapshot(cls, data: dict[str, Any]) -> Stream:
        text = str(data.get("text", ""))
        reply_to = data.get("reply_to")
        return cls(str(data.get("id", "")), reply_to if isinstance(reply_to, str) else None, text, utf16_length(text))


class Streams:
    """The replies being written in one held conversation, by our turns or relayed from elsewhere."""

    __slots__ = ("by_id", "finished")

    def __init__(self) -> None:
        self.by_id: dict[str, Stream] = {}
        # Replies that ended here (their final frame went by), newest last: a stale frame of one
        # (passed on late by a socket that let go) must not start it again on the page.
        self.finished: deque[str] = deque(maxlen=32)

    def __bool__(self) -> bool:
        return bool(self.by_id)

    def relay(self, out: Frame) -> list[Frame]:
        """A stream frame written elsewhere, for our page: what to send it (a start for a reply it
        has not heard of, and the text it lacks)."""
        reply = out.get("id", "")
        frames: list[Frame] = []
        if reply in self.finished:
            return frames
        stream = self.by_id.get(reply)
        if stream is None:
            stream = self.by_id[reply] = Stream(reply, out.get("reply_to"))
            frames.append(stream.start_frame())
        if out.get("type") == "reply_delta" and (delta := stream.follow(out)) is not None:
            frames.append(delta)
        return frames

    def ended(self, out: Frame) -> bool:
        """A stored frame goes by: if it ends a stream (its final reply), forget the stream.
        False if that stream already ended here (a copy passed on late: do not store it twice)."""
        reply = out.get("id")
        if reply is None or out.get("type") != "reply":
            return True
        if reply in self.finished:
            return False
        self.by_id.pop(reply, None)
        self.finished.append(reply)
        return True

    def snapshots(self) -> list[dict[str, Any]]:
        return [stream.snapshot() for stream in self.by_id.values()]

    def inherit(self, snapshots: list[dict[str, Any]]) -> None:
        for data in snapshots:
            stream = Stream.from_snapshot(data)
            if stream.id:
                self.by_id[stream.id] = stream

    def catch_up(self) -> list[Frame]:
        return [frame for stream in self.by_id.values() for frame in stream.catch_up()]
