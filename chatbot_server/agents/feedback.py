"""Ratings and unanswered questions: their stores, built with the agents, and the rating request.

After an agent ends a chat (`end`, not `handback`), `ask_rating` records a pending rating and
stores a `system` frame `rating_request` in the conversation; the customer's page shows the rating
card until it is answered or skipped (chat/rating.py). docs/agents.md "Ratings".
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING

from aiohttp import web

from ..chat.holding import deliver
from ..config import Settings
from ..errors import ChatbotServerError
from ..keys import RATINGS_KEY, UNANSWERED_KEY
from ..layers import ChannelLayer
from ..protocol import frame
from ..store.base import ConversationStore
from ..store.ratings import MemoryRatingStore, RatingStore
from ..store.unanswered import MemoryUnansweredStore, UnansweredStore

if TYPE_CHECKING:
    from ..ops.redis import RedisClient

log = logging.getLogger("chatbot_server.agents")

RATING_TEXT = "请您为本次人工服务评分,您的意见将帮助我们改进服务。"


def setup_feedback(
    app: web.Application, settings: Settings, backend: str, *, client: RedisClient | None
) -> tuple[RatingStore, UnansweredStore]:
    """Build both stores on the conversation store's backend and keep them in `app`."""
    agents = settings.agents
    ratings: RatingStore
    unanswered: UnansweredStore
    if backend == "redis" and client is not None:
        from ..store.ratings_redis import RedisRatingStore
        from ..store.unanswered_redis import RedisUnansweredStore

        prefix = settings.layer.redis.prefix
        ratings = RedisRatingStore(client, prefix=prefix, pending_ttl=settings.history.ttl, days=agents.rating_days)
        unanswered = RedisUnansweredStore(
            client, prefix=prefix, days=agents.unanswered_days, per_day=agents.unanswered_per_day
        )
    else:
        ratings = MemoryRatingStore(pending_ttl=settings.history.ttl, days=agents.rating_days)
        unanswered = MemoryUnansweredStore(days=agents.unanswered_days, per_day=agents.unanswered_per_day)
    app[RATINGS_KEY] = ratings
    app[UNANSWERED_KEY] = unanswered
    return ratings, unanswered


async def ask_rating(
    ratings: RatingStore, store: ConversationStore, layer: ChannelLayer, conversation: str, agent: str, name: str
) -> None:
    """The pending rating first (a quick answer must find it), then the card's frame for the page.

    The chat has ended already: a store that fails costs the rating only (logged), never the end."""
    try:
        await ratings.ask(conversation, agent)
        request = frame("system", RATING_TEXT, talk=False, event="rating_request", agent=name)
        await deliver(store, layer, conversation, request)
    except (ChatbotServerError, TimeoutError) as exc:
        log.warning("agent.rating_not_asked conversation=%s error=%s", conversation[:8], exc)
