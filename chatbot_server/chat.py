"""ChatConsumer: the seed's chatbot socket (greeting, bot replies, group "users") plus history."""

from __future__ import annotations

import asyncio
import logging
from typing import Any, ClassVar

from aiohttp import WSCloseCode

from .bots import Bot, HistoryEntry, Reply, Turn, Typing
from .consumer import WebsocketConsumer, message_handler
from .errors import ProtocolError
from .history import ConversationStore
from .keys import BOT_KEY, STORE_KEY
from .layers import Message
from .masking import mask_sensitive
from .protocol import (
    CLOSE_IDLE,
    Frame,
    HandoffRequest,
    Resume,
    UserMessage,
    error_frame,
    frame,
    parse_inbound,
)

log = logging.getLogger("chatbot_server.chat")

_CARD_NUMBER_WARNING = "为保护您的账户安全,请不要在对话中发送完整的卡号或身份证号,我们已自动隐藏。"

_ROLE_OF_FRAME = {"user": "user", "reply": "bot", "greeting": "bot", "agent": "agent", "system": "system"}


class ChatConsumer(WebsocketConsumer):
    """Greets, answers each {"text": ...} with the configured bot, keeps the conversation's history."""

    groups: ClassVar[tuple[str, ...]] = ("users",)
    channel_prefix: ClassVar[str] = "chat"

    def __init__(self, request: Any) -> None:
        super().__init__(request)
        self.bot: Bot = request.config_dict[BOT_KEY]
        self.store: ConversationStore = request.config_dict[STORE_KEY]
        self.conversation = ""
        self._warned_about_numbers = False

    # ------------------------------------------------------------------ hooks
    async def on_connect(self) -> None:
        query = self.request.query
        wanted = query.get("conversation")
        if wanted:
            last_seq = query.get("last_seq", "0")
            resume = Resume(wanted[:128], int(last_seq) if last_seq.isdigit() else 0)
            if await self.resume(resume):
                return
        await self.start_conversation(expired=bool(wanted))

    async def start_conversation(self, *, expired: bool = False) -> None:
        """Open a new conversation and greet; say so first if the one asked for is gone."""
        self.conversation = await self.store.create()
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
                await self.send_json(error_frame("unsupported", "暂不支持转人工服务。"))

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
        if message.client_id is not None and not await self.store.claim_client_id(
            self.conversation, message.client_id
        ):
            log.info("ws.duplicate conn=%s", self.connection_id)
            return
        text = mask_sensitive(message.text)
        user_frame = frame("user", text, talk=True)
        if message.client_id is not None:
            user_frame["id"] = message.client_id
        await self.store.append(self.conversation, user_frame)  # type: ignore[arg-type]
        if message.typed:
            await self.send_json(user_frame)
        if log.isEnabledFor(logging.DEBUG):  # one line per message is too much for INFO at scale
            log.debug("ws.message conn=%s size=%d", self.connection_id, len(text))
        if text != message.text and not self._warned_about_numbers:
            self._warned_about_numbers = True
            await self.emit(frame("system", _CARD_NUMBER_WARNING, talk=False, event="masked"))
        await self.answer(text, message.client_id)

    async def answer(self, text: str, client_id: str | None = None) -> None:
        """Run the bot on one message within the configured timeout; apologise if it fails."""
        turn = Turn(self.conversation, text, await self.recent_history())
        extra: dict[str, Any] = {} if client_id is None else {"reply_to": client_id}
        loop = asyncio.get_running_loop()
        started = loop.time()
        try:
            async with asyncio.timeout(self.settings.bot.timeout):
                async for event in self.bot.respond(turn):
                    if isinstance(event, Typing):
                        await self.send_json(frame("typing", "", talk=False))
                    else:
                        self.stats.bot_latency.observe(loop.time() - started)
                        await self.emit(reply_frame(event, **extra))
        except TimeoutError:
            log.warning("bot.timeout conn=%s after=%.2fs", self.connection_id, loop.time() - started)
            self.stats.error("bot_timeout")
            await self.emit(apology_frame(self.settings.ui.error_text, "bot_timeout", **extra))
        except Exception:
            log.exception("bot.error conn=%s", self.connection_id)
            self.stats.error("bot_error")
            await self.emit(apology_frame(self.settings.ui.error_text, "bot_error", **extra))

    async def resume(self, resume: Resume) -> bool:
        """Carry on an earlier conversation: replay its frames after `last_seq`; False if it is gone."""
        if not await self.store.exists(resume.conversation):
            return False
        self.conversation = resume.conversation
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
        return True

    async def handle_resume(self, resume: Resume) -> None:
        """A resume frame on an open socket: switch to that conversation, or start a fresh one."""
        if not await self.resume(resume):
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
        """Record a conversational frame (it gets its seq) and send it."""
        await self.store.append(self.conversation, out)  # type: ignore[arg-type]
        await self.send_json(out)

    # --------------------------------------------------------- layer handlers
    @message_handler
    async def chat_broadcast(self, message: Message) -> None:
        """A notice to every user: {"type": "chat.broadcast", "text": "..."} sent to group "users"."""
        await self.send_json(frame("system", str(message.get("text", "")), talk=False, event="broadcast"))


def reply_frame(reply: Reply, **extra: Any) -> Frame:
    """The frame for a bot reply."""
    out = frame(
        "reply",
        reply.text,
        talk=True,
        intent=reply.intent,
        confidence=round(float(reply.confidence), 4),
        **extra,
    )
    if reply.suggestions:
        out["suggestions"] = list(reply.suggestions[:3])
    return out


def apology_frame(text: str, intent: str, **extra: Any) -> Frame:
    """What the user sees when the bot fails or is too slow."""
    return frame("reply", text, talk=True, intent=intent, confidence=0.0, **extra)
