"""Who answers a conversation: the bot, nobody yet (waiting in the queue for a human) or an agent.

One Handoff per chat socket. The queue itself is shared by every process (store/handoff.py); the
agents' side of it is agents/consumer.py. While an agent holds the conversation the bot is silent.
"""

from __future__ import annotations

from typing import Protocol

from .. import messages
from ..bots import Reply
from ..layers import ChannelLayer
from ..messages import AGENTS_GROUP, QUEUE_GROUP, watch_group
from ..protocol import Frame, frame
from ..store import FrameLog
from ..store.handoff import HandoffQueue, Mode

_QUEUED_TEXT = "正在为您转接人工客服,您前面还有 {ahead} 位用户,请稍候。"
_QUEUE_MOVED_TEXT = "您前面还有 {ahead} 位用户,请稍候。"


class HandoffSocket(Protocol):
    """What the handoff needs of the chat socket (ChatConsumer is one)."""

    async def group_add(self, group: str) -> None: ...

    async def group_discard(self, group: str) -> None: ...

    def in_group(self, group: str) -> bool: ...

    async def send_json(self, payload: object) -> None: ...

    async def emit(self, out: Frame) -> None: ...


class Handoff:
    """The handoff state of one chat socket."""

    __slots__ = ("_fallbacks", "_position", "fallback_limit", "layer", "mode", "queue", "socket", "store")

    def __init__(
        self,
        socket: HandoffSocket,
        *,
        queue: HandoffQueue,
        layer: ChannelLayer,
        store: FrameLog,
        fallback_limit: int,
    ) -> None:
        self.socket = socket
        self.queue = queue
        self.layer = layer
        self.store = store
        self.fallback_limit = fallback_limit
        self.mode: Mode = "bot"
        self._fallbacks = 0
        self._position: int | None = None

    def needs_after_reply(self, reply: Reply) -> bool:
        """Whether after_reply() has anything to do (most replies: no)."""
        return reply.handoff or reply.fallback or self._fallbacks > 0

    async def after_reply(self, reply: Reply, conversation: str) -> None:
        """Queue for a human when the bot says so, or after `agents.fallback_handoff` fallbacks in a row."""
        if reply.handoff:
            await self.request(conversation)
            return
        self._fallbacks = self._fallbacks + 1 if reply.fallback else 0
        if self.fallback_limit and self._fallbacks >= self.fallback_limit:
            self._fallbacks = 0
            await self.request(conversation)

    async def request(self, conversation: str) -> None:
        """Put the conversation in the queue for a human agent and tell the user their position."""
        queue = self.queue
        if self.mode == "agent":
            return
        preview = next(
            (f["msg"] for f in reversed(await self.store.recent(conversation, 10)) if f["type"] == "user"), ""
        )
        position = await queue.enqueue(conversation, preview[:100])
        if position == 0:  # an agent has it already
            return
        already = self.mode == "queued"
        self.mode = "queued"
        self._position = position
        if not already:
            await self.socket.group_add(QUEUE_GROUP)
        await self.socket.emit(
            frame(
                "system", _QUEUED_TEXT.format(ahead=position - 1), talk=False, event="queued", queue_position=position
            )
        )
        # An agent is about to read this conversation from the store: write it out now, not
        # after history.write_interval.
        self.store.write_soon()
        await self.layer.group_send(AGENTS_GROUP, messages.agents_queue())

    async def restore(self, conversation: str) -> None:
        """After a resume: who answers this conversation now (the queue is shared by all processes)."""
        self.mode, _ = await self.queue.mode(conversation)
        if self.mode == "queued":
            position = await self.queue.position(conversation)
            self._position = position
            await self.socket.group_add(QUEUE_GROUP)
            if position is not None:  # the replayed "queued" notice may be out of date
                await self._tell_position(position)

    async def forward_to_agents(self, conversation: str, out: Frame) -> None:
        """Show a frame of the conversation live in the consoles of the agent holding it."""
        await self.layer.group_send(watch_group(conversation), messages.agent_frame(conversation, out))

    async def on_mode(self, message: messages.ConvMode, conversation: str, holding: bool) -> None:
        """conv.mode: an agent took the conversation, or let it go: the bot falls silent or answers again."""
        mode = message.get("mode")
        if mode not in ("bot", "agent"):
            return
        self.mode = mode
        self._fallbacks = 0
        self._position = None
        if self.socket.in_group(QUEUE_GROUP):
            await self.socket.group_discard(QUEUE_GROUP)
        if mode == "agent" and holding:
            # The console may have read the store before our latest frames were written out.
            frames = await self.store.transcript(conversation)
            await self.layer.group_send(watch_group(conversation), messages.agent_transcript(conversation, frames))

    async def on_queue_changed(self, conversation: str, holding: bool) -> None:
        """queue.changed: tell a waiting user their new position (not stored: it is transient)."""
        if self.mode != "queued" or not holding:
            return
        position = await self.queue.position(conversation)
        if position is None or position == self._position:
            return
        self._position = position
        await self._tell_position(position)

    async def _tell_position(self, position: int) -> None:
        await self.socket.send_json(
            frame(
                "system",
                _QUEUE_MOVED_TEXT.format(ahead=position - 1),
                talk=False,
                event="queue_position",
                queue_position=position,
            )
        )
