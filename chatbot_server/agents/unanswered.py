"""Group the unanswered questions for supervisors, and write them as CSV (docs/agents.md).

Near-duplicates are grouped by the Jaccard similarity of their character bigrams (punctuation,
spaces and case ignored): simple, deterministic and fine for short Chinese questions. Each group
shows its most frequent wording, how often it was asked, when last, and the intents the bot came
closest to (their best confidence).
"""

from __future__ import annotations

import csv
import io
import time
import unicodedata
from dataclasses import dataclass, field

from ..store.unanswered import Unanswered

#: Bigram Jaccard similarity from which two questions count as one.
SIMILAR = 0.5
#: Groups shown at most (the most asked); the CSV has them all.
MAX_SHOWN = 200
#: Intents shown per group.
MAX_INTENTS = 3


def _bigrams(text: str) -> frozenset[str]:
    kept = "".join(c for c in unicodedata.normalize("NFKC", text).lower() if c.isalnum())
    if len(kept) < 2:
        return frozenset({kept})
    return frozenset(kept[i : i + 2] for i in range(len(kept) - 1))


def _jaccard(a: frozenset[str], b: frozenset[str]) -> float:
    return len(a & b) / len(a | b) if a or b else 1.0


@dataclass
class Group:
    """Questions asked alike."""

    question: str  # the representative: the most asked wording (the first asked on a tie)
    count: int
    last_seen: int  # Unix ms
    intents: list[tuple[str, float]]
    wordings: dict[str, int] = field(default_factory=dict)
    _grams: frozenset[str] = frozenset()

    @property
    def last_seen_text(self) -> str:
        """Local time, to the minute."""
        return time.strftime("%Y-%m-%d %H:%M", time.localtime(self.last_seen / 1000))


def group_questions(items: list[Unanswered], *, similar: float = SIMILAR) -> list[Group]:
    """Groups, most asked first (then the latest). Each question joins the first group whose
    first question it resembles enough; `items` oldest first, so the result does not depend on
    how the store ordered days."""
    groups: list[Group] = []
    best: list[dict[str, float]] = []
    for item in sorted(items, key=lambda q: (q.ts, q.text)):
        grams = _bigrams(item.text)
        at = next((n for n, g in enumerate(groups) if _jaccard(g._grams, grams) >= similar), None)
        if at is None:
            groups.append(Group(item.text, 0, item.ts, [], {}, grams))
            best.append({})
            at = len(groups) - 1
        group, scores = groups[at], best[at]
        group.count += 1
        group.last_seen = max(group.last_seen, item.ts)
        group.wordings[item.text] = group.wordings.get(item.text, 0) + 1
        for intent, confidence in item.candidates:
            scores[intent] = max(scores.get(intent, 0.0), confidence)
    for group, scores in zip(groups, best, strict=True):
        group.question = max(group.wordings.items(), key=lambda kv: kv[1])[0]
        ranked = sorted(scores.items(), key=lambda kv: (-kv[1], kv[0]))
        group.intents = [(intent, round(score, 3)) for intent, score in ranked[:MAX_INTENTS]]
    groups.sort(key=lambda g: (-g.count, -g.last_seen, g.question))
    return groups


def groups_csv(groups: list[Group]) -> bytes:
    """UTF-8 with a BOM (so Excel reads the Chinese right): question, count, last seen, intents."""
    out = io.StringIO()
    writer = csv.writer(out)
    writer.writerow(["问题", "次数", "最近一次", "最接近的意图"])
    for g in groups:
        intents = "; ".join(f"{intent} ({score:.2f})" for intent, score in g.intents)
        writer.writerow([_cell(g.question), g.count, g.last_seen_text, intents])
    return "\ufeff".encode() + out.getvalue().encode()


def _cell(text: str) -> str:
    # A cell starting with = + - @ is a formula to a spreadsheet: customers' text must stay text.
    return "'" + text if text[:1] in ("=", "+", "-", "@", "\t", "\r") else text
