"""chatbot_server: a real-time customer-service chatbot server on aiohttp."""

from __future__ import annotations

from .app import create_app, get_layer, setup
from .bots import Bot, Delta, Reply, Turn, Typing
from .chat.consumer import ChatConsumer
from .config import Settings, load_settings, settings_from_dict
from .errors import ChannelFull, ChatbotServerError, ConfigError, NotSetUpError
from .layers import ChannelLayer, MemoryChannelLayer
from .sockets.consumer import WebsocketConsumer, message_handler
from .version import __version__

__all__ = [
    "Bot",
    "ChannelFull",
    "ChannelLayer",
    "ChatConsumer",
    "ChatbotServerError",
    "ConfigError",
    "Delta",
    "MemoryChannelLayer",
    "NotSetUpError",
    "Reply",
    "Settings",
    "Turn",
    "Typing",
    "WebsocketConsumer",
    "__version__",
    "create_app",
    "get_layer",
    "load_settings",
    "message_handler",
    "settings_from_dict",
    "setup",
]
