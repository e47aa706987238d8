"""Rank knowledge-base intents for a question: BM25 over words, synonyms and character n-grams."""

from __future__ import annotations

import functools
import math
import re
from collections import Counter
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass

import numpy as np

from . import segment
from .knowledge import KnowledgeBase
from .normalize import normalize
from .pinyin import SentenceReader
from .vernacular import PINYIN

# Messages whose normalised form an index keeps: the steps matching one message share it.
_NORMALIZED_CACHE = 256
_CJK_RUN = re.compile(r"[\u3400-\u9fff]+")
_WORDISH = re.compile(r"[\w\u3400-\u9fff]")
# Function words that carry no intent; their characters still take part in the n-grams.
_STOPWORD_TEXT = (
    "的 了 吗 呢 啊 吧 呀 哦 嘛 么 我 你 您 他 她 它 我们 你们 是 在 有 和 与 或 就 都 也 还 要 想 请 请问 "
    "一下 一个 这个 那个 这 那 个 能 会 可以 能不能 可不可以 怎么 怎样 怎么样 如何 什么 为什么 哪 哪里 "
    "多少 几 给 把 被 让 对 又 再 很 太 了解 咨询 问 问下 帮 帮我 麻烦 现在 刚刚 刚才 今天 然后 但是 "
    "可是 因为 所以 如果 已经 还是 一直 这样 那样 办 怎么办 咋 咋办 咋整 弄 搞 下 好 吧 嗯 哈"
)
# Customers mix English into Chinese ("my card got locked 怎么办"); its function words are as
# empty as 的/了, and as unseen features they would count against confidence at full weight.
_ENGLISH_STOPWORD_TEXT = (
    "a an the i me my mine you your we our it its is am are was were be been being do does did to of in on "
    "at for from with by and or but so if not no can could would should will shall may might must have has "
    "had get got how what why when where which who whom this that these those there here please pls plz "
    "help want need let just about any some up out now today yesterday again still also very too much "
    "use using used card cards bank all s t ll re ve d"
)
STOPWORDS = frozenset(_STOPWORD_TEXT.split()) | frozenset(_ENGLISH_STOPWORD_TEXT.split())
# Particles and colloquial filler: a bigram or character with one of these that no question has
# ("了咋", "咋整", "整") is phrasing, not unknown content, and must not lower the confidence.
FILLER_CHARS = frozenset("的了吗呢啊吧呀哦嘛么咋整弄搞办怎啥哈嗯诶哎呗啦喔哟捏滴")


@dataclass(frozen=True, slots=True)
class RankerParams:
    """Tunable weights of the ranker (chosen on the dev set, see docs/knowledge-base.md)."""

    k1: float = 1.2
    b: float = 0.3
    word_weight: float = 1.0
    synonym_weight: float = 1.0
    bigram_weight: float = 0.4
    unigram_weight: float = 0.3
    keyword_bonus: float = 0.15
    # Confidence blends how much of the query the best question covers with how much of that
    # question the query covers; the latter keeps long stories around a known question confident.
    doc_coverage: float = 0.3
    # An intent whose other questions also match is more likely right than one lucky question.
    second_weight: float = 0.7
    include_titles: bool = True
    # A long story around a question should not dilute its confidence: the query's side of the
    # coverage is capped at this multiple of the largest question's information content.
    query_cap: float = 0.5
    # A query feature no question has counts against confidence as this share of the rarest
    # feature's information: customers' filler words (names, places, amounts) are mostly unseen.
    unseen_weight: float = 1.0


@dataclass(frozen=True, slots=True)
class Match:
    """One ranked intent: `confidence` is in 0..1, `question` the closest example question."""

    intent: str
    confidence: float
    score: float
    question: str


class _SynonymFinder:
    """Finds synonym variants in normalised text and yields their canonical terms.

    Variants are grouped by first character and tried longest first at each position: a
    regex alternation of ~500 variants was 20x slower and dominated indexing time.
    """

    def __init__(self, table: Mapping[str, Iterable[str]]) -> None:
        self.canonical: dict[str, str] = {}
        for canonical, variants in table.items():
            canon = normalize(canonical)
            for variant in (canonical, *variants):
                variant = normalize(variant)
                if variant:
                    self.canonical.setdefault(variant, canon)
        by_first: dict[str, list[str]] = {}
        for variant in sorted(self.canonical, key=len, reverse=True):
            by_first.setdefault(variant[0], []).append(variant)
        self.by_first = by_first

    def find(self, text: str) -> list[str]:
        """Return the canonical term of every variant in `text`, longest match first."""
        return [canonical for canonical, _ in self.spans(text)]

    def spans(self, text: str) -> list[tuple[str, str]]:
        """Return (canonical term, matched variant) for every variant in `text`."""
        found = []
        i, n = 0, len(text)
        while i < n:
            step = 1
            for variant in self.by_first.get(text[i], ()):
                if not text.startswith(variant, i):
                    continue
                end = i + len(variant)
                # ASCII variants ("hi", "pin") must not match inside longer English words.
                if variant.isascii() and (
                    (i > 0 and _is_ascii_alnum(text[i - 1])) or (end < n and _is_ascii_alnum(text[end]))
                ):
                    continue
                found.append((self.canonical[variant], variant))
                step = len(variant)
                break
            i += step
        return found


def _is_ascii_alnum(ch: str) -> bool:
    return ch.isascii() and ch.isalnum()


class Featurizer:
    """Turns text into weighted sparse features: words, canonical synonyms, char n-grams."""

    def __init__(self, synonyms: Mapping[str, Iterable[str]], params: RankerParams) -> None:
        self.synonyms = _SynonymFinder(synonyms)
        self.params = params
        self._weights = {
            "w": params.word_weight,
            "s": params.synonym_weight,
            "b": params.bigram_weight,
            "u": params.unigram_weight,
        }
        segment.add_words(self.synonyms.canonical)

    def features(self, norm: str) -> Counter[str]:
        """Return feature -> count for one text already passed through normalize()."""
        return self.features_and_covered(norm)[0]

    def features_and_covered(self, norm: str) -> tuple[Counter[str], set[str]]:
        """Return the features and the word features that a synonym of the text stands for."""
        feats: Counter[str] = Counter()
        spans = self.synonyms.spans(norm)
        covered = {"w:" + word for _, variant in spans for word in variant.split()}
        # An English word a synonym stands for is only that synonym: kept as a word of its own,
        # "limit" in "transfer limit" would pull towards "credit limit increase".
        english = {word for _, variant in spans if variant.isascii() for word in variant.split()}
        for word in segment.cut(norm):
            if word in STOPWORDS or word in english or not _WORDISH.search(word) or word.isspace():
                continue
            feats["w:" + word.strip()] += 1
        for canonical, _ in spans:
            feats["s:" + canonical] += 1
        for run in _CJK_RUN.findall(norm):
            for i in range(len(run) - 1):
                feats["b:" + run[i : i + 2]] += 1
            for ch in run:
                if ch not in STOPWORDS:
                    feats["u:" + ch] += 1
        return feats, covered

    def weight(self, feature: str) -> float:
        """The weight of a feature's kind (word, synonym, bigram, unigram)."""
        return self._weights[feature[0]]


class Index:
    """An immutable BM25 index over every example question of a knowledge base.

    Postings are numpy arrays so one query costs a bincount, not a Python loop per posting:
    a 1,000-entry base has ~10,000 questions and a query touches ~20,000 postings.
    """

    # Only the best-scoring questions are grouped by intent; the rest cannot reach the top 3.
    CANDIDATES = 64

    def __init__(self, kb: KnowledgeBase, params: RankerParams | None = None) -> None:
        self.kb = kb
        self.params = params or RankerParams()
        table: dict[str, list[str]] = {k: list(v) for k, v in kb.synonyms.items()}
        for entry in kb.entries:
            for canonical, variants in entry.synonyms.items():
                table.setdefault(canonical, []).extend(variants)
        segment.add_words(kw for entry in kb.entries for kw in (normalize(k) for k in entry.keywords))
        self.featurizer = Featurizer(table, self.params)
        self.entries = {entry.id: entry for entry in kb.entries}
        self.keywords = {entry.id: tuple(normalize(k) for k in entry.keywords) for entry in kb.entries}
        self.doc_intent: list[str] = []
        self.doc_text: list[str] = []
        for entry in kb.entries:
            titles = (entry.title,) if self.params.include_titles else ()
            for question in (*entry.questions, *titles):
                self.doc_intent.append(entry.id)
                self.doc_text.append(question)
        normalized = [normalize(text) for text in self.doc_text]
        doc_feats = [self.featurizer.features(text) for text in normalized]
        # This base's words and characters: what customers' pinyin sentences read as, and the
        # domain words sound-alike slips are corrected to. (The questions themselves are indexed
        # as written: a slip among them still matches the same slip uncorrected.)
        self.reader = SentenceReader(
            PINYIN,
            words=(feature[2:] for feats in doc_feats for feature in feats.elements() if feature[0] == "w"),
            texts=normalized,
            domain=[
                *segment.DOMAIN_WORDS,
                *table,
                *(variant for variants in table.values() for variant in variants),
                *(keyword for keywords in self.keywords.values() for keyword in keywords),
            ],
        )
        # `normalize` with this base's reader: the form every stage matches. One message passes
        # several steps (both stages, the vague and other-product checks), each normalising it,
        # and normalising is no longer cheap (pinyin, slips): they share one result.
        self.normalize: Callable[[str], str] = functools.lru_cache(maxsize=_NORMALIZED_CACHE)(
            functools.partial(normalize, reader=self.reader)
        )
        self._build(doc_feats)

    def _build(self, doc_feats: list[Counter[str]]) -> None:
        p = self.params
        weight = self.featurizer.weight
        n = len(doc_feats)
        lengths = [sum(weight(f) * c for f, c in feats.items()) for feats in doc_feats]
        avg = (sum(lengths) / n if n else 0.0) or 1.0
        df: Counter[str] = Counter()
        for feats in doc_feats:
            df.update(feats.keys())
        self.idf = {f: math.log(1.0 + (n - d + 0.5) / (d + 0.5)) for f, d in df.items()}
        # An unseen feature is as informative as the rarest: it counts against confidence.
        self.max_idf = math.log(1.0 + (n + 0.5) / 0.5)
        self.unseen_idf = self.max_idf * p.unseen_weight
        lists: dict[str, tuple[list[int], list[float]]] = {}
        ideals = []
        for doc, (feats, length) in enumerate(zip(doc_feats, lengths, strict=True)):
            norm = p.k1 * (1.0 - p.b + p.b * length / avg)
            ideals.append(sum(weight(f) * self.idf[f] for f in feats))
            for feat, tf in feats.items():
                w = weight(feat) * self.idf[feat] * tf * (p.k1 + 1.0) / (tf + norm)
                docs, weights = lists.setdefault(feat, ([], []))
                docs.append(doc)
                weights.append(w)
        self.postings = {
            f: (np.array(docs, dtype=np.int32), np.array(ws, dtype=np.float64)) for f, (docs, ws) in lists.items()
        }
        # A question without features can never score; the floor only avoids dividing by zero.
        self.doc_ideal = np.maximum(np.array(ideals, dtype=np.float64), 1e-9)
        self.n_docs = n
        self.ideal_cap = float(self.doc_ideal.max()) * p.query_cap if n and p.query_cap > 0 else math.inf

    def rank(self, text: str, limit: int = 3) -> list[Match]:
        """Return up to `limit` intents, best first, each with a confidence in 0..1."""
        norm_text = self.normalize(text)
        feats, covered = self.featurizer.features_and_covered(norm_text)
        ideal = 0.0
        doc_parts = []
        weight_parts = []
        for feat in feats:
            posting = self.postings.get(feat)
            # Words a synonym already stands for ("phone number" -> 预留手机号, 卡锁了 -> 锁卡) are
            # not unknown information: counting them would sink colloquial and mixed questions.
            if posting is None and not FILLER_CHARS.isdisjoint(feat[2:]):
                continue
            if posting is not None or feat not in covered:
                ideal += self.featurizer.weight(feat) * self.idf.get(feat, self.unseen_idf)
            if posting is not None:
                doc_parts.append(posting[0])
                weight_parts.append(posting[1])
        if not doc_parts or ideal <= 0.0:
            return []
        scores = np.bincount(np.concatenate(doc_parts), np.concatenate(weight_parts), minlength=self.n_docs)
        a = self.params.doc_coverage
        conf = (1.0 - a) * np.minimum(1.0, scores / min(ideal, self.ideal_cap)) + a * np.minimum(
            1.0, scores / self.doc_ideal
        )
        if self.n_docs > self.CANDIDATES:
            top = np.argpartition(conf, -self.CANDIDATES)[-self.CANDIDATES :]
        else:
            top = np.arange(self.n_docs)
        # intent -> (best confidence, best doc, second confidence)
        best: dict[str, tuple[float, int, float]] = {}
        for doc in top.tolist():
            value = float(conf[doc])
            if value <= 0.0:
                continue
            intent = self.doc_intent[doc]
            held = best.get(intent)
            if held is None:
                best[intent] = (value, doc, 0.0)
            elif value > held[0]:
                best[intent] = (value, doc, held[0])
            elif value > held[2]:
                best[intent] = (held[0], held[1], value)
        results: list[Match] = []
        for intent, (value, doc, second) in best.items():
            bonus = self.params.keyword_bonus if any(k in norm_text for k in self.keywords[intent]) else 0.0
            confidence = min(1.0, value + bonus)
            key = confidence + self.params.second_weight * second
            results.append(Match(intent, confidence, key, self.doc_text[doc]))
        results.sort(key=lambda m: (-m.score, m.intent))
        return results[:limit]
