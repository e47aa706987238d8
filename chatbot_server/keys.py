"""Every typed application key chatbot_server stores on an aiohttp Application."""

from __future__ import annotations

from typing import TYPE_CHECKING

from aiohttp import web

if TYPE_CHECKING:
    from jinja2 import Environment

    from .bots import Bot
    from .config import Settings
    from .layers import ChannelLayer
    from .sockets.registry import ConnectionRegistry
    from .store.base import ConversationStore

SETTINGS_KEY: web.AppKey[Settings] = web.AppKey("chatbot_server.settings")
LAYER_KEY: web.AppKey[ChannelLayer] = web.AppKey("chatbot_server.layer")
BOT_KEY: web.AppKey[Bot] = web.AppKey("chatbot_server.bot")
STORE_KEY: web.AppKey[ConversationStore] = web.AppKey("chatbot_server.store")
CONNECTIONS_KEY: web.AppKey[ConnectionRegistry] = web.AppKey("chatbot_server.connections")
# Our own Jinja environment, never the host application's default one.
TEMPLATES_KEY: web.AppKey[Environment] = web.AppKey("chatbot_server.templates")
