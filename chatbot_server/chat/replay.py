"""Replaying a conversation's stored frames to one socket: a bounded page at a time.

A resume sends at most `limits.replay_frames` frames, the newest the client lacks; if older ones
it lacks remain, a `system` frame `event: "history_more"` says which (`before`, `after`) and the
client asks for them with {"type": "history", "before": ..., "after": ...}, one page per request
(each page ends with `history_more` or `history_done`). Every frame sent draws on the client
address's replay budget (limits.replay_per_ip a minute); a request beyond it gets `rate_limited`
and nothing. See docs/protocol.md, "History pages".
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable, Mapping
from typing import Any, Final, Protocol

from ..errors import ProtocolError
from ..ops.metrics import ServerStats
from ..protocol import Frame, HistoryRequest, error_frame, frame, parse_last_seq
from ..store import ConversationStore
from .budgets import AddressBuckets
from .holding import Holding

log = logging.getLogger("chatbot_server.chat")

NEWEST: Final = 2**53  # above every seq: a resume pages back from the newest frame
_REFUSED_TEXT: Final = "您请求历史消息过于频繁,请稍后再试。"


class _Socket(Protocol):
    connection_id: str
    stats: ServerStats

    async def send_json(self, payload: Any) -> None: ...


class Replay:
    """One socket's replays and history pages, within its address's replay budget."""

    __slots__ = ("address", "budget", "page_size", "socket", "store")

    def __init__(
        self,
        socket: _Socket,
        *,
        store: ConversationStore,
        page_size: int,
        budget: AddressBuckets | None,
        address: str,
    ) -> None:
        self.socket = socket
        self.store = store
        self.page_size = page_size
        self.budget = budget  # None: the address is not limited (loopback)
        self.address = address

    async def resume(self, conversation: str, last_seq: int) -> int:
        """Send the newest frames after `last_seq` (one page) and say if older ones remain; the count sent."""
        return await self._page(conversation, before=NEWEST, after=last_seq, ends_page=False)

    async def page(self, conversation: str, request: HistoryRequest) -> int:
        """Answer a {"type": "history"} request: one page, then `history_more` or `history_done`."""
        return await self._page(conversation, before=request.before, after=request.after, ends_page=True)

    async def _page(self, conversation: str, *, before: int, after: int, ends_page: bool) -> int:
        frames = await self.store.read_page(conversation, after_seq=after, before_seq=before, limit=self.page_size + 1)
        more = len(frames) > self.page_size
        if more:  # one more than a page was read only to learn this
            del frames[0]
        socket = self.socket
        if frames and self.budget is not None and not self.budget.take(self.address, len(frames)):
            log.warning("ws.replay_refused conn=%s frames=%d", socket.connection_id, len(frames))
            socket.stats.error("rate_limited")
            await socket.send_json(error_frame("rate_limited", _REFUSED_TEXT))
            if not ends_page:  # a resume: the client still learns what it lacks, to ask for later
                await socket.send_json(_notice("history_more", before=frames[-1]["seq"] + 1, after=after))
            return 0
        for old in frames:
            await socket.send_json(old)
        socket.stats.frames_replayed += len(frames)
        if more:
            await socket.send_json(_notice("history_more", before=frames[0]["seq"], after=after))
        elif ends_page:
            await socket.send_json(_notice("history_done", before=before, after=after))
        return len(frames)


def _notice(event: str, *, before: int, after: int) -> Frame:
    return frame("system", "", talk=False, event=event, before=before, after=after)


def asked_resume(query: Mapping[str, str]) -> tuple[str | None, int, ProtocolError | None]:
    """The conversation a socket's URL asks to carry on (`conversation`, `last_seq`; None: a new
    one), from which seq, and the error of a bad `last_seq` (then everything is replayed)."""
    wanted = query.get("conversation", "")[:128] or None
    if wanted is None:
        return None, 0, None
    try:
        return wanted, parse_last_seq(query.get("last_seq", "0")), None
    except ProtocolError as exc:
        return wanted, 0, exc


async def answer_orphans(
    store: ConversationStore, hold: Holding, answer: Callable[[str, str], Awaitable[None]]
) -> None:
    """Answer the user's last messages if their answer was lost (the old server died mid-answer)."""
    conversation = hold.conversation
    orphans: list[dict[str, Any]] = []
    for stored in reversed(await store.recent(conversation, 20)):
        if stored.get("type") != "user":
            break
        orphans.append(stored)
    for old in reversed(orphans):
        client_id = old.get("id")
        if client_id is None or hold.busy_with(client_id):
            continue
        if not await store.reply_stored(conversation, client_id):
            await answer(old["msg"], client_id)
