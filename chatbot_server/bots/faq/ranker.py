"""Rank knowledge-base intents for a question: BM25 over words, synonyms and character n-grams."""

from __future__ import annotations

import math
import re
from collections import Counter
from collections.abc import Iterable, Mapping
from dataclasses import dataclass

from . import segment
from .knowledge import KnowledgeBase
from .normalize import normalize

_CJK_RUN = re.compile(r"[\u3400-\u9fff]+")
_WORDISH = re.compile(r"[\w\u3400-\u9fff]")
# Function words that carry no intent; their characters still take part in the n-grams.
_STOPWORD_TEXT = (
    "的 了 吗 呢 啊 吧 呀 哦 嘛 么 我 你 您 他 她 它 我们 你们 是 在 有 和 与 或 就 都 也 还 要 想 请 请问 "
    "一下 一个 这个 那个 这 那 个 能 会 可以 能不能 可不可以 怎么 怎样 怎么样 如何 什么 为什么 哪 哪里 "
    "多少 几 给 把 被 让 对 又 再 很 太 了解 咨询 问 问下 帮 帮我 麻烦 现在 刚刚 刚才 今天 然后 但是 "
    "可是 因为 所以 如果 已经 还是 一直 这样 那样 办 怎么办 咋 咋办 咋整 弄 搞 下 好 吧 嗯 哈"
)
STOPWORDS = frozenset(_STOPWORD_TEXT.split())


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


@dataclass(frozen=True, slots=True)
class Match:
    """One ranked intent: `confidence` is in 0..1, `question` the closest example question."""

    intent: str
    confidence: float
    score: float
    question: str


class _SynonymFinder:
    """Finds synonym variants in normalised text and yields their canonical terms."""

    def __init__(self, table: Mapping[str, Iterable[str]]) -> None:
        self.canonical: dict[str, str] = {}
        for canonical, variants in table.items():
            canon = normalize(canonical)
            for variant in (canonical, *variants):
                self.canonical.setdefault(normalize(variant), canon)
        parts = []
        for variant in sorted(self.canonical, key=len, reverse=True):
            piece = re.escape(variant)
            # ASCII variants ("hi", "pin") must not match inside longer English words.
            if variant.isascii():
                piece = rf"(?<![a-z0-9]){piece}(?![a-z0-9])"
            parts.append(piece)
        self.pattern = re.compile("|".join(parts)) if parts else None

    def find(self, text: str) -> list[str]:
        if self.pattern is None:
            return []
        return [self.canonical[m.group(0)] for m in self.pattern.finditer(text)]


class Featurizer:
    """Turns text into weighted sparse features: words, canonical synonyms, char n-grams."""

    def __init__(self, synonyms: Mapping[str, Iterable[str]], params: RankerParams) -> None:
        self.synonyms = _SynonymFinder(synonyms)
        self.params = params
        segment.add_words(self.synonyms.canonical)

    def features(self, text: str) -> Counter[str]:
        """Return feature -> count for one text (normalised here)."""
        norm = normalize(text)
        feats: Counter[str] = Counter()
        for word in segment.cut(norm):
            if word in STOPWORDS or not _WORDISH.search(word) or word.isspace():
                continue
            feats["w:" + word.strip()] += 1
        for canonical in self.synonyms.find(norm):
            feats["s:" + canonical] += 1
        for run in _CJK_RUN.findall(norm):
            for i in range(len(run) - 1):
                feats["b:" + run[i:i + 2]] += 1
            for ch in run:
                if ch not in STOPWORDS:
                    feats["u:" + ch] += 1
        return feats

    def weight(self, feature: str) -> float:
        kind = feature[0]
        p = self.params
        if kind == "w":
            return p.word_weight
        if kind == "s":
            return p.synonym_weight
        if kind == "b":
            return p.bigram_weight
        return p.unigram_weight


class Index:
    """An immutable BM25 index over every example question of a knowledge base."""

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
        doc_feats: list[Counter[str]] = []
        for entry in kb.entries:
            titles = (entry.title,) if self.params.include_titles else ()
            for question in (*entry.questions, *titles):
                self.doc_intent.append(entry.id)
                self.doc_text.append(question)
                doc_feats.append(self.featurizer.features(question))
        self._build(doc_feats)

    def _build(self, doc_feats: list[Counter[str]]) -> None:
        p = self.params
        n = len(doc_feats)
        lengths = [sum(self.featurizer.weight(f) * c for f, c in feats.items()) for feats in doc_feats]
        avg = sum(lengths) / n if n else 1.0
        df: Counter[str] = Counter()
        for feats in doc_feats:
            df.update(feats.keys())
        self.idf = {f: math.log(1.0 + (n - d + 0.5) / (d + 0.5)) for f, d in df.items()}
        # An unseen feature is as informative as the rarest: it counts against confidence.
        self.max_idf = math.log(1.0 + (n + 0.5) / 0.5)
        postings: dict[str, tuple[list[int], list[float]]] = {}
        self.doc_ideal: list[float] = []
        for doc, (feats, length) in enumerate(zip(doc_feats, lengths, strict=True)):
            norm = p.k1 * (1.0 - p.b + p.b * length / avg)
            self.doc_ideal.append(sum(self.featurizer.weight(f) * self.idf[f] for f in feats))
            for feat, tf in feats.items():
                w = self.featurizer.weight(feat) * self.idf[feat] * tf * (p.k1 + 1.0) / (tf + norm)
                docs, weights = postings.setdefault(feat, ([], []))
                docs.append(doc)
                weights.append(w)
        self.postings = postings

    def rank(self, text: str, limit: int = 3) -> list[Match]:
        """Return up to `limit` intents, best first, each with a confidence in 0..1."""
        feats = self.featurizer.features(text)
        if not feats:
            return []
        scores: dict[int, float] = {}
        ideal = 0.0
        for feat in feats:
            weight = self.featurizer.weight(feat)
            ideal += weight * self.idf.get(feat, self.max_idf)
            posting = self.postings.get(feat)
            if posting is None:
                continue
            get = scores.get
            for doc, w in zip(*posting, strict=True):
                scores[doc] = get(doc, 0.0) + w
        norm_text = normalize(text)
        a = self.params.doc_coverage
        # intent -> (best confidence, best doc, second confidence)
        best: dict[str, tuple[float, int, float]] = {}
        for doc, score in scores.items():
            q_cov = score / ideal if ideal > 0 else 0.0
            d_cov = score / self.doc_ideal[doc] if self.doc_ideal[doc] > 0 else 0.0
            conf = (1.0 - a) * q_cov + a * min(1.0, d_cov)
            intent = self.doc_intent[doc]
            held = best.get(intent)
            if held is None:
                best[intent] = (conf, doc, 0.0)
            elif conf > held[0]:
                best[intent] = (conf, doc, held[0])
            elif conf > held[2]:
                best[intent] = (held[0], held[1], conf)
        results: list[Match] = []
        for intent, (conf, doc, second) in best.items():
            bonus = self.params.keyword_bonus if any(k in norm_text for k in self.keywords[intent]) else 0.0
            confidence = min(1.0, conf + bonus)
            key = confidence + self.params.second_weight * second
            results.append(Match(intent, confidence, key, self.doc_text[doc]))
        results.sort(key=lambda m: (-m.score, m.intent))
        return results[:limit]
