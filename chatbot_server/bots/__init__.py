"""Bots: the pluggable brains behind the chat socket, chosen in config by name or import path."""

from __future__ import annotations

import importlib
from collections.abc import Mapping
from typing import Any

from ..errors import ConfigError
from .base import AnswerStyle, Bot, BotContext, BotEvent, Delta, HistoryEntry, Reply, Turn, Typing, answer_style

BUILTIN_BOTS: dict[str, str] = {
    "echo": "chatbot_server.bots.echo:EchoBot",
    "faq": "chatbot_server.bots.faq:FaqBot",
    "llm": "chatbot_server.bots.llm:LlmBot",
}

__all__ = [
    "BUILTIN_BOTS",
    "AnswerStyle",
    "Bot",
    "BotContext",
    "BotEvent",
    "Delta",
    "HistoryEntry",
    "Reply",
    "Turn",
    "Typing",
    "answer_style",
    "build_bot",
    "load_bot_class",
]


def load_bot_class(spec: str) -> type[Bot]:
    """Resolve a short name ("echo", "faq") or an import path ("pkg.mod:Class") to a Bot class."""
    path = BUILTIN_BOTS.get(spec, spec)
    module_name, colon, attr = path.partition(":")
    if not colon or not module_name or not attr:
        raise ConfigError(
            f"unknown bot {spec!r}: use one of {', '.join(sorted(BUILTIN_BOTS))} "
            "or an import path like 'mypkg.bots:MyBot'",
            key="bot.name",
        )
    try:
        module = importlib.import_module(module_name)
    except ImportError as exc:
        raise ConfigError(f"cannot import bot module {module_name!r}: {exc}", key="bot.name") from exc
    cls = getattr(module, attr, None)
    if not (isinstance(cls, type) and issubclass(cls, Bot)):
        raise ConfigError(f"{path!r} is not a chatbot_server.bots.Bot subclass", key="bot.name")
    return cls


def build_bot(spec: str, options: Mapping[str, Any], context: BotContext | None = None) -> Bot:
    """Build the bot named by `spec` from its options; raise ConfigError naming the bad key."""
    return load_bot_class(spec).from_options(options, context or BotContext())
