"""The process-wide jieba segmenter: loaded once, quiet, extended with domain words."""

from __future__ import annotations

import logging
import threading
import warnings
from collections.abc import Iterable

with warnings.catch_warnings():
    # jieba imports pkg_resources, which newer setuptools flags as deprecated.
    warnings.simplefilter("ignore")
    import jieba  # type: ignore[import-untyped]  # no stubs published

# Words jieba's general dictionary splits apart; keeping them whole makes them strong features.
DOMAIN_WORDS = (
    "云闪付",
    "挂失",
    "盗刷",
    "提额",
    "调额",
    "闪付",
    "免密",
    "小额免密",
    "免密免签",
    "境外",
    "取现",
    "分期",
    "年费",
    "积分",
    "验证码",
    "预留手机号",
    "冻结",
    "解冻",
    "锁卡",
    "解锁",
    "激活",
    "开卡",
    "换卡",
    "补卡",
    "磁条卡",
    "芯片卡",
    "拒付",
    "退款",
    "转账",
    "限额",
    "付款码",
    "收款码",
    "二维码",
    "人工客服",
    "转人工",
    "货币转换费",
    "动态货币转换",
    "账户管理费",
    "小额账户管理费",
    "止付",
    "非柜面",
    "临时额度",
    "固定额度",
    "最低还款",
    "账单分期",
    "银联卡",
    "银联",
    "信用卡",
    "借记卡",
    "储蓄卡",
    "手机银行",
    "网银",
    "发卡行",
    "跨行",
    "到账",
    "未到账",
    "扣款",
    "消费",
    "外币",
    "applepay",
    "华为pay",
    "三星pay",
    "小米pay",
    "手机pay",
    "快捷支付",
    "网上支付",
    "司法冻结",
)

_lock = threading.Lock()
_tokenizer: jieba.Tokenizer | None = None
_added: set[str] = set()


def tokenizer() -> jieba.Tokenizer:
    """Return the shared jieba tokenizer, loading its dictionary on first use (thread-safe)."""
    global _tokenizer
    with _lock:
        if _tokenizer is None:
            jieba.setLogLevel(logging.WARNING)  # jieba logs its cache load at DEBUG to stderr
            instance = jieba.Tokenizer()
            instance.initialize()
            for word in DOMAIN_WORDS:
                instance.add_word(word, freq=20000)
            _added.update(DOMAIN_WORDS)
            _tokenizer = instance
        return _tokenizer


def add_words(words: Iterable[str]) -> None:
    """Teach the segmenter extra words (knowledge-base keywords and synonyms), each once."""
    seg = tokenizer()
    # Drawn before the lock: a generator that normalises (and so segments) would wait on it forever.
    pending = list(words)
    with _lock:
        for word in pending:
            # jieba only keeps dictionary words made of CJK or alphanumerics intact; skip the rest.
            if word and word not in _added and len(word) > 1 and " " not in word:
                seg.add_word(word, freq=20000)
                _added.add(word)


def cut(text: str) -> list[str]:
    """Segment already-normalised text into words (no HMM: unknown typos stay as characters)."""
    words: list[str] = tokenizer().lcut(text, HMM=False)
    return words
