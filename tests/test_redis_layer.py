"""The Redis channel layer across processes: each layer instance here stands for one server process.

Tests taking `make_layer` run on a standalone redis-server and on a 3-primary Redis Cluster; `redis`
is a client of the same deployment for inspecting keys (cluster-wide where it matters)."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Any

import pytest
import redis.asyncio as aioredis
from redis.asyncio.cluster import RedisCluster

from chatbot_server.errors import ChannelFull, LayerUnavailableError
from chatbot_server.layers.base import Message
from chatbot_server.layers.redis import RedisChannelLayer
from chatbot_server.ops.redis import RedisClient, close_client, redis_client

from .helpers import MakeLayer, started_layers
from .redis_server import RedisProcess, free_port, unique_prefix

pytestmark = pytest.mark.timeout(30)


async def recv(layer: RedisChannelLayer, channel: str, timeout: float = 5) -> Message:
    async with asyncio.timeout(timeout):
        return await layer.receive(channel)


@pytest.fixture(params=["redis", "cluster"])
def deployment(request: pytest.FixtureRequest) -> str:
    """URL of the session's redis-server or of its 3-primary Redis Cluster."""
    fixture = "redis_server" if request.param == "redis" else "redis_cluster_url"
    url: str = request.getfixturevalue(fixture)
    return url


@pytest.fixture
async def redis(deployment: str) -> AsyncIterator[RedisClient]:
    """A plain client for inspecting keys."""
    client = redis_client(deployment, name="inspect")
    yield client
    await close_client(client)


async def stat(redis: RedisClient, section: str) -> list[dict[str, Any]]:
    """An INFO section of every primary (one server: a list of one)."""
    if isinstance(redis, RedisCluster):
        replies: dict[str, dict[str, Any]] = await redis.info(section, target_nodes=RedisCluster.PRIMARIES)
        return list(replies.values())
    return [await redis.info(section)]


@pytest.fixture
async def make_layer(deployment: str) -> AsyncIterator[MakeLayer]:
    """Start layers ("processes") sharing one prefix on the session's redis-server or cluster."""
    async with started_layers(deployment) as make:
        yield make


async def rpush_calls(redis: RedisClient) -> int:
    return sum(int(stats.get("cmdstat_rpush", {}).get("calls", 0)) for stats in await stat(redis, "commandstats"))


async def test_group_send_reaches_members_in_both_processes(make_layer: MakeLayer) -> None:
    one, two = await make_layer(), await make_layer()
    a, b = await one.new_channel(), await two.new_channel()
    await one.group_add("users", a)
    await two.group_add("users", b)
    await one.group_send("users", {"type": "chat.message", "text": "大家好"})
    assert (await recv(one, a))["text"] == "大家好"
    assert (await recv(two, b))["text"] == "大家好"
    await two.group_send("users", {"type": "chat.message", "text": "back"})
    assert (await recv(one, a))["text"] == "back"
    assert (await recv(two, b))["text"] == "back"


async def test_direct_send_to_another_process(make_layer: MakeLayer) -> None:
    one, two = await make_layer(), await make_layer()
    theirs = await two.new_channel("chat")
    for n in range(5):
        await one.send(theirs, {"type": "seq", "n": n})
    assert [(await recv(two, theirs))["n"] for _ in range(5)] == list(range(5))


async def test_shared_channel_between_processes(make_layer: MakeLayer) -> None:
    one, two = await make_layer(), await make_layer()
    await one.send("worker.jobs", {"type": "job", "n": 1})
    assert (await recv(two, "worker.jobs"))["n"] == 1


async def test_cancelled_shared_receive_ends_promptly(make_layer: MakeLayer) -> None:
    layer = await make_layer()
    waiting = asyncio.ensure_future(layer.receive("worker.idle"))
    await asyncio.sleep(0.05)  # let the blocking pop reach Redis: cancelling it mid-read is the point
    waiting.cancel()
    async with asyncio.timeout(2):
        with pytest.raises(asyncio.CancelledError):
            await waiting
    await layer.send("worker.idle", {"type": "after"})
    assert (await recv(layer, "worker.idle"))["type"] == "after"


async def test_group_send_writes_one_inbox_entry_per_process(make_layer: MakeLayer, redis: RedisClient) -> None:
    sender, two, three = await make_layer(), await make_layer(), await make_layer()
    members: dict[RedisChannelLayer, list[str]] = {sender: [], two: [], three: []}
    for layer, channels in members.items():
        for _ in range(30):
            channel = await layer.new_channel()
            await layer.group_add("room", channel)
            channels.append(channel)
    before = await rpush_calls(redis)
    await sender.group_send("room", {"type": "broadcast"})
    assert await rpush_calls(redis) - before == 2  # two other processes, 60 remote members
    for layer, channels in members.items():
        for channel in channels:
            assert (await recv(layer, channel))["type"] == "broadcast"


async def test_remote_group_add_is_known_to_the_owner(make_layer: MakeLayer) -> None:
    one, two = await make_layer(), await make_layer()
    theirs = await two.new_channel()
    await one.group_add("g", theirs)
    await one.send(theirs, {"type": "marker"})  # same inbox, so the join was handled before it
    assert (await recv(two, theirs))["type"] == "marker"
    await two.group_send("g", {"type": "from-owner"})
    assert (await recv(two, theirs))["type"] == "from-owner"
    await one.group_discard("g", theirs)
    await one.send(theirs, {"type": "marker2"})
    assert (await recv(two, theirs))["type"] == "marker2"
    await two.group_send("g", {"type": "after-leave"})
    await two.send(theirs, {"type": "marker3"})  # local: after the group send, in order
    assert (await recv(two, theirs))["type"] == "marker3"  # not "after-leave"
    assert await one.group_members("g") == []


async def test_dead_process_members_are_swept(make_layer: MakeLayer, redis: RedisClient) -> None:
    alive = await make_layer()
    dead = await make_layer(heartbeat_interval=3600)  # it will not renew what we delete
    mine = await alive.new_channel()
    theirs = [await dead.new_channel() for _ in range(3)]
    await alive.group_add("users", mine)
    for channel in theirs:
        await dead.group_add("users", channel)
    assert len(await alive.group_members("users")) == 4
    await redis.delete(f"{dead.prefix}:process:{{{dead.process_id}}}")  # its heartbeat lapsed
    before = await rpush_calls(redis)
    await alive.group_send("users", {"type": "after-death"})
    assert await rpush_calls(redis) - before == 0
    assert await alive.group_members("users") == [mine]
    assert (await recv(alive, mine))["type"] == "after-death"
    # Direct sends to a dead process are dropped instead of piling up in its inbox.
    await alive.send(theirs[0], {"type": "to-the-dead"})
    assert await redis.exists(f"{dead.prefix}:inbox:{{{dead.process_id}}}") == 0


async def test_release_removes_memberships_from_redis(make_layer: MakeLayer) -> None:
    layer = await make_layer()
    gone, staying = await layer.new_channel(), await layer.new_channel()
    for group in ("a", "b"):
        await layer.group_add(group, gone)
        await layer.group_add(group, staying)
    await layer.release_channel(gone)
    assert await layer.group_members("a") == [staying]
    assert await layer.group_members("b") == [staying]


async def test_process_without_members_gets_no_group_entries(make_layer: MakeLayer, redis: RedisClient) -> None:
    one, two = await make_layer(), await make_layer()
    mine, theirs = await one.new_channel(), await two.new_channel()
    await one.group_add("users", mine)
    await two.group_add("users", theirs)
    await two.release_channel(theirs)  # its last member left: it is no longer a target
    assert await redis.zrange(f"{one.prefix}:targets:{{users}}", 0, -1) == [f"p:{one.process_id}".encode()]
    before = await rpush_calls(redis)
    await one.group_send("users", {"type": "only-mine"})
    assert await rpush_calls(redis) - before == 0
    assert (await recv(one, mine))["type"] == "only-mine"


async def test_burst_of_joins_and_releases_leaves_no_members(make_layer: MakeLayer, redis: RedisClient) -> None:
    layer = await make_layer()
    channels = [await layer.new_channel() for _ in range(2000)]
    clients_before = [node["connected_clients"] for node in await stat(redis, "clients")]
    await asyncio.gather(*(layer.group_add("burst", channel) for channel in channels))
    assert len(await layer.group_members("burst")) == 2000
    await asyncio.gather(*(layer.release_channel(channel) for channel in channels))
    assert await layer.group_members("burst") == []
    assert await redis.exists(f"{layer.prefix}:group:{{burst}}", f"{layer.prefix}:targets:{{burst}}") == 0
    # Coalesced into pipelines: the burst needed no more than a couple of extra connections (per node).
    clients_after = [node["connected_clients"] for node in await stat(redis, "clients")]
    assert all(after - before <= 2 for before, after in zip(clients_before, clients_after, strict=True))


async def test_slow_consumer_is_bounded(make_layer: MakeLayer, redis: RedisClient) -> None:
    sender = await make_layer(inbox_capacity=10)
    reader = await make_layer(capacity=5)
    slow = await reader.new_channel()
    await reader.group_add("news", slow)
    marker = await reader.new_channel()
    for n in range(50):
        await sender.group_send("news", {"type": "news", "n": n})
    await sender.send(marker, {"type": "marker"})
    await recv(reader, marker)  # one inbox, in order: all 50 were handled before the marker
    assert len(reader.local.box(slow)) == 5  # capacity: the rest were dropped, not queued
    assert [(await recv(reader, slow))["n"] for _ in range(5)] == list(range(5))


async def test_inbox_of_a_stalled_process_is_capped_and_expires(make_layer: MakeLayer, redis: RedisClient) -> None:
    sender = await make_layer(inbox_capacity=10, expiry=30)
    # A process that is "alive" (heartbeat present) but whose reader is stuck.
    await redis.set(f"{sender.prefix}:process:{{stuck}}", b"1", px=60_000)
    stuck = "chat.stuck!abc"
    await sender.group_add("news", stuck)
    inbox = f"{sender.prefix}:inbox:{{stuck}}"
    for n in range(50):
        await sender.group_send("news", {"type": "news", "n": n})
    assert await redis.llen(inbox) == 10
    assert 0 < await redis.pttl(inbox) <= 30_000
    with pytest.raises(ChannelFull):
        await sender.send(stuck, {"type": "direct"})


async def test_flush_removes_only_this_prefix(make_layer: MakeLayer, redis: RedisClient) -> None:
    layer = await make_layer()
    other = await make_layer(prefix=unique_prefix())
    for target in (layer, other):
        await target.group_add("g", await target.new_channel())
        await target.send("jobs", {"type": "job"})
    await layer.flush()
    left = [key async for key in redis.scan_iter(match=f"{layer.prefix}:*")]  # every primary of a cluster
    assert left == [f"{layer.prefix}:process:{{{layer.process_id}}}".encode()]
    assert await redis.exists(f"{other.prefix}:group:{{g}}", f"{other.prefix}:channel:{{jobs}}") == 2


async def test_required_and_unreachable_raises() -> None:
    layer = RedisChannelLayer(url=f"redis://127.0.0.1:{free_port()}/0", required=True, connect_timeout=1)
    with pytest.raises(LayerUnavailableError, match="unreachable"):
        await layer.start()


async def test_start_while_redis_is_down_then_connect(caplog: pytest.LogCaptureFixture) -> None:
    server = RedisProcess()  # not started yet
    layer = RedisChannelLayer(url=server.url, prefix=unique_prefix(), connect_timeout=1)
    try:
        await layer.start()
        health = await layer.health()
        assert not health.ok and "unreachable" in health.detail and health.backend == "redis"
        assert sum("unreachable" in r.message for r in caplog.records) == 1
        channel = await layer.new_channel()
        await layer.group_add("users", channel)
        await layer.group_send("users", {"type": "local-only"})
        assert (await recv(layer, channel))["type"] == "local-only"
        with pytest.raises(LayerUnavailableError):
            await layer.send("worker.jobs", {"type": "job"})
        server.start()
        async with asyncio.timeout(10):
            await layer.wait_connected()
        assert (await layer.health()).ok
        assert await layer.group_members("users") == [channel]
    finally:
        await layer.close()
        server.cleanup()


async def test_redis_outage_and_recovery(redis_process: RedisProcess, caplog: pytest.LogCaptureFixture) -> None:
    prefix = unique_prefix()
    one = RedisChannelLayer(url=redis_process.url, prefix=prefix, heartbeat_interval=0.2, connect_timeout=1)
    two = RedisChannelLayer(url=redis_process.url, prefix=prefix, heartbeat_interval=0.2, connect_timeout=1)
    await one.start()
    await two.start()
    try:
        a, b = await one.new_channel(), await two.new_channel()
        await one.group_add("users", a)
        await two.group_add("users", b)

        redis_process.kill()  # all data is gone too
        with pytest.raises(LayerUnavailableError):
            await one.send(b, {"type": "cannot-cross"})
        assert not (await one.health()).ok
        # Local delivery keeps working, group_send included, and nothing raises.
        a2 = await one.new_channel()
        await one.group_add("users", a2)
        await one.group_send("users", {"type": "local"})
        assert (await recv(one, a))["type"] == "local"
        assert (await recv(one, a2))["type"] == "local"
        await one.send(a, {"type": "direct"})
        assert (await recv(one, a))["type"] == "direct"

        redis_process.start()
        async with asyncio.timeout(10):
            await one.wait_connected()
            await two.wait_connected()
        # Memberships were re-registered in the empty Redis: a broadcast from the other process
        # reaches every live socket, including the one that joined during the outage.
        await two.group_send("users", {"type": "after-recovery"})
        assert (await recv(one, a))["type"] == "after-recovery"
        assert (await recv(one, a2))["type"] == "after-recovery"
        assert (await recv(two, b))["type"] == "after-recovery"
    finally:
        await one.close()
        await two.close()
    outage_lines = [r for r in caplog.records if "unreachable" in r.message and r.name == "chatbot_server.layers.redis"]
    assert 1 <= len(outage_lines) <= 2  # once per process, not once per failed command


async def test_passed_in_client_is_not_closed(redis_server: str) -> None:
    client = aioredis.Redis.from_url(redis_server)
    layer = RedisChannelLayer(client=client, prefix=unique_prefix())
    await layer.start()
    theirs = await layer.new_channel()
    await layer.group_add("g", theirs)
    await layer.close()
    assert await client.ping()
    await client.aclose()


async def test_close_leaves_no_traces(make_layer: MakeLayer, redis: RedisClient) -> None:
    one, two = await make_layer(), await make_layer()
    await one.group_add("g", await one.new_channel())
    await two.group_add("g", await two.new_channel())
    await one.close()
    assert len(await two.group_members("g")) == 1
    assert await redis.exists(f"{one.prefix}:process:{{{one.process_id}}}") == 0
