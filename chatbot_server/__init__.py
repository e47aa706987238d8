"""chatbot_server: a real-time customer-service chatbot server on aiohttp."""

from __future__ import annotations

__version__ = "0.1.0"

from .app import create_app, get_layer, setup  # noqa: E402
from .bots import Bot, Reply, Turn, Typing  # noqa: E402
from .chat import ChatConsumer  # noqa: E402
from .config import Settings, load_settings, settings_from_dict  # noqa: E402
from .consumer import WebsocketConsumer  # noqa: E402
from .errors import ChannelFull, ChatbotServerError, ConfigError, NotSetUpError  # noqa: E402
from .layers import ChannelLayer, MemoryChannelLayer  # noqa: E402

__all__ = [
    "Bot", "ChannelFull", "ChannelLayer", "ChatConsumer", "ChatbotServerError", "ConfigError",
    "MemoryChannelLayer", "NotSetUpError", "Reply", "Settings", "Turn", "Typing", "WebsocketConsumer",
    "__version__", "create_app", "get_layer", "load_settings", "settings_from_dict", "setup",
]
