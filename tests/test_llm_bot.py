"""The llm bot (#18) against a fake OpenAI-compatible endpoint: streamed, grounded, masked answers,
and the FAQ answer (counted) whenever the endpoint fails."""

from __future__ import annotations

import json
import logging
import socket
import time
from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from aiohttp import web

from chatbot_server import setup
from chatbot_server.bots import BotEvent, Delta, HistoryEntry, Reply, Turn, Typing, answer_style, build_bot
from chatbot_server.bots.llm import LlmBot
from chatbot_server.bots.llm_options import DEFAULT_SYSTEM_PROMPT
from chatbot_server.bots.llm_prompt import build_messages, citation
from chatbot_server.bots.llm_sse import MAX_LINE, Chunk, LlmError, SseDecoder, parse_chunk
from chatbot_server.errors import ConfigError

from .fake_openai import CLOSE, HANG, FakeOpenAI, Step, answer, chunk, event
from .helpers import make_settings, receive_json, receive_until

pytestmark = pytest.mark.timeout(30)

QUESTION = "我的卡丢了怎么办"
CARD = "6222 0212 3456 7878"  # Luhn-valid
CARD_DIGITS = CARD.replace(" ", "")
ID_NUMBER = "11010519491231002X"  # a valid resident ID number
KEY = "sk-test-9f8e7d6c5b4a"


@pytest.fixture
async def fake() -> AsyncIterator[FakeOpenAI]:
    server = FakeOpenAI()
    await server.start()
    yield server
    await server.close()


def options(fake: FakeOpenAI, **extra: Any) -> dict[str, Any]:
    return {
        "base_url": fake.url,
        "model": "qwen2.5-7b-instruct",
        "faq": {"watch": False, "semantic": False},
        "first_token_timeout": 5,
        "stall_timeout": 5,
        "total_timeout": 10,
        **extra,
    }


@asynccontextmanager
async def started(opts: dict[str, Any]) -> AsyncIterator[LlmBot]:
    bot = build_bot("llm", opts)
    assert isinstance(bot, LlmBot)
    await bot.start()
    try:
        yield bot
    finally:
        await bot.close()


@pytest.fixture
async def bot(fake: FakeOpenAI) -> AsyncIterator[LlmBot]:
    async with started(options(fake)) as made:
        yield made


async def ask(bot: LlmBot, text: str = QUESTION, history: Sequence[HistoryEntry] = ()) -> list[BotEvent]:
    return [e async for e in bot.respond(Turn("conv-1", text, history))]


async def faq_reply(bot: LlmBot, text: str = QUESTION) -> Reply:
    return await bot.faq.answer(Turn("conv-1", text))


def deltas(events: list[BotEvent]) -> list[str]:
    return [e.text for e in events if isinstance(e, Delta)]


def final(events: list[BotEvent]) -> Reply:
    assert isinstance(events[0], Typing), events
    assert isinstance(events[-1], Reply), events
    assert sum(isinstance(e, Reply) for e in events) == 1
    return events[-1]


# ---------------------------------------------------------------- answers


async def test_streams_deltas_then_one_cited_reply(bot: LlmBot, fake: FakeOpenAI) -> None:
    fake.script(*answer("\n您好，", "请立即拨打发卡行客服电话挂失。"))
    events = await ask(bot)
    expected = await faq_reply(bot)
    entry = bot.faq.knowledge_base.entry(expected.intent)
    reply = final(events)
    assert deltas(events) == ["您好，", "请立即拨打发卡行客服电话挂失。", citation(entry)]  # leading newline dropped
    assert reply.text == "您好，请立即拨打发卡行客服电话挂失。\n\n参考：《" + entry.title + "》"
    assert reply.text == "".join(deltas(events))
    assert (reply.intent, reply.confidence, reply.suggestions) == (entry.id, expected.confidence, expected.suggestions)
    assert not reply.fallback and not reply.handoff
    assert bot.counters()["llm_answered"] == 1


async def test_request_carries_the_model_options_prompt_and_grounding_entries(fake: FakeOpenAI) -> None:
    opts = options(fake, max_tokens=300, temperature=0.1, system_prompt="只回答银行卡问题。", extra_body={"top_p": 0.8})
    async with started(opts) as bot:
        fake.script(*answer("好的"))
        await ask(bot)
        expected = await faq_reply(bot)
        kb = bot.faq.knowledge_base
    body = fake.requests[0].body
    assert fake.requests[0].path == "/v1/chat/completions"
    assert {k: body[k] for k in ("model", "stream", "max_tokens", "temperature", "top_p")} == {
        "model": "qwen2.5-7b-instruct",
        "stream": True,
        "max_tokens": 300,
        "temperature": 0.1,
        "top_p": 0.8,
    }
    system, question = body["messages"][0], body["messages"][-1]
    assert system["role"] == "system" and system["content"].startswith("只回答银行卡问题。\n\n")
    first = kb.entry(expected.intent)
    assert f"【条目1】《{first.title}》\n{first.answer.strip()}" in system["content"]
    # The entries the FAQ suggestions point to follow, up to top_k (3) in all.
    suggested = [e for e in kb.entries if set(e.questions) & set(expected.suggestions)]
    assert suggested, "the FAQ answer to QUESTION has suggestions"
    assert "【条目2】" in system["content"] and "【条目4】" not in system["content"]
    assert any(f"《{e.title}》" in system["content"] for e in suggested)
    assert question == {"role": "user", "content": QUESTION}


async def test_top_k_bounds_the_grounding_entries(fake: FakeOpenAI) -> None:
    async with started(options(fake, top_k=1)) as bot:
        fake.script(*answer("好的"))
        await ask(bot)
    system = fake.requests[0].body["messages"][0]["content"]
    assert "【条目1】" in system and "【条目2】" not in system


async def test_default_system_prompt_is_polite_and_guarded(bot: LlmBot, fake: FakeOpenAI) -> None:
    fake.script(*answer("好的"))
    await ask(bot)
    system = fake.requests[0].body["messages"][0]["content"]
    assert system.startswith(DEFAULT_SYSTEM_PROMPT)
    for phrase in ("您", "95516", "发卡行", "密码", "验证码", "只根据"):
        assert phrase in DEFAULT_SYSTEM_PROMPT


async def test_card_and_id_numbers_are_masked_in_question_and_history(bot: LlmBot, fake: FakeOpenAI) -> None:
    history = [
        HistoryEntry("bot", "您好,很高兴为您服务。"),
        HistoryEntry("user", f"我的卡号是 {CARD}，身份证 {ID_NUMBER}"),
        HistoryEntry("bot", f"收到，卡号 {CARD}"),
    ]
    fake.script(*answer("好的"))
    await ask(bot, f"{QUESTION} 卡号 {CARD}", history)
    sent = json.dumps(fake.requests[0].body, ensure_ascii=False)
    for secret in (CARD, CARD_DIGITS, ID_NUMBER, ID_NUMBER[:17]):
        assert secret not in sent
    assert "**** **** **** 7878" in sent  # question and history, the last four kept
    assert "**************002X" in sent


def test_everything_sent_is_masked_even_the_entries() -> None:
    @dataclass
    class Entry:
        id: str
        title: str
        answer: str

    entries = [Entry("x", f"卡 {CARD}", f"例如卡号 {CARD}")]
    history = [HistoryEntry("user", CARD), HistoryEntry("agent", CARD)]
    messages = build_messages(f"提示 {CARD}", entries, history, CARD)
    sent = json.dumps(messages, ensure_ascii=False)
    assert CARD not in sent and sent.count("**** **** **** 7878") == 6


def test_history_roles_alternate_and_system_lines_are_skipped() -> None:
    @dataclass
    class Entry:
        id: str = "e"
        title: str = "标题"
        answer: str = "答案"

    history = [
        HistoryEntry("bot", "您好,很高兴为您服务。"),  # the greeting: no assistant line before a question
        HistoryEntry("user", "卡丢了"),
        HistoryEntry("bot", "请挂失。\n\n参考：《银行卡挂失》"),  # our citation: not sent back
        HistoryEntry("system", "人工客服已接入"),
        HistoryEntry("agent", "您好，我是客服小王。"),
        HistoryEntry("user", "好的"),
    ]
    messages = build_messages("提示", [Entry()], history, "怎么补卡")
    assert [(m["role"], m["content"]) for m in messages[1:]] == [
        ("user", "卡丢了"),
        ("assistant", "请挂失。\n您好，我是客服小王。"),
        ("user", "好的\n怎么补卡"),
    ]


@pytest.mark.parametrize("text", ["今天天气怎么样", "你好", "谢谢", "转人工"])
async def test_out_of_scope_pleasantries_and_handoff_get_the_faq_reply_without_a_request(
    bot: LlmBot, fake: FakeOpenAI, text: str
) -> None:
    events = await ask(bot, text)
    assert final(events) == await faq_reply(bot, text)
    assert deltas(events) == []
    assert fake.requests == []
    assert bot.counters()["llm_direct"] == 1


async def test_out_of_scope_keeps_the_polite_refusal(bot: LlmBot) -> None:
    reply = final(await ask(bot, "今天天气怎么样"))
    assert reply.intent == "out_of_scope" and "抱歉" in reply.text


async def test_answer_collects_the_stream_for_callers_that_do_not_stream(bot: LlmBot, fake: FakeOpenAI) -> None:
    assert answer_style(bot) == "stream"
    fake.script(*answer("请拨打", "发卡行电话。"))
    reply = await bot.answer(Turn("conv-1", QUESTION))
    assert reply.text.startswith("请拨打发卡行电话。\n\n参考：《")


async def test_text_split_mid_character_across_tcp_reads(bot: LlmBot, fake: FakeOpenAI) -> None:
    second = event(chunk("好，请挂失"))
    cut = second.index("好".encode()) + 1  # inside the three bytes of 好
    gate = fake.gate()
    fake.script(event(chunk("您")) + second[:cut], gate, second[cut:], *answer()[1:])
    stream = bot.respond(Turn("conv-1", QUESTION))
    assert isinstance(await anext(stream), Typing)
    # 您 arrives before the rest is even sent: the bot read the piece that ends mid-character.
    assert await anext(stream) == Delta("您")
    gate.set()
    rest = [e async for e in stream]
    assert deltas(rest)[0] == "好，请挂失"
    assert isinstance(rest[-1], Reply) and rest[-1].text.startswith("您好，请挂失\n\n参考：")


# ---------------------------------------------------------------- faults


SSE = "text/event-stream"


def fault(name: str, kind: str, *steps: Step, status: int = 200, content_type: str = SSE) -> Any:
    return pytest.param(steps, status, content_type, kind, id=name)


FAULTS = [
    fault("http-500", "llm_http_error", status=500),
    fault("http-401", "llm_http_error", status=401),
    fault("error-in-stream", "llm_http_error", *answer("您好")[:2], event({"error": {"message": "overloaded"}})),
    fault("data-not-json", "llm_malformed", *answer("您好")[:2], b"data: {not json\n\n"),
    fault("no-choices", "llm_malformed", event({"id": "x", "object": "chat.completion.chunk"})),
    fault("choice-without-delta", "llm_malformed", event({"choices": [{"index": 0}]})),
    fault("content-not-text", "llm_malformed", event({"choices": [{"delta": {"content": 7}}]})),
    fault("html", "llm_malformed", b"<html><body>502 Bad Gateway</body></html>", content_type="text/html"),
    fault(
        "not-streamed",
        "llm_malformed",
        b'{"choices": [{"message": {"content": "hi"}}]}',
        content_type="application/json",
    ),
    fault("closed-mid-stream", "llm_truncated", *answer("您好，")[:2], CLOSE),
    fault("no-done", "llm_truncated", *answer("您好，", finish=None, done=False)),
    fault("filtered", "llm_filtered", *answer("您", finish="content_filter")),
    fault("empty", "llm_empty", *answer()),
    fault("blank", "llm_empty", *answer("\n\n  ")),
]


@pytest.mark.parametrize(("steps", "status", "content_type", "kind"), FAULTS)
async def test_a_faulty_endpoint_gets_the_faq_answer_and_is_counted(
    bot: LlmBot,
    fake: FakeOpenAI,
    caplog: pytest.LogCaptureFixture,
    steps: tuple[Step, ...],
    status: int,
    content_type: str,
    kind: str,
) -> None:
    fake.script(*steps, status=status, content_type=content_type)
    with caplog.at_level(logging.WARNING, logger="chatbot_server.bots.llm"):
        events = await ask(bot)
    # Deltas shown before the fault (if any) are replaced by the final Reply: the FAQ answer.
    assert final(events) == await faq_reply(bot)
    counts = bot.counters()
    assert counts[kind] == 1 and sum(counts.values()) == 1
    [record] = caplog.records
    assert record.levelno == logging.WARNING and f"kind={kind}" in record.getMessage()
    assert QUESTION not in record.getMessage()


async def test_fault_after_deltas_replaces_them(bot: LlmBot, fake: FakeOpenAI) -> None:
    fake.script(*answer("您好，请先")[:2], CLOSE)
    events = await ask(bot)
    assert deltas(events) == ["您好，请先"]
    assert final(events).text == (await faq_reply(bot)).text


async def test_connection_refused_is_a_connect_error(fake: FakeOpenAI) -> None:
    with socket.socket() as sock:  # a port nobody listens on
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    async with started({**options(fake), "base_url": f"http://127.0.0.1:{port}/v1"}) as bot:
        events = await ask(bot)
        assert final(events) == await faq_reply(bot)
        assert bot.counters()["llm_connect_error"] == 1


TIMEOUTS = [
    # No text within first_token_timeout, though the role chunk came.
    pytest.param(
        (event(chunk("", role="assistant")), HANG), {"first_token_timeout": 0.2}, "llm_timeout", 0, id="first-token"
    ),
    # Text started, then nothing for stall_timeout.
    pytest.param((*answer("您好")[:2], HANG), {"stall_timeout": 0.2}, "llm_stalled", 1, id="stalled"),
    # Text started and the gaps are short enough, but the whole answer takes too long.
    pytest.param(
        (*answer("您好")[:2], HANG),
        {"first_token_timeout": 0.3, "total_timeout": 0.3},
        "llm_total_timeout",
        1,
        id="total",
    ),
]


@pytest.mark.parametrize(("steps", "timeouts", "kind", "shown"), TIMEOUTS)
async def test_timeouts_are_honoured(
    fake: FakeOpenAI, steps: tuple[Step, ...], timeouts: dict[str, float], kind: str, shown: int
) -> None:
    async with started(options(fake, **timeouts)) as bot:
        fake.script(*steps)
        began = time.monotonic()
        events = await ask(bot)
        took = time.monotonic() - began
        assert final(events) == await faq_reply(bot)
        assert len(deltas(events)) == shown
        assert bot.counters()[kind] == 1
    assert took < 4  # the others are 5 s or more: the small one ended the wait


# ---------------------------------------------------------------- the key


async def test_key_is_sent_only_when_its_variable_is_set_and_never_shown(
    fake: FakeOpenAI, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    monkeypatch.setenv("LLM_TEST_API_KEY", KEY)
    caplog.set_level(logging.DEBUG)
    async with started(options(fake, api_key_env="LLM_TEST_API_KEY")) as bot:
        fake.script(status=401)
        fake.script(*answer("好的"))
        events = [*await ask(bot), *await ask(bot)]
        shown = repr(bot) + repr(bot.options) + repr(bot._client) + repr(events) + repr(bot.counters())
    assert [r.headers.get("Authorization") for r in fake.requests] == [f"Bearer {KEY}"] * 2
    assert KEY not in caplog.text and KEY not in shown

    monkeypatch.delenv("LLM_TEST_API_KEY")
    caplog.clear()
    async with started(options(fake, api_key_env="LLM_TEST_API_KEY")) as bot:
        fake.script(*answer("好的"))
        await ask(bot)
    assert "Authorization" not in fake.requests[-1].headers
    assert "LLM_TEST_API_KEY is not set" in caplog.text


# ---------------------------------------------------------------- options


@pytest.mark.parametrize(
    ("change", "key"),
    [
        ({"base_url": None}, "bot.options.base_url"),
        ({"base_url": "ftp://models.bank.internal/v1"}, "bot.options.base_url"),
        ({"base_url": "http://127.0.0.1:8000/v1/chat/completions"}, "bot.options.base_url"),
        ({"model": None}, "bot.options.model"),
        ({"model": ""}, "bot.options.model"),
        ({"temperature": 2.5}, "bot.options.temperature"),
        ({"temperature": True}, "bot.options.temperature"),
        ({"max_tokens": 0}, "bot.options.max_tokens"),
        ({"top_k": 11}, "bot.options.top_k"),
        ({"connect_timeout": 0}, "bot.options.connect_timeout"),
        ({"first_token_timeout": 20, "total_timeout": 10}, "bot.options.first_token_timeout"),
        ({"extra_body": {"stream": False}}, "bot.options.extra_body"),
        ({"modle": "qwen"}, "bot.options.modle"),
        ({"faq": {"threshold": 2}}, "bot.options.faq.threshold"),
        ({"faq": {"knowlege_base": "kb.yaml"}}, "bot.options.faq.knowlege_base"),
        ({"faq": "kb.yaml"}, "bot.options.faq"),
    ],
)
def test_bad_options_name_their_key(fake: FakeOpenAI, change: dict[str, Any], key: str) -> None:
    opts = {k: v for k, v in {**options(fake), **change}.items() if v is not None}
    with pytest.raises(ConfigError) as caught:
        build_bot("llm", opts)
    assert caught.value.key == key
    assert str(caught.value).startswith(f"{key}: ")


@pytest.mark.parametrize(("name", "value"), [("api_key", KEY), ("api_key_env", KEY)])
def test_a_key_in_the_config_is_refused_without_echoing_it(fake: FakeOpenAI, name: str, value: str) -> None:
    with pytest.raises(ConfigError) as caught:
        build_bot("llm", {**options(fake), name: value})
    assert caught.value.key == f"bot.options.{name}" and KEY not in str(caught.value)


async def test_check_validates_the_faq_knowledge_base_under_its_key(fake: FakeOpenAI, tmp_path: Path) -> None:
    bot = build_bot("llm", options(fake, faq={"knowledge_base": str(tmp_path / "missing.yaml")}))
    with pytest.raises(ConfigError) as caught:
        await bot.check()
    assert caught.value.key == "bot.options.faq.knowledge_base"
    assert "missing.yaml" in str(caught.value)


# ---------------------------------------------------------------- the stream's parser

BODY = (
    "\ufeff: keep-alive\r\n\r\n"
    'data: {"choices": [{"delta": {"content": "挂失"}}]}\r\n\r\n'
    "event: message\nid: 7\nretry: 1000\n"
    'data:{"choices": [{"delta": {"content": "€🙂"}}]}\n'  # no blank line between events: still two
    "data: [DONE]\r\n\r\n"
).encode()
PAYLOADS = ['{"choices": [{"delta": {"content": "挂失"}}]}', '{"choices": [{"delta": {"content": "€🙂"}}]}', "[DONE]"]


def test_sse_decoder_survives_every_chunk_boundary() -> None:
    for cut in range(len(BODY) + 1):
        decoder = SseDecoder()
        assert [*decoder.feed(BODY[:cut]), *decoder.feed(BODY[cut:]), *decoder.finish()] == PAYLOADS, cut
    decoder = SseDecoder()
    assert [p for i in range(len(BODY)) for p in decoder.feed(BODY[i : i + 1])] == PAYLOADS


def test_sse_decoder_reads_bare_cr_line_ends_and_a_last_line_without_one() -> None:
    decoder = SseDecoder()
    assert decoder.feed(b"data: 1\rdata: 2\r") == ["1"]  # the last CR may be half of a CRLF
    assert decoder.feed(b"data: 3") == ["2"]
    assert decoder.finish() == ["3"]


@pytest.mark.parametrize(
    "data", [b"data: \xff\xfe\n", b"<html>\n", b'{"choices": []}\n', b"data: " + b"x" * (MAX_LINE + 1)]
)
def test_sse_decoder_refuses_what_is_not_an_event_stream(data: bytes) -> None:
    with pytest.raises(LlmError) as caught:
        SseDecoder().feed(data)
    assert caught.value.kind == "llm_malformed"


@pytest.mark.parametrize(
    ("payload", "expected"),
    [
        ('{"choices": []}', Chunk()),  # a usage chunk
        ('{"choices": [{"delta": {"role": "assistant", "content": null}}]}', Chunk()),
        ('{"choices": [{"delta": {"reasoning_content": "嗯"}}]}', Chunk()),  # thinking is not the answer
        ('{"choices": [{"finish_reason": "stop"}]}', Chunk(finish_reason="stop")),
        ('{"choices": [{"delta": {"content": "好"}, "finish_reason": "length"}]}', Chunk("好", "length")),
    ],
)
def test_parse_chunk_reads_what_endpoints_send(payload: str, expected: Chunk) -> None:
    assert parse_chunk(payload) == expected


@pytest.mark.parametrize(
    ("payload", "kind"),
    [
        ("[1]", "llm_malformed"),
        ('{"choices": {}}', "llm_malformed"),
        ('{"choices": [{"delta": {}, "finish_reason": 3}]}', "llm_malformed"),
        ('{"error": {"message": "x"}}', "llm_http_error"),
    ],
)
def test_parse_chunk_refuses_garbage(payload: str, kind: str) -> None:
    with pytest.raises(LlmError) as caught:
        parse_chunk(payload)
    assert caught.value.kind == kind


# ---------------------------------------------------------------- through the socket


async def test_end_to_end_through_the_websocket(fake: FakeOpenAI, aiohttp_client: Any) -> None:
    app = web.Application()
    bot_section = {"name": "llm", "timeout": 8, "options": options(fake)}
    setup(app, make_settings(bot=bot_section))
    client = await aiohttp_client(app)
    fake.script(*answer("您好，", "请立即挂失。"))
    fake.script(status=500)
    async with client.ws_connect("/ws") as ws:
        await receive_json(ws)  # the greeting
        await ws.send_json({"text": f"{QUESTION}，卡号 {CARD}"})
        first = await receive_until(ws, "reply")
        await ws.send_json({"text": QUESTION})
        second = await receive_until(ws, "reply")
    assert first["msg"].startswith("您好，请立即挂失。\n\n参考：《") and first["intent"] == "card_lost_report"
    assert second["msg"] != first["msg"] and "参考：" not in second["msg"]  # the FAQ answer
    # The second request carries the first exchange, masked, as context.
    history = fake.requests[1].body["messages"][1:-1]
    assert history[0] == {"role": "user", "content": f"{QUESTION}，卡号 **** **** **** 7878"}
    assert history[1] == {"role": "assistant", "content": "您好，请立即挂失。"}  # without the citation
    metrics = await (await client.get("/metrics")).text()
    assert 'chatbot_bot_events_total{event="llm_answered"} 1.0' in metrics
    assert 'chatbot_bot_events_total{event="llm_http_error"} 1.0' in metrics
    assert 'chatbot_bot_events_total{event="llm_timeout"} 0.0' in metrics
