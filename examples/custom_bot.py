"""A tiny keyword-rules bot: the smallest useful chatbot_server.Bot.

Run it standalone (serves the chat page and /ws with this bot):

    python -m examples.custom_bot --port 8080      (from the repository root)

or choose it from config by import path (run from the repository root):

    python -m chatbot_server --config examples/keyword_bot.yaml
"""

from __future__ import annotations

import argparse
import asyncio
from collections.abc import AsyncIterator, Mapping
from typing import Any

from aiohttp import web

import chatbot_server
from chatbot_server import Bot, ConfigError, Reply, Turn, Typing
from chatbot_server.bots import BotContext, BotEvent

DEFAULT_RULES: dict[str, str] = {
    "挂失": "银行卡丢失请立即拨打发卡行客服电话办理挂失。",
    "激活": "新卡可通过发卡行 App 或客服电话激活。",
    "人工": "如需人工服务,请拨打 95516。",
}
DEFAULT_FALLBACK = "抱歉,我没有理解您的问题,可以换个说法吗?"


class KeywordBot(Bot):
    """Answers with the first rule whose keyword appears in the message, else a fallback."""

    def __init__(self, rules: Mapping[str, str], fallback: str = DEFAULT_FALLBACK) -> None:
        self.rules = dict(rules)
        self.fallback = fallback

    @classmethod
    def from_options(cls, options: Mapping[str, Any], context: BotContext) -> KeywordBot:
        """Build from `bot.options`: {rules: {keyword: answer}, fallback: text}; bad options → ConfigError."""
        unknown = set(options) - {"rules", "fallback"}
        if unknown:
            raise ConfigError(f"unknown option(s) {', '.join(sorted(unknown))}", key="bot.options")
        rules = options.get("rules", DEFAULT_RULES)
        if not isinstance(rules, Mapping) or not all(
            isinstance(k, str) and k and isinstance(v, str) for k, v in rules.items()
        ):
            raise ConfigError("must map non-empty keywords to answer texts", key="bot.options.rules")
        fallback = options.get("fallback", DEFAULT_FALLBACK)
        if not isinstance(fallback, str) or not fallback:
            raise ConfigError("must be a non-empty string", key="bot.options.fallback")
        return cls(rules, fallback)

    async def respond(self, turn: Turn) -> AsyncIterator[BotEvent]:
        """Say we are thinking, then answer (matching runs off the event loop)."""
        yield Typing()
        yield await asyncio.to_thread(self._match, turn.text)

    def _match(self, text: str) -> Reply:
        # Real bots do CPU-heavy work (segmentation, ranking) here, in a worker thread.
        for keyword, answer in self.rules.items():
            if keyword in text:
                return Reply(text=answer, intent=f"keyword:{keyword}", confidence=1.0)
        suggestions = tuple(list(self.rules)[:3])  # shown as buttons; clicking sends the keyword
        return Reply(text=self.fallback, intent="out_of_scope", confidence=0.0, suggestions=suggestions)


def main() -> None:
    """Serve the chat page and /ws with KeywordBot."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8080)
    args = parser.parse_args()
    # bot.name is not used when a bot instance is passed to setup(); bot.timeout still is.
    settings = chatbot_server.settings_from_dict({"bot": {"timeout": 2}})
    bot = KeywordBot.from_options({}, BotContext())
    app = web.Application()
    # A bot passed in is started and closed by whoever passed it: KeywordBot has nothing to open.
    chatbot_server.setup(app, settings, bot=bot)
    web.run_app(app, host=args.host, port=args.port)


if __name__ == "__main__":
    main()
