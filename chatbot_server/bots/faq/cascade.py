"""Two stages: the lexical ranker answers what it is sure of; the semantic stage decides the rest.

The lexical stage (BM25, well under 1 ms) is right nearly every time its confidence is high,
and wrong or without an answer when customers describe their situation in other words ("the
card arrived", "a charge I never made"). Only those unsure questions pay for a sentence
embedding (a few ms), and there the decision blends both signals: the semantic similarity
finds the topic, the lexical confidence keeps exact domain words (年费, 云闪付) counting.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Literal

import numpy as np

from . import segment
from .knowledge import Entry, KnowledgeBase
from .ranker import FILLER_CHARS, STOPWORDS, Index, Match
from .semantic import SemanticIndex

Stage = Literal["lexical", "semantic"]
# Greetings and thanks are formulaic, and the lexical stage is sure of them; what it is unsure
# of is no greeting. Short noise ("zzzz", "??") embeds close to short phrases like "hi".
SOCIAL = frozenset({"greeting", "thanks_goodbye"})
# Its keywords name other providers' products (花呗, 白条, PayPal): a message naming one is out of scope.
OUT_OF_SCOPE = "out_of_scope"
# Above any confidence: a vague question always gets the fallback with its suggestions.
VAGUE_BAR = 1.01
# Words that name what every question is about, not a question ("关于卡的事情", "有个问题").
GENERIC_WORDS = frozenset(
    "卡 银行卡 银联卡 卡片 事情 事儿 事 问题 情况 东西 业务 关于 有关 相关 一些 一点 点 些 个 东东 "
    "something thing things question questions problem issue about".split()
)


@dataclass(frozen=True, slots=True)
class CascadeParams:
    """Thresholds of the two stages (calibrated with `evaluate --calibrate`, docs/knowledge-base.md)."""

    # Lexical-only: below this confidence the bot answers with the fallback.
    threshold: float = 0.2
    # With the semantic stage: a lexical confidence at or above this is final.
    semantic_below: float = 0.6
    # The semantic stage's blend (lexical share, the rest cosine) must reach this to answer.
    semantic_threshold: float = 0.4
    lexical_share: float = 0.3
    # ... and only if it leads the next intent by this much: a tie is no certainty.
    sure_margin: float = 0.05


@dataclass(frozen=True, slots=True)
class Ranking:
    """Ranked intents for one question, the stage that ranked them and the bar they must clear."""

    matches: list[Match]
    stage: Stage
    threshold: float
    # What a fallback offers as "did you mean", if not `matches`: the semantic stage ranks every
    # intent, also for noise ("zzzz"), but only those the words matched too are worth offering.
    suggestions: list[Match] | None = None

    @property
    def offered(self) -> list[Match]:
        """The matches a fallback may offer as suggestions."""
        return self.matches if self.suggestions is None else self.suggestions

    @property
    def top(self) -> Match | None:
        """The best match, if any."""
        return self.matches[0] if self.matches else None


class Matcher:
    """The lexical index and, once warmed up, the semantic index of one knowledge base."""

    def __init__(
        self, index: Index, semantic: SemanticIndex | None = None, params: CascadeParams | None = None
    ) -> None:
        self.index = index
        self.semantic = semantic
        self.params = params or CascadeParams()

    @property
    def kb(self) -> KnowledgeBase:
        """The knowledge base both indexes were built from."""
        return self.index.kb

    @property
    def entries(self) -> Mapping[str, Entry]:
        """Entries by intent id."""
        return self.index.entries

    def with_semantic(self, semantic: SemanticIndex | None) -> Matcher:
        """The same lexical index and thresholds with another semantic index."""
        return Matcher(self.index, semantic, self.params)

    def lexical(self, text: str, limit: int) -> Ranking:
        """Rank with the lexical stage alone."""
        return Ranking(self.index.rank(text, limit=limit), "lexical", self.params.threshold)

    def is_sure(self, ranking: Ranking) -> bool:
        """Whether a lexical ranking is final even when the semantic stage is available."""
        top = ranking.top
        # Never above the fallback threshold: a stricter `threshold` sends more to the semantic stage.
        if top is None or top.confidence < max(self.params.semantic_below, self.params.threshold):
            return False
        runner_up = ranking.matches[1].confidence if len(ranking.matches) > 1 else 0.0
        return top.confidence - runner_up >= self.params.sure_margin

    def rank(self, text: str, limit: int) -> Ranking:
        """Rank `text`: lexically when sure (or without a semantic index), else by the blend."""
        ranking = self.lexical(text, limit)
        if self.names_other_product(text):
            return self.other_product(ranking)
        if self.semantic is None or self.is_sure(ranking):
            return ranking
        return self.unsure(ranking, self.is_vague(text), lambda: self.blend(text, limit))

    def names_other_product(self, text: str) -> bool:
        """Whether `text` names another provider's product: a keyword of the out_of_scope entry.

        花呗怎么提额 shares every content word with a card question (提额), yet what the customer
        asks about is no bank card: the bank cannot answer it, so it must not be answered as one.
        """
        keywords = self.index.keywords.get(OUT_OF_SCOPE, ())
        if not keywords:
            return False
        norm = self.index.normalize(text)
        return any(keyword in norm for keyword in keywords)

    def other_product(self, lexical: Ranking) -> Ranking:
        """`lexical` with the out_of_scope entry first, sure (its answer says what the bot covers)."""
        bar = max(self.params.semantic_below, self.params.threshold)
        own = next((m for m in lexical.matches if m.intent == OUT_OF_SCOPE), None)
        confidence = max(bar, own.confidence if own is not None else 0.0)
        question = own.question if own is not None else self.entries[OUT_OF_SCOPE].questions[0]
        top = Match(OUT_OF_SCOPE, confidence, confidence, question)
        rest = [m for m in lexical.matches if m.intent != OUT_OF_SCOPE][: max(len(lexical.matches) - 1, 0)]
        return Ranking([top, *rest], "lexical", self.params.threshold)

    def unsure(self, lexical: Ranking, vague: bool, blend: Callable[[], Ranking]) -> Ranking:
        """The ranking for a question the lexical stage is unsure of."""
        if vague:
            # Nothing to answer yet: the fallback's "did you mean" list beats a guess.
            return Ranking(lexical.matches, "lexical", VAGUE_BAR)
        return blend()

    def is_vague(self, text: str) -> bool:
        """True when `text` has no word beyond function words and the generic subject (卡, 问题)."""
        norm = self.index.normalize(text)
        if any(canonical not in GENERIC_WORDS for canonical in self.index.featurizer.synonyms.find(norm)):
            return False
        words = [word.strip() for word in segment.cut(norm)]
        content = [
            word
            for word in words
            if any(ch.isalnum() for ch in word)
            and word not in STOPWORDS
            and word not in GENERIC_WORDS
            and not set(word) <= FILLER_CHARS
        ]
        return not content

    def blend(self, text: str, limit: int) -> Ranking:
        """Rank every intent by lexical share x lexical confidence + (1 - share) x cosine."""
        semantic = self.semantic
        assert semantic is not None
        share = self.params.lexical_share
        lexical = {m.intent: m.confidence for m in self.index.rank(text, limit=len(self.entries))}
        scores = semantic.scores(text)
        lexical_part = np.zeros(len(semantic.intent_ids))
        for intent, confidence in lexical.items():
            lexical_part[semantic.position[intent]] = confidence
        blended = np.clip(share * lexical_part + (1.0 - share) * scores.best, 0.0, 1.0)
        for intent in SOCIAL - lexical.keys():
            if intent in semantic.position:
                blended[semantic.position[intent]] = -1.0
        # Best first, ties by intent id like the lexical stage; only the top few become Matches.
        order = sorted(range(len(blended)), key=lambda n: (-blended[n], semantic.intent_ids[n]))

        def match(position: int) -> Match:
            confidence = float(blended[position])
            question = semantic.closest_question(position, scores)
            return Match(semantic.intent_ids[position], confidence, confidence, question)

        ranked = [n for n in order if blended[n] >= 0.0]
        matches = [match(n) for n in ranked[:limit]]
        offered = [match(n) for n in ranked if semantic.intent_ids[n] in lexical][:limit]
        return Ranking(matches, "semantic", self.params.semantic_threshold, offered)
