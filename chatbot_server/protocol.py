"""Protocol v1: inbound frame validation (user and agent sockets) and outbound frame shapes.

See docs/protocol.md and docs/agents.md.
"""

from __future__ import annotations

import re
import time
from dataclasses import dataclass
from typing import Any, Final, Literal, NotRequired, TypedDict

from .errors import ProtocolError
from .jsonutil import JSONDecodeError, loads
from .sockets.codes import CLOSE_IDLE as CLOSE_IDLE
from .sockets.codes import CLOSE_SLOW_READER as CLOSE_SLOW_READER

PROTOCOL_VERSION: Final = 1

# Close codes the server uses besides the standard ones (1000, 1001, 1008, 1009, 1011): the
# socket layer's own (idle, slow reader), and the chat's.
CLOSE_TAKEN_OVER: Final = 4002  # a newer socket (another tab, another process) carries on the conversation

MAX_CLIENT_ID_LENGTH: Final = 64
MAX_CONVERSATION_ID_LENGTH: Final = 128

FrameType = Literal["greeting", "reply", "user", "typing", "agent", "system", "error", "reply_start", "reply_delta"]
#: Frames of a reply being written (docs/protocol.md "Streamed replies"): sent, never stored; the
#: stored record of a streamed reply is its final `reply` frame, which carries the same `id`.
STREAM_FRAMES: Final = frozenset({"reply_start", "reply_delta"})


class Frame(TypedDict):
    """A server → client frame; `msg` and `talk` are the seed's keys."""

    type: FrameType
    msg: str
    talk: bool
    ts: int
    seq: NotRequired[int]
    conversation: NotRequired[str]
    intent: NotRequired[str]
    confidence: NotRequired[float]
    suggestions: NotRequired[list[str]]
    id: NotRequired[str]
    reply_to: NotRequired[str]
    code: NotRequired[str]
    agent: NotRequired[str]
    queue_position: NotRequired[int]
    event: NotRequired[str]
    last_seq: NotRequired[int]
    before: NotRequired[int]
    after: NotRequired[int]
    offset: NotRequired[int]
    text: NotRequired[str]
    stopped: NotRequired[bool]
    failed: NotRequired[bool]


@dataclass(slots=True)  # not frozen: made for every message (bench/README.md, "Hot path")
class UserMessage:
    """The user says something: {"text": ...} or {"type": "message", "text": ..., "id": ...}."""

    text: str
    client_id: str | None = None
    # True when the client used the typed v1 form and so expects a "user" echo frame with a seq.
    typed: bool = False


@dataclass(frozen=True, slots=True)
class Resume:
    """Carry on an earlier conversation, replaying frames after `last_seq`."""

    conversation: str
    last_seq: int


@dataclass(frozen=True, slots=True)
class HistoryRequest:
    """A page of older frames: those with after < seq < before, at most limits.replay_frames (the newest)."""

    before: int
    after: int = 0


@dataclass(frozen=True, slots=True)
class HandoffRequest:
    """The user asks for a human agent (the 转人工 button)."""


@dataclass(frozen=True, slots=True)
class StopRequest:
    """The user stops the reply being written (`reply`: its id; None: whichever is being written)."""

    reply: str | None = None


@dataclass(frozen=True, slots=True)
class RatingAnswer:
    """The customer rates the human chat that just ended: {"type": "rating", "score": 1..5,
    "comment": "..."}, or skips it: {"type": "rating", "skip": true} (score None)."""

    score: int | None
    comment: str = ""


class CancelHandoff:
    """The user stops waiting for a human (the 取消排队 button)."""


@dataclass(frozen=True, slots=True)
class LeaveMessage:
    """A message for the agents, left outside their hours: {"type": "leave_message", "contact", "text"}
    (stripped, not masked yet)."""

    contact: str
    text: str


Inbound = (
    UserMessage | Resume | HistoryRequest | HandoffRequest | StopRequest | RatingAnswer | CancelHandoff | LeaveMessage
)


def now_ms() -> int:
    """The frame timestamp: milliseconds since the Unix epoch."""
    return time.time_ns() // 1_000_000


def parse_inbound(raw: str, *, max_text_length: int) -> Inbound:
    """Validate one client text frame; raise ProtocolError with the code for the error frame."""
    try:
        data = loads(raw)
    except JSONDecodeError:
        raise ProtocolError("bad_json", "消息格式错误:不是合法的 JSON。") from None
    if not isinstance(data, dict):
        raise ProtocolError("bad_frame", "消息格式错误:应为 JSON 对象。")
    kind = data.get("type", "message")
    if kind == "message":
        return _parse_message(data, max_text_length=max_text_length)
    if kind == "resume":
        return _parse_resume(data)
    if kind == "history":
        return _parse_history(data)
    if kind == "handoff":
        return HandoffRequest()
    if kind == "rating":
        return _parse_rating(data, max_comment_length=max_text_length)
    if kind == "cancel_handoff":
        return CancelHandoff()
    if kind == "leave_message":
        return parse_leave_message(data, max_text_length=max_text_length)
    if kind == "stop":
        reply = data.get("id")
        if reply is not None and (not isinstance(reply, str) or not 0 < len(reply) <= MAX_CLIENT_ID_LENGTH):
            raise ProtocolError("bad_frame", f"消息格式错误:id 应为 1 到 {MAX_CLIENT_ID_LENGTH} 个字符的字符串。")
        return StopRequest(reply)
    if not isinstance(kind, str):
        raise ProtocolError("bad_frame", "消息格式错误:type 应为字符串。")
    raise ProtocolError("unknown_type", f"不支持的消息类型:{kind[:32]}")


MAX_CONTACT_LENGTH: Final = 100
_PHONE = re.compile(r"\+?[0-9][0-9 ()-]{4,24}")
_EMAIL = re.compile(r"[^@\s]{1,64}@[^@\s]+\.[^@\s]+")


def parse_leave_message(data: dict[str, Any], *, max_text_length: int) -> LeaveMessage:
    """A left message: a phone number or e-mail address, and a text within the message limit."""
    contact, text = data.get("contact"), data.get("text")
    if not isinstance(contact, str) or not isinstance(text, str):
        raise ProtocolError("bad_frame", "消息格式错误:contact 和 text 应为字符串。")
    contact, text = contact.strip(), text.strip()
    if not contact:
        raise ProtocolError("empty_contact", "请留下您的手机号码或电子邮箱,以便我们与您联系。")
    if len(contact) > MAX_CONTACT_LENGTH or not (_PHONE.fullmatch(contact) or _EMAIL.fullmatch(contact)):
        raise ProtocolError("bad_contact", "请填写正确的手机号码或电子邮箱。")
    if not text:
        raise ProtocolError("empty_text", "请输入留言内容后再提交。")
    if len(text) > max_text_length:
        raise ProtocolError("too_long", f"留言太长了,请控制在 {max_text_length} 个字以内。")
    return LeaveMessage(contact, text)


def _parse_message(data: dict[str, Any], *, max_text_length: int) -> UserMessage:
    text = data.get("text")
    if text is None:
        raise ProtocolError("bad_frame", "消息格式错误:缺少 text 字段。")
    if not isinstance(text, str):
        raise ProtocolError("bad_frame", "消息格式错误:text 应为字符串。")
    text = text.strip()
    if not text:
        raise ProtocolError("empty_text", "请输入内容后再发送。")
    if len(text) > max_text_length:
        raise ProtocolError("too_long", f"消息太长了,请控制在 {max_text_length} 个字以内。")
    client_id = data.get("id")
    if client_id is not None:
        if not isinstance(client_id, str) or not 0 < len(client_id) <= MAX_CLIENT_ID_LENGTH:
            raise ProtocolError("bad_frame", f"消息格式错误:id 应为 1 到 {MAX_CLIENT_ID_LENGTH} 个字符的字符串。")
    return UserMessage(text, client_id, "type" in data)


def _parse_resume(data: dict[str, Any]) -> Resume:
    conversation = data.get("conversation")
    last_seq = data.get("last_seq", 0)
    if not isinstance(conversation, str) or not 0 < len(conversation) <= MAX_CONVERSATION_ID_LENGTH:
        raise ProtocolError("bad_frame", "消息格式错误:conversation 应为会话编号字符串。")
    if isinstance(last_seq, bool) or not isinstance(last_seq, int) or not 0 <= last_seq < 2**53:
        raise ProtocolError("bad_frame", "消息格式错误:last_seq 应为非负整数。")
    return Resume(conversation=conversation, last_seq=last_seq)


def _parse_rating(data: dict[str, Any], *, max_comment_length: int) -> RatingAnswer:
    # The comment's own limit (agents.rating_comment_length) is checked where the rating is taken.
    if data.get("skip") is True:
        return RatingAnswer(None)
    score, comment = data.get("score"), data.get("comment", "")
    if isinstance(score, bool) or not isinstance(score, int) or not 1 <= score <= 5:
        raise ProtocolError("bad_rating", "请选择 1 到 5 星的评分。")
    if not isinstance(comment, str):
        raise ProtocolError("bad_rating", "评价内容应为文字。")
    comment = comment.strip()
    if len(comment) > max_comment_length:
        raise ProtocolError("too_long", f"评价内容太长了,请控制在 {max_comment_length} 个字以内。")
    return RatingAnswer(score, comment)


def _parse_history(data: dict[str, Any]) -> HistoryRequest:
    before = _seq_field(data.get("before"))
    after = _seq_field(data.get("after", 0))
    if before is None or after is None:
        raise ProtocolError("bad_frame", "消息格式错误:before 和 after 应为非负整数。")
    if before <= after:
        raise ProtocolError("bad_frame", "消息格式错误:before 应大于 after。")
    return HistoryRequest(before=before, after=after)


def _seq_field(value: object) -> int | None:
    """A seq given by the client: an integer 0 <= value < 2**53 (not a bool), else None."""
    if isinstance(value, bool) or not isinstance(value, int) or not 0 <= value < 2**53:
        return None
    return value


# ------------------------------------------------------------------ the agent console (/agent/ws)
@dataclass(frozen=True, slots=True)
class AgentClaim:
    """The agent takes a waiting conversation: {"type": "claim", "conversation": id}."""

    conversation: str


@dataclass(frozen=True, slots=True)
class AgentReply:
    """The agent answers the user: {"type": "reply", "conversation": id, "text": ...} (stripped, not masked)."""

    conversation: str
    text: str


@dataclass(frozen=True, slots=True)
class AgentEnd:
    """The agent ends the human chat ({"type": "end"}) or hands it back to the bot ({"type": "handback"})."""

    conversation: str
    handback: bool


@dataclass(frozen=True, slots=True)
class AgentOpen:
    """The agent asks for a conversation's transcript again: {"type": "open", "conversation": id}."""

    conversation: str


@dataclass(frozen=True, slots=True)
class AgentTyping:
    """The agent is typing a reply: {"type": "typing", "conversation": id} (docs/agents.md, "Typing indicator")."""

    conversation: str


@dataclass(frozen=True, slots=True)
class AgentCloseMessage:
    """The agent closes a left message: {"type": "close_message", "id": id}."""

    id: str


@dataclass(frozen=True, slots=True)
class AgentStatus:
    """The agent sets their presence: {"type": "status", "status": "online" | "away"} (agents/routing.py)."""

    status: Literal["online", "away"]


@dataclass(frozen=True, slots=True)
class AgentTransfer:
    """The holding agent hands a conversation to a colleague: {"type": "transfer", "conversation": id, "to": username}."""

    conversation: str
    to: str


AgentInbound = (
    AgentClaim | AgentReply | AgentEnd | AgentOpen | AgentTyping | AgentCloseMessage | AgentStatus | AgentTransfer
)

# The agent's reply may be longer than a user's message: this many times limits.max_text_length.
AGENT_TEXT_LENGTH_FACTOR: Final = 4


def parse_agent_inbound(raw: str, *, max_text_length: int) -> AgentInbound:
    """Validate one agent console text frame; raise ProtocolError with the code for the error frame.

    `max_text_length` is the user's limit (limits.max_text_length): a reply may be
    AGENT_TEXT_LENGTH_FACTOR times longer.
    """
    try:
        data = loads(raw)
    except JSONDecodeError:
        raise ProtocolError("bad_json", "不是合法的 JSON。") from None
    if not isinstance(data, dict):
        raise ProtocolError("bad_frame", "应为 JSON 对象。")
    if data.get("type") == "close_message":
        message_id = data.get("id")
        if not isinstance(message_id, str) or not 0 < len(message_id) <= MAX_CLIENT_ID_LENGTH:
            raise ProtocolError("bad_frame", "缺少留言编号。")
        return AgentCloseMessage(message_id)
    if data.get("type") == "status":
        status = data.get("status")
        if status not in ("online", "away"):
            raise ProtocolError("bad_frame", "状态只能是在线或暂离。")
        return AgentStatus(status)
    conversation = data.get("conversation")
    if not isinstance(conversation, str) or not 0 < len(conversation) <= MAX_CONVERSATION_ID_LENGTH:
        raise ProtocolError("bad_frame", "缺少会话编号。")
    match data.get("type"):
        case "claim":
            return AgentClaim(conversation)
        case "reply":
            text = data.get("text")
            if not isinstance(text, str) or not text.strip():
                raise ProtocolError("empty_text", "请输入内容后再发送。")
            if len(text) > max_text_length * AGENT_TEXT_LENGTH_FACTOR:
                raise ProtocolError("too_long", "消息太长了。")
            return AgentReply(conversation, text.strip())
        case "end":
            return AgentEnd(conversation, handback=False)
        case "handback":
            return AgentEnd(conversation, handback=True)
        case "open":
            return AgentOpen(conversation)
        case "typing":
            return AgentTyping(conversation)
        case "transfer":
            to = data.get("to")
            if not isinstance(to, str) or not 0 < len(to) <= MAX_CLIENT_ID_LENGTH:
                raise ProtocolError("bad_frame", "缺少转接对象。")
            return AgentTransfer(conversation, to)
        case _:
            raise ProtocolError("unknown_type", "不支持的消息类型。")


def parse_last_seq(raw: str) -> int:
    """The `last_seq` query parameter of a resuming socket: ASCII digits below 2**53.

    str.isdigit() alone is not enough: it accepts "²" and "①", which int() then refuses, and int()
    refuses more than 4,300 digits; either was a crash (1011) with a traceback per request.
    """
    if not (0 < len(raw) <= 16 and raw.isascii() and raw.isdigit()) or int(raw) >= 2**53:
        raise ProtocolError("bad_frame", "消息格式错误:last_seq 应为非负整数。")
    return int(raw)


def frame(kind: FrameType, msg: str, *, talk: bool, **extra: Any) -> Frame:
    """Build an outbound frame with the seed's keys, the type and a timestamp."""
    out: dict[str, Any] = {"type": kind, "msg": msg, "talk": talk, "ts": now_ms()}
    out.update(extra)
    return out  # type: ignore[return-value]


def error_frame(code: str, message: str) -> Frame:
    """An error frame: the socket stays open."""
    return frame("error", message, talk=False, code=code)
