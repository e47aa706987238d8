"""The agent socket (/agent/ws): queue updates, claims, transcripts, replies, end and hand back.

Client → server: {"type": "claim" | "end" | "handback" | "open", "conversation": id},
{"type": "reply", "conversation": id, "text": "..."}.
Server → client: hello, queue (a snapshot), queue_added / queue_removed / queue_changed (deltas),
claimed, claim_failed, transcript, frame, closed, error (docs/agents.md).
"""

from __future__ import annotations

import asyncio
import logging
import secrets
from typing import Any, ClassVar

from aiohttp import web

from .. import messages
from ..chat.holding import deliver
from ..errors import LayerUnavailableError, ProtocolError, StoreUnavailableError
from ..keys import (
    BOT_KEY,
    CUSTOMERS_KEY,
    DIRECTORY_KEY,
    LEFT_MESSAGES_KEY,
    QUEUE_KEY,
    RATINGS_KEY,
    ROUTER_KEY,
    STORE_KEY,
)
from ..masking import mask_sensitive
from ..messages import AGENTS_GROUP, QUEUE_GROUP, conversation_group, watch_group
from ..protocol import (
    AgentClaim,
    AgentCloseMessage,
    AgentEnd,
    AgentOpen,
    AgentReply,
    AgentStatus,
    AgentTransfer,
    AgentTyping,
    Frame,
    error_frame,
    frame,
    parse_agent_inbound,
)
from ..sockets.consumer import WebsocketConsumer, message_handler
from ..sockets.origin import origin_allowed
from ..store.base import ConversationStore
from ..store.customers import CustomerDirectory
from ..store.handoff import DEADLINE, HandoffQueue, QueueEntry
from .directory import Agent, AgentDirectory
from .feedback import ask_rating
from .left_messages import close_message, listing
from .routing import AgentAssigned, AgentClosed, AgentsPresence, Router, agent_group
from .sessions import COOKIE_NAME
from .tools import AgentTools

log = logging.getLogger("chatbot_server.agents")

# The name stands apart from the title: display names often carry one already ("客服小李"), and
# "人工客服{name}" read "人工客服客服小李" (issue #16).
_JOINED_TEXT = "人工客服已接入,{name}正在为您服务。"
_ENDED_TEXT = "本次人工服务已结束,感谢您的耐心。如还有问题,可以继续向智能客服提问。"
_HANDED_BACK_TEXT = "人工客服已将会话转回智能客服,您可以继续提问。"
_UNAVAILABLE_TEXT = "排队服务暂时不可用,正在重试,请稍候。"
#: Seconds between tries to load the console while the queue is unavailable.
RETRY_SECONDS = 2.0
# What a queue, store or layer outage raises (each within its deadline): an error frame, not 1011.
_UNAVAILABLE = (StoreUnavailableError, LayerUnavailableError, TimeoutError)


class AgentConsumer(WebsocketConsumer):
    """One signed-in agent's console socket."""

    groups: ClassVar[tuple[str, ...]] = (AGENTS_GROUP,)
    channel_prefix: ClassVar[str] = "agent"

    def __init__(self, request: web.Request) -> None:
        super().__init__(request)
        self.directory: AgentDirectory = request.config_dict[DIRECTORY_KEY]
        self.queue: HandoffQueue = request.config_dict[QUEUE_KEY]
        self.store: ConversationStore = request.config_dict[STORE_KEY]
        self.customers: CustomerDirectory = request.config_dict[CUSTOMERS_KEY]
        self.left_messages = request.config_dict[LEFT_MESSAGES_KEY]
        self.router: Router = request.config_dict[ROUTER_KEY]
        self._present = False  # counted in the router's presence
        self._roster: list[dict[str, Any]] | None = None  # the `agents` list this console has
        self._hello = False
        self._later: list[dict[str, Any]] | None = None  # a roster heard before hello went out
        self.agent: Agent | None = self.directory.from_cookie(request.cookies.get(COOKIE_NAME))
        # Where ratings are asked for after an ended chat (agents.ask_rating); None: not asked.
        self.ratings = request.config_dict.get(RATINGS_KEY) if self.settings.agents.ask_rating else None
        # Queue deltas that arrive before the snapshot is sent wait here (None once it is sent).
        self._early: list[dict[str, Any]] | None = []
        self._retry: asyncio.Task[None] | None = None
        bot = request.config_dict[BOT_KEY]
        self.tools = AgentTools(bot, self.settings, self.layer, self.send_json, self.require_mine)

    def refuse(self) -> web.StreamResponse | None:
        if self.agent is None:
            return web.Response(status=401, text="sign in at /agent/login first")
        # SameSite=Strict keeps the cookie off cross-site requests; the Origin check is the second lock.
        if "Origin" not in self.request.headers or not origin_allowed(
            self.request, self.settings.security.allowed_origins, self.settings.server.trusted_proxies
        ):
            return web.Response(status=403, text="origin not allowed")
        return super().refuse()

    @property
    def me(self) -> Agent:
        """The signed-in agent (refuse() made sure there is one)."""
        if self.agent is None:  # pragma: no cover - refused before
            raise ProtocolError("unauthorized", "未登录")
        return self.agent

    async def on_connect(self) -> None:
        # Sign-out (on any process) or the session's expiry closes this socket with 4003.
        self.directory.watch(self.request.cookies.get(COOKIE_NAME), self)
        await self.group_add(agent_group(self.me.username))  # assignments and transfers reach every console
        if not await self.load():
            self._retry = asyncio.create_task(self._load_later(), name=f"agent-load-{self.connection_id}")

    async def on_disconnect(self, code: int | None) -> None:
        self.directory.sessions.detach(self)
        self.tools.close()
        if self._present:
            await self.router.closed(self.me.username)
        if self._retry is not None:
            self._retry.cancel()

    async def load(self) -> bool:
        """hello, the queue's snapshot, then the transcripts; False (and an error frame) if the
        queue cannot be read now."""
        self._early = []  # what changed before this read is in it
        try:
            active = await self.queue.active(self.me.username)
            entries = await self.queue.waiting()
            left = await listing(self.left_messages)
            if not self._present:  # online once the console loads; assignments wait for the snapshot
                await self.router.opened(self.me.username, assign=False)
                self._present = True
            self._roster = await self.router.roster_rows()
        except _UNAVAILABLE as exc:
            log.info("agent.load_unavailable agent=%s error=%s", self.me.username, exc)
            self.stats.error("queue_unavailable")
            if self._retry is None:  # once, not at every retry
                await self.send_json(error_frame("queue_unavailable", _UNAVAILABLE_TEXT))
            return False
        for conversation in active:
            await self.group_add(watch_group(conversation))
        me = {"username": self.me.username, "name": self.me.name}
        hello = {"type": "hello", "agent": me, "active": active, "agents": self._roster, "routing": self.router.mode}
        await self.send_json(dict(hello, capacity=self.router.capacity(self.me.username)))
        self._hello = True
        if self._later is not None:  # heard while hello was on its way: it may be newer
            await self.agents_presence({"type": "agents.presence", "agents": self._later})
        await self.send_json({"type": "queue", "items": _items(entries)})
        await self.send_json(left)
        early, self._early = self._early or [], None
        for delta in early:  # changes made while the snapshot was read: applying them again is harmless
            await self.send_json(delta)
        await self.router.kick()
        for conversation in active:
            try:
                async with asyncio.timeout(DEADLINE):
                    await self.send_transcript(conversation)
            except _UNAVAILABLE as exc:
                await self.send_json(error_frame("store_unavailable", "会话记录暂时无法读取,请稍后点击查看。"))
                log.info("agent.transcript_unavailable conversation=%s error=%s", conversation[:8], exc)
        return True

    async def _load_later(self) -> None:
        while not self.ws.closed:
            await asyncio.sleep(RETRY_SECONDS)  # a back-off, not a synchronisation
            if await self.load():
                return

    async def send_queue(self) -> None:
        """The live waiting conversations, first come first (a snapshot)."""
        await self.send_json({"type": "queue", "items": _items(await self.queue.waiting())})

    async def send_delta(self, delta: dict[str, Any]) -> None:
        """One queue change, after the snapshot (held back until the snapshot is sent)."""
        if self._early is not None:
            self._early.append(delta)
        else:
            await self.send_json(delta)

    async def send_transcript(self, conversation: str, frames: list[dict[str, Any]] | None = None) -> None:
        """The conversation as stored (or `frames`, the holding process's copy) and its verified
        customer if any (identity.py: the id and name the host site signed); live frames follow
        through the watch group. Both copies name the customer: a console may keep either."""
        if frames is None:
            frames = await self.store.transcript(conversation)
        message: dict[str, Any] = {"type": "transcript", "conversation": conversation, "frames": frames}
        try:
            async with asyncio.timeout(DEADLINE):
                customer = await self.customers.customer_of(conversation)
        except _UNAVAILABLE as exc:  # the frames still go: the customer shows with the next copy
            log.info("agent.customer_unavailable conversation=%s error=%s", conversation[:8], exc)
            customer = None
        if customer is not None:
            message["customer"] = {"id": customer.id, "name": customer.name}
        await self.send_json(message)
        self.tools.seen(conversation, frames)

    async def on_receive_text(self, text: str) -> None:
        try:
            match parse_agent_inbound(text, max_text_length=self.settings.limits.max_text_length):
                case AgentClaim(conversation):
                    await self.claim(conversation)
                case AgentReply(conversation, reply):
                    await self.reply(conversation, reply)
                case AgentEnd(conversation, handback):
                    await self.let_go(conversation, handback=handback)
                case AgentOpen(conversation):
                    await self.require_mine(conversation)
                    await self.send_transcript(conversation)
                case AgentTyping(conversation):
                    await self.tools.typing(conversation)
                case AgentCloseMessage(message_id):
                    await close_message(self, self.left_messages, message_id, self.me.username)
                case AgentStatus(status):
                    await self.router.set_status(self.me.username, status)
                    await self.send_json({"type": "status", "status": status})
                case AgentTransfer(conversation, to):
                    await self.router.transfer(self, conversation, self.me.username, to)
        except ProtocolError as exc:
            await self.send_json(error_frame(exc.code, str(exc)))
        except _UNAVAILABLE as exc:
            log.info("agent.action_unavailable agent=%s error=%s", self.me.username, exc)
            self.stats.error("queue_unavailable")
            await self.send_json(error_frame("queue_unavailable", "排队服务暂时不可用,请稍后再试。"))

    async def require_mine(self, conversation: str) -> None:
        """Only the agent holding a conversation may read or write it."""
        if await self.queue.agent_of(conversation) != self.me.username:
            raise ProtocolError("not_yours", "这个会话不由您接待。")

    async def claim(self, conversation: str) -> None:
        """Take a waiting conversation; exactly one agent wins a race."""
        # One id per claim: a run the Redis client retries (its reply lost) answers as the first did.
        if not await self.router.claim(self, conversation, self.me.username, secrets.token_hex(8)):
            await self.send_json({"type": "claim_failed", "conversation": conversation})
            await self.send_delta({"type": "queue_removed", "conversations": [conversation]})
            return
        log.info("agent.claim agent=%s conversation=%s", self.me.username, conversation[:8])
        await self.group_add(watch_group(conversation))
        await self.layer.group_send(
            conversation_group(conversation), messages.conv_mode(conversation, "agent", self.me.name)
        )
        await self.send_json({"type": "claimed", "conversation": conversation})
        await self.send_transcript(conversation)
        await self.add_frame(
            conversation,
            frame(
                "system", _JOINED_TEXT.format(name=self.me.name), talk=False, event="agent_joined", agent=self.me.name
            ),
        )
        await self.queue_moved(conversation)
        await self.router.publish_presence()  # one more chat: its load

    async def reply(self, conversation: str, text: str) -> None:
        """The agent's answer (checked by parse_agent_inbound) reaches the user as an "agent" frame."""
        await self.require_mine(conversation)
        out = frame("agent", mask_sensitive(text), talk=True, agent=self.me.name, id=secrets.token_hex(8))
        await self.add_frame(conversation, out)
        await self.router.replied(conversation)

    async def let_go(self, conversation: str, *, handback: bool) -> None:
        """End the human chat, or hand the conversation back to the bot."""
        await self.require_mine(conversation)
        if not await self.queue.finish(conversation, self.me.username):
            raise ProtocolError("not_yours", "这个会话不由您接待。")
        await self.group_discard(watch_group(conversation))
        self.tools.dropped(conversation)
        await self.layer.group_send(conversation_group(conversation), messages.conv_mode(conversation, "bot"))
        text, event = (_HANDED_BACK_TEXT, "agent_handback") if handback else (_ENDED_TEXT, "agent_left")
        await deliver(self.store, self.layer, conversation, frame("system", text, talk=False, event=event))
        await self.send_json({"type": "closed", "conversation": conversation, "reason": event})
        if not handback and self.ratings is not None:
            await ask_rating(self.ratings, self.store, self.layer, conversation, self.me.username, self.me.name)
        log.info("agent.%s agent=%s conversation=%s", event, self.me.username, conversation[:8])
        await self.router.replied(conversation)  # over: never "silent" (if claimed again later)
        await self.router.changed()  # a free slot: presence, and maybe the next conversation

    async def add_frame(self, conversation: str, out: Frame) -> None:
        """Append through the conversation's holder; if none, here, and show it to the consoles."""
        await deliver(self.store, self.layer, conversation, out, show=True)

    async def queue_moved(self, claimed: str) -> None:
        """Every console drops the claimed entry; every waiting user learns their new position."""
        await self.layer.group_send(AGENTS_GROUP, messages.agents_queue_removed([claimed]))
        await self.layer.group_send(QUEUE_GROUP, messages.queue_changed())

    # --------------------------------------------------------- layer handlers
    @message_handler
    async def agents_queue(self, message: messages.AgentsQueue) -> None:
        """Reload the whole queue (from a process of an earlier build)."""
        if self._early is None:
            try:
                await self.send_queue()
            except _UNAVAILABLE as exc:
                log.info("agent.queue_unavailable error=%s", exc)

    @message_handler
    async def agents_queue_added(self, message: messages.AgentsQueueAdded) -> None:
        """A conversation joined the queue."""
        if isinstance(item := message.get("item"), dict):
            await self.send_delta({"type": "queue_added", "item": item})

    @message_handler
    async def agents_queue_changed(self, message: messages.AgentsQueueChanged) -> None:
        """A waiting conversation's entry changed."""
        if isinstance(item := message.get("item"), dict):
            await self.send_delta({"type": "queue_changed", "item": item})

    @message_handler
    async def agents_queue_removed(self, message: messages.AgentsQueueRemoved) -> None:
        """Conversations left the queue (claimed or lapsed)."""
        if isinstance(gone := message.get("conversations"), list):
            await self.send_delta({"type": "queue_removed", "conversations": gone})

    @message_handler
    async def agents_left_message_added(self, message: messages.LeftMessageAdded) -> None:
        """A customer left a message (the deltas after the snapshot, as for the queue)."""
        await self.send_delta({"type": "left_message_added", "item": message["item"]})

    @message_handler
    async def agents_left_message_closed(self, message: messages.LeftMessageClosed) -> None:
        """An agent (on any process) closed a left message."""
        await self.send_delta({"type": "left_message_closed", "id": message["id"]})

    @message_handler
    async def agent_assigned(self, message: AgentAssigned) -> None:
        """A conversation was given to this agent (auto-assignment or a transfer)."""
        conversation = message["conversation"]
        await self.group_add(watch_group(conversation))
        await self.send_json({"type": "assigned", "conversation": conversation})
        await self.send_transcript(conversation)

    @message_handler
    async def agent_closed(self, message: AgentClosed) -> None:
        """A conversation was taken from this agent (reassigned on silence, or transferred)."""
        await self.group_discard(watch_group(message["conversation"]))
        await self.send_json({"type": "closed", "conversation": message["conversation"], "reason": message["reason"]})
        if message["reason"] == "reassigned":  # set away by the store: the console says so
            await self.send_json({"type": "status", "status": "away"})

    @message_handler
    async def agents_presence(self, message: AgentsPresence) -> None:
        """Who is online now (for the status and transfer controls); not what hello said already."""
        if not self._hello:
            self._later = message["agents"]
        elif message["agents"] != self._roster:
            self._roster = message["agents"]
            await self.send_json({"type": "agents", "agents": message["agents"]})

    @message_handler
    async def agent_frame(self, message: messages.AgentFrame) -> None:
        """A new frame of a conversation this agent holds."""
        await self.send_json({"type": "frame", "conversation": message["conversation"], "frame": message["frame"]})
        self.tools.seen(message["conversation"], [dict(message["frame"])])

    @message_handler
    async def agent_transcript(self, message: messages.AgentTranscript) -> None:
        """The holder's full transcript (the store may lag its write-behind by a moment)."""
        await self.send_transcript(message["conversation"], message["frames"])


def _items(entries: list[QueueEntry]) -> list[dict[str, Any]]:
    return [dict(e.item(), position=n) for n, e in enumerate(entries, 1)]
