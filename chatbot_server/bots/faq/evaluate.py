"""Score the FAQ matcher on a labelled JSONL file: python -m chatbot_server.bots.faq.evaluate."""

from __future__ import annotations

import argparse
import json
import sys
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

from ...errors import ConfigError
from .calibrate import Example, calibrate, format_calibration
from .cascade import CascadeParams, Matcher
from .knowledge import load_knowledge_base
from .options import DEFAULT_KNOWLEDGE_BASE, DEFAULT_SEMANTIC_BELOW, DEFAULT_SEMANTIC_THRESHOLD, DEFAULT_THRESHOLD
from .ranker import Index
from .reply import FALLBACK_INTENT, RANK_LIMIT, reply_for
from .semantic import SemanticIndex, load_encoder

DEFAULT_DATA = Path("tests/data/faq_dev.jsonl")


@dataclass
class Report:
    """Accuracy figures of one evaluation run."""

    total: int = 0
    correct: int = 0
    in_scope_total: int = 0
    in_scope_correct: int = 0
    oos_true_positive: int = 0
    oos_predicted: int = 0
    oos_actual: int = 0
    confusions: Counter[tuple[str, str]] = field(default_factory=Counter)
    errors: list[tuple[Example, str, float]] = field(default_factory=list)
    per_intent: Counter[str] = field(default_factory=Counter)
    per_intent_correct: Counter[str] = field(default_factory=Counter)
    # Questions the semantic stage decided (the lexical stage was unsure), and of those correct.
    semantic: int = 0
    semantic_correct: int = 0

    @property
    def accuracy(self) -> float:
        """Top-1 accuracy over every example."""
        return self.correct / self.total if self.total else 0.0

    @property
    def in_scope_accuracy(self) -> float:
        """Top-1 accuracy over examples whose label is not out_of_scope."""
        return self.in_scope_correct / self.in_scope_total if self.in_scope_total else 0.0

    @property
    def oos_precision(self) -> float:
        """Share of out_of_scope predictions (fallbacks included) that were labelled out_of_scope."""
        return self.oos_true_positive / self.oos_predicted if self.oos_predicted else 0.0

    @property
    def oos_recall(self) -> float:
        """Share of out_of_scope examples that were predicted out_of_scope."""
        return self.oos_true_positive / self.oos_actual if self.oos_actual else 0.0

    def add(self, example: Example, predicted: str, confidence: float, *, semantic: bool = False) -> None:
        """Tally one prediction."""
        self.total += 1
        hit = predicted == example.intent
        self.correct += hit
        self.per_intent[example.intent] += 1
        self.per_intent_correct[example.intent] += hit
        if semantic:
            self.semantic += 1
            self.semantic_correct += hit
        if example.intent == FALLBACK_INTENT:
            self.oos_actual += 1
        else:
            self.in_scope_total += 1
            self.in_scope_correct += hit
        if predicted == FALLBACK_INTENT:
            self.oos_predicted += 1
            self.oos_true_positive += example.intent == FALLBACK_INTENT
        if not hit:
            self.confusions[(example.intent, predicted)] += 1
            self.errors.append((example, predicted, confidence))


def load_examples(path: Path) -> list[Example]:
    """Read a JSONL file of {"text": ..., "intent": ...} lines; ConfigError naming the bad line."""
    examples = []
    for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
        if not line.strip():
            continue
        try:
            row = json.loads(line)
        except json.JSONDecodeError as exc:
            raise ConfigError(f"line {number}: invalid JSON: {exc}", source=str(path)) from exc
        if not (isinstance(row, dict) and isinstance(row.get("text"), str) and isinstance(row.get("intent"), str)):
            raise ConfigError(f'line {number}: expected {{"text": str, "intent": str}}', source=str(path))
        examples.append(Example(row["text"], row["intent"]))
    return examples


def evaluate(matcher: Matcher | Index, examples: Sequence[Example], threshold: float | None = None) -> Report:
    """Predict every example through the bot's own reply logic and tally the results.

    An `Index` is scored lexically only, at `threshold` (the fallback threshold by default).
    """
    if isinstance(matcher, Index):
        matcher = Matcher(matcher, None, CascadeParams(threshold=DEFAULT_THRESHOLD if threshold is None else threshold))
    report = Report()
    for example in examples:
        ranking = matcher.rank(example.text, limit=RANK_LIMIT)
        reply = reply_for(matcher, ranking)
        report.add(example, reply.intent, reply.confidence, semantic=ranking.stage == "semantic")
    return report


def format_report(report: Report, *, worst: int = 10, show_errors: bool = False) -> str:
    """Render the figures as plain text."""
    lines = [
        f"examples:              {report.total}",
        f"top-1 accuracy:        {report.accuracy:.3f} ({report.correct}/{report.total})",
        f"in-scope accuracy:     {report.in_scope_accuracy:.3f} ({report.in_scope_correct}/{report.in_scope_total})",
        f"out-of-scope precision: {report.oos_precision:.3f} ({report.oos_true_positive}/{report.oos_predicted})",
        f"out-of-scope recall:    {report.oos_recall:.3f} ({report.oos_true_positive}/{report.oos_actual})",
        f"decided by the semantic stage: {report.semantic} ({report.semantic_correct} correct)",
        "per-intent recall (correct/examples), lowest first:",
    ]
    recall = {intent: report.per_intent_correct[intent] / n for intent, n in report.per_intent.items()}
    for intent in sorted(recall, key=lambda i: (recall[i], i)):
        lines.append(
            f"  {intent:<32} {recall[intent]:.2f} ({report.per_intent_correct[intent]}/{report.per_intent[intent]})"
        )
    lines.append("worst-confused pairs (expected -> predicted: count):")
    if not report.confusions:
        lines.append("  (none)")
    for (expected, predicted), count in report.confusions.most_common(worst):
        lines.append(f"  {expected} -> {predicted}: {count}")
    if show_errors:
        lines.append("errors:")
        for example, predicted, confidence in report.errors:
            lines.append(f"  [{example.intent} -> {predicted} {confidence:.2f}] {example.text}")
    return "\n".join(lines)


def main(argv: Sequence[str] | None = None) -> int:
    """Command-line entry point; returns the exit status."""
    parser = argparse.ArgumentParser(prog="python -m chatbot_server.bots.faq.evaluate", description=__doc__)
    parser.add_argument("--data", type=Path, default=DEFAULT_DATA, help="labelled JSONL file")
    parser.add_argument("--kb", type=Path, default=DEFAULT_KNOWLEDGE_BASE, help="knowledge base YAML")
    parser.add_argument("--threshold", type=float, default=DEFAULT_THRESHOLD, help="lexical fallback threshold")
    parser.add_argument("--semantic-below", type=float, default=DEFAULT_SEMANTIC_BELOW)
    parser.add_argument("--semantic-threshold", type=float, default=DEFAULT_SEMANTIC_THRESHOLD)
    parser.add_argument("--lexical-only", action="store_true", help="leave the semantic stage out")
    parser.add_argument("--errors", action="store_true", help="list every misclassified example")
    parser.add_argument(
        "--calibrate", action="store_true", help="sweep the fallback threshold: out-of-scope precision/recall"
    )
    args = parser.parse_args(argv)
    try:
        index = Index(load_knowledge_base(args.kb, key="--kb"))
        examples = load_examples(args.data)
    except (ConfigError, OSError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    encoder = None if args.lexical_only else load_encoder()
    params = CascadeParams(args.threshold, args.semantic_below, args.semantic_threshold)
    matcher = Matcher(index, SemanticIndex(index, encoder) if encoder is not None else None, params)
    print(f"stages: {'lexical + semantic' if matcher.semantic is not None else 'lexical only'}")
    if args.calibrate:
        print(format_calibration(calibrate(matcher, examples)))
        return 0
    print(format_report(evaluate(matcher, examples), show_errors=args.errors))
    return 0


if __name__ == "__main__":
    sys.exit(main())
