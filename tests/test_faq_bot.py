"""FaqBot answers through the Bot interface: normalised variants, fallback, handoff, Typing first."""

from __future__ import annotations

import re
from collections.abc import AsyncIterator

import pytest

from chatbot_server.bots import BotContext, Reply, Turn, Typing, build_bot
from chatbot_server.bots.faq import FaqBot
from chatbot_server.bots.faq.normalize import normalize
from chatbot_server.errors import BotError


@pytest.fixture
async def bot() -> AsyncIterator[FaqBot]:
    made = build_bot("faq", {"watch": False})
    assert isinstance(made, FaqBot)
    await made.start()
    yield made
    await made.close()


async def ask(bot: FaqBot, text: str) -> Reply:
    return await bot.answer(Turn(conversation_id="c1", text=text))


def test_normalize_folds_width_case_and_traditional_script() -> None:
    assert normalize("ＡＴＭ　取款３次") == "atm 取款3次"
    assert normalize("我的銀行卡遺失了，帳戶怎麼掛失？") == "我的银行卡遗失了,账户怎么挂失?"
    assert normalize("  Apple   PAY ") == "apple pay"


def test_normalize_rewrites_pinyin_typos_but_not_words_that_merely_contain_them() -> None:
    assert normalize("银行咔密马忘了") == "银行卡密码忘了"
    assert normalize("卡被冻洁了，信用咭还能激火吗") == "卡被冻结了,信用卡还能激活吗"
    # 自动结算 holds 动结 and 取款几次 holds 款几: neither may turn into 冻结 / 款机.
    assert normalize("自动结算") == "自动结算"
    assert normalize("取款几次") == "取款几次"


@pytest.mark.parametrize(
    ("text", "intent"),
    [
        ("我的卡不见了，怎么办", "card_lost_report"),
        ("我的銀行卡不見了怎麼掛失", "card_lost_report"),  # traditional characters
        ("ｃａｒｄ丟了要ｂｌｏｃｋ", "card_lost_report"),  # full-width English + traditional
        ("ＰＩＮ輸錯三次卡被鎖了", "card_unlock_pin_locked"),
        ("Apple Pay 怎么加银联卡", "mobile_wallet_binding"),
        ("APPLEPAY绑卡失败", "mobile_wallet_binding"),
        ("在国外ATM一天能取多少现金", "overseas_atm_withdrawal_limit"),
        ("云闪付app怎么绑定银行卡", "app_registration_binding"),
        ("信用卡想提额", "credit_limit_increase"),
        ("银行咔丢了", "card_lost_report"),  # pinyin typo
        ("卡被冻洁了咋整", "account_frozen"),  # typo + colloquial filler
        ("my account is frozen", "account_frozen"),  # English only
        ("transfer limit 能调高吗", "transfer_limit"),  # not credit limit
        ("forgot my PIN 怎么办", "pin_reset"),  # English function words do not dilute it
        ("工商银行app绑不了卡", "app_registration_binding"),  # a bank's own app, not 云闪付
        ("卡丢了guashi要去网点吗", "card_lost_report"),  # pinyin fragment
        ("櫃員機食咗我張卡，點算", "atm_card_retained"),  # Cantonese, traditional
    ],
)
async def test_normalised_variants_reach_the_right_intent(bot: FaqBot, text: str, intent: str) -> None:
    reply = await ask(bot, text)
    assert (reply.intent, reply.fallback) == (intent, False)
    assert 0.0 < reply.confidence <= 1.0


@pytest.mark.parametrize(
    ("text", "intent"),
    [
        ("我想注销这张卡", "card_cancellation"),  # was the 云闪付 registration answer (#19)
        ("信用卡不想用了怎么销户", "card_cancellation"),
        ("I want to close my credit card", "card_cancellation"),
        ("ATM吞卡了", "atm_card_retained"),  # was the PIN-lock answer (#19)
        ("取款机把我的卡吃了不吐出来", "atm_card_retained"),
        ("the ATM swallowed my card", "atm_card_retained"),
        ("密码输错三次卡被锁了", "card_unlock_pin_locked"),  # a locked card is still the PIN-lock answer
        ("云闪付账号怎么注销", "app_registration_binding"),  # closing the app account is the app's
    ],
)
async def test_card_cancellation_and_a_card_kept_by_an_atm_have_answers_of_their_own(
    bot: FaqBot, text: str, intent: str
) -> None:
    reply = await ask(bot, text)
    assert (reply.intent, reply.fallback) == (intent, False)


async def test_the_new_answers_name_the_hotline_defer_to_the_bank_and_say_nin(bot: FaqBot) -> None:
    for intent in ("card_cancellation", "atm_card_retained"):
        answer = bot.knowledge_base.entry(intent).answer
        assert "95516" in answer and "发卡行规定为准" in answer
        assert "您" in answer and "你" not in answer.replace("您", "")


async def test_confident_answer_carries_the_knowledge_base_answer_and_follow_ups(bot: FaqBot) -> None:
    reply = await ask(bot, "银行卡丢了怎么挂失")
    entry = bot.knowledge_base.entry("card_lost_report")
    assert reply.text == entry.answer.strip()
    assert reply.suggestions == tuple(bot.knowledge_base.entry(s).questions[0] for s in entry.suggestions)
    assert not reply.handoff


async def test_unmatched_text_falls_back_with_suggestions_and_the_hotline(bot: FaqBot) -> None:
    reply = await ask(bot, "我想问一下关于卡的事情")
    assert reply.fallback and reply.intent == "out_of_scope"
    assert 1 <= len(reply.suggestions) <= 3
    # The base's English and mixed examples match, but the page offers questions in characters.
    assert not any(re.search("[A-Za-z]", s) for s in reply.suggestions), reply.suggestions
    assert all(s in reply.text for s in reply.suggestions)
    # No agents configured (BotContext's default, the default install): no 转人工 to offer (#16).
    assert "95516" in reply.text and "转人工" not in reply.text
    questions = {q for entry in bot.knowledge_base.entries for q in entry.questions}
    assert set(reply.suggestions) <= questions


async def test_threshold_option_decides_when_to_fall_back() -> None:
    question = "跨行转账到账时间一般要多久呢"
    # The lexical stage's threshold; the semantic stage has its own (tests/test_faq_semantic.py).
    strict = build_bot("faq", {"watch": False, "threshold": 0.99, "semantic": False})
    await strict.start()
    try:
        reply = await strict.answer(Turn("c", question))
        assert isinstance(strict, FaqBot)
        transfer_questions = strict.knowledge_base.entry("transfer_failed_pending").questions
    finally:
        await strict.close()
    assert reply.fallback and reply.intent == "out_of_scope"
    assert 0 < reply.confidence < 0.99
    # Its best guesses are offered, the closest question first.
    assert len(reply.suggestions) == 3
    assert reply.suggestions[0] in transfer_questions


async def test_gibberish_falls_back_without_suggestions(bot: FaqBot) -> None:
    reply = await ask(bot, "zzzz qqqq")
    assert reply.fallback and reply.intent == "out_of_scope"
    assert reply.suggestions == ()
    assert "95516" in reply.text and "转人工" not in reply.text


@pytest.mark.parametrize("text", ["我想问一下关于卡的事情", "zzzz qqqq"])
async def test_with_agents_the_fallback_offers_a_human(text: str) -> None:
    with_agents = build_bot("faq", {"watch": False}, BotContext(agents=True))
    await with_agents.start()
    try:
        reply = await with_agents.answer(Turn("c", text))
    finally:
        await with_agents.close()
    assert isinstance(reply, Reply) and reply.fallback
    assert "回复“转人工”" in reply.text and "95516" in reply.text


async def test_out_of_scope_question_is_declined_not_guessed(bot: FaqBot) -> None:
    reply = await ask(bot, "今天天气怎么样，会下雨吗")
    assert reply.intent == "out_of_scope"
    assert "超出" in reply.text or reply.fallback
    assert "转人工" not in reply.text  # the knowledge base's own answer offers no button that may not exist


async def test_asking_for_a_human_sets_handoff(bot: FaqBot) -> None:
    reply = await ask(bot, "我要转人工客服")
    assert (reply.intent, reply.handoff, reply.fallback) == ("human_agent", True, False)
    other = await ask(bot, "你好")
    assert (other.intent, other.handoff) == ("greeting", False)


async def test_respond_yields_typing_then_the_reply(bot: FaqBot) -> None:
    events = [event async for event in bot.respond(Turn("c", "谢谢，再见"))]
    assert isinstance(events[0], Typing)
    assert len(events) == 2 and isinstance(events[1], Reply)
    assert events[1].intent == "thanks_goodbye"


async def test_very_long_text_is_answered() -> None:
    bot = build_bot("faq", {"watch": False})
    await bot.start()
    try:
        reply = await bot.answer(Turn("c", "我的银行卡丢了怎么挂失" + "啊" * 10_000))
    finally:
        await bot.close()
    assert reply.intent == "card_lost_report"


async def test_answer_before_start_is_a_bot_error() -> None:
    bot = build_bot("faq", {"watch": False})
    with pytest.raises(BotError, match="start"):
        await bot.answer(Turn("c", "你好"))


@pytest.mark.parametrize(
    ("text", "intent"),
    [
        ("你好，我的卡丢了", "card_lost_report"),
        ("在吗？转账没到账", "transfer_failed_pending"),
        ("谢谢，那年费怎么免", "annual_fee"),
        ("你好", "greeting"),
        ("你好，我想咨询一下", "greeting"),
        ("好的谢谢", "thanks_goodbye"),
        # The greeting's words must not turn up inside card questions (早 in 早上起来…).
        ("hello", "greeting"),
        ("早安", "greeting"),
        ("有人在吗", "greeting"),  # a card question sharing one character is no question
        ("你好 余额", "balance_inquiry"),
    ],
)
async def test_a_question_wrapped_in_pleasantries_gets_the_question_answered(
    bot: FaqBot, text: str, intent: str
) -> None:
    reply = await ask(bot, text)
    assert (reply.intent, reply.fallback) == (intent, False)


@pytest.mark.parametrize("text", ["花呗的额度能提高吗", "京东白条这个月还不上了", "my PayPal account is restricted"])
async def test_other_providers_products_get_the_out_of_scope_answer(bot: FaqBot, text: str) -> None:
    # They share every content word with a card question (额度, 还款), but the bank cannot answer them.
    reply = await ask(bot, text)
    assert reply.intent == "out_of_scope"
    assert not reply.fallback
    assert "95516" in reply.text


def test_normalize_rewrites_scan_code_typos() -> None:
    assert normalize("扫吗付款失败") == "扫码付款失败"
    assert normalize("二维吗在哪") == "二维码在哪"
