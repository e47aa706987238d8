"""Shared fixtures: channel-layer factories for the contract suite."""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import pytest

from chatbot_server.layers import ChannelLayer, MemoryChannelLayer

LayerFactory = Callable[..., Awaitable[ChannelLayer]]

LAYER_BACKENDS = ["memory"]


@pytest.fixture(params=LAYER_BACKENDS)
async def layer_factory(request: pytest.FixtureRequest) -> AsyncIterator[LayerFactory]:
    """Build started layers of one backend with the given settings; closes them afterwards."""
    made: list[ChannelLayer] = []

    async def make(**settings: Any) -> ChannelLayer:
        layer: ChannelLayer
        if request.param == "memory":
            layer = MemoryChannelLayer(**settings)
        else:  # pragma: no cover - new backends are added above
            raise AssertionError(request.param)
        await layer.start()
        made.append(layer)
        return layer

    yield make
    for layer in made:
        await layer.close()
