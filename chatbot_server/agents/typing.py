"""The typing indicator: the holding agent types, the customer's page shows 客服正在输入… for a moment.

Never stored: a layer message (messages.ConvTyping) to the one socket holding the conversation,
which sends the page {"type": "typing", "who": "agent"}. The console sends at most one notice per
conversation every TYPING_INTERVAL seconds; TypingGate holds a console that sends more to the same.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Final

from .. import messages
from ..layers import ChannelLayer
from ..messages import conversation_group

#: Seconds between two typing notices of one console for one conversation.
TYPING_INTERVAL: Final = 2.0
# Conversations a gate remembers before it forgets the stale ones (an agent holds a handful).
_REMEMBERED: Final = 64


class TypingGate:
    """At most one typing notice per conversation every `interval` seconds (one console's)."""

    def __init__(self, interval: float = TYPING_INTERVAL, clock: Callable[[], float] = time.monotonic) -> None:
        self.interval = interval
        self.clock = clock
        self._last: dict[str, float] = {}

    def allow(self, conversation: str) -> bool:
        """True (and the notice counted) if the last one for this conversation is old enough."""
        now = self.clock()
        last = self._last.get(conversation)
        if last is not None and now - last < self.interval:
            return False
        if len(self._last) >= _REMEMBERED:  # bounded whatever ids a console sends
            self._last = {c: t for c, t in self._last.items() if now - t < self.interval}
            if len(self._last) >= _REMEMBERED:
                return False
        self._last[conversation] = now
        return True


async def send_typing(layer: ChannelLayer, conversation: str) -> None:
    """Tell the socket holding `conversation` (on any process) that its agent is typing."""
    await layer.group_send(conversation_group(conversation), messages.conv_typing(conversation))
