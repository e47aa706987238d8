"""Who answers a conversation: the bot, nobody yet (waiting in the queue for a human) or an agent.

One Handoff per chat socket. The queue itself is shared by every process (store/handoff.py); the
agents' side of it is agents/consumer.py. While an agent holds the conversation the bot is silent.
"""

from __future__ import annotations

import logging
from typing import Protocol

from aiohttp import web

from .. import messages
from ..bots import Reply
from ..errors import ChatbotServerError
from ..hours import Availability
from ..layers import ChannelLayer
from ..messages import AGENTS_GROUP, QUEUE_GROUP, watch_group
from ..ops.metrics import ServerStats
from ..protocol import Frame, error_frame, frame
from ..store import FrameLog, StoredFrame
from ..store.handoff import Enqueued, HandoffQueue, Mode, QueueUnavailableError

log = logging.getLogger("chatbot_server.chat")

_QUEUED_TEXT = "正在为您转接人工客服,{ahead},请稍候。"
_QUEUE_MOVED_TEXT = "{ahead},请稍候。"
_UNAVAILABLE_TEXT = "抱歉,转人工服务暂时不可用,请稍后再试。"
_ALREADY_TEXT = "您已在排队中,请勿重复提交。"
_TOO_MANY_TEXT = "您的网络中排队的请求过多,请稍后再试。"
_CANCELLED_TEXT = "已为您取消人工排队,智能客服将继续为您服务。"
_NOT_QUEUED_TEXT = "您当前没有在排队。"
_CLAIMED_TEXT = "人工客服已接入,无法取消排队。"


def _question(recent: list[StoredFrame], asked_with: str | None, typed: bool) -> str:
    """The queue's preview: the user's last question, not their request for a human (issue #16).

    User lines the bot answered with `asked_with` (the intent of its handoff replies) asked for a
    human ("转人工") and are skipped; with `typed`, so is the latest, its reply stored or not."""
    answered = asked_with if typed else None  # the reply to the line looked at (none yet: the handoff's)
    for f in reversed(recent):
        if f["type"] == "reply":
            answered = f.get("intent")
        elif f["type"] == "user":
            if asked_with is None or answered != asked_with:
                return str(f["msg"])
            answered = None
    return ""


def _wait(seconds: int | None) -> tuple[str, dict[str, int]]:
    """ ", 预计等待约 N 分钟" and the frame's `estimated_wait` when the queue has an estimate."""
    if seconds is None:
        return "", {}
    minutes = round(seconds / 60)  # under half a minute the page hears no minutes, only the field
    return (f",预计等待约 {minutes} 分钟" if minutes else ""), {"estimated_wait": seconds}


def _ahead(position: int) -> str:
    """Who is ahead of the user at queue `position` (1: nobody; "前面还有 0 位用户" reads oddly, #16)."""
    return "您是下一位" if position <= 1 else f"您前面还有 {position - 1} 位用户"


class HandoffSocket(Protocol):
    """What the handoff needs of the chat socket (ChatConsumer is one)."""

    ws: web.WebSocketResponse
    client_ip: str
    stats: ServerStats

    async def group_add(self, group: str) -> None: ...

    async def group_discard(self, group: str) -> None: ...

    def in_group(self, group: str) -> bool: ...

    async def send_json(self, payload: object) -> None: ...

    async def emit(self, out: Frame) -> None: ...


class Handoff:
    """The handoff state of one chat socket; while queued, it keeps the queue entry alive."""

    __slots__ = (
        "_asked_with", "_fallbacks", "_position", "_since", "_waiting_for", "availability", "fallback_limit", "layer", "mode",
        "queue", "socket", "store",
    )  # fmt: skip

    def __init__(
        self,
        socket: HandoffSocket,
        *,
        queue: HandoffQueue,
        layer: ChannelLayer,
        store: FrameLog,
        fallback_limit: int,
        availability: Availability | None = None,
    ) -> None:
        self.socket = socket
        self.queue = queue
        self.layer = layer
        self.store = store
        self.fallback_limit = fallback_limit
        # Business hours and agents online (hours.py): outside them, 转人工 offers to leave a message.
        self.availability = availability or Availability()
        self.mode: Mode = "bot"
        self._fallbacks = 0
        self._asked_with: str | None = None  # the intent of the bot's handoff replies, once seen
        self._position: int | None = None
        self._waiting_for: str | None = None
        self._since: int | None = None  # when the entry waited on was queued (Unix ms)

    def waits_for(self, conversation: str) -> bool:
        """Whether this socket is open and waits for a human in `conversation` (the queue's keeper asks)."""
        return self.mode == "queued" and self._waiting_for == conversation and not self.socket.ws.closed

    async def requeue(self, conversation: str) -> None:
        """The queue lost this socket's entry (a Redis failover): queue it again in its old place;
        the user is told the position, the consoles see it added."""
        if self.waits_for(conversation):
            await self.request(conversation, since=self._since)

    def needs_after_reply(self, reply: Reply) -> bool:
        """Whether after_reply() has anything to do (most replies: no)."""
        return reply.handoff or reply.fallback or self._fallbacks > 0

    async def after_reply(self, reply: Reply, conversation: str) -> None:
        """Queue for a human when the bot says so, or after `agents.fallback_handoff` fallbacks in a row."""
        if reply.handoff:
            self._asked_with = reply.intent  # how the bot answers "转人工": such lines are no preview
            await self.request(conversation, typed=True)
            return
        self._fallbacks = self._fallbacks + 1 if reply.fallback else 0
        if self.fallback_limit and self._fallbacks >= self.fallback_limit:
            self._fallbacks = 0
            await self.request(conversation)

    async def request(self, conversation: str, since: int | None = None, *, typed: bool = False) -> None:
        """Put the conversation in the queue for a human agent and tell the user their position.

        `typed`: the user's latest line asked for it (the bot's reply said handoff), not the button.
        A queue that fails or hangs gets the user a polite error frame within the queue's
        deadline; the socket stays open and the bot keeps answering."""
        if self.mode == "agent":
            return
        if self.mode == "bot" and since is None and await self._closed():
            return
        try:
            recent = await self.store.recent(conversation, 10)
        except ChatbotServerError:
            recent = []  # the preview is a convenience; the handoff goes on without it
        preview = _question(recent, self._asked_with, typed)
        try:
            result = await self.queue.enqueue(conversation, preview[:100], ip=self.socket.client_ip, since=since)
        except QueueUnavailableError:
            self.socket.stats.error("handoff_unavailable")
            await self.socket.send_json(error_frame("handoff_unavailable", _UNAVAILABLE_TEXT))
            return
        if result.expired:
            await self._publish(AGENTS_GROUP, messages.agents_queue_removed(list(result.expired)))
        if result.status == "claimed":  # an agent has it already
            return
        if result.status == "refused":
            self.socket.stats.error("queue_limit")
            await self.socket.send_json(error_frame("queue_limit", _TOO_MANY_TEXT))
            return
        await self._queued(conversation, result)

    async def _closed(self) -> bool:
        """Outside business hours or nobody online: say so and offer to leave a message (no queue)."""
        try:
            why = await self.availability.unavailable()
        except Exception as exc:  # presence is a plug-in: if it fails, try the queue as before
            log.warning("handoff.availability_failed error=%s", exc)
            return False
        if why is None:
            return False
        reason, text = why
        await self.socket.emit(frame("system", text, talk=False, event="handoff_closed", reason=reason))
        return True

    async def cancel(self, conversation: str) -> None:
        """The user stops waiting (取消排队): the entry goes, the consoles and the queue hear it,
        the bot answers again."""
        if self.mode != "queued":
            await self.socket.send_json(error_frame("not_queued", _NOT_QUEUED_TEXT))
            return
        try:
            removed = await self.queue.cancel(conversation)
            if not removed and (await self.queue.mode(conversation))[0] == "agent":
                await self.socket.send_json(error_frame("already_claimed", _CLAIMED_TEXT))
                return  # conv.mode tells this socket the agent's name
        except QueueUnavailableError:
            self.socket.stats.error("handoff_unavailable")
            await self.socket.send_json(error_frame("handoff_unavailable", _UNAVAILABLE_TEXT))
            return
        self.mode, self._position, self._waiting_for = "bot", None, None
        if self.socket.in_group(QUEUE_GROUP):
            await self.socket.group_discard(QUEUE_GROUP)
        if removed:
            await self._publish(AGENTS_GROUP, messages.agents_queue_removed([conversation]))
            await self._publish(QUEUE_GROUP, messages.queue_changed())
        await self.socket.emit(frame("system", _CANCELLED_TEXT, talk=False, event="handoff_cancelled", mode="bot"))

    async def _queued(self, conversation: str, result: Enqueued) -> None:
        entry = result.entry
        if entry is not None and result.changed:
            await self._publish(AGENTS_GROUP, messages.agents_queue_changed(entry.item()))
        if result.status == "waiting" and self.mode == "queued" and self._waiting_for == conversation:
            # Pressed again: no second "queued" notice in the transcript, nothing for the consoles.
            await self.socket.send_json(error_frame("already_queued", _ALREADY_TEXT))
            self._position = result.position
            await self._tell_position(result.position)
            return
        self.mode = "queued"
        self._waiting_for = conversation
        self._since = entry.since if entry is not None else None
        self._position = result.position
        self.queue.keep(conversation, self)
        if not self.socket.in_group(QUEUE_GROUP):
            try:
                await self.socket.group_add(QUEUE_GROUP)
            except ChatbotServerError as exc:  # queued all the same; positions follow once it lands
                log.warning("handoff.queue_group_failed error=%s", exc)
        wait, extra = _wait(await self.queue.estimated_wait(result.position))
        await self.socket.emit(
            frame(
                "system",
                _QUEUED_TEXT.format(ahead=_ahead(result.position) + wait),
                talk=False,
                event="queued",
                queue_position=result.position,
                **extra,
            )
        )
        # An agent is about to read this conversation from the store: write it out now, not
        # after history.write_interval.
        self.store.write_soon()
        if result.status == "added" and entry is not None:
            await self._publish(AGENTS_GROUP, messages.agents_queue_added(entry.item()))

    async def _publish(self, group: str, message: messages.ChatMessage) -> None:
        try:
            await self.layer.group_send(group, message)
        except ChatbotServerError as exc:
            log.warning("handoff.publish_failed type=%s error=%s", message["type"], exc)

    async def restore(self, conversation: str) -> None:
        """After a resume: who answers this conversation now (the queue is shared by all processes)."""
        self._waiting_for = None
        try:
            self.mode, _ = await self.queue.mode(conversation)
            position = await self.queue.position(conversation) if self.mode == "queued" else None
        except QueueUnavailableError:
            # Unknown: the bot answers (an agent who holds it is heard through conv.mode).
            self.socket.stats.error("handoff_unavailable")
            self.mode = "bot"
            return
        if self.mode == "bot":
            # The replayed frames may end with a "queued" notice whose entry has lapsed since
            # (agents.queue_grace): say who answers now, so the page enables 转人工 again.
            await self.socket.send_json(frame("system", "", talk=False, event="mode", mode="bot"))
        if self.mode == "queued":
            self._waiting_for = conversation
            self._position = position
            self.queue.keep(conversation, self)
            try:
                await self.queue.touch([conversation])  # back in time: the entry lives on
                await self.socket.group_add(QUEUE_GROUP)
            except ChatbotServerError as exc:
                log.warning("handoff.restore_incomplete error=%s", exc)
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
        self._waiting_for = None
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
        try:
            position = await self.queue.position(conversation)
        except QueueUnavailableError:
            return  # logged by the queue; the next change tells the position
        if position is None or position == self._position:
            return
        self._position = position
        await self._tell_position(position)

    async def _tell_position(self, position: int) -> None:
        wait, extra = _wait(await self.queue.estimated_wait(position))
        await self.socket.send_json(
            frame(
                "system",
                _QUEUE_MOVED_TEXT.format(ahead=_ahead(position) + wait),
                talk=False,
                event="queue_position",
                queue_position=position,
                **extra,
            )
        )
