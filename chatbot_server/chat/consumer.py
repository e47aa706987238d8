"""ChatConsumer: the seed's chatbot socket (greeting, bot replies, group "users") plus history.

A thin composition: the conversation it holds (holding.py), the bot turn (turns.py) and who answers
(handoff.py); this module ties them to the socket's frames and the layer's messages.
"""

from __future__ import annotations

import logging
from typing import Any, ClassVar

from .. import messages
from ..bots import HistoryEntry
from ..errors import ProtocolError, StoreUnavailableError
from ..keys import (
    AVAILABILITY_KEY,
    BUDGETS_KEY,
    HOLDERS_KEY,
    IDENTITY_KEY,
    NOTES_KEY,
    QUEUE_KEY,
    STORE_KEY,
    TURNS_KEY,
)  # fmt: skip
from ..layers import Message
from ..masking import mask_sensitive
from ..messages import USERS_GROUP
from ..protocol import (
    CancelHandoff,
    Frame,
    HandoffRequest,
    HistoryRequest,
    LeaveMessage,
    RatingAnswer,
    Resume,
    StopRequest,
    UserMessage,
    error_frame,
    frame,
    now_ms,
    parse_inbound,
)
from ..sockets.consumer import WebsocketConsumer, message_handler
from ..store import ConversationStore
from ..store.handoff import Mode
from . import texts
from .answering import Answering
from .handoff import Handoff
from .holding import Holding
from .identity import Identified
from .replay import Replay, answer_orphans, asked_resume
from .service import serve
from .turns import TurnRunner, apology_frame, recent_history, reply_frame

log = logging.getLogger("chatbot_server.chat")

_NO_QUERY: dict[str, str] = {}
_FRAME_OVERHEAD = 80  # the bytes a stored user frame takes besides its text (keys, ts, seq)


class ChatConsumer(WebsocketConsumer):
    """Greets, answers each {"text": ...} with the configured bot, keeps the conversation's history."""

    __slots__ = (
        "_warned_about_numbers", "answering", "handoff", "hold", "identity", "quota", "replay", "store", "turns",
    )  # fmt: skip

    groups: ClassVar[tuple[str, ...]] = (USERS_GROUP,)
    channel_prefix: ClassVar[str] = "chat"

    def __init__(self, request: Any) -> None:
        super().__init__(request)
        config = request.config_dict
        self.store: ConversationStore = config[STORE_KEY]
        self.turns: TurnRunner = config[TURNS_KEY]
        self.hold = Holding(
            self,
            store=self.store,
            layer=self.layer,
            holders=config[HOLDERS_KEY],
            takeover_timeout=self.settings.history.takeover_timeout,
        )
        queue = config.get(QUEUE_KEY)
        self.handoff: Handoff | None = None  # only where agents are configured: else the bot always answers
        if queue is not None:
            self.handoff = Handoff(
                self, queue=queue, layer=self.layer, store=self.store,
                fallback_limit=self.settings.agents.fallback_handoff, availability=config.get(AVAILABILITY_KEY),
            )  # fmt: skip
        self._warned_about_numbers = False
        self.answering = Answering(self, self.turns, error_text=self.settings.ui.error_text)
        # With agents: the bot's unanswered questions for supervisors (agents/feedback.py).
        if (notes := config.get(NOTES_KEY)) is not None:
            self.answering.notes = notes.note
        # Verified customers, where identity.secret is set (chat/identity.py).
        gate = config.get(IDENTITY_KEY)
        self.identity = None if gate is None else Identified(self, gate)
        # Per client address (limits.replay_per_ip, history.quota_per_ip); None: not limited.
        budgets = request.config_dict[BUDGETS_KEY].of(self.client_ip, self.settings.server.trusted_proxies)
        self.quota = None if budgets is None else budgets.quota
        self.replay = Replay(
            self, store=self.store, page_size=self.settings.limits.replay_frames,
            budget=None if budgets is None else budgets.replay, address=self.client_ip,
        )  # fmt: skip

    @property
    def conversation(self) -> str:
        """The conversation this socket holds (or last held)."""
        return self.hold.conversation

    @property
    def mode(self) -> Mode:
        """Who answers: the bot, nobody yet (waiting for an agent), or an agent."""
        return "bot" if self.handoff is None else self.handoff.mode

    # ------------------------------------------------------------------ hooks
    async def on_connect(self) -> None:
        # request.query parses and caches a multidict (~200 bytes per idle socket): only if there is one.
        query = self.request.query if self.request.query_string else _NO_QUERY
        wanted, last_seq, bad = asked_resume(query)
        if bad is not None:  # say so, and replay everything: nothing is lost
            self.stats.error(bad.code)
            await self.send_json(error_frame(bad.code, str(bad)))
        identity = self.identity
        if identity is not None:
            entry = await identity.enter(query.get("identity"), wanted, last_seq)
            if entry is None:  # refused: closed
                return
            wanted, last_seq = entry.conversation, entry.last_seq
        if not (wanted and await self._try_resume(Resume(wanted, last_seq))):
            await self.start_conversation(expired=bool(wanted))
        if identity is not None:
            await identity.bind(self.hold.conversation)

    async def _try_resume(self, resume: Resume) -> bool:
        # A store that does not answer in time: say so, carry on in a new conversation (True).
        try:
            return await self.resume(resume)
        except StoreUnavailableError as exc:
            log.warning("history.resume_unavailable conn=%s error=%s", self.connection_id, exc)
            self.stats.error("history_unavailable")
            await self.send_json(error_frame("history_unavailable", texts.HISTORY_UNAVAILABLE))
            await self.hold.let_go()  # if the takeover had finished
            await self.start_conversation()
            return True

    async def start_conversation(self, *, expired: bool = False) -> None:
        """Open a new conversation and greet; say so first if the one asked for is gone."""
        conversation = await self.store.create()
        await self.hold.hold_new(conversation)
        log.info("ws.connect conn=%s conversation=%s", self.connection_id, conversation[:8])
        if expired:
            expired_frame = frame("system", texts.EXPIRED, talk=False, event="conversation_expired")
            await self.emit({**expired_frame, "conversation": conversation})
        await self.emit(frame("greeting", self.settings.ui.greeting, talk=False, conversation=conversation))

    async def on_disconnect(self, code: int | None) -> None:
        log.info("ws.disconnect conn=%s code=%s", self.connection_id, code)
        await self.answering.finish()
        await self.hold.let_go()

    def pending_messages(self) -> list[Message]:
        """Layer messages still waiting for this socket (for the holding protocol's let_go)."""
        return self.inbox.take_pending()

    def yield_answer(self, reply_to: str) -> None:
        """Another socket's turn writes the answer to `reply_to`: drop ours (holding.py)."""
        self.answering.drop(reply_to)

    async def settle(self) -> None:
        """Wait until the layer messages this socket is handling are handled (for let_go)."""
        await self.inbox.wait_idle(self.settings.history.takeover_timeout)

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
                serial = self.answering.serial
                if serial is None:
                    await self.handle_message(inbound)
                elif not serial.submit(lambda: self.handle_message(inbound)):  # a streaming bot is writing
                    await self.send_json(error_frame("rate_limited", texts.RATE_LIMITED))
            case StopRequest():
                self.answering.stop(inbound.reply)
            case Resume():
                await self.handle_resume(inbound)
            case HistoryRequest():
                await self.replay.page(self.hold.conversation, inbound)
            case HandoffRequest():
                await self.request_handoff()
            case RatingAnswer() | CancelHandoff() | LeaveMessage():
                await serve(self, inbound, self.hold.conversation, self.handoff)

    async def on_rate_limited(self) -> None:
        await self.send_json(error_frame("rate_limited", texts.RATE_LIMITED))
        await super().on_rate_limited()

    async def on_receive_bytes(self, data: bytes) -> None:
        log.info("ws.bad_frame conn=%s code=binary size=%d", self.connection_id, len(data))
        self.stats.error("binary_not_supported")
        await self.send_json(error_frame("binary_not_supported", texts.BINARY))

    async def notify_close(self, code: int, message: str) -> None:
        text = texts.CLOSING.get(code)
        if text is not None:
            await self.send_json(frame("system", text, talk=False, event="closing"))

    # -------------------------------------------------------------- messages
    async def handle_message(self, message: UserMessage) -> None:
        """Record the user's message, ask the bot, and send (and record) its answer."""
        hold = self.hold
        client_id = message.client_id
        quota = self.quota  # checked first: a refused message is neither stored nor answered
        if quota is not None and not quota.take(self.client_ip, len(message.text.encode()) + _FRAME_OVERHEAD):
            self.stats.error("quota_exceeded")
            await self.send_json(error_frame("quota_exceeded", texts.QUOTA))
            return
        if client_id is not None and not await self.store.claim_client_id(hold.conversation, client_id):
            # Sent again after a reconnect. Answered (or being answered) already: ignore it. Stored
            # but never answered (the server died in between): answer it now.
            if (
                hold.busy_with(client_id)
                or await self.store.reply_stored(hold.conversation, client_id)
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
        if hold.holding:
            encoded = self.store.append(hold.conversation, user_frame)  # type: ignore[arg-type]
            if message.typed:  # the typed protocol echoes the user's frame with its seq
                if self.answering.serial is not None:  # a streamed turn's frames: shown once written
                    await self.answering.write_out()
                self.send_encoded_nowait(encoded)
        else:
            await hold.deliver(user_frame)
        if log.isEnabledFor(logging.DEBUG):  # one line per message is too much for INFO at scale
            log.debug("ws.message conn=%s size=%d", self.connection_id, len(text))
        mode = self.mode
        if mode == "agent":
            await self.forward_to_agents(user_frame)
        if text != message.text and not self._warned_about_numbers:
            self._warned_about_numbers = True
            await self.emit(frame("system", texts.CARD_NUMBER_WARNING, talk=False, event="masked"))
        if mode == "bot":  # while waiting for or talking to a human, the bot stays silent
            await self.answering.answer(text, client_id)

    async def answer(self, text: str, client_id: str | None = None) -> None:
        """Run the bot on one message (answering.py)."""
        await self.answering.answer(text, client_id)

    async def request_handoff(self) -> None:
        """Put the conversation in the queue for a human agent (if there are agents)."""
        if self.handoff is None:
            await self.send_json(error_frame("unsupported", texts.NO_AGENTS))
        else:
            await self.handoff.request(self.hold.conversation)

    async def forward_to_agents(self, out: Frame) -> None:
        """Show a frame of the conversation live in the consoles of the agent holding it."""
        if self.handoff is not None:
            await self.handoff.forward_to_agents(self.hold.conversation, out)

    # ---------------------------------------------------------------- resume
    async def resume(self, resume: Resume) -> bool:
        """Carry on an earlier conversation: replay its frames after `last_seq`; False if it is gone."""
        hold = self.hold
        if not (resume.conversation == hold.conversation and hold.holding):
            if not await self.store.exists(resume.conversation):
                return False
            await hold.take_over(resume.conversation)
        conversation = hold.conversation
        replayed = await self.replay.resume(conversation, resume.last_seq)  # one page, at most
        last_seq = await self.store.last_seq(conversation)
        await self.send_json(
            frame("system", "", talk=False, event="resumed", conversation=conversation, last_seq=last_seq)
        )
        log.info("ws.resume conn=%s conversation=%s replayed=%d", self.connection_id, conversation[:8], replayed)
        if self.handoff is not None:
            await self.handoff.restore(conversation)
        await hold.catch_up()
        self.answering.watch_writers(self.answer_orphans)
        if self.mode == "bot":
            await self.answer_orphans()
        return True

    async def answer_orphans(self) -> None:
        """Answer the user's last messages if their answer was lost (the old server died mid-answer)."""
        await answer_orphans(self.store, self.hold, self.answer)

    async def handle_resume(self, resume: Resume) -> None:
        """A resume frame on an open socket: switch to that conversation, or start a fresh one."""
        if resume.conversation != self.hold.conversation:
            if self.identity is not None and not await self.identity.may_resume(resume.conversation):
                return
            await self.hold.let_go()
        if not await self._try_resume(resume):
            await self.start_conversation(expired=True)
        if self.identity is not None:
            await self.identity.bind(self.hold.conversation)

    async def recent_history(self) -> list[HistoryEntry]:
        """The last `bot.history_turns` user/bot lines, oldest first, for the bot's context."""
        return await recent_history(self.store, self.hold.conversation, self.settings.bot.history_turns)

    # -------------------------------------------------------------- frames
    def emit_now(self, out: Frame) -> bool:
        """emit() without waiting, where it needs no I/O: the conversation is held here and no agent
        watches it (the common case). False if nothing was done: await emit() instead."""
        encoded = self.store_now(out)
        if encoded is not None:
            self.send_encoded_nowait(encoded)
        return encoded is not None

    def store_now(self, out: Frame) -> bytes | None:
        """emit_now()'s first half: record the frame where it is held here and no agent watches,
        and return its bytes for send_encoded_nowait() (a streamed reply's end is sent once
        written, answering.py); None: await emit() instead."""
        if not self.hold.holding or self.mode == "agent":
            return None
        return self._store(out)

    def _store(self, out: Frame) -> bytes:
        """Append a frame to the held conversation; its bytes count against the client's quota."""
        encoded = self.store.append(self.hold.conversation, out)  # type: ignore[arg-type]
        if self.quota is not None:
            self.quota.charge(self.client_ip, len(encoded))
        return encoded

    async def emit(self, out: Frame) -> None:
        """Record a conversational frame (it gets its seq) and send it; via the holder if not us."""
        if self.emit_now(out):
            return
        hold = self.hold
        if not hold.holding:
            await hold.deliver(out)
            return
        self.send_encoded_nowait(self._store(out))
        await self.forward_to_agents(out)  # held here while an agent answers

    # --------------------------------------------------------- layer handlers
    @message_handler
    async def conv_takeover(self, message: messages.ConvTakeover) -> None:
        """A socket on another process carries on our conversation: write out, hand over, close."""
        await self.hold.on_takeover(message)

    @message_handler
    def conv_released(self, message: messages.ConvReleased) -> None:
        """The old owner wrote the conversation out: the takeover may read the store."""
        self.hold.on_released(message)

    @message_handler
    async def conv_deliver(self, message: messages.ConvDeliver) -> None:
        """A frame made elsewhere (an agent's reply, a late bot answer) for the conversation we hold."""
        await self.hold.on_deliver(message)

    @message_handler
    async def conv_mode(self, message: messages.ConvMode) -> None:
        """An agent took the conversation, or let it go: the bot falls silent or answers again."""
        if self.handoff is not None and message.get("conversation") == self.hold.wanted:
            await self.handoff.on_mode(message, self.hold.conversation, self.hold.holding)

    @message_handler
    async def queue_changed(self, message: messages.QueueChanged) -> None:
        """The queue moved: tell a waiting user their new position."""
        if self.handoff is not None:
            await self.handoff.on_queue_changed(self.hold.conversation, self.hold.holding)

    @message_handler
    async def conv_typing(self, message: messages.ConvTyping) -> None:
        """The holding agent is typing: shown on the page for a moment, never stored."""
        if message.get("conversation") == self.hold.conversation and self.hold.holding:
            await self.send_json(frame("typing", "", talk=False, who="agent"))

    @message_handler
    async def conv_handoff(self, message: messages.ConvHandoff) -> None:
        """The host's back end asks for a human (api/): as if the user pressed 转人工."""
        if message.get("conversation") == self.hold.conversation and self.hold.holding:
            await self.request_handoff()

    @message_handler
    def chat_broadcast(self, message: messages.ChatBroadcast) -> None:
        """A notice to every user: {"type": "chat.broadcast", "text": "..."} sent to group "users".
        Synchronous, so a broadcast to thousands of sockets runs no task per socket."""
        self.send_encoded_nowait(texts.broadcast_bytes(message))


__all__ = ["ChatConsumer", "apology_frame", "reply_frame"]
