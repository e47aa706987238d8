"""Card numbers and ID numbers are masked (last 4 kept); other numbers are left alone."""

from __future__ import annotations

import pytest

from chatbot_server.masking import id_checksum_ok, luhn_ok, mask_sensitive

# Well-known test card numbers (they pass Luhn) and a checksum-valid sample ID number.
UNIONPAY_TEST = "6212345678901232"
VISA_TEST = "4111111111111111"
ID_NUMBER = "11010519491231002X"


def test_checksums() -> None:
    assert luhn_ok(UNIONPAY_TEST) and luhn_ok(VISA_TEST)
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
    "text",
    [
        "转账 5000 元,手机号 13812345678",
        "订单号 6212345678901233 不是卡号(校验不过)",
        "热线 95516",
        "2024年3月15日的交易",
        "没有数字的句子",
    ],
)
def test_other_numbers_are_kept(text: str) -> None:
    assert mask_sensitive(text) == text
