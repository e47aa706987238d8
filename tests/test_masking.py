"""Card numbers and ID numbers are masked (last 4 kept); other numbers are left alone.

The cases under "issue #14" are what customers really typed: each was stored raw, echoed back and
shown to the agent by the masker before (its single greedy match took the neighbouring digits in
and then failed Luhn, and it knew no NBSP, double space, dot or zero-width separators).
"""

from __future__ import annotations

import logging
from typing import Any

import pytest
from aiohttp import web

from chatbot_server import setup
from chatbot_server.masking import id_checksum_ok, luhn_ok, mask_sensitive

from .agent_support import AgentSocket, HandoffBot, agent_section
from .helpers import make_settings, receive_json, receive_until

# Well-known test card numbers (they pass Luhn) and a checksum-valid sample ID number.
UNIONPAY_TEST = "6212345678901232"
VISA_TEST = "4111111111111111"
ID_NUMBER = "11010519491231002X"
CARD = "6222021234567878"  # the card of issue #14 (passes Luhn)
MASKED = "************7878"
ZERO_WIDTH = ["\u200b", "\u200c", "\u200d", "\u2060", "\ufeff"]


def test_checksums() -> None:
    assert luhn_ok(UNIONPAY_TEST) and luhn_ok(VISA_TEST) and luhn_ok(CARD)
    assert not luhn_ok("6212345678901233")
    assert id_checksum_ok(ID_NUMBER)
    assert not id_checksum_ok("110105194912310021")


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        (f"我的卡号是{UNIONPAY_TEST}丢了", "我的卡号是************1232丢了"),
        ("卡号 4111 1111 1111 1111 被锁", "卡号 **** **** **** 1111 被锁"),
        ("卡号 4111-1111-1111-1111", "卡号 ****-****-****-1111"),
        ("卡号４１１１１１１１１１１１１１１１", "卡号************1111"),
        (f"身份证{ID_NUMBER}要改手机号", "身份证" + "*" * 14 + "002X" + "要改手机号"),
    ],
)
def test_sensitive_numbers_are_masked(text: str, expected: str) -> None:
    assert mask_sensitive(text) == expected


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        # The four messages quoted in the issue: a neighbour (expiry, CVV, "第1") broke Luhn.
        (f"{CARD} 12/25", f"{MASKED} 12/25"),
        ("6222 0212 3456 7878 08 月到期", "**** **** **** 7878 08 月到期"),
        (f"CVV 124 {CARD}", f"CVV *** {MASKED}"),
        (f"第1 {CARD}", f"第1 {MASKED}"),
        # Group separators the old pattern did not know.
        ("卡号6222\u00a00212\u00a03456\u00a07878", "卡号****\u00a0****\u00a0****\u00a07878"),
        ("卡号 6222  0212  3456  7878", "卡号 ****  ****  ****  7878"),
        ("卡号6222.0212.3456.7878。", "卡号****.****.****.7878。"),
        ("卡号6222\u30000212\u30003456\u30007878", "卡号****\u3000****\u3000****\u30007878"),
        ("卡号6222\u20090212\u20093456\u20097878", "卡号****\u2009****\u2009****\u20097878"),
        ("卡号6222 - 0212 - 3456 - 7878", "卡号**** - **** - **** - 7878"),
        ("卡号６２２２．０２１２．３４５６．７８７８", "卡号****．****．****．7878"),
        # Both at once: a neighbour and a new separator.
        ("6222\u00a00212\u00a03456\u00a07878\u00a008/25", "****\u00a0****\u00a0****\u00a07878\u00a008/25"),
        # Spaced ID numbers: 6-8-4, 6-4-4-4, arbitrary single separators, an NBSP, a lower-case x.
        ("身份证 110105 19491231 002X", "身份证 ****** ******** 002X"),
        ("身份证 110105 1949 1231 002X", "身份证 ****** **** **** 002X"),
        ("身份证 1101 0519 4912 3100 2X", "身份证 **** **** **** **00 2X"),
        ("身份证110105-19491231-002x。", "身份证******-********-002x。"),
        ("身份证110105\u00a019491231\u00a0002X", "身份证******\u00a0********\u00a0002X"),
    ],
)
def test_what_customers_type_is_masked(text: str, expected: str) -> None:
    assert mask_sensitive(text) == expected


@pytest.mark.parametrize("zw", ZERO_WIDTH)
def test_zero_width_characters_inside_numbers_are_ignored(zw: str) -> None:
    # Between groups, inside a group, and inside an ID number. They are kept (they hide nothing,
    # and masking stays one character for one), but they no longer hide the number.
    assert mask_sensitive(f"卡号6222{zw}0212{zw}3456{zw}7878") == f"卡号****{zw}****{zw}****{zw}7878"
    assert mask_sensitive(f"卡号62220{zw}21234567878") == f"卡号*****{zw}*******7878"
    assert mask_sensitive(f"身份证1101051949{zw}1231002X") == f"身份证**********{zw}****002X"


@pytest.mark.parametrize(
    "text",
    [
        "转账 5000 元,手机号 13812345678",
        "手机号 138 1234 5678,备用 139-1234-5678",
        "两个号码 13812345678 13912345678",
        "订单号 6212345678901233 不是卡号(校验不过)",
        "订单号 6212 3456 7890 1233(分组了也不是卡号)",
        "流水号 2024031512345678901 和 20240315123456789012",  # long numbers that fail Luhn
        "热线 95516",
        "2024年3月15日的交易",
        "2024-03-15 10:30 转账 1234.56 元,余额 98765.43 元",
        "金额 1,234,567.89 元",
        "身份证 110105 19491231 0021(校验位不对)",
        "身份证 110105 19491331 002X(没有13月)",
        "没有数字的句子",
    ],
)
def test_other_numbers_are_kept(text: str) -> None:
    assert mask_sensitive(text) == text


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        (f"还款 5000 {CARD}", f"还款 5000 {MASKED}"),
        (f"100.00 {CARD}", f"100.00 {MASKED}"),  # no card starts with 0: the "00" stays
        (f"13812345678 {CARD}", f"13812345678 {MASKED}"),
    ],
)
def test_neighbouring_numbers_stay_readable(text: str, expected: str) -> None:
    assert mask_sensitive(text) == expected


def test_a_card_glued_to_other_digits_is_one_number() -> None:
    # Documented limit: digits with nothing between them are one number and are never split (most
    # long order numbers contain some Luhn-valid window). Any separator makes the card its own group.
    assert mask_sensitive(f"第1{CARD}") == f"第1{CARD}"
    assert mask_sensitive(f"第1 {CARD}") == f"第1 {MASKED}"


async def test_every_path_gets_the_masked_text(aiohttp_client: Any, caplog: pytest.LogCaptureFixture) -> None:
    """The issue's messages through the server: the echo, the bot's input, the stored transcript,
    the agent console and the agent's own reply never carry the card (and neither do the logs)."""
    caplog.set_level(logging.DEBUG)
    bot = HandoffBot()
    app = web.Application()
    setup(app, make_settings(agents=agent_section()), bot=bot)
    client = await aiohttp_client(app)
    seen: list[dict[str, Any]] = []
    ws = await client.ws_connect("/ws")
    conversation = (await receive_json(ws))["conversation"]
    await ws.send_json({"type": "message", "text": "卡号 6222 0212 3456 7878 08 月到期", "id": "m1"})
    seen.append(await receive_until(ws, "user"))
    seen.append(await receive_until(ws, "reply"))
    await ws.send_json({"type": "handoff"})
    seen.append(await receive_until(ws, "system"))
    li = await AgentSocket.open(client, "li")
    try:
        await li.send(type="claim", conversation=conversation)
        await li.next("claimed")
        transcript = await li.next("transcript")
        seen += transcript["frames"]
        assert [f["msg"] for f in transcript["frames"] if f["type"] == "user"] == ["卡号 **** **** **** 7878 08 月到期"]
        await ws.send_json({"type": "message", "text": f"CVV 124 {CARD}", "id": "m2"})
        seen.append(await receive_until(ws, "user"))
        seen.append(await li.frame_of("user"))
        await li.send(type="reply", conversation=conversation, text=f"您的卡 {CARD} 12/25 已冻结")
        seen.append(await receive_until(ws, "agent"))
    finally:
        await li.close()
        await ws.close()
    texts = [str(f.get("msg", "")) for f in seen] + bot.answered
    assert "**** **** **** 7878 08 月到期" in texts[0] and f"CVV *** {MASKED}" in texts
    assert f"您的卡 {MASKED} 12/25 已冻结" in texts
    for text in [*texts, caplog.text]:
        assert "6222021234" not in text.replace(" ", ""), text


@pytest.mark.parametrize(
    ("text", "masked"),
    [
        ("CVV 124", "CVV ***"),
        ("cvv2: 9876", "cvv2: ****"),
        ("背面安全码是 321", "背面安全码是 ***"),
        ("我的密码是123456", "我的密码是******"),
        ("验证码：834512 请查收", "验证码：****** 请查收"),
        ("PIN 1234", "PIN ****"),
    ],
)
def test_security_codes_pins_and_one_time_codes_are_hidden_whole(text: str, masked: str) -> None:
    # PCI DSS: a card's security code or PIN must not be stored; nor a one-time code shown to an agent.
    assert mask_sensitive(text) == masked


@pytest.mark.parametrize("text", ["shopping 123", "我要改密码", "spin 1234", "密码忘了怎么办", "热线 95516"])
def test_words_near_numbers_are_not_secrets(text: str) -> None:
    assert mask_sensitive(text) == text
