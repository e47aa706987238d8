"""Text normalisation for Chinese FAQ matching: width, case, traditional script, stray variants."""

from __future__ import annotations

import functools
import re
import unicodedata
from typing import Protocol

# Characters that opencc's t2s table leaves as the less common simplified variant, or that
# customers commonly type interchangeably; mapping them keeps one spelling per word.
_CHAR_FIXES = str.maketrans({
    "帐": "账",  # 帳戶 -> 帐户 in opencc; banks write 账户/账单/转账
    "〇": "0",
    "\u3000": " ",
})
_SPACES = re.compile(r"\s+")


class _Converter(Protocol):
    def convert(self, text: str) -> str: ...


@functools.cache
def _t2s() -> _Converter:
    """Build the traditional-to-simplified converter once (its tables take a few ms to load)."""
    import opencc  # type: ignore[import-untyped]  # no stubs; imported lazily to keep import light

    converter: _Converter = opencc.OpenCC("t2s")
    return converter


def normalize(text: str) -> str:
    """Return `text` in half-width, lower case, Simplified Chinese, with single spaces."""
    # NFKC folds full-width ASCII (ＡＴＭ, ３) and compatibility forms to their plain form.
    folded = unicodedata.normalize("NFKC", text).casefold()
    simplified = _t2s().convert(folded).translate(_CHAR_FIXES)
    return _SPACES.sub(" ", simplified).strip()
