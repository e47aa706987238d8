"""Knowledge-base files and bot options are validated with errors naming the key, file and line."""

from __future__ import annotations

from pathlib import Path

import pytest

from chatbot_server.bots import BotContext, build_bot
from chatbot_server.bots.faq import FaqBot
from chatbot_server.bots.faq.knowledge import KnowledgeBaseError, load_knowledge_base
from chatbot_server.bots.faq.options import DEFAULT_KNOWLEDGE_BASE
from chatbot_server.errors import ConfigError

PROTOCOL_INTENTS = {
    "card_lost_report",
    "card_activation",
    "card_unlock_pin_locked",
    "pin_reset",
    "card_replacement",
    "balance_inquiry",
    "transaction_dispute",
    "unauthorized_transaction",
    "overseas_card_use_fees",
    "overseas_atm_withdrawal_limit",
    "transfer_limit",
    "transfer_failed_pending",
    "refund_timing",
    "app_registration_binding",
    "qr_code_payment",
    "online_payment_failure",
    "sms_code_not_received",
    "credit_card_repayment",
    "credit_limit_increase",
    "installment",
    "annual_fee",
    "points_rewards",
    "card_fees",
    "contactless_payment",
    "mobile_wallet_binding",
    "merchant_not_accepting",
    "account_frozen",
    "personal_info_update",
    # Added by #19: closing a card, and a card an ATM kept, had no answer of their own.
    "card_cancellation",
    "atm_card_retained",
    "human_agent",
    "greeting",
    "thanks_goodbye",
    "out_of_scope",
}

GOOD = """\
version: 1
synonyms:
  挂失: [卡丢了]
entries:
  - id: card_lost_report
    questions: [银行卡丢了怎么办, 怎么挂失]
    answer: 请立即挂失。
    suggestions: [human_agent]
  - id: human_agent
    questions: [转人工]
    answer: 正在转人工。
  - id: out_of_scope
    questions: [今天天气怎么样]
    answer: 抱歉，超出范围。
"""


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "kb.yaml"
    path.write_text(text, encoding="utf-8")
    return path


def test_shipped_knowledge_base_covers_every_protocol_intent() -> None:
    kb = load_knowledge_base(DEFAULT_KNOWLEDGE_BASE)
    assert {entry.id for entry in kb.entries} == PROTOCOL_INTENTS
    for entry in kb.entries:
        assert len(set(entry.questions)) >= 10, entry.id
        assert entry.answer.strip()
    assert kb.synonyms["挂失"]


def test_good_file_loads(tmp_path: Path) -> None:
    kb = load_knowledge_base(write(tmp_path, GOOD))
    entry = kb.entry("card_lost_report")
    assert entry.questions == ("银行卡丢了怎么办", "怎么挂失")
    assert entry.title == "银行卡丢了怎么办"  # defaults to the first question
    assert entry.line == 5
    assert kb.synonyms == {"挂失": ("卡丢了",)}


@pytest.mark.parametrize(
    ("text", "line", "message"),
    [
        (GOOD.replace("[银行卡丢了怎么办, 怎么挂失]", "[银行卡丢了怎么办, 怎么挂失"), 7, "invalid YAML"),
        (GOOD.replace("    answer: 请立即挂失。\n", ""), 5, "has no 'answer'"),
        (GOOD.replace("questions: [转人工]", "questions: []"), 10, "must not be empty"),
        (GOOD.replace("questions: [转人工]", "questions: 转人工"), 10, "must be a list of strings"),
        (GOOD.replace("answer: 正在转人工。", "answer: [a, b]"), 11, "answer must be a non-empty string"),
        (GOOD.replace("  - id: human_agent", "  - id: card_lost_report"), 9, "duplicate id 'card_lost_report'"),
        (GOOD.replace("  - id: human_agent", "  - id: Human Agent"), 9, "lower_snake_case"),
        (GOOD.replace("suggestions: [human_agent]", "suggestions: [nope]"), 5, "suggestion 'nope'"),
        (
            GOOD.replace("    answer: 请立即挂失。\n", "    answer: 请立即挂失。\n    anser: x\n"),
            8,
            "unknown key 'anser'",
        ),
        (GOOD.replace("  - id: human_agent", "  - id: agent"), 5, "'human_agent' is required"),
        (GOOD.replace("  挂失: [卡丢了]", "  挂失: 卡丢了"), 3, "synonyms.挂失 must be a list"),
        ("", None, "knowledge base is empty"),
    ],
)
def test_bad_file_error_names_file_and_line(tmp_path: Path, text: str, line: int | None, message: str) -> None:
    path = write(tmp_path, text)
    with pytest.raises(KnowledgeBaseError) as info:
        load_knowledge_base(path)
    error = info.value
    assert isinstance(error, ConfigError)
    assert error.key == "bot.options.knowledge_base"
    assert error.line == line
    assert message in str(error)
    assert str(error).startswith(f"{path}, line {line}:" if line else f"{path}:")


def test_missing_file_is_a_config_error(tmp_path: Path) -> None:
    with pytest.raises(KnowledgeBaseError, match="cannot read knowledge base"):
        load_knowledge_base(tmp_path / "absent.yaml")


@pytest.mark.parametrize(
    ("options", "key", "message"),
    [
        ({"threshold": 1.5}, "bot.options.threshold", "must be in [0, 1]"),
        ({"threshold": "high"}, "bot.options.threshold", "must be a number"),
        ({"threshold": True}, "bot.options.threshold", "must be a number"),
        ({"watch": "yes"}, "bot.options.watch", "must be true or false"),
        ({"watch_interval": 0}, "bot.options.watch_interval", "must be in (0, 3600]"),
        ({"knowledge_base": 42}, "bot.options.knowledge_base", "must be a file path"),
        ({"knowledge_base": ""}, "bot.options.knowledge_base", "must be a file path"),
        ({"treshold": 0.5}, "bot.options.treshold", "unknown option"),
    ],
)
def test_bad_options_name_their_key(options: dict[str, object], key: str, message: str) -> None:
    with pytest.raises(ConfigError) as info:
        build_bot("faq", options)
    assert info.value.key == key
    assert message in str(info.value)


def test_relative_knowledge_base_resolves_against_base_dir(tmp_path: Path) -> None:
    write(tmp_path, GOOD)
    bot = build_bot("faq", {"knowledge_base": "kb.yaml", "threshold": 0.5}, BotContext(base_dir=tmp_path))
    assert isinstance(bot, FaqBot)
    assert bot.options.knowledge_base == tmp_path / "kb.yaml"
    assert bot.options.threshold == 0.5
    assert build_bot("faq", {}).options.knowledge_base == DEFAULT_KNOWLEDGE_BASE  # type: ignore[attr-defined]


async def test_check_validates_without_starting(tmp_path: Path) -> None:
    path = write(tmp_path, GOOD)
    bot = build_bot("faq", {"knowledge_base": str(path)})
    await bot.check()
    path.write_text(GOOD.replace("answer: 正在转人工。", "answer:"), encoding="utf-8")
    with pytest.raises(ConfigError, match=r"line 11: .*answer must be a non-empty string"):
        await bot.check()


async def test_start_with_a_bad_file_raises_config_error(tmp_path: Path) -> None:
    path = write(tmp_path, "entries: [")
    bot = build_bot("faq", {"knowledge_base": str(path), "watch": False})
    with pytest.raises(ConfigError, match=r"kb.yaml, line \d+: .*invalid YAML"):
        await bot.start()
    await bot.close()
