"""The console's tools on the agent socket: the typing indicator and the bot's suggestion.

AgentConsumer owns one AgentTools and calls it from a few dispatch lines; the logic lives in
typing.py and suggest.py (canned replies are the page's, canned.py; the export is export.py).
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any

from ..bots import Bot
from ..config import Settings
from ..layers import ChannelLayer
from .suggest import Suggester, SuggestionFrame, suggests
from .typing import TypingGate, send_typing


class AgentTools:
    """Typing notices and suggestions for one console socket.

    `send` writes a frame to the console; `require_mine` raises ProtocolError("not_yours") unless
    the agent holds the conversation."""

    def __init__(
        self,
        bot: Bot,
        settings: Settings,
        layer: ChannelLayer,
        send: Callable[[Any], Awaitable[None]],
        require_mine: Callable[[str], Awaitable[None]],
    ) -> None:
        self.layer = layer
        self.send = send
        self.require_mine = require_mine
        self.gate = TypingGate()
        self.suggester: Suggester | None = None
        if suggests(bot, settings.agents.suggestions):
            self.suggester = Suggester(bot, self._suggested, timeout=settings.bot.timeout)

    async def _suggested(self, frame: SuggestionFrame) -> None:
        await self.send(frame)

    async def typing(self, conversation: str) -> None:
        """{"type": "typing"} from the console: only the holding agent, at most one per interval
        (more are dropped without a word: the console throttles, this is the server's own limit)."""
        if not self.gate.allow(conversation):
            return
        await self.require_mine(conversation)
        await send_typing(self.layer, conversation)

    def seen(self, conversation: str, frames: list[dict[str, Any]]) -> None:
        """Frames of a conversation this agent holds reached the console (a transcript or a new one)."""
        if self.suggester is not None:
            self.suggester.seen(conversation, frames)

    def dropped(self, conversation: str) -> None:
        """The agent let the conversation go."""
        if self.suggester is not None:
            self.suggester.drop(conversation)

    def close(self) -> None:
        """The console socket closed: stop asking the bot."""
        if self.suggester is not None:
            self.suggester.close()
