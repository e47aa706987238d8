"""Reading whole sentences of toneless pinyin ("wo de ka diu le" -> 我的卡丢了).

Customers type pinyin when the input method is off or a word will not come. The hand table of
`vernacular.PINYIN` knows the domain's key words; this reads the rest of the sentence with the
words and characters the knowledge base uses: a run of pinyin is cut, by dynamic programming,
into the fewest learned pieces, words of two or more syllables before single characters, and
the more frequent word wins a shared spelling (shouji: 手机 over 收集 in a bank's questions).

Readings come from `data/pinyin.txt`: every GB2312 character's toneless readings, generated
from pypinyin (MIT) by `python -m chatbot_server.bots.faq.pinyin_table`. pypinyin itself is no
run-time dependency: importing it holds ~57 MB and 0.4 s per process for what this 64 KB table does.

The same readings correct sound-alike slips of the base's domain words in characters (鱼额 ->
余额, 鸡分 -> 积分): `SentenceReader.correct`.

English must pass untouched ("change pin", "balance"): a run is read only when every word of it
is pinyin and learned words of two or more syllables make up at least half of its syllables, or
every syllable is a learned character.
"""

from __future__ import annotations

import functools
import itertools
import re
from collections import Counter
from collections.abc import Iterable, Mapping
from importlib import resources

from . import segment

TABLE = "pinyin.txt"
# A word whose characters have more reading combinations than this keeps each one's first (most
# common) reading: 32 keys for one word are noise, not coverage.
_MAX_SPELLINGS = 32
# Pieces cost this much: a learned word of several syllables, a learned character, a syllable no
# learned character has (kept as typed). Two characters cost more than one word of two syllables.
_WORD_COST = 1.0
_CHAR_COST = 1.7
_UNKNOWN_COST = 3.0
# A character's other readings are that much rarer than its first (的 is de, seldom di).
_SECONDARY = 0.1
_HANZI = re.compile(r"[\u4e00-\u9fff]+")
# Domain words corrected from sound-alike slips have two to four characters.
_LONGEST_SLIP = 4
# Characters in nearly every message: keeping one of them is no sign of a slip (写了 is no 谢了,
# 小卡 no 销卡).
_WEAK_CHARS = frozenset("了的吗呢吧啊呀么卡是不我你他有在就也都")


@functools.cache
def readings() -> Mapping[str, tuple[str, ...]]:
    """Character -> toneless readings, most common first (loaded once per process)."""
    text = resources.files(__package__).joinpath("data", TABLE).read_text(encoding="utf-8")
    table: dict[str, tuple[str, ...]] = {}
    for line in text.splitlines():
        if line.startswith("#"):
            continue
        char, *spellings = line.split()
        table[char] = tuple(spellings)
    return table


@functools.cache
def syllables() -> frozenset[str]:
    """Every toneless syllable of the table."""
    return frozenset(s for spellings in readings().values() for s in spellings)


def is_pinyin(word: str) -> bool:
    """Whether `word` (letters, maybe with apostrophes) splits into toneless syllables."""
    letters = word.replace("'", "")
    if not letters.isascii() or not letters.isalpha():
        return False
    known, longest = syllables(), 6
    ends = [True] + [False] * len(letters)
    for start in range(len(letters)):
        if ends[start]:
            for end in range(start + 1, min(len(letters), start + longest) + 1):
                if letters[start:end] in known:
                    ends[end] = True
    return ends[-1]


def spellings(word: str) -> list[str]:
    """The toneless spellings of a word of GB2312 characters (none for other text)."""
    table = readings()
    per_char = [table.get(char, ()) for char in word]
    if not all(per_char):
        return []
    combinations = 1
    for options in per_char:
        combinations *= len(options)
    if combinations > _MAX_SPELLINGS:
        per_char = [options[:1] for options in per_char]
    return ["".join(parts) for parts in itertools.product(*per_char)]


@functools.cache
def first_readings() -> Mapping[str, str]:
    """Character -> its most common reading (what an input method offers first)."""
    return {char: spellings[0] for char, spellings in readings().items() if spellings}


def _spoken(word: str) -> str | None:
    """The word's spelling with each character's most common reading, or None for characters
    outside the table."""
    first = first_readings()
    parts = [first.get(char, "") for char in word]
    return "".join(parts) if all(parts) else None


def _single_characters(words: list[str]) -> set[int]:
    """Offsets of the characters the segmenter left as words of their own."""
    offsets, at = set(), 0
    for word in words:
        if len(word) == 1:
            offsets.add(at)
        at += len(word)
    return offsets


class SentenceReader:
    """Reads pinyin runs with one knowledge base's words; a fixed table always wins.

    Built once with the index and never changed, so the worker threads that answer share it freely.
    """

    def __init__(
        self, fixed: Mapping[str, str], words: Iterable[str], texts: Iterable[str], domain: Iterable[str]
    ) -> None:
        """`words`: the base's segmented words; `texts`: its normalised questions (for characters);
        `domain`: the words a slip of the input method is corrected to (keywords, synonyms)."""
        self._words = Counter(part for word in words for part in _HANZI.findall(word) if len(part) > 1)
        self._chars = Counter(char for text in texts for char in text if "\u4e00" <= char <= "\u9fff")
        spelled: dict[str, tuple[str, float]] = {}
        for word, count in self._words.items():
            for key in spellings(word):
                if count > spelled.get(key, ("", 0.0))[1]:
                    spelled[key] = (word, count)
        self._by_key = {key: word for key, (word, _) in spelled.items()}
        self._by_key |= {key.replace("'", ""): word for key, word in fixed.items()}
        self._longest = max(map(len, self._by_key), default=0)
        table = readings()
        chars: dict[str, tuple[str, float]] = {}
        for char, count in self._chars.items():
            for n, key in enumerate(table.get(char, ())):
                weight = count if n == 0 else count * _SECONDARY
                if weight > chars.get(key, ("", 0.0))[1]:
                    chars[key] = (char, weight)
        self._char_by_key = {key: char for key, (char, _) in chars.items()}
        self._domain: dict[str, str] = {}
        self._domain_words: set[str] = set()
        for word in domain:
            spoken = _spoken(word) if _HANZI.fullmatch(word) and 2 <= len(word) <= _LONGEST_SLIP else None
            if spoken is not None:
                self._domain_words.add(word)
                # Two words that sound alike: no telling which one a slip meant.
                self._domain[spoken] = word if self._domain.get(spoken, word) == word else ""

    def correct(self, text: str) -> str:
        """Replace sound-alike slips of domain words (鱼额 -> 余额, 鸡分 -> 积分, 年废 -> 年费).

        Only characters the segmenter could not join into a word are candidates (几分钟, 小费 and
        要是 stay), and a slip keeps at least one character of its word: the input method offers
        the right syllables, the customer picks a wrong candidate for one of them.
        """
        if not self._domain:
            return text
        first = first_readings()
        spoken = [first.get(char, "") for char in text]
        alone: set[int] | None = None  # segmented only once a candidate turns up: seldom
        out, done, i = [], 0, 0
        while i < len(text) - 1:
            for size in range(min(_LONGEST_SLIP, len(text) - i), 1, -1):
                syllables = spoken[i : i + size]
                if not all(syllables):
                    continue
                word = self._domain.get("".join(syllables), "")
                if not word or not self._is_slip(text[i : i + size], word):
                    continue
                if alone is None:
                    alone = _single_characters(segment.cut(text))
                if all(n in alone for n in range(i, i + size)):
                    out += [text[done:i], word]
                    done = i = i + size
                    break
            else:
                i += 1
        return "".join([*out, text[done:]])

    def _is_slip(self, typed: str, word: str) -> bool:
        """Whether `typed` reads as a slip for `word`: a character kept, the others rarer in the
        knowledge base than the ones they stand for (时卡 is no slip for 食卡: 时 is the common one)."""
        if typed in self._domain_words or typed in self._words:
            return False
        pairs = [(a, b) for a, b in zip(typed, word, strict=True) if a != b]
        kept = {a for a, b in zip(typed, word, strict=True) if a == b}
        return bool(kept - _WEAK_CHARS) and all(self._chars[a] < self._chars[b] for a, b in pairs)

    def read(self, run: str) -> str | None:
        """The hanzi for a run of space-separated pinyin words, or None to leave it as typed."""
        words = run.split()
        if not words or not all(is_pinyin(word) for word in words):
            return None
        by_key, chars, longest = self._by_key, self._char_by_key, self._longest
        known = syllables()
        letters = "".join(words).replace("'", "")
        size = len(letters)
        # Where the customer separated syllables (a space, an apostrophe): "kan a" is kan + a, never
        # ka + na. A piece may span such a place only as a word whose syllables split there.
        typed_breaks, at = set(), 0
        for part in " ".join(words).replace("'", " ").split():
            at += len(part)
            typed_breaks.add(at)
        # best[i]: (cost, pieces covering letters[:i]); a piece is (text, syllables it stands for, is_word).
        best: list[tuple[float, list[tuple[str, int, bool]]] | None] = [None] * (size + 1)
        best[0] = (0.0, [])
        for start in range(size):
            here = best[start]
            if here is None:
                continue
            for end in range(start + 1, min(size, start + max(longest, 6)) + 1):
                piece = letters[start:end]
                options: list[tuple[float, str, bool]] = []
                if piece in by_key:
                    options.append((_WORD_COST, by_key[piece], True))
                if piece in chars:
                    options.append((_CHAR_COST, chars[piece], False))
                elif piece in known:
                    options.append((_UNKNOWN_COST, piece, False))
                inside = [b for b in typed_breaks if start < b < end]
                if inside:
                    options = [
                        option
                        for option in options
                        if option[2]
                        and all(is_pinyin(piece[: b - start]) and is_pinyin(piece[b - start :]) for b in inside)
                    ]
                for cost, text, is_word in options:
                    total = here[0] + cost
                    there = best[end]
                    if there is None or total < there[0]:
                        best[end] = (total, [*here[1], (text, len(text) if is_word else 1, is_word)])
        done = best[size]
        if done is None:
            return None
        pieces = done[1]
        syllable_count = sum(count for _, count, _ in pieces)
        in_words = sum(count for _, count, is_word in pieces if is_word)
        all_hanzi = all(_HANZI.fullmatch(text) for text, _, _ in pieces)
        if in_words == 0 or not (2 * in_words >= syllable_count or all_hanzi):
            return None
        return "".join(text for text, _, _ in pieces)
