"""Typed inter-process messages (chatbot_server.messages) and agent frame validation (protocol)."""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any

import pytest

from chatbot_server import messages
from chatbot_server.agents.consumer import AgentConsumer
from chatbot_server.chat.consumer import ChatConsumer
from chatbot_server.errors import ProtocolError
from chatbot_server.layers.base import validate_message
from chatbot_server.protocol import (
    MAX_CONVERSATION_ID_LENGTH,
    AgentClaim,
    AgentEnd,
    AgentOpen,
    AgentReply,
    frame,
    parse_agent_inbound,
)

LIMIT = 10  # limits.max_text_length: an agent's reply may be 4 times longer


def parse(data: Any) -> Any:
    return parse_agent_inbound(json.dumps(data, ensure_ascii=False), max_text_length=LIMIT)


def error_of(raw: str) -> tuple[str, str]:
    with pytest.raises(ProtocolError) as caught:
        parse_agent_inbound(raw, max_text_length=LIMIT)
    return caught.value.code, str(caught.value)


# ------------------------------------------------------------------ parse_agent_inbound: valid frames
@pytest.mark.parametrize(
    ("data", "expected"),
    [
        ({"type": "claim", "conversation": "c1"}, AgentClaim("c1")),
        ({"type": "open", "conversation": "c1"}, AgentOpen("c1")),
        ({"type": "end", "conversation": "c1"}, AgentEnd("c1", handback=False)),
        ({"type": "handback", "conversation": "c1"}, AgentEnd("c1", handback=True)),
        ({"type": "reply", "conversation": "c1", "text": "  您好  "}, AgentReply("c1", "您好")),
        # Extra keys are ignored, as before.
        ({"type": "claim", "conversation": "c1", "text": "x", "extra": 1}, AgentClaim("c1")),
    ],
)
def test_valid_agent_frames(data: dict[str, Any], expected: object) -> None:
    assert parse(data) == expected


def test_reply_text_is_not_masked_by_the_parser() -> None:
    # Masking stays in the consumer, so the parser returns the text as sent (stripped).
    assert (
        parse({"type": "reply", "conversation": "c", "text": "卡号 6212345678901232"}).text == "卡号 6212345678901232"
    )


def test_reply_text_limit_is_four_times_the_user_limit() -> None:
    text = "字" * (4 * LIMIT)
    assert parse({"type": "reply", "conversation": "c", "text": text}) == AgentReply("c", text)
    # The limit applies to the text as sent, surrounding spaces included (as the consumer did).
    assert error_of(json.dumps({"type": "reply", "conversation": "c", "text": text + " "}))[0] == "too_long"


def test_conversation_id_may_be_as_long_as_the_maximum() -> None:
    conversation = "c" * MAX_CONVERSATION_ID_LENGTH
    assert parse({"type": "claim", "conversation": conversation}) == AgentClaim(conversation)


def test_agent_frames_are_frozen() -> None:
    claim = AgentClaim("c")
    with pytest.raises(AttributeError):
        claim.conversation = "d"  # type: ignore[misc]


# ------------------------------------------------------------------ parse_agent_inbound: errors
@pytest.mark.parametrize(
    ("raw", "code", "message"),
    [
        ("{not json", "bad_json", "不是合法的 JSON。"),
        ("", "bad_json", "不是合法的 JSON。"),
        ("[1, 2]", "bad_frame", "应为 JSON 对象。"),
        ('"claim"', "bad_frame", "应为 JSON 对象。"),
        ('{"type": "claim"}', "bad_frame", "缺少会话编号。"),
        ('{"type": "claim", "conversation": ""}', "bad_frame", "缺少会话编号。"),
        ('{"type": "claim", "conversation": 7}', "bad_frame", "缺少会话编号。"),
        (
            json.dumps({"type": "claim", "conversation": "c" * (MAX_CONVERSATION_ID_LENGTH + 1)}),
            "bad_frame",
            "缺少会话编号。",
        ),
        # The conversation is checked before the type, as the consumer always did.
        ('{"type": "dance"}', "bad_frame", "缺少会话编号。"),
        ('{"type": "dance", "conversation": "c"}', "unknown_type", "不支持的消息类型。"),
        ('{"conversation": "c"}', "unknown_type", "不支持的消息类型。"),
        ('{"type": 3, "conversation": "c"}', "unknown_type", "不支持的消息类型。"),
        ('{"type": "message", "conversation": "c", "text": "hi"}', "unknown_type", "不支持的消息类型。"),
        ('{"type": "reply", "conversation": "c"}', "empty_text", "请输入内容后再发送。"),
        ('{"type": "reply", "conversation": "c", "text": ""}', "empty_text", "请输入内容后再发送。"),
        ('{"type": "reply", "conversation": "c", "text": " \\n\\t "}', "empty_text", "请输入内容后再发送。"),
        ('{"type": "reply", "conversation": "c", "text": 5}', "empty_text", "请输入内容后再发送。"),
        (json.dumps({"type": "reply", "conversation": "c", "text": "x" * (4 * LIMIT + 1)}), "too_long", "消息太长了。"),
    ],
)
def test_agent_frame_errors(raw: str, code: str, message: str) -> None:
    assert error_of(raw) == (code, message)


# ------------------------------------------------------------------ messages: group names
def test_group_names() -> None:
    assert messages.USERS_GROUP == "users"
    assert messages.AGENTS_GROUP == "agents"
    assert messages.QUEUE_GROUP == "handoff.queue"
    assert messages.conversation_group("abc") == "conv.abc"
    assert messages.watch_group("abc") == "watch.abc"


# ------------------------------------------------------------------ messages: constructors
OUT = frame("agent", "您好", talk=True, agent="小王")

CONSTRUCTED: list[tuple[Mapping[str, object], dict[str, Any]]] = [
    (
        messages.conv_takeover("c", "chat.abc!1", "p1"),
        {"type": "conv.takeover", "conversation": "c", "reply_channel": "chat.abc!1", "process": "p1"},
    ),
    (
        messages.conv_released("c", ["m1", "m2"]),
        {"type": "conv.released", "conversation": "c", "answering": ["m1", "m2"]},
    ),
    (
        messages.conv_deliver("c", OUT),
        {"type": "conv.deliver", "conversation": "c", "frame": OUT},
    ),
    (
        messages.conv_mode("c", "agent", "小王"),
        {"type": "conv.mode", "conversation": "c", "mode": "agent", "agent": "小王"},
    ),
    (
        messages.conv_mode("c", "bot"),
        {"type": "conv.mode", "conversation": "c", "mode": "bot"},
    ),
    (messages.agents_queue(), {"type": "agents.queue"}),
    (
        messages.agents_queue_added({"conversation": "c", "since": 1, "preview": "卡"}),
        {"type": "agents.queue_added", "item": {"conversation": "c", "since": 1, "preview": "卡"}},
    ),
    (
        messages.agents_queue_changed({"conversation": "c", "since": 1, "preview": "卡"}),
        {"type": "agents.queue_changed", "item": {"conversation": "c", "since": 1, "preview": "卡"}},
    ),
    (messages.agents_queue_removed(["c"]), {"type": "agents.queue_removed", "conversations": ["c"]}),
    (messages.queue_changed(), {"type": "queue.changed"}),
    (
        messages.agent_frame("c", OUT),
        {"type": "agent.frame", "conversation": "c", "frame": OUT},
    ),
    (
        messages.agent_transcript("c", [dict(OUT, seq=1)]),
        {"type": "agent.transcript", "conversation": "c", "frames": [dict(OUT, seq=1)]},
    ),
    (messages.chat_broadcast("今晚维护"), {"type": "chat.broadcast", "text": "今晚维护"}),
]


@pytest.mark.parametrize(("built", "expected"), CONSTRUCTED, ids=[e["type"] for _, e in CONSTRUCTED])
def test_constructors_build_the_exact_dicts(built: Mapping[str, object], expected: dict[str, Any]) -> None:
    assert built == expected
    assert type(built) is dict
    # Valid layer messages that survive the Redis layer's JSON encoding unchanged.
    assert validate_message(built) is built
    assert json.loads(json.dumps(built)) == expected


def test_conv_mode_bot_has_no_agent_key() -> None:
    assert "agent" not in messages.conv_mode("c", "bot")


def test_each_message_type_has_its_handler_and_constructor() -> None:
    """A message's type names the handler ("conv.takeover" -> conv_takeover) and the constructor."""
    handled_by = {
        "conv.takeover": ChatConsumer,
        "conv.released": ChatConsumer,
        "conv.deliver": ChatConsumer,
        "conv.mode": ChatConsumer,
        "queue.changed": ChatConsumer,
        "chat.broadcast": ChatConsumer,
        "agents.queue": AgentConsumer,
        "agents.queue_added": AgentConsumer,
        "agents.queue_changed": AgentConsumer,
        "agents.queue_removed": AgentConsumer,
        "agent.frame": AgentConsumer,
        "agent.transcript": AgentConsumer,
    }
    assert {built["type"] for built, _ in CONSTRUCTED} == set(handled_by)
    for kind, consumer in handled_by.items():
        name = kind.replace(".", "_")
        assert callable(getattr(consumer, name)), kind
        assert callable(getattr(messages, name)), kind
