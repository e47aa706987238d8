"""Shared fixtures: channel-layer factories for the contract suite."""

from __future__ import annotations

import gc
import warnings
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from typing import Any

import pytest

from chatbot_server.layers import ChannelLayer, MemoryChannelLayer
from chatbot_server.layers.redis import RedisChannelLayer

from .redis_cluster import redis_cluster, redis_cluster_url
from .redis_server import redis_prefix, redis_process, redis_server, unique_prefix

__all__ = ["redis_cluster", "redis_cluster_url", "redis_prefix", "redis_process", "redis_server"]

LayerFactory = Callable[..., Awaitable[ChannelLayer]]


@pytest.fixture(autouse=True)
def collect_cluster_leaks(request: pytest.FixtureRequest) -> Iterator[None]:
    """After a test on a Redis Cluster, collect what redis-py's cluster client left unclosed, quietly.

    When a topology refresh (a resharding, a MOVED) drops a node, redis-py closes its idle
    connections but not those in use (redis/redis-py#4053; the fix, #4207, was closed unmerged):
    they are reclaimed by the garbage collector with a ResourceWarning, at a random later moment,
    which `filterwarnings = error` turned into a failure of whichever test was running then (seen
    twice in full runs). Collected here, right after the cluster test that left them, under a
    filter for ResourceWarning only.
    """
    yield
    if {"redis_cluster", "redis_cluster_url"} & set(request.fixturenames):
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", ResourceWarning)
            gc.collect()


# "cluster": the Redis layer on a private 3-primary Redis Cluster (tests/redis_cluster.py).
LAYER_BACKENDS = ["memory", "redis", "cluster"]


@pytest.fixture(params=LAYER_BACKENDS)
async def layer_factory(request: pytest.FixtureRequest) -> AsyncIterator[LayerFactory]:
    """Build started layers of one backend with the given settings; closes them afterwards."""
    made: list[ChannelLayer] = []
    # Every layer of one test shares a private redis-server and a key prefix no other test uses.
    redis_url = ""
    if request.param == "redis":
        redis_url = request.getfixturevalue("redis_server")
    elif request.param == "cluster":
        redis_url = request.getfixturevalue("redis_cluster_url")
    prefix = unique_prefix()

    async def make(**settings: Any) -> ChannelLayer:
        layer: ChannelLayer
        if request.param == "memory":
            layer = MemoryChannelLayer(**settings)
        elif request.param in ("redis", "cluster"):
            layer = RedisChannelLayer(url=redis_url, prefix=prefix, **settings)
        else:  # pragma: no cover - new backends are added above
            raise AssertionError(request.param)
        await layer.start()
        made.append(layer)
        return layer

    yield make
    for layer in made:
        await layer.close()
