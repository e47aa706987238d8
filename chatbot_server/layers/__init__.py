"""Channel layers: memory (dev, the default) and Redis (several processes act as one)."""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

from ..errors import ConfigError
from .base import ChannelLayer, LayerHealth, Message
from .memory import MemoryChannelLayer

if TYPE_CHECKING:
    from ..ops.redis import RedisClient

__all__ = ["ChannelLayer", "LayerHealth", "MemoryChannelLayer", "Message", "make_layer"]


def make_layer(
    backend: str,
    *,
    capacity: int = 100,
    expiry: float = 60,
    group_expiry: float = 86400,
    redis_client: RedisClient | None = None,
    redis_url: str = "redis://127.0.0.1:6379/0",
    redis_prefix: str = "chatbot",
    pool_size: int = 50,
    connect_timeout: float = 5.0,
    socket_timeout: float = 5.0,
    required: bool = False,
    heartbeat_interval: float = 5.0,
    probe_interval: float = 1.0,
) -> ChannelLayer:
    """Build (not start) the layer named by `backend`: memory, redis or "pkg.mod:Class".

    The redis layer uses `redis_client` if given (the application's one client, which the layer
    does not close); otherwise it makes a client of its own from `redis_url`, `pool_size` and the
    timeouts. The `redis_*`, timeout, `required`, `heartbeat_interval` and `probe_interval`
    arguments concern only the redis layer; an import path gets `capacity`, `expiry` and
    `group_expiry`.
    """
    common: dict[str, Any] = {"capacity": capacity, "expiry": expiry, "group_expiry": group_expiry}
    if backend == "memory":
        return MemoryChannelLayer(**common)
    if backend == "redis":
        from .redis import RedisChannelLayer

        return RedisChannelLayer(
            url=redis_url,
            prefix=redis_prefix,
            pool_size=pool_size,
            connect_timeout=connect_timeout,
            socket_timeout=socket_timeout,
            required=required,
            heartbeat_interval=heartbeat_interval,
            probe_interval=probe_interval,
            client=redis_client,
            **common,
        )
    module_name, colon, attr = backend.partition(":")
    if not colon:
        raise ConfigError(f"unknown backend {backend!r}: use memory, redis or 'pkg.mod:Class'", key="layer.backend")
    try:
        cls = getattr(importlib.import_module(module_name), attr)
    except (ImportError, AttributeError) as exc:
        raise ConfigError(f"cannot load {backend!r}: {exc}", key="layer.backend") from exc
    if not (isinstance(cls, type) and issubclass(cls, ChannelLayer)):
        raise ConfigError(f"{backend!r} is not a ChannelLayer subclass", key="layer.backend")
    return cls(**common)
