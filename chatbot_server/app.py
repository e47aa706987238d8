"""Build the chatbot application standalone (`create_app`) or mount it into a host site (`setup`)."""

from __future__ import annotations

import asyncio
import gc
import logging
import signal
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import TYPE_CHECKING

import aiohttp_jinja2
import jinja2
from aiohttp import web

from .bots import Bot, BotContext, build_bot
from .chat import ChatConsumer
from .chat.budgets import ClientBudgets
from .chat.holding import Holders
from .chat.identity import IdentityGate
from .chat.turns import TurnRunner
from .config import LayerSettings, Settings
from .errors import NotSetUpError
from .keys import (
    BOT_KEY,
    BUDGETS_KEY,
    CONNECTIONS_KEY,
    CUSTOMERS_KEY,
    HOLDERS_KEY,
    IDENTITY_KEY,
    LAYER_KEY,
    NOTES_KEY,
    SETTINGS_KEY,
    STORE_KEY,
    TEMPLATES_KEY,
    TURNS_KEY,
)
from .layers import ChannelLayer, make_layer
from .ops.views import chat_page, healthz, metrics, widget_asset
from .resources import static_dir, templates_dir
from .sockets.consumer import WebsocketConsumer
from .sockets.registry import ConnectionRegistry
from .store import ConversationStore, MemoryConversationStore
from .store.customers import CustomerDirectory, MemoryCustomerDirectory

if TYPE_CHECKING:
    from .ops.redis import RedisClient

log = logging.getLogger("chatbot_server.app")


def setup(
    app: web.Application,
    settings: Settings | None = None,
    *,
    prefix: str = "",
    layer: ChannelLayer | None = None,
    bot: Bot | None = None,
    store: ConversationStore | None = None,
    consumer: type[WebsocketConsumer] = ChatConsumer,
    monitoring_routes: bool = True,
) -> ChannelLayer:
    """Mount the chatbot into `app` (under `prefix` as a sub-app) and return its channel layer.

    The host keeps its own routes, middlewares and Jinja environment: the chatbot renders with an
    environment of its own. Layer, bot and store are built from `settings` unless passed in; what
    setup builds it also starts and closes (in the app's cleanup context), what the caller passes
    in the caller starts and closes. With `monitoring_routes=False` /healthz and /metrics are left
    out (python -m chatbot_server serves them on a listener of their own, monitoring.port).
    """
    settings = settings or Settings()
    target = app
    if prefix:
        if not prefix.startswith("/") or prefix.endswith("/"):
            raise ValueError(f"prefix must look like '/support', got {prefix!r}")
        target = web.Application()
    handoff = settings.agents.enabled and bool(settings.agents.accounts)
    # One Redis client for the whole process (layer, history, handoff queue): one pool, one retry
    # and health policy. It connects on its first command and is closed after all three.
    store_backend = store.backend if store is not None else history_backend(settings)
    redis = None
    # The handoff queue and the customer directory follow the store, even one passed in.
    if (layer is None and settings.layer.backend == "redis") or store_backend == "redis":
        from .ops.redis import redis_client

        r = settings.layer.redis
        redis = redis_client(
            r.url, pool_size=r.pool_size, connect_timeout=r.connect_timeout, socket_timeout=r.socket_timeout
        )
        target.cleanup_ctx.append(_closes(redis))  # first in, so cleaned up last
    owned_layer = layer is None
    layer = layer if layer is not None else build_layer(settings.layer, redis_client=redis)
    owned_bot = bot is None
    bot = (
        bot
        if bot is not None
        else build_bot(settings.bot.name, settings.bot.options, BotContext(base_dir=settings.base_dir, agents=handoff))
    )
    owned_store = store is None
    store = store if store is not None else make_store(settings, layer, redis_client=redis)

    target[SETTINGS_KEY] = settings
    target[LAYER_KEY] = layer
    target[BOT_KEY] = bot
    target[STORE_KEY] = store
    target[TURNS_KEY] = TurnRunner(bot, timeout=settings.bot.timeout, reply_timeout=settings.bot.reply_timeout)
    target[HOLDERS_KEY] = Holders()
    customers = target[CUSTOMERS_KEY] = make_customers(settings, store.backend, redis_client=redis)
    if settings.identity.secret:
        target[IDENTITY_KEY] = IdentityGate(settings.identity, customers)
    target[BUDGETS_KEY] = ClientBudgets(
        replay_per_ip=settings.limits.replay_per_ip, quota_per_ip=settings.history.quota_per_ip
    )
    registry = ConnectionRegistry(max_per_ip=settings.limits.max_connections_per_ip)
    registry.stats.bind(lambda: len(registry), layer, store, bot)
    target[CONNECTIONS_KEY] = registry
    _setup_templates(target, settings)

    target.router.add_get("/", chat_page, name="chatbot_page")
    target.router.add_get("/widget.{ext:js|css}", widget_asset, name="chatbot_widget")  # docs/widget.md
    target.router.add_get("/ws", consumer.as_handler(), name="chatbot_ws")
    if monitoring_routes:
        target.router.add_get("/healthz", healthz, name="chatbot_healthz")
        target.router.add_get("/metrics", metrics, name="chatbot_metrics")
    target.router.add_static("/static", static_dir(), name="chatbot_static")
    # The chat page shows its 转人工 button only when there are agents to hand off to.
    target[TEMPLATES_KEY].globals["handoff_enabled"] = handoff
    if handoff:
        from .agents.feedback import setup_feedback
        from .agents.left_messages import make_left_messages
        from .agents.routes import make_queue, make_revocations, setup_agents
        from .chat.unanswered import UnansweredNotes

        queue = make_queue(settings, store.backend, client=redis)
        revocations = make_revocations(settings, store.backend, client=redis)
        left = make_left_messages(settings, store.backend, client=redis)
        setup_agents(target, settings, queue, revocations, left)
        _, unanswered = setup_feedback(target, settings, store.backend, client=redis)
        below = settings.agents.unanswered_below
        target[NOTES_KEY] = UnansweredNotes(unanswered, below=below, stats=registry.stats)
    if settings.api.tokens:  # without tokens nobody could call it: /api/v1 is not routed (404)
        from .api.routes import setup_api

        setup_api(target, settings)

    async def resources(_: web.Application) -> AsyncIterator[None]:
        if owned_layer:
            await layer.start()
        if owned_store and store_backend == "redis":
            # Built with the layer's id, which a layer on a cluster chooses when it starts (its
            # inbox on the least loaded primary): the final one, before any socket or store call.
            store.process_id = layer.process_id
        try:
            if owned_bot:
                await bot.start()
            try:
                if owned_store:
                    await store.start()
                try:
                    yield
                finally:
                    if owned_store:
                        await store.close()
            finally:
                if owned_bot:
                    await bot.close()
        finally:
            if owned_layer:
                await layer.close()

    async def close_sockets(_: web.Application) -> None:
        await registry.close_all()

    target.cleanup_ctx.append(resources)
    target.on_shutdown.append(close_sockets)
    if target is not app:
        app.add_subapp(prefix, target)
        # The host may want to broadcast from its own handlers: get_layer(app) works there too.
        app[LAYER_KEY] = layer
    return layer


def build_layer(settings: LayerSettings, *, redis_client: RedisClient | None = None) -> ChannelLayer:
    """Build (not start) the channel layer `settings` name; the redis layer uses `redis_client` if given."""
    r = settings.redis
    return make_layer(
        settings.backend,
        capacity=settings.capacity,
        expiry=settings.expiry,
        group_expiry=settings.group_expiry,
        redis_client=redis_client,
        redis_url=r.url,
        redis_prefix=r.prefix,
        pool_size=r.pool_size,
        connect_timeout=r.connect_timeout,
        socket_timeout=r.socket_timeout,
        required=r.required,
        heartbeat_interval=r.heartbeat_interval,
        probe_interval=r.probe_interval,
    )


def history_backend(settings: Settings) -> str:
    """Where conversations are kept: `history.backend`, with "auto" resolved (as the layer)."""
    backend = settings.history.backend
    if backend == "auto":
        return "redis" if settings.layer.backend == "redis" else "memory"
    return backend


def _closes(client: RedisClient) -> Callable[[web.Application], AsyncIterator[None]]:
    async def close_redis(_: web.Application) -> AsyncIterator[None]:
        try:
            yield
        finally:
            await client.aclose()

    return close_redis


def make_store(
    settings: Settings, layer: ChannelLayer, *, redis_client: RedisClient | None = None
) -> ConversationStore:
    """Build (not start) the conversation store named by `history.backend` ("auto": as the layer).

    The Redis store uses `redis_client` if given (and leaves closing it to the caller).
    """
    history = settings.history
    if history_backend(settings) == "redis":
        from .store.redis import RedisConversationStore

        redis = settings.layer.redis
        return RedisConversationStore(
            url=redis.url,
            prefix=redis.prefix,
            process_id=layer.process_id,
            ttl=history.ttl,
            max_frames=history.max_frames,
            pool_size=redis.pool_size,
            write_interval=history.write_interval,
            client=redis_client,
        )
    return MemoryConversationStore(ttl=history.ttl, max_frames=history.max_frames)


def make_customers(settings: Settings, backend: str, *, redis_client: RedisClient | None) -> CustomerDirectory:
    """The verified-customer directory, kept where conversations are (it follows the store)."""
    if backend == "redis" and redis_client is not None:
        from .store.customers_redis import RedisCustomerDirectory

        return RedisCustomerDirectory(redis_client, prefix=settings.layer.redis.prefix, ttl=settings.history.ttl)
    return MemoryCustomerDirectory(ttl=settings.history.ttl)


def _setup_templates(app: web.Application, settings: Settings) -> None:
    folders: list[str | Path] = []
    if settings.ui.template_dir:
        override = Path(settings.ui.template_dir)
        folders.append(override if override.is_absolute() else settings.base_dir / override)
    folders.append(templates_dir())
    aiohttp_jinja2.setup(
        app,
        loader=jinja2.FileSystemLoader(folders),
        app_key=TEMPLATES_KEY,
        autoescape=jinja2.select_autoescape(default=True),
    )


def create_app(
    settings: Settings | None = None, *, handle_signals: bool = False, monitoring_routes: bool = True
) -> web.Application:
    """A standalone application serving the chatbot at the root; SIGHUP reloads the bot if asked."""
    settings = settings or Settings()
    app = web.Application(client_max_size=64 * 1024)
    setup(app, settings, monitoring_routes=monitoring_routes)
    if handle_signals:  # the process is ours (python -m chatbot_server)
        app.cleanup_ctx.append(_sighup_reloads_bot)
        app.on_startup.append(_freeze_startup_heap)  # after every start-up context (bot loaded)
    return app


async def _freeze_startup_heap(app: web.Application) -> None:
    # What start-up built (modules, the FAQ bot's index: ~60,000 tracked objects) lives as long as
    # the process: keep it out of the cyclic GC's full collections (12 ms each, measured), which
    # would otherwise stall every socket at intervals. Only when the process is ours: a host site
    # decides for its own process.
    gc.collect()
    gc.freeze()
    log.debug("gc.frozen objects=%d", gc.get_freeze_count())


async def _sighup_reloads_bot(app: web.Application) -> AsyncIterator[None]:
    loop = asyncio.get_running_loop()
    tasks: set[asyncio.Task[None]] = set()

    async def reload() -> None:
        log.info("bot.reload signal=SIGHUP")
        try:
            await app[BOT_KEY].reload()
        except Exception:
            log.exception("bot.reload_failed")

    def on_sighup() -> None:
        task = loop.create_task(reload())
        tasks.add(task)
        task.add_done_callback(tasks.discard)

    loop.add_signal_handler(signal.SIGHUP, on_sighup)
    try:
        yield
    finally:
        loop.remove_signal_handler(signal.SIGHUP)
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)


def get_layer(app: web.Application) -> ChannelLayer:
    """The channel layer of an application prepared by setup()."""
    try:
        return app[LAYER_KEY]
    except KeyError:
        raise NotSetUpError() from None
