"""The faq bot's `bot.options`: defaults and validation with ConfigErrors naming the key."""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ...errors import ConfigError
from .cascade import CascadeParams

DEFAULT_KNOWLEDGE_BASE = Path(__file__).resolve().parent / "data" / "knowledge_base.yaml"
# The thresholds' defaults live with the matcher (cascade.py), calibrated with `evaluate --calibrate`.
_CASCADE = CascadeParams()
DEFAULT_THRESHOLD = _CASCADE.threshold
DEFAULT_SEMANTIC_BELOW = _CASCADE.semantic_below
DEFAULT_SEMANTIC_THRESHOLD = _CASCADE.semantic_threshold
DEFAULT_WATCH_INTERVAL = 2.0
KEY_PREFIX = "bot.options."


@dataclass(frozen=True, slots=True)
class FaqOptions:
    """Validated options of the faq bot."""

    knowledge_base: Path = DEFAULT_KNOWLEDGE_BASE
    threshold: float = DEFAULT_THRESHOLD
    watch: bool = True
    watch_interval: float = DEFAULT_WATCH_INTERVAL
    # Use the semantic stage when its extra is installed (`pip install 'chatbot_server[semantic]'`).
    semantic: bool = True
    semantic_below: float = DEFAULT_SEMANTIC_BELOW
    semantic_threshold: float = DEFAULT_SEMANTIC_THRESHOLD

    def cascade(self) -> CascadeParams:
        """The matcher's thresholds."""
        return CascadeParams(
            threshold=self.threshold,
            semantic_below=self.semantic_below,
            semantic_threshold=self.semantic_threshold,
        )


def _number(name: str, value: Any, low: float, high: float, *, low_open: bool = False) -> float:
    # bool is an int subclass; `threshold: true` is a typo, not 1.0.
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
        raise ConfigError(f"must be a number, got {value!r}", key=KEY_PREFIX + name)
    below = value <= low if low_open else value < low
    if below or value > high:
        span = f"{'(' if low_open else '['}{low:g}, {high:g}]"
        raise ConfigError(f"must be in {span}, got {value!r}", key=KEY_PREFIX + name)
    return float(value)


def parse_options(options: Mapping[str, Any], base_dir: Path) -> FaqOptions:
    """Validate `bot.options` for the faq bot; relative paths resolve against `base_dir`."""
    if not isinstance(options, Mapping):
        raise ConfigError(f"must be a mapping, got {type(options).__name__}", key="bot.options")
    known = set(FaqOptions.__dataclass_fields__)
    for name in options:
        if name not in known:
            raise ConfigError(f"unknown option (known: {', '.join(sorted(known))})", key=KEY_PREFIX + str(name))
    kb = options.get("knowledge_base")
    if kb is None:
        path = DEFAULT_KNOWLEDGE_BASE
    elif isinstance(kb, str | Path) and str(kb).strip():
        path = Path(kb).expanduser()
        if not path.is_absolute():
            path = base_dir / path
    else:
        raise ConfigError(f"must be a file path, got {kb!r}", key=KEY_PREFIX + "knowledge_base")
    threshold = _number("threshold", options.get("threshold", DEFAULT_THRESHOLD), 0.0, 1.0)
    watch = _flag("watch", options.get("watch", True))
    interval = _number(
        "watch_interval", options.get("watch_interval", DEFAULT_WATCH_INTERVAL), 0.0, 3600.0, low_open=True
    )
    return FaqOptions(
        knowledge_base=path,
        threshold=threshold,
        watch=watch,
        watch_interval=interval,
        semantic=_flag("semantic", options.get("semantic", True)),
        semantic_below=_number("semantic_below", options.get("semantic_below", DEFAULT_SEMANTIC_BELOW), 0.0, 1.0),
        semantic_threshold=_number(
            "semantic_threshold", options.get("semantic_threshold", DEFAULT_SEMANTIC_THRESHOLD), 0.0, 1.0
        ),
    )


def _flag(name: str, value: Any) -> bool:
    if not isinstance(value, bool):
        raise ConfigError(f"must be true or false, got {value!r}", key=KEY_PREFIX + name)
    return value
