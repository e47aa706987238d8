"""Pinyin fragments and dialect words are rewritten to the Mandarin words both stages know."""

from __future__ import annotations

import pytest

from chatbot_server.bots.faq.normalize import normalize


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("卡丢了guashi要去网点吗", "卡丢了挂失要去网点吗"),
        ("yue chaxun", "余额查询"),  # neighbouring words join up as typed characters would
        ("xiao e guanli fei 能免吗", "小额管理费 能免吗"),  # syllables typed apart
        ("Ti'e shenqing bei ju le", "提额申请 bei ju le"),  # unknown syllables stay
        ("tunka le zenmeban", "吞卡 le 怎么办"),
        ("wo de ka diu le", "wo de 卡丢了"),  # situations, not only service names
        ("atm li ka bei tun le", "atm li ka 被吞 le"),
        ("xie xie ni", "谢谢 ni"),  # pleasantries too
    ],
)
def test_pinyin_fragments_of_domain_words_become_the_words(text: str, expected: str) -> None:
    assert normalize(text) == expected


@pytest.mark.parametrize(
    "text",
    ["the atm kept my card", "i need to tie up a loose end", "education fees", "can you help me, please"],
)
def test_english_passes_untouched(text: str) -> None:
    # "tie" is 提额 only as "ti'e"; "edu" inside "education" is part of a longer word.
    assert normalize(text) == text


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("櫃員機食咗我張卡，點算？", "柜员机食了我张卡,怎么办?"),
        ("我都冇用過張卡，點解會有一筆消費？", "我都没用过张卡,为什么会有一笔消费?"),
        ("張卡唔見咗，點樣掛失啊", "张卡不见了,怎么挂失啊"),
        ("我卡里头还有好多钱嘛，咋个查", "我卡里头还有好多钱嘛,怎么查"),
    ],
)
def test_cantonese_and_south_western_words_become_mandarin(text: str, expected: str) -> None:
    assert normalize(text) == expected
