"""The error hierarchy: everything chatbot_server raises derives from ChatbotServerError."""

from __future__ import annotations


class ChatbotServerError(Exception):
    """Root of every error raised by chatbot_server."""


class ConfigError(ChatbotServerError, ValueError):
    """A configuration value is missing, unknown, of the wrong type or out of range."""

    def __init__(self, message: str, *, key: str = "", source: str = "") -> None:
        self.key = key
        self.source = source
        where = f"{source}: " if source else ""
        what = f"{key}: " if key else ""
        super().__init__(f"{where}{what}{message}")


class NotSetUpError(ChatbotServerError, RuntimeError):
    """An accessor was used on an application that chatbot_server.setup() has not prepared."""

    def __init__(self, message: str = "chatbot_server.setup(app, ...) must be called first") -> None:
        super().__init__(message)


class InvalidNameError(ChatbotServerError, ValueError):
    """A channel or group name breaks the naming rules."""


class InvalidMessageError(ChatbotServerError, ValueError):
    """A channel-layer message is not a dict with a string "type" and JSON-serialisable values."""


class ChannelFull(ChatbotServerError):  # noqa: N818 - the name Django Channels users know
    """A channel already holds `capacity` messages."""


class LayerUnavailableError(ChatbotServerError, ConnectionError):
    """The channel layer's backend (e.g. Redis) cannot be reached right now."""


class StoreUnavailableError(ChatbotServerError, ConnectionError):
    """The conversation store's backend (e.g. Redis) cannot be reached right now."""


class NotOwnedError(ChatbotServerError, RuntimeError):
    """A frame was appended without waiting to a conversation this process does not own."""


class BotError(ChatbotServerError):
    """A bot could not be loaded or failed to answer."""


class ProtocolError(ChatbotServerError, ValueError):
    """A client frame breaks protocol v1; `code` goes into the error frame."""

    def __init__(self, code: str, message: str) -> None:
        self.code = code
        super().__init__(message)
