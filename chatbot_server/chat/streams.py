"""Replies being written (streamed): their state, their frames, and what a takeover inherits.

A streamed reply is announced by `reply_start`, grows by `reply_delta` frames and ends with the
ordinary stored `reply` frame carrying the same `id` and the final text (docs/protocol.md). The
start and deltas are never stored: the socket that holds the conversation keeps each reply's text
so far, so that a page that reconnects — to this process or, through the takeover, any other —
gets that text at once and then the rest, each character once. Offsets count UTF-16 code units,
the unit of a JavaScript string's length, so the page can drop a delta it already has.
"""

from __future__ import annotations

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

    def apply(self, delta: Frame) -> None:
        """Follow a delta written elsewhere (the turn runs on the socket we took over from)."""
        piece = delta.get("text", "")
        if delta.get("offset") == self.units and piece:
            self.text += piece
            self.units += utf16_length(piece)

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

    __slots__ = ("by_id",)

    def __init__(self) -> None:
        self.by_id: dict[str, Stream] = {}

    def __bool__(self) -> bool:
        return bool(self.by_id)

    def relay(self, out: Frame) -> None:
        """Follow a stream frame that passes through us to the page."""
        reply = out.get("id", "")
        if out.get("type") == "reply_start":
            self.by_id.setdefault(reply, Stream(reply, out.get("reply_to")))
        elif (stream := self.by_id.get(reply)) is not None:
            stream.apply(out)

    def ended(self, out: Frame) -> None:
        """A stored frame went by: if it ends a stream (its final reply), forget the stream."""
        reply = out.get("id")
        if reply is not None:
            self.by_id.pop(reply, None)

    def snapshots(self) -> list[dict[str, Any]]:
        return [stream.snapshot() for stream in self.by_id.values()]

    def inherit(self, snapshots: list[dict[str, Any]]) -> None:
        for data in snapshots:
            stream = Stream.from_snapshot(data)
            if stream.id:
                self.by_id[stream.id] = stream

    def catch_up(self) -> list[Frame]:
        return [frame for stream in self.by_id.values() for frame in stream.catch_up()]
