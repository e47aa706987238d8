"""Mount the agents feature into the chatbot (sub-)application."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import TYPE_CHECKING

from aiohttp import web

from ..config import Settings
from ..keys import DIRECTORY_KEY, QUEUE_KEY
from ..store.handoff import HandoffQueue, MemoryHandoffQueue, RedisHandoffQueue
from .consumer import AgentConsumer
from .directory import AgentDirectory
from .views import console_page, login, login_page, logout

if TYPE_CHECKING:
    import redis.asyncio as aioredis


def make_queue(settings: Settings, backend: str, *, client: aioredis.Redis | None = None) -> HandoffQueue:
    """The handoff queue on the same backend as the conversation store.

    On Redis it uses `client` (the application's one client, closed by the application) if given.
    """
    if backend == "redis":
        redis = settings.layer.redis
        return RedisHandoffQueue(url=redis.url, prefix=redis.prefix, client=client)
    return MemoryHandoffQueue()


def setup_agents(app: web.Application, settings: Settings, queue: HandoffQueue) -> None:
    """Add /agent, /agent/login, /agent/logout and /agent/ws; `queue` is started and closed with the app."""
    app[QUEUE_KEY] = queue
    app[DIRECTORY_KEY] = AgentDirectory(settings.agents)
    app.router.add_get("/agent", console_page, name="chatbot_agent_console")
    app.router.add_get("/agent/login", login_page, name="chatbot_agent_login")
    app.router.add_post("/agent/login", login, name="chatbot_agent_login_post")
    app.router.add_post("/agent/logout", logout, name="chatbot_agent_logout")
    app.router.add_get("/agent/ws", AgentConsumer.as_handler(), name="chatbot_agent_ws")

    async def lifecycle(_: web.Application) -> AsyncIterator[None]:
        await queue.start()
        try:
            yield
        finally:
            await queue.close()

    app.cleanup_ctx.append(lifecycle)
