"""Channel layers: memory (dev, the default) and Redis (several processes act as one)."""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

from ..errors import ConfigError
from .base import ChannelLayer, LayerHealth, Message
from .memory import MemoryChannelLayer

if TYPE_CHECKING:
    from ..config import LayerSettings

__all__ = ["ChannelLayer", "LayerHealth", "MemoryChannelLayer", "Message", "make_layer"]


def make_layer(settings: LayerSettings) -> ChannelLayer:
    """Build (not start) the layer named by `settings.backend`: memory, redis or "pkg.mod:Class"."""
    common: dict[str, Any] = {
        "capacity": settings.capacity,
        "expiry": settings.expiry,
        "group_expiry": settings.group_expiry,
    }
    if settings.backend == "memory":
        return MemoryChannelLayer(**common)
    if settings.backend == "redis":
        from .redis import RedisChannelLayer

        r = settings.redis
        return RedisChannelLayer(
            url=r.url,
            prefix=r.prefix,
            pool_size=r.pool_size,
            connect_timeout=r.connect_timeout,
            socket_timeout=r.socket_timeout,
            required=r.required,
            heartbeat_interval=r.heartbeat_interval,
            **common,
        )
    module_name, colon, attr = settings.backend.partition(":")
    if not colon:
        raise ConfigError(
            f"unknown backend {settings.backend!r}: use memory, redis or 'pkg.mod:Class'", key="layer.backend"
        )
    try:
        cls = getattr(importlib.import_module(module_name), attr)
    except (ImportError, AttributeError) as exc:
        raise ConfigError(f"cannot load {settings.backend!r}: {exc}", key="layer.backend") from exc
    if not (isinstance(cls, type) and issubclass(cls, ChannelLayer)):
        raise ConfigError(f"{settings.backend!r} is not a ChannelLayer subclass", key="layer.backend")
    return cls(**common)
