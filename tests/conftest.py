"""Shared fixtures: channel-layer factories for the contract suite."""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import pytest

from chatbot_server.layers import ChannelLayer, MemoryChannelLayer
from chatbot_server.layers.redis import RedisChannelLayer

from .redis_server import redis_prefix, redis_process, redis_server, unique_prefix

__all__ = ["redis_prefix", "redis_process", "redis_server"]

LayerFactory = Callable[..., Awaitable[ChannelLayer]]

LAYER_BACKENDS = ["memory", "redis"]


@pytest.fixture(params=LAYER_BACKENDS)
async def layer_factory(request: pytest.FixtureRequest) -> AsyncIterator[LayerFactory]:
    """Build started layers of one backend with the given settings; closes them afterwards."""
    made: list[ChannelLayer] = []
    # Every layer of one test shares a private redis-server and a key prefix no other test uses.
    redis_url = request.getfixturevalue("redis_server") if request.param == "redis" else ""
    prefix = unique_prefix()

    async def make(**settings: Any) -> ChannelLayer:
        layer: ChannelLayer
        if request.param == "memory":
            layer = MemoryChannelLayer(**settings)
        elif request.param == "redis":
            layer = RedisChannelLayer(url=redis_url, prefix=prefix, **settings)
        else:  # pragma: no cover - new backends are added above
            raise AssertionError(request.param)
        await layer.start()
        made.append(layer)
        return layer

    yield make
    for layer in made:
        await layer.close()
