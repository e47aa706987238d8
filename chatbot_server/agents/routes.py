"""Mount the agents feature into the chatbot (sub-)application."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import secrets
from collections.abc import AsyncIterator
from typing import TYPE_CHECKING

from aiohttp import web

from ..config import Settings
from ..errors import ChatbotServerError
from ..hours import Availability, from_settings
from ..keys import AVAILABILITY_KEY, DIRECTORY_KEY, LAYER_KEY, LEFT_MESSAGES_KEY, QUEUE_KEY, ROUTER_KEY, STORE_KEY
from ..layers import ChannelLayer
from ..store.handoff import HandoffQueue, MemoryHandoffQueue, RedisHandoffQueue
from ..store.left_messages import LeftMessages, MemoryLeftMessages
from ..store.routing import AgentRouting, MemoryRouting
from ..store.routing_redis import RedisRouting
from .consumer import AgentConsumer
from .directory import AgentDirectory
from .export import export_transcript
from .revocations import RESYNC, LocalRevocations, RedisRevocations, Revocations
from .routing import Router
from .sessions import SESSIONS_GROUP, LiveSessions
from .unanswered_views import unanswered_csv, unanswered_page
from .views import console_page, login, login_page, logout

log = logging.getLogger("chatbot_server.agents")

if TYPE_CHECKING:
    from ..ops.redis import RedisClient


def make_queue(settings: Settings, backend: str, *, client: RedisClient | None = None) -> HandoffQueue:
    """The handoff queue on the same backend as the conversation store.

    On Redis it uses `client` (the application's one client, closed by the application) if given.
    """
    grace, cap = settings.agents.queue_grace, settings.agents.max_queued_per_ip
    if backend == "redis":
        redis = settings.layer.redis
        return RedisHandoffQueue(url=redis.url, prefix=redis.prefix, client=client, grace=grace, max_per_ip=cap)
    return MemoryHandoffQueue(grace=grace, max_per_ip=cap)


def make_routing(settings: Settings, queue: HandoffQueue) -> AgentRouting:
    """Presence and assignment where the queue is (its Redis client and key prefix)."""
    process = secrets.token_hex(6)  # names this process's presence renewals
    ttl = settings.agents.presence_ttl
    if isinstance(queue, RedisHandoffQueue):
        return RedisRouting(queue.client, settings.layer.redis.prefix, grace=queue.grace, ttl=ttl, process=process)
    if isinstance(queue, MemoryHandoffQueue):
        return MemoryRouting(queue, ttl=ttl, process=process)
    raise TypeError(f"no routing for the queue {type(queue).__name__}")


def make_revocations(settings: Settings, backend: str, *, client: RedisClient | None) -> Revocations:
    """Where sign-outs are kept for processes that were not listening: Redis when it is shared."""
    if backend == "redis" and client is not None:
        return RedisRevocations(client, settings.layer.redis.prefix)
    return LocalRevocations()


def setup_agents(
    app: web.Application,
    settings: Settings,
    queue: HandoffQueue,
    revocations: Revocations | None = None,
    left_messages: LeftMessages | None = None,
) -> None:
    """Add /agent, /agent/login, /agent/logout, /agent/ws and the transcript export; `queue` is started and closed with the app."""
    app[QUEUE_KEY] = queue
    # Business hours (agents.hours) and messages left outside them (docs/agents.md).
    app[AVAILABILITY_KEY] = availability = Availability(from_settings(settings.agents.hours))
    app[LEFT_MESSAGES_KEY] = left_messages or MemoryLeftMessages(
        per_ip=settings.agents.left_messages_per_ip, max_open=settings.agents.left_messages_max
    )
    queue.publish_to(app[LAYER_KEY])  # where its keeper announces lapsed entries
    app[DIRECTORY_KEY] = directory = AgentDirectory(settings.agents)
    directory.revocations = revocations or LocalRevocations()
    routing = make_routing(settings, queue)
    queue.routing = routing  # anyone_online() and the users' "预计等待" (chat/handoff.py)
    if not settings.agents.queue_when_offline:  # nobody online: say so and offer 留言, as outside hours
        availability.anyone_online = queue.anyone_online
    app[ROUTER_KEY] = router = Router(
        routing, settings=settings.agents, queue=queue, directory=directory, store=app[STORE_KEY], layer=app[LAYER_KEY]
    )
    app.router.add_get("/agent", console_page, name="chatbot_agent_console")
    app.router.add_get("/agent/login", login_page, name="chatbot_agent_login")
    app.router.add_post("/agent/login", login, name="chatbot_agent_login_post")
    app.router.add_post("/agent/logout", logout, name="chatbot_agent_logout")
    app.router.add_get("/agent/ws", AgentConsumer.as_handler(), name="chatbot_agent_ws")
    app.router.add_get("/agent/unanswered", unanswered_page, name="chatbot_agent_unanswered")
    app.router.add_get("/agent/unanswered.csv", unanswered_csv, name="chatbot_agent_unanswered_csv")
    app.router.add_get(
        r"/agent/conversations/{conversation}/transcript.{kind:txt|json}",
        export_transcript,
        name="chatbot_agent_export",
    )

    async def lifecycle(_: web.Application) -> AsyncIterator[None]:
        await queue.start()
        try:
            yield
        finally:
            directory.close()
            await queue.close()

    app.cleanup_ctx.append(lifecycle)
    listener = SignOutListener(directory.sessions, directory.revocations)

    async def listen(app: web.Application) -> None:
        await listener.start(app[LAYER_KEY])
        await router.start()

    async def stop_listening(_: web.Application) -> None:
        await router.stop()
        await listener.stop()

    # on_startup runs after every cleanup context started, so the layer is up by then; on_shutdown
    # runs before they are closed.
    app.on_startup.append(listen)
    app.on_shutdown.append(stop_listening)


class SignOutListener:
    """This process's member of SESSIONS_GROUP: sign-outs made on any process reach LiveSessions."""

    def __init__(self, sessions: LiveSessions, revocations: Revocations) -> None:
        self.sessions = sessions
        self.revocations = revocations
        self._layer: ChannelLayer | None = None
        self._channel = ""
        self._refresh: asyncio.Task[None] | None = None

    async def start(self, layer: ChannelLayer) -> None:
        self._layer = layer
        self._channel = await layer.new_channel("agents.sessions")
        layer.subscribe(self._channel, self.sessions.deliver)
        await layer.group_add(SESSIONS_GROUP, self._channel)
        await self.resync()  # sign-outs made before this process started
        self._refresh = asyncio.get_running_loop().create_task(self._keep_joined(layer))

    async def resync(self) -> None:
        """Refuse every session signed out anywhere (also those whose message we missed)."""
        for session_id, expires in (await self.revocations.current()).items():
            if not self.sessions.revoked(session_id):
                self.sessions.revoke(session_id, expires)

    async def _keep_joined(self, layer: ChannelLayer) -> None:
        # Group memberships expire after layer.group_expiry; this one must last as long as the
        # process. Revocations are read every RESYNC: a process cut off from Redis when a sign-out
        # was announced refuses that session at most RESYNC after Redis is back.
        joined = asyncio.get_running_loop().time()
        while True:
            await asyncio.sleep(min(RESYNC, layer.group_expiry / 2))
            await self.resync()
            if asyncio.get_running_loop().time() - joined < layer.group_expiry / 2:
                continue
            try:
                await layer.group_add(SESSIONS_GROUP, self._channel)
                joined = asyncio.get_running_loop().time()
            except ChatbotServerError as exc:  # Redis down: the layer re-registers it on reconnect
                log.warning("agents.sessions rejoin failed: %s", exc)

    async def stop(self) -> None:
        if self._refresh is not None:
            self._refresh.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._refresh
        if self._layer is not None and self._channel:
            try:
                await self._layer.group_discard(SESSIONS_GROUP, self._channel)
            except ChatbotServerError as exc:  # stopping: the membership expires on its own
                log.info("agents.sessions leave failed: %s", exc)
            await self._layer.release_channel(self._channel)
