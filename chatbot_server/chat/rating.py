"""The customer's answer to "please rate this chat" (docs/agents.md "Ratings").

The agent's side (agents/feedback.py) asks: a pending rating in the RatingStore and a stored
`system` frame `rating_request`. The answer takes the pending rating, so one answer per ended
chat counts on any process; a `system` frame `rating_done` is stored so a reloaded page does not
show the card again.
"""

from __future__ import annotations

import logging
from typing import Any, Protocol

from ..errors import StoreUnavailableError
from ..masking import mask_sensitive
from ..protocol import Frame, RatingAnswer, error_frame, frame, now_ms
from ..store.ratings import Rating, RatingStore

log = logging.getLogger("chatbot_server.chat")

THANKS = "感谢您的评价,祝您生活愉快!"
REFUSED = "本次服务已评价或无需评价,感谢您的支持。"
UNAVAILABLE = "抱歉,评价暂时无法提交,请稍后再试。"


class RatingSocket(Protocol):
    """What the rating needs of the chat socket (ChatConsumer is one)."""

    stats: Any

    async def send_json(self, payload: object) -> None: ...

    async def emit(self, out: Frame) -> None: ...


async def take_rating(
    socket: RatingSocket, store: RatingStore, conversation: str, answer: RatingAnswer, *, comment_length: int
) -> None:
    """Take the customer's score (or skip) for the conversation's ended agent chat, or refuse it politely."""
    if len(answer.comment) > comment_length:
        socket.stats.error("too_long")
        await socket.send_json(error_frame("too_long", f"评价内容太长了,请控制在 {comment_length} 个字以内。"))
        return
    try:
        agent = await store.take(conversation)
        if agent is not None and answer.score is not None:
            comment = mask_sensitive(answer.comment)
            await store.add(Rating(conversation, agent, answer.score, comment, now_ms()))
    except StoreUnavailableError as exc:
        log.warning("rating.unavailable conversation=%s error=%s", conversation[:8], exc)
        socket.stats.error("rating_unavailable")
        await socket.send_json(error_frame("rating_unavailable", UNAVAILABLE))
        return
    if agent is None:  # none asked, or answered already (here or on another process)
        socket.stats.error("rating_refused")
        await socket.send_json(error_frame("rating_refused", REFUSED))
        return
    if answer.score is None:
        log.info("rating.skipped conversation=%s", conversation[:8])
        await socket.emit(frame("system", "", talk=False, event="rating_done", skipped=True))
        return
    socket.stats.rating(answer.score, agent)
    log.info("rating.given conversation=%s agent=%s score=%d", conversation[:8], agent, answer.score)
    await socket.emit(frame("system", THANKS, talk=False, event="rating_done", score=answer.score))
