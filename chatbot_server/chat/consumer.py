"""ChatConsumer: the seed's chatbot socket (greeting, bot replies, group "users") plus history."""

from __future__ import annotations

import asyncio
import logging
import time
from typing import TYPE_CHECKING, Any, ClassVar

from aiohttp import WSCloseCode, web

from ..bots import Bot, HistoryEntry, Reply, Turn, Typing
from ..deadlines import first_step
from ..errors import ProtocolError, StoreUnavailableError
from ..jsonutil import dumpb
from ..keys import BOT_KEY, STORE_KEY
from ..layers import ChannelLayer, Message
from ..masking import mask_sensitive
from ..protocol import (
    CLOSE_IDLE,
    CLOSE_TAKEN_OVER,
    Frame,
    HandoffRequest,
    Resume,
    UserMessage,
    error_frame,
    frame,
    now_ms,
    parse_inbound,
)
from ..sockets.consumer import WebsocketConsumer, message_handler
from ..store.base import ConversationStore, StoredFrame

if TYPE_CHECKING:
    from ..store.handoff import HandoffQueue, Mode

log = logging.getLogger("chatbot_server.chat")

# Shared empty values (an empty frozenset is a new 216-byte object each time on Python 3.11).
_NO_IDS: frozenset[str] = frozenset()
_NO_QUERY: dict[str, str] = {}

# The handoff queue, set by app.setup() when agents are configured (the agents package is optional
# here so that the chat works without it).
QUEUE_KEY: web.AppKey[HandoffQueue] = web.AppKey("chatbot_server.agents.queue")
# Layer groups: every agent console; every user waiting in the queue; the consoles on one conversation.
AGENTS_GROUP = "agents"
QUEUE_GROUP = "handoff.queue"


def watch_group(conversation: str) -> str:
    """The group of the agent consoles following a conversation."""
    return f"watch.{conversation}"

_CARD_NUMBER_WARNING = "为保护您的账户安全,请不要在对话中发送完整的卡号或身份证号,我们已自动隐藏。"

_ROLE_OF_FRAME = {"user": "user", "reply": "bot", "greeting": "bot", "agent": "agent", "system": "system"}

# A socket whose conversation was carried on by a newer socket closes with CLOSE_TAKEN_OVER: the
# page must not reconnect by itself, or two tabs would take the conversation from each other.
_TAKEN_OVER_TEXT = "此会话已在其他窗口继续。"


_QUEUED_TEXT = "正在为您转接人工客服,您前面还有 {ahead} 位用户,请稍候。"
_QUEUE_MOVED_TEXT = "您前面还有 {ahead} 位用户,请稍候。"
_NO_AGENTS_TEXT = "暂不支持转人工服务。"


def conversation_group(conversation: str) -> str:
    """The layer group of the one socket holding a conversation (its owner)."""
    return f"conv.{conversation}"


async def deliver(
    store: ConversationStore, layer: ChannelLayer, conversation: str, out: Frame | StoredFrame
) -> int | None:
    """Append a frame made outside the conversation's socket: directly if no process holds it (the
    seq is returned), else through the layer to its holder, the single writer (None)."""
    seq = await store.append_if_unowned(conversation, out)  # type: ignore[arg-type]
    if seq is None:
        await layer.group_send(
            conversation_group(conversation), {"type": "conv.deliver", "conversation": conversation, "frame": out}
        )
    return seq


class ChatConsumer(WebsocketConsumer):
    """Greets, answers each {"text": ...} with the configured bot, keeps the conversation's history."""

    __slots__ = (
        "_answering", "_answers_once", "_early", "_fallbacks", "_inherited", "_queue_position", "_takeover_ack",
        "_wanted", "_warned_about_numbers", "bot", "conversation", "holding", "mode", "queue", "store",
    )

    groups: ClassVar[tuple[str, ...]] = ("users",)
    # The last broadcast message and its encoded frame (a single-entry cache, by identity).
    _last_broadcast: ClassVar[tuple[Message, bytes] | None] = None
    channel_prefix: ClassVar[str] = "chat"

    def __init__(self, request: Any) -> None:
        super().__init__(request)
        self.bot: Bot = request.config_dict[BOT_KEY]
        self.store: ConversationStore = request.config_dict[STORE_KEY]
        # A bot that only implements answer() is awaited directly, without respond()'s generator.
        self._answers_once = type(self.bot).respond is Bot.respond
        self.conversation = ""
        self._warned_about_numbers = False
        # True while this socket holds (owns) the conversation: it alone appends its frames.
        self.holding = False
        # Frames sent to us by others before we finished taking the conversation over.
        self._early: list[Frame] | None = None
        # Client message ids being answered right now (in this socket, or by the previous holder).
        self._answering: set[str] | frozenset[str] = _NO_IDS  # a set once something is answered
        self._inherited: frozenset[str] | set[str] = _NO_IDS  # until a takeover
        self._takeover_ack: asyncio.Future[list[str]] | None = None
        self._wanted = ""
        self.queue: HandoffQueue | None = request.config_dict.get(QUEUE_KEY)
        # Who answers: the bot, nobody yet (waiting for an agent), or an agent.
        self.mode: Mode = "bot"
        self._fallbacks = 0
        self._queue_position: int | None = None

    # ------------------------------------------------------------------ hooks
    async def on_connect(self) -> None:
        # request.query parses and caches a multidict (~200 bytes per idle socket): only if there is one.
        query = self.request.query if self.request.query_string else _NO_QUERY
        wanted = query.get("conversation")
        if wanted:
            last_seq = query.get("last_seq", "0")
            resume = Resume(wanted[:128], int(last_seq) if last_seq.isdigit() else 0)
            if await self._try_resume(resume):
                return
        await self.start_conversation(expired=bool(wanted))

    async def _try_resume(self, resume: Resume) -> bool:
        # While the store is unreachable an earlier conversation cannot be read: start afresh
        # rather than fail the socket (the customer can still be answered).
        try:
            return await self.resume(resume)
        except StoreUnavailableError as exc:
            log.warning("history.resume_unavailable conn=%s error=%s", self.connection_id, exc)
            return False

    async def start_conversation(self, *, expired: bool = False) -> None:
        """Open a new conversation and greet; say so first if the one asked for is gone."""
        conversation = await self.store.create()
        # Held at once, so that let_go() releases it even if joining its group fails (a new id is
        # unknown to anyone else, so nothing can be sent to the group before we join).
        self._hold(conversation)
        await self.group_add(conversation_group(conversation))
        log.info("ws.connect conn=%s conversation=%s", self.connection_id, self.conversation[:8])
        if expired:
            await self.emit(
                frame(
                    "system",
                    "之前的会话已过期,已为您开始新的会话。",
                    talk=False,
                    event="conversation_expired",
                    conversation=self.conversation,
                )
            )
        await self.emit(
            frame("greeting", self.settings.ui.greeting, talk=False, conversation=self.conversation)
        )

    async def on_disconnect(self, code: int | None) -> None:
        log.info("ws.disconnect conn=%s code=%s", self.connection_id, code)
        await self.let_go()

    # ------------------------------------------------------------ ownership
    def _hold(self, conversation: str) -> None:
        self.conversation = conversation
        self.holding = True
        self.store.holders[conversation] = self

    async def let_go(self) -> None:
        """Stop holding the conversation: write it out, and pass frames still queued for us on."""
        if not self.holding:
            return
        conversation = self.conversation
        self.holding = False
        if self.store.holders.get(conversation) is self:
            del self.store.holders[conversation]
            try:
                await self.store.release(conversation)
            except Exception:
                log.exception("history.release_failed conversation=%s", conversation[:8])
        await self.group_discard(conversation_group(conversation))
        # Frames the layer already queued for this socket would die with it: hand them on.
        while (message := self.layer.receive_nowait(self.channel_name)) is not None:
            if message.get("type") == "conv.deliver" and message.get("conversation") == conversation:
                await self.deliver(message["frame"])

    async def take_over(self, conversation: str) -> None:
        """Become the conversation's holder; the old holder (any process) writes out and stops first."""
        old = self.store.holders.get(conversation)
        if old is not None and old is not self:
            self._inherited = set(old._answering)
            await old.give_up(conversation)
        self._early = []
        self._wanted = conversation
        await self.group_add(conversation_group(conversation))
        previous = await self.store.acquire(conversation)
        if previous is not None:
            self._takeover_ack = asyncio.get_running_loop().create_future()
            await self.layer.group_send(
                conversation_group(conversation),
                {"type": "conv.takeover", "conversation": conversation, "reply_channel": self.channel_name,
                 "process": self.store.process_id},
            )
            try:
                async with asyncio.timeout(self.settings.history.takeover_timeout):
                    self._inherited |= set(await self._takeover_ack)
            except TimeoutError:
                # The old owner died: what it wrote out is all there is.
                log.warning("history.takeover_timeout conversation=%s owner=%s", conversation[:8], previous)
            finally:
                self._takeover_ack = None
        await self.store.adopt(conversation)
        self._hold(conversation)
        self._wanted = ""

    async def give_up(self, conversation: str) -> None:
        """Another socket carries on this conversation: stop holding it and close this socket."""
        if not self.holding or self.conversation != conversation:
            return
        self.holding = False
        if self.store.holders.get(conversation) is self:
            del self.store.holders[conversation]
        await self.group_discard(conversation_group(conversation))
        await self.send_json(frame("system", _TAKEN_OVER_TEXT, talk=False, event="taken_over"))
        await self.close(code=CLOSE_TAKEN_OVER, message="taken over")

    async def deliver(self, out: Frame) -> None:
        """Append a frame to a conversation this socket does not hold: directly, or via its holder."""
        await deliver(self.store, self.layer, self.conversation, out)

    async def on_receive_text(self, text: str) -> None:
        try:
            inbound = parse_inbound(text, max_text_length=self.settings.limits.max_text_length)
        except ProtocolError as exc:
            log.info("ws.bad_frame conn=%s code=%s size=%d", self.connection_id, exc.code, len(text))
            self.stats.error(exc.code)
            await self.send_json(error_frame(exc.code, str(exc)))
            return
        match inbound:
            case UserMessage():
                await self.handle_message(inbound)
            case Resume():
                await self.handle_resume(inbound)
            case HandoffRequest():
                await self.request_handoff()

    async def on_rate_limited(self) -> None:
        await self.send_json(error_frame("rate_limited", "您发送得太快了,请稍后再试。"))
        await super().on_rate_limited()

    async def on_receive_bytes(self, data: bytes) -> None:
        log.info("ws.bad_frame conn=%s code=binary size=%d", self.connection_id, len(data))
        self.stats.error("binary_not_supported")
        await self.send_json(error_frame("binary_not_supported", "不支持二进制消息,请发送 JSON 文本。"))

    async def notify_close(self, code: int, message: str) -> None:
        if code == WSCloseCode.GOING_AWAY:
            text = "服务器维护中,连接即将断开,请稍后重新连接。"
        elif code == CLOSE_IDLE:
            text = "由于长时间没有操作,连接已断开。"
        else:
            return
        await self.send_json(frame("system", text, talk=False, event="closing"))

    # -------------------------------------------------------------- messages
    async def handle_message(self, message: UserMessage) -> None:
        """Record the user's message, ask the bot, and send (and record) its answer."""
        client_id = message.client_id
        if client_id is not None and not await self.store.claim_client_id(self.conversation, client_id):
            # Sent again after a reconnect. Answered (or being answered) already: ignore it. Stored
            # but never answered (the server died in between): answer it now.
            if (
                client_id in self._answering
                or client_id in self._inherited
                or await self.store.reply_stored(self.conversation, client_id)
                or self.mode != "bot"  # a human (or the queue) answers; the bot stays silent
            ):
                log.info("ws.duplicate conn=%s", self.connection_id)
                return
            log.info("ws.unanswered conn=%s", self.connection_id)
            await self.answer(mask_sensitive(message.text), client_id)
            return
        text = mask_sensitive(message.text)
        user_frame: Frame = {"type": "user", "msg": text, "talk": True, "ts": now_ms()}
        if client_id is not None:
            user_frame["id"] = client_id
        if self.holding:
            encoded = self.store.append_held(self.conversation, user_frame)  # type: ignore[arg-type]
            if encoded is None:
                encoded = await self.store.append_encoded(self.conversation, user_frame)  # type: ignore[arg-type]
            if message.typed and not self._write_now(encoded):
                await self.send_encoded(encoded)
        else:
            await self.deliver(user_frame)
        if log.isEnabledFor(logging.DEBUG):  # one line per message is too much for INFO at scale
            log.debug("ws.message conn=%s size=%d", self.connection_id, len(text))
        if self.mode == "agent":
            await self.forward_to_agents(user_frame)
        if text != message.text and not self._warned_about_numbers:
            self._warned_about_numbers = True
            await self.emit(frame("system", _CARD_NUMBER_WARNING, talk=False, event="masked"))
        if self.mode == "bot":  # while waiting for or talking to a human, the bot stays silent
            await self.answer(text, message.client_id)

    async def answer(self, text: str, client_id: str | None = None) -> None:
        """Run the bot on one message within the configured timeout; apologise if it fails."""
        history = await self.recent_history() if self.bot.uses_history else ()
        turn = Turn(self.conversation, text, history)
        started = time.monotonic()  # the loop's clock, without get_running_loop()'s getpid() call
        if client_id is not None:
            if isinstance(self._answering, frozenset):
                self._answering = set()
            self._answering.add(client_id)
        deadlines = self._registry.deadlines
        timeout = self.settings.bot.timeout
        try:
            if self._answers_once:  # the common case: no async generator, no timer for a bot that never waits
                # deadlines.run() without its coroutine: a bot answering from memory never suspends.
                answering = self.bot.answer(turn)
                finished, reply = first_step(answering)
                if not finished:
                    reply = await deadlines.finish(answering, reply, timeout, started)
                # _on_reply(), inlined (and emit() in it): no coroutine in the common case.
                out = self._reply_out(reply, started, client_id)
                encoded = self._record_held(out)
                if encoded is None:
                    await self._emit_otherwise(out)
                elif not self._write_now(encoded):
                    await self.send_encoded(encoded)
                if reply.handoff or reply.fallback or self._fallbacks:
                    await self.after_reply(reply)
            else:
                async with deadlines.limit(timeout):
                    async for event in self.bot.respond(turn):
                        if isinstance(event, Typing):
                            await self.send_json(frame("typing", "", talk=False))
                        else:
                            await self._on_reply(event, started, client_id)
        except TimeoutError:
            log.warning("bot.timeout conn=%s after=%.2fs", self.connection_id, time.monotonic() - started)
            self.stats.error("bot_timeout")
            await self.emit(apology_frame(self.settings.ui.error_text, "bot_timeout", client_id))
        except Exception:
            log.exception("bot.error conn=%s", self.connection_id)
            self.stats.error("bot_error")
            await self.emit(apology_frame(self.settings.ui.error_text, "bot_error", client_id))
        finally:
            if client_id is not None:
                self._answering.discard(client_id)  # type: ignore[union-attr]

    async def _on_reply(self, reply: Reply, started: float, client_id: str | None) -> None:
        await self.emit(self._reply_out(reply, started, client_id))
        if reply.handoff or reply.fallback or self._fallbacks:
            await self.after_reply(reply)

    def _reply_out(self, reply: Reply, started: float, client_id: str | None) -> Frame:
        self.stats.bot_latency.observe(time.monotonic() - started)
        return reply_frame(reply, client_id)

    # --------------------------------------------------------------- handoff
    async def after_reply(self, reply: Reply) -> None:
        """Queue for a human when the bot says so, or after `agents.fallback_handoff` fallbacks in a row."""
        if reply.handoff:
            await self.request_handoff()
            return
        self._fallbacks = self._fallbacks + 1 if reply.fallback else 0
        limit = self.settings.agents.fallback_handoff
        if limit and self._fallbacks >= limit and self.queue is not None:
            self._fallbacks = 0
            await self.request_handoff()

    async def request_handoff(self) -> None:
        """Put the conversation in the queue for a human agent and tell the user their position."""
        queue = self.queue
        if queue is None:
            await self.send_json(error_frame("unsupported", _NO_AGENTS_TEXT))
            return
        if self.mode == "agent":
            return
        preview = next(
            (f["msg"] for f in reversed(await self.store.recent(self.conversation, 10)) if f["type"] == "user"), ""
        )
        position = await queue.enqueue(self.conversation, preview[:100])
        if position == 0:  # an agent has it already
            return
        already = self.mode == "queued"
        self.mode = "queued"
        self._queue_position = position
        if not already:
            await self.group_add(QUEUE_GROUP)
        await self.emit(
            frame("system", _QUEUED_TEXT.format(ahead=position - 1), talk=False, event="queued",
                  queue_position=position)
        )
        await self.layer.group_send(AGENTS_GROUP, {"type": "agents.queue"})

    async def restore_mode(self) -> None:
        """After a resume: who answers this conversation now (the queue is shared by all processes)."""
        if self.queue is None:
            return
        self.mode, _ = await self.queue.mode(self.conversation)
        if self.mode == "queued":
            position = await self.queue.position(self.conversation)
            self._queue_position = position
            await self.group_add(QUEUE_GROUP)
            if position is not None:  # the replayed "queued" notice may be out of date
                await self.send_json(
                    frame("system", _QUEUE_MOVED_TEXT.format(ahead=position - 1), talk=False,
                          event="queue_position", queue_position=position)
                )

    async def forward_to_agents(self, out: Frame) -> None:
        """Show a frame of the conversation live in the consoles of the agent holding it."""
        await self.layer.group_send(
            watch_group(self.conversation), {"type": "agent.frame", "conversation": self.conversation, "frame": out}
        )

    async def resume(self, resume: Resume) -> bool:
        """Carry on an earlier conversation: replay its frames after `last_seq`; False if it is gone."""
        if resume.conversation == self.conversation and self.holding:
            pass
        elif not await self.store.exists(resume.conversation):
            return False
        else:
            await self.take_over(resume.conversation)
        replay = await self.store.read_since(self.conversation, resume.last_seq)
        for old in replay:
            await self.send_json(old)
        await self.send_json(
            frame(
                "system", "", talk=False, event="resumed", conversation=self.conversation,
                last_seq=await self.store.last_seq(self.conversation),
            )
        )
        log.info(
            "ws.resume conn=%s conversation=%s replayed=%d", self.connection_id, self.conversation[:8], len(replay)
        )
        await self.restore_mode()
        early, self._early = self._early, None
        for out in early or ():
            await self.emit(out)
        if self.mode == "bot":
            await self.answer_orphans()
        return True

    async def answer_orphans(self) -> None:
        """Answer the user's last messages if their answer was lost (the old server died mid-answer)."""
        transcript = await self.store.recent(self.conversation, 20)
        orphans: list[dict[str, Any]] = []
        for stored in reversed(transcript):
            if stored.get("type") != "user":
                break
            orphans.append(stored)
        for old in reversed(orphans):
            client_id = old.get("id")
            if client_id is None or client_id in self._inherited or client_id in self._answering:
                continue
            if not await self.store.reply_stored(self.conversation, client_id):
                await self.answer(old["msg"], client_id)

    async def handle_resume(self, resume: Resume) -> None:
        """A resume frame on an open socket: switch to that conversation, or start a fresh one."""
        if resume.conversation != self.conversation:
            await self.let_go()
        if not await self._try_resume(resume):
            await self.start_conversation(expired=True)

    async def recent_history(self) -> list[HistoryEntry]:
        """The last `bot.history_turns` user/bot lines, oldest first, for the bot's context."""
        wanted = self.settings.bot.history_turns
        if wanted <= 0:
            return []
        entries = [
            HistoryEntry(role=_ROLE_OF_FRAME[f["type"]], text=f["msg"])  # type: ignore[arg-type]
            for f in await self.store.recent(self.conversation, 2 * wanted + 1)
            if f["type"] in _ROLE_OF_FRAME
        ]
        # The newest user line is the turn itself.
        return entries[-wanted - 1 : -1] if entries else []

    async def emit(self, out: Frame) -> None:
        """Record a conversational frame (it gets its seq) and send it; via the holder if not us."""
        encoded = self._record_held(out)
        if encoded is None:
            await self._emit_otherwise(out)
        elif not self._write_now(encoded):
            await self.send_encoded(encoded)

    def _record_held(self, out: Frame) -> bytes | None:
        # emit()'s common case: the conversation is held here, no agent watches it, and the store
        # appends without I/O. The frame encoded (recorded, to send), or None (nothing done).
        if not self.holding or self.mode == "agent":
            return None
        return self.store.append_held(self.conversation, out)  # type: ignore[arg-type]

    async def _emit_otherwise(self, out: Frame) -> None:
        if not self.holding:
            await self.deliver(out)
            return
        # Not the hot path: append_encoded() takes the store's synchronous path itself when it can.
        await self.send_encoded(await self.store.append_encoded(self.conversation, out))  # type: ignore[arg-type]
        if self.mode == "agent":
            await self.forward_to_agents(out)

    # --------------------------------------------------------- layer handlers
    @message_handler
    async def conv_takeover(self, message: Message) -> None:
        """A socket on another process carries on our conversation: write out, hand over, close."""
        conversation = message.get("conversation")
        if message.get("reply_channel") == self.channel_name or message.get("process") == self.store.process_id:
            return
        if not self.holding or conversation != self.conversation:
            return
        answering = sorted(self._answering)
        self.holding = False
        if self.store.holders.get(conversation) is self:
            del self.store.holders[conversation]
        try:
            await self.store.release(conversation)
        finally:
            await self.layer.send(
                message["reply_channel"],
                {"type": "conv.released", "conversation": conversation, "answering": answering},
            )
        await self.group_discard(conversation_group(conversation))
        await self.send_json(frame("system", _TAKEN_OVER_TEXT, talk=False, event="taken_over"))
        await self.close(code=CLOSE_TAKEN_OVER, message="taken over")

    @message_handler
    async def conv_released(self, message: Message) -> None:
        """The old owner wrote the conversation out: the takeover may read the store."""
        ack = self._takeover_ack
        if ack is not None and not ack.done() and message.get("conversation") == self.conversation_wanted():
            ack.set_result([str(i) for i in message.get("answering", [])])

    def conversation_wanted(self) -> str:
        """The conversation being taken over (or held)."""
        return self._wanted or self.conversation

    @message_handler
    async def conv_deliver(self, message: Message) -> None:
        """A frame made elsewhere (an agent's reply, a late bot answer) for the conversation we hold."""
        out = message.get("frame")
        if not isinstance(out, dict) or message.get("conversation") != self.conversation_wanted():
            return
        if self._early is not None:  # taking over: sent after the replay, in order
            self._early.append(out)  # type: ignore[arg-type]
        elif self.holding:
            await self.emit(out)  # type: ignore[arg-type]
            # An agent's answer is rare and precious: written at once, not after history.write_interval
            # (a crash of this process would lose it, though the user saw it).
            self.store.write_soon()
        else:
            await self.deliver(out)  # type: ignore[arg-type]

    @message_handler
    async def conv_mode(self, message: Message) -> None:
        """An agent took the conversation, or let it go: the bot falls silent or answers again."""
        if message.get("conversation") != self.conversation_wanted():
            return
        mode = message.get("mode")
        if mode not in ("bot", "agent"):
            return
        self.mode = mode
        self._fallbacks = 0
        self._queue_position = None
        if QUEUE_GROUP in self._groups:
            await self.group_discard(QUEUE_GROUP)
        if mode == "agent" and self.holding:
            # The console may have read the store before our latest frames were written out.
            await self.layer.group_send(
                watch_group(self.conversation),
                {"type": "agent.transcript", "conversation": self.conversation,
                 "frames": await self.store.transcript(self.conversation)},
            )

    @message_handler
    async def queue_changed(self, message: Message) -> None:
        """The queue moved: tell a waiting user their new position (not stored: it is transient)."""
        if self.mode != "queued" or self.queue is None or not self.holding:
            return
        position = await self.queue.position(self.conversation)
        if position is None or position == self._queue_position:
            return
        self._queue_position = position
        await self.send_json(
            frame("system", _QUEUE_MOVED_TEXT.format(ahead=position - 1), talk=False, event="queue_position",
                  queue_position=position)
        )

    @message_handler
    def chat_broadcast(self, message: Message) -> None:
        """A notice to every user: {"type": "chat.broadcast", "text": "..."} sent to group "users".

        Synchronous, so a broadcast to thousands of sockets runs no task per socket; the frame is
        encoded once per broadcast (every member gets the same message object).
        """
        cached = ChatConsumer._last_broadcast
        if cached is None or cached[0] is not message:
            out = frame("system", str(message.get("text", "")), talk=False, event="broadcast")
            cached = ChatConsumer._last_broadcast = (message, dumpb(out))
        self.send_encoded_nowait(cached[1])


def reply_frame(reply: Reply, reply_to: str | None = None) -> Frame:
    """The frame for a bot reply (`reply_to`: the client id of the message it answers)."""
    confidence = float(reply.confidence)
    if confidence != 1.0 and confidence != 0.0:  # round() goes through a string (~170 ns): not for these
        confidence = round(confidence, 4)
    out: dict[str, Any] = {
        "type": "reply",
        "msg": reply.text,
        "talk": True,
        "ts": now_ms(),
        "intent": reply.intent,
        "confidence": confidence,
    }
    if reply_to is not None:
        out["reply_to"] = reply_to
    if reply.suggestions:
        out["suggestions"] = list(reply.suggestions[:3])
    return out  # type: ignore[return-value]


def apology_frame(text: str, intent: str, reply_to: str | None = None) -> Frame:
    """What the user sees when the bot fails or is too slow."""
    out = frame("reply", text, talk=True, intent=intent, confidence=0.0)
    if reply_to is not None:
        out["reply_to"] = reply_to
    return out
