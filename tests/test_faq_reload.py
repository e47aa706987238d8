"""Reloading the knowledge base: good changes are picked up, broken files keep the old base."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from chatbot_server.bots import Turn, build_bot
from chatbot_server.bots.faq import FaqBot

KB = """\
entries:
  - id: card_lost_report
    questions: [银行卡丢了怎么办, 怎么挂失银行卡]
    answer: 旧答案：请立即挂失。
  - id: human_agent
    questions: [转人工]
    answer: 正在转人工。
  - id: out_of_scope
    questions: [今天天气怎么样]
    answer: 抱歉，超出范围。
"""
NEW_ANSWER = KB.replace("旧答案：请立即挂失。", "新答案：请拨打发卡行客服电话挂失。")
BROKEN = KB.replace("    answer: 正在转人工。\n", "    answer: [正在转人工\n")


@pytest.fixture
def kb_path(tmp_path: Path) -> Path:
    path = tmp_path / "kb.yaml"
    path.write_text(KB, encoding="utf-8")
    return path


@pytest.fixture
async def bot(kb_path: Path) -> AsyncIterator[FaqBot]:
    made = build_bot("faq", {"knowledge_base": str(kb_path), "watch": False})
    assert isinstance(made, FaqBot)
    await made.start()
    yield made
    await made.close()


async def lost_card_answer(bot: FaqBot) -> str:
    return (await bot.answer(Turn("c", "我的银行卡丢了"))).text


async def test_reload_picks_up_a_good_change(bot: FaqBot, kb_path: Path) -> None:
    assert await lost_card_answer(bot) == "旧答案：请立即挂失。"
    kb_path.write_text(NEW_ANSWER, encoding="utf-8")
    await bot.reload()
    assert bot.generation == 2
    assert await lost_card_answer(bot) == "新答案：请拨打发卡行客服电话挂失。"


async def test_reload_of_a_broken_file_keeps_the_old_base_and_logs_the_line(
    bot: FaqBot, kb_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    kb_path.write_text(BROKEN, encoding="utf-8")
    with caplog.at_level(logging.ERROR, logger="chatbot_server.bots.faq"):
        await bot.reload()
    assert bot.generation == 1
    assert await lost_card_answer(bot) == "旧答案：请立即挂失。"
    errors = [r for r in caplog.records if r.name == "chatbot_server.bots.faq" and r.levelno == logging.ERROR]
    assert len(errors) == 1
    assert f"{kb_path}, line " in errors[0].getMessage()
    assert "keeping the previous one" in errors[0].getMessage()


async def test_reload_after_the_file_disappears_keeps_the_old_base(
    bot: FaqBot, kb_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    kb_path.unlink()
    with caplog.at_level(logging.ERROR, logger="chatbot_server.bots.faq"):
        await bot.reload()
    assert "cannot read knowledge base" in caplog.text
    assert await lost_card_answer(bot) == "旧答案：请立即挂失。"


async def test_watcher_reloads_a_changed_file_and_skips_a_broken_one(
    kb_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    bot = build_bot("faq", {"knowledge_base": str(kb_path), "watch": True, "watch_interval": 0.02})
    assert isinstance(bot, FaqBot)
    await bot.start()
    try:
        with caplog.at_level(logging.ERROR, logger="chatbot_server.bots.faq"):
            # Writes happen between the watcher's polls (same event loop), so it never sees half a file.
            kb_path.write_text(BROKEN, encoding="utf-8")
            async with asyncio.timeout(5):
                await bot.wait_for_reload_attempts(1)
            assert bot.generation == 1
            assert "keeping the previous one" in caplog.text
            kb_path.write_text(NEW_ANSWER, encoding="utf-8")
            async with asyncio.timeout(5):
                await bot.wait_for_generation(2)
        assert await lost_card_answer(bot) == "新答案：请拨打发卡行客服电话挂失。"
        assert caplog.text.count("keeping the previous one") == 1  # a rejected file is logged once
        assert bot.reload_attempts == 2  # the broken file was tried once, not every poll
    finally:
        await bot.close()
    assert not bot.watching


async def test_close_cancels_the_watcher(kb_path: Path) -> None:
    bot = build_bot("faq", {"knowledge_base": str(kb_path), "watch": True, "watch_interval": 0.02})
    assert isinstance(bot, FaqBot)
    await bot.start()
    assert bot.watching
    await bot.close()
    assert not bot.watching
    await bot.close()  # closing twice is harmless
