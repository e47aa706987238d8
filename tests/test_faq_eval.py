"""The FAQ matcher keeps its accuracy on the labelled dev set; the evaluate command reports it."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from chatbot_server.bots.faq.cascade import Matcher
from chatbot_server.bots.faq.evaluate import evaluate, load_examples
from chatbot_server.bots.faq.knowledge import load_knowledge_base
from chatbot_server.bots.faq.options import DEFAULT_KNOWLEDGE_BASE
from chatbot_server.bots.faq.ranker import Index
from chatbot_server.bots.faq.semantic import SemanticIndex, load_encoder, semantic_available

ROOT = Path(__file__).resolve().parent.parent
DATA = ROOT / "tests" / "data"
DEV = DATA / "faq_dev.jsonl"
# Labelled sets, each with (minimum utterances per intent, accuracy floor with the semantic
# stage, floor lexical only): floors a little under the figures measured after #19's tuning
# (docs/knowledge-base.md). faq_heldout and faq_heldout2 were written before earlier rounds of
# tuning; faq_fresh_calib by someone who never saw the knowledge base, scored once before #19
# and then tuned on. The CI installs the semantic extra, so it checks the first floor.
LABELLED = [
    (DEV, 10, 0.92, 0.92),
    (DATA / "faq_heldout.jsonl", 6, 0.92, 0.92),
    (DATA / "faq_heldout2.jsonl", 4, 0.95, 0.95),
    (DATA / "faq_fresh_calib.jsonl", 6, 0.95, 0.90),
    # Written blind (#19, third pair), scored 0.895 / lexical 0.845 untouched, then tuned on: 0.990 / 0.940.
    (DATA / "faq_blind3_calib.jsonl", 5, 0.95, 0.92),
    # Written blind (#19, fourth pair), scored 0.914 / lexical 0.850 untouched, then tuned on: 0.959 / 0.936.
    (DATA / "faq_blind4_calib.jsonl", 5, 0.93, 0.90),
    # Never read and never tuned on; scored before #19 and after each round (0.723 -> 0.840 -> 0.889
    # -> 0.916), with the semantic stage only: a floor under that figure guards against regressions.
    (DATA / "faq_fresh_heldout.jsonl", 1, 0.89, None),
]
# Sets written without seeing the base share a few common questions with it by chance (你好,
# 谢谢, 信用卡年费多少钱): a coincidence, not a copy, and too few to move the figures.
WRITTEN_BLIND = {
    "faq_fresh_calib.jsonl": 8,
    "faq_fresh_heldout.jsonl": 16,
    "faq_blind3_calib.jsonl": 6,
    "faq_blind4_calib.jsonl": 9,
}


@pytest.fixture(scope="module")
def matcher() -> Matcher:
    index = Index(load_knowledge_base(DEFAULT_KNOWLEDGE_BASE))
    encoder = load_encoder()
    return Matcher(index, SemanticIndex(index, encoder) if encoder is not None else None)


def test_dev_set_covers_every_intent_with_unseen_utterances(matcher: Matcher) -> None:
    examples = load_examples(DEV)
    counts: dict[str, int] = {}
    for example in examples:
        counts[example.intent] = counts.get(example.intent, 0) + 1
    assert set(counts) == set(matcher.entries)
    assert min(counts.values()) >= 8
    kb_questions = {q for entry in matcher.kb.entries for q in entry.questions}
    assert not [e.text for e in examples if e.text in kb_questions]


def test_dev_set_rarely_falls_back_on_a_card_question(matcher: Matcher) -> None:
    report = evaluate(matcher, load_examples(DEV))
    assert report.oos_precision >= 0.80, report.errors
    assert report.oos_recall >= 0.80, report.errors


@pytest.mark.parametrize(
    ("path", "per_intent", "floor", "lexical_floor"), LABELLED, ids=lambda v: getattr(v, "name", str(v))
)
def test_labelled_set_covers_its_intents_and_keeps_its_accuracy(
    matcher: Matcher, path: Path, per_intent: int, floor: float, lexical_floor: float | None
) -> None:
    if matcher.semantic is None and lexical_floor is None:
        pytest.skip(f"{path.name} was scored with the semantic stage only (pip install '.[semantic]')")
    examples = load_examples(path)
    counts: dict[str, int] = {}
    for example in examples:
        counts[example.intent] = counts.get(example.intent, 0) + 1
    # Older sets predate card_cancellation and atm_card_retained; every label must still exist.
    assert set(counts) <= set(matcher.entries)
    assert min(counts.values()) >= per_intent
    # An utterance copied into the base would measure memory, not generalisation.
    kb_questions = {q for entry in matcher.kb.entries for q in entry.questions}
    assert len([e.text for e in examples if e.text in kb_questions]) <= WRITTEN_BLIND.get(path.name, 0)
    report = evaluate(matcher, examples)
    bar = floor if matcher.semantic is not None or lexical_floor is None else lexical_floor
    assert report.accuracy >= bar, f"{report.accuracy:.3f} < {bar}"


def test_an_index_alone_is_scored_lexically_at_the_given_threshold(matcher: Matcher) -> None:
    examples = load_examples(DEV)
    strict = evaluate(matcher.index, examples, 0.99)
    assert strict.semantic == 0 and strict.oos_recall == 1.0 and strict.accuracy < 0.5


def test_evaluate_command_prints_the_metrics(tmp_path: Path) -> None:
    data = tmp_path / "tiny.jsonl"
    data.write_text(
        '{"text": "我的卡丢了怎么办", "intent": "card_lost_report"}\n'
        '{"text": "給我講個笑話", "intent": "out_of_scope"}\n'
        '{"text": "云闪付怎么绑卡", "intent": "card_lost_report"}\n',
        encoding="utf-8",
    )
    result = subprocess.run(
        [sys.executable, "-m", "chatbot_server.bots.faq.evaluate", "--data", str(data)],
        capture_output=True,
        text=True,
        cwd=ROOT,
        timeout=60,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    out = result.stdout
    assert "top-1 accuracy:        0.667 (2/3)" in out
    assert "in-scope accuracy:     0.500 (1/2)" in out
    assert "out-of-scope precision: 1.000 (1/1)" in out
    assert "out-of-scope recall:    1.000 (1/1)" in out
    assert "card_lost_report -> app_registration_binding: 1" in out
    # Per-intent recall, lowest first, then the confusion pairs.
    lowest, highest = "card_lost_report                 0.50 (1/2)", "out_of_scope                     1.00 (1/1)"
    assert out.index(lowest) < out.index(highest)
    assert out.index("per-intent recall") < out.index("worst-confused pairs")


def run_evaluate(*args: str) -> str:
    result = subprocess.run(
        [sys.executable, "-m", "chatbot_server.bots.faq.evaluate", *args],
        capture_output=True,
        text=True,
        cwd=ROOT,
        timeout=120,
        check=False,
        env={**os.environ, "HF_HUB_OFFLINE": "1"},
    )
    assert result.returncode == 0, result.stderr
    return result.stdout


def test_calibrate_sweeps_the_lexical_threshold_with_out_of_scope_precision_and_recall() -> None:
    out = run_evaluate("--data", str(DEV), "--calibrate", "--lexical-only")
    assert "stages: lexical only" in out
    assert "value  top-1  in-scope  oos-precision  oos-recall" in out
    rows = [line.split() for line in out.splitlines() if line.startswith("   0.")]
    assert [row[0] for row in rows] == [f"{0.05 * n:.2f}" for n in range(1, 20)]
    # A higher bar falls back more: out-of-scope recall never drops as the threshold rises.
    recalls = [float(row[4]) for row in rows]
    assert recalls == sorted(recalls)
    assert "best top-1 with out-of-scope recall >= 0.85: threshold = " in out


@pytest.mark.skipif(not semantic_available(), reason="the semantic extra is not installed (pip install '.[semantic]')")
def test_calibrate_sweeps_both_semantic_bars_when_the_extra_is_installed() -> None:
    out = run_evaluate("--data", str(DATA / "faq_heldout2.jsonl"), "--calibrate")
    assert "stages: lexical + semantic" in out
    assert "best top-1 with out-of-scope recall >= 0.85: semantic_threshold = " in out
    assert "best top-1 with out-of-scope recall >= 0.85: semantic_below = " in out


def test_evaluate_command_reports_a_bad_knowledge_base(tmp_path: Path) -> None:
    kb = tmp_path / "kb.yaml"
    kb.write_text("entries:\n  - id: x\n    questions: [a\n", encoding="utf-8")
    result = subprocess.run(
        [sys.executable, "-m", "chatbot_server.bots.faq.evaluate", "--kb", str(kb), "--data", str(DEV)],
        capture_output=True,
        text=True,
        cwd=ROOT,
        timeout=60,
        check=False,
    )
    assert result.returncode == 2
    assert f"{kb}, line" in result.stderr
