"""Text normalisation for Chinese FAQ matching: width, case, traditional script, stray variants."""

from __future__ import annotations

import functools
import re
import unicodedata
from typing import TYPE_CHECKING, Protocol

from .vernacular import rewrite

if TYPE_CHECKING:
    from .pinyin import SentenceReader

# Characters that opencc's t2s table leaves as the less common simplified variant, or that
# customers commonly type interchangeably; mapping them keeps one spelling per word.
_CHAR_FIXES = str.maketrans(
    {
        "帐": "账",  # 帳戶 -> 帐户 in opencc; banks write 账户/账单/转账
        "〇": "0",
        "\u3000": " ",
    }
)
_SPACES = re.compile(r"\s+")
# Pinyin-input slips customers make in the words that carry the intent (same or near sound,
# picked from the wrong candidate). Rewriting them lets words and n-grams match, not only
# unigrams. Only pairs whose left side is no word here and cannot straddle two
# (自动结算, 知道刷卡, 取款几次 must stay as they are).
_TYPOS = {
    "咔": "卡",  # 银行咔, 信用咔
    "密马": "密码",
    "秘码": "密码",
    "蜜码": "密码",
    "米码": "密码",
    "冻洁": "冻结",
    "冻接": "冻结",
    "激火": "激活",
    "急活": "激活",
    "挂实": "挂失",
    "卦失": "挂失",
    "挂湿": "挂失",
    "解所": "解锁",
    "余颚": "余额",
    "余鹅": "余额",
    "盗涮": "盗刷",
    "验正码": "验证码",
    "严证码": "验证码",
    "云闪fu": "云闪付",
    "云闪服": "云闪付",
    "云善付": "云闪付",
    "运闪付": "云闪付",
    "咭": "卡",  # 咭 is the Cantonese/HK spelling of 卡
    "年废": "年费",
    "积份": "积分",
    "人功": "人工",
    "扫吗": "扫码",  # 扫吗支付; "要扫吗" is about scanning too
    "扫妈": "扫码",
    "二维吗": "二维码",
}
_TYPO_PATTERN = re.compile("|".join(sorted(map(re.escape, _TYPOS), key=len, reverse=True)))


class _Converter(Protocol):
    def convert(self, text: str) -> str: ...


@functools.cache
def _t2s() -> _Converter:
    """Build the traditional-to-simplified converter once (its tables take a few ms to load)."""
    import opencc  # type: ignore[import-untyped]  # no stubs; imported lazily to keep import light

    converter: _Converter = opencc.OpenCC("t2s")
    return converter


def normalize(text: str, reader: SentenceReader | None = None) -> str:
    """Return `text` in half-width, lower case, Simplified Chinese, with single spaces; with a
    knowledge base's pinyin `reader`, pinyin sentences and sound-alike slips read as its words."""
    # NFKC folds full-width ASCII (ＡＴＭ, ３) and compatibility forms to their plain form.
    folded = unicodedata.normalize("NFKC", text).casefold()
    simplified = _t2s().convert(folded).translate(_CHAR_FIXES)
    simplified = _TYPO_PATTERN.sub(lambda m: _TYPOS[m.group()], simplified)
    simplified = rewrite(simplified, reader)
    return _SPACES.sub(" ", simplified).strip()
