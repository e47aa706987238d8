"""Calibrate the fallback bars on a labelled set: `evaluate --calibrate`.

Every question is ranked once by each stage; the sweep then only re-applies the bars, so a
table costs one evaluation. What to pick: the highest top-1 whose out-of-scope recall stays
at the target (a wrong answer to an out-of-scope question misleads; a fallback to a card
question still offers the closest questions and the hotline), on a set written by someone
who never saw the knowledge base, never on the set it is then reported on.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from dataclasses import dataclass

from .cascade import Matcher, Ranking
from .reply import FALLBACK_INTENT, RANK_LIMIT, reply_for


@dataclass(frozen=True, slots=True)
class Example:
    """One labelled utterance (evaluate.py reads them from JSON lines)."""

    text: str
    intent: str


GRID = tuple(round(0.05 * step, 2) for step in range(1, 20))


@dataclass(frozen=True, slots=True)
class Point:
    """Figures at one setting of the bars."""

    bar: str
    value: float
    accuracy: float
    in_scope: float
    oos_precision: float
    oos_recall: float
    semantic_share: float


@dataclass(frozen=True, slots=True)
class _Ranked:
    intent: str
    lexical: Ranking
    blend: Ranking | None
    vague: bool
    # Names another provider's product: answered out_of_scope whatever the bars (cascade.py).
    other: bool


def calibrate(matcher: Matcher, examples: Sequence[Example], grid: Sequence[float] = GRID) -> list[Point]:
    """Sweep the lexical threshold (lexical only) or the two semantic bars, one at a time."""
    ranked = [
        _Ranked(
            e.intent,
            matcher.lexical(e.text, RANK_LIMIT),
            matcher.blend(e.text, RANK_LIMIT) if matcher.semantic is not None else None,
            matcher.is_vague(e.text),
            matcher.names_other_product(e.text),
        )
        for e in examples
    ]
    p = matcher.params
    if matcher.semantic is None:
        return [_point(matcher, ranked, "threshold", t, t, p.semantic_below, p.semantic_threshold) for t in grid]
    points = [_point(matcher, ranked, "semantic_threshold", t, p.threshold, p.semantic_below, t) for t in grid]
    points += [_point(matcher, ranked, "semantic_below", b, p.threshold, b, p.semantic_threshold) for b in grid]
    return points


def _point(
    matcher: Matcher, ranked: Sequence[_Ranked], bar: str, value: float, threshold: float, below: float, sem: float
) -> Point:
    bars = Matcher(
        matcher.index,
        matcher.semantic,
        dataclasses.replace(matcher.params, threshold=threshold, semantic_below=below, semantic_threshold=sem),
    )
    correct = in_scope = in_scope_correct = oos = oos_predicted = oos_hit = semantic = 0
    for item in ranked:
        ranking = dataclasses.replace(item.lexical, threshold=threshold)
        if item.other:
            ranking = bars.other_product(ranking)
        elif item.blend is not None and not bars.is_sure(ranking):
            blend = dataclasses.replace(item.blend, threshold=sem)
            ranking = bars.unsure(ranking, item.vague, lambda: blend)  # noqa: B023  # called at once
            semantic += ranking.stage == "semantic"
        predicted = reply_for(matcher, ranking).intent
        hit = predicted == item.intent
        correct += hit
        if item.intent == FALLBACK_INTENT:
            oos += 1
        else:
            in_scope += 1
            in_scope_correct += hit
        if predicted == FALLBACK_INTENT:
            oos_predicted += 1
            oos_hit += item.intent == FALLBACK_INTENT
    n = len(ranked) or 1
    return Point(
        bar,
        value,
        correct / n,
        in_scope_correct / in_scope if in_scope else 0.0,
        oos_hit / oos_predicted if oos_predicted else 0.0,
        oos_hit / oos if oos else 0.0,
        semantic / n,
    )


def format_calibration(points: Sequence[Point], *, recall_target: float = 0.85) -> str:
    """One table per bar, and the best top-1 whose out-of-scope recall reaches `recall_target`."""
    lines: list[str] = []
    for bar in dict.fromkeys(point.bar for point in points):
        rows = [point for point in points if point.bar == bar]
        lines.append(f"{bar} (the other bars as given):")
        lines.append("  value  top-1  in-scope  oos-precision  oos-recall  semantic-share")
        for r in rows:
            lines.append(
                f"  {r.value:5.2f}  {r.accuracy:5.3f}  {r.in_scope:8.3f}  {r.oos_precision:13.3f}"
                f"  {r.oos_recall:10.3f}  {r.semantic_share:14.2f}"
            )
        good = [r for r in rows if r.oos_recall >= recall_target] or rows
        # On a tie: the stricter fallback bar, and the cheaper semantic_below (fewer encodings).
        lean = -1.0 if bar == "semantic_below" else 1.0
        best = max(good, key=lambda r: (r.accuracy, r.oos_recall, lean * r.value))
        lines.append(
            f"  best top-1 with out-of-scope recall >= {recall_target:.2f}: {bar} = {best.value:.2f}"
            f" (top-1 {best.accuracy:.3f}, oos precision {best.oos_precision:.3f}, recall {best.oos_recall:.3f})"
        )
    return "\n".join(lines)
