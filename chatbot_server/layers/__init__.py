"""Channel layers: memory (dev, the default) and Redis (several processes act as one)."""

from __future__ import annotations

from .base import ChannelLayer, LayerHealth, Message
from .memory_impl import MemoryChannelLayer

__all__ = ["ChannelLayer", "LayerHealth", "MemoryChannelLayer", "Message"]
