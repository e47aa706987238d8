"""The conversation store, the handoff queue and the agents' revocations on a Redis Cluster.

The store contract runs on a cluster too (tests/test_history.py, tests/test_handoff.py's queue
tests: their "cluster" params); here what only a cluster has: where keys land, a resharding under
write load, one shard restarted empty, a failing command in a pipelined batch, and a resume
through two apps on a cluster.
"""

from __future__ import annotations

import asyncio
import time
from typing import Any

import pytest
from aiohttp import web
from redis.asyncio.cluster import RedisCluster
from redis.exceptions import ResponseError

from chatbot_server import setup
from chatbot_server.agents.revocations import RedisRevocations
from chatbot_server.ops.redis import close_client, redis_client
from chatbot_server.store.handoff import RedisHandoffQueue
from chatbot_server.store.redis import RedisConversationStore, conversation_keys
from chatbot_server.store.redis_batch import PipelineBatch, new_batch, send_batch

from .helpers import make_settings, receive_json, until
from .redis_cluster import RedisClusterProcs
from .redis_server import unique_prefix

pytestmark = pytest.mark.timeout(60)
DEADLINE = 10.0


def cluster_client(url: str) -> RedisCluster:
    client = redis_client(url)
    assert isinstance(client, RedisCluster)
    return client


async def port_of(client: RedisCluster, key: str) -> int:
    """The port of the primary serving `key`'s slot, as the cluster says now."""
    slots = await client.cluster_slots()
    slot = client.keyslot(key)
    return next(int(node["primary"][1]) for (start, end), node in slots.items() if start <= slot <= end)


async def test_keys_of_a_conversation_share_a_slot_and_conversations_spread(redis_cluster_url: str) -> None:
    prefix = unique_prefix()
    client = cluster_client(redis_cluster_url)
    store = RedisConversationStore(url=redis_cluster_url, prefix=prefix, process_id="p1")
    await store.start()
    try:
        conversations = [await store.create() for _ in range(60)]
        for conversation in conversations:
            store.append(conversation, {"type": "greeting", "msg": "您好"})
        await store.flush()
        for conversation in conversations:
            frames, owner = conversation_keys(prefix, conversation)
            assert client.keyslot(frames) == client.keyslot(owner)
            assert await client.get(owner) == b"p1"
        ports = {await port_of(client, conversation_keys(prefix, c)[0]) for c in conversations}
        assert len(ports) == 3  # 60 random ids: on every primary (a miss has odds of ~1e-10)
        # One data-loss marker per primary, each on a slot of its primary.
        markers = [key.decode() async for key in client.scan_iter(match=f"{prefix}:store:epoch*")]
        assert sorted([await port_of(client, key) for key in markers]) == sorted(ports)
    finally:
        await store.close()
        await close_client(client)


async def test_handoff_keys_share_one_slot_and_an_entry_lapses(redis_cluster_url: str) -> None:
    prefix = unique_prefix()
    client = cluster_client(redis_cluster_url)
    queue = RedisHandoffQueue(url=redis_cluster_url, prefix=prefix, grace=0.2)  # not started: no keeper, we sweep
    try:
        assert (await queue.enqueue("c1", "转人工", ip="10.0.0.1")).status == "added"
        assert (await queue.enqueue("c2", "在吗")).position == 2
        assert await queue.claim("c2", "li")
        assert await queue.position("c1") == 1
        keys = [key.decode() async for key in client.scan_iter(match=f"{prefix}:*")]
        assert len(keys) >= 6 and len({client.keyslot(key) for key in keys}) == 1
        await asyncio.sleep(0.3)  # the passing of the grace period is what is tested
        assert await queue.sweep() == ["c1"]
        assert await queue.waiting() == [] and await queue.position("c1") is None
        assert await queue.agent_of("c2") == "li" and await queue.active("li") == ["c2"]
        assert await queue.finish("c2", "li")
    finally:
        await queue.close()
        await close_client(client)


@pytest.mark.parametrize("server", ["redis_server", "redis_cluster_url"])
async def test_revocations_live_as_long_as_the_latest(server: str, request: pytest.FixtureRequest) -> None:
    client = redis_client(request.getfixturevalue(server))
    try:
        revocations = RedisRevocations(client, unique_prefix())
        await revocations.add("s1", time.time() + 60)
        await revocations.add("s2", time.time() + 5)  # signed in earlier: it expires sooner
        await revocations.add("s0", time.time() - 1)  # expired already: trimmed at once
        assert sorted(await revocations.current()) == ["s1", "s2"]
        assert 55 < await client.ttl(revocations.key) <= 61  # kept for s1, not cut short by s2 or s0
    finally:
        await close_client(client)


async def test_a_failing_command_in_a_cluster_batch_is_raised(redis_cluster_url: str) -> None:
    prefix = unique_prefix()
    client = cluster_client(redis_cluster_url)
    try:
        batch = new_batch(client)
        assert isinstance(batch, PipelineBatch)
        keys = [f"{prefix}:{{{n}}}:k" for n in range(12)]  # over every primary
        for key in keys:
            batch.add("SET", key, "v")
        assert await send_batch(client, batch, timeout=5) == [True] * 12
        failing = new_batch(client)
        failing.add("RPUSH", keys[0], b"x")  # WRONGTYPE: a string
        failing.add("RPUSH", f"{prefix}:list", b"after the error")
        with pytest.raises(ResponseError, match="WRONGTYPE"):
            await send_batch(client, failing, timeout=5)
        assert await client.lrange(f"{prefix}:list", 0, -1) == [b"after the error"]
    finally:
        await close_client(client)


async def test_a_resharding_under_write_load_loses_no_frame(redis_cluster: RedisClusterProcs) -> None:
    prefix = unique_prefix()
    client = cluster_client(redis_cluster.url)
    writer = RedisConversationStore(
        url=redis_cluster.url, prefix=prefix, process_id="w", max_frames=100_000, write_interval=0.01
    )
    await writer.start()
    conversations = [await writer.create() for _ in range(400)]
    sent = dict.fromkeys(conversations, 0)
    source, target = redis_cluster.primaries()[:2]
    before = {c: await port_of(client, conversation_keys(prefix, c)[0]) for c in conversations}
    stop = asyncio.Event()
    writes_during = 0

    async def load() -> None:
        nonlocal writes_during
        while not stop.is_set():
            for conversation in conversations[::7]:  # ~60 conversations a round
                sent[conversation] += 1
                writer.append(conversation, {"type": "user", "msg": str(sent[conversation])})
            await writer.flush()  # each round written before the next: the load follows the resharding
            writes_during += 1

    task = asyncio.get_running_loop().create_task(load())
    try:
        for conversation in conversations:
            sent[conversation] += 1
            writer.append(conversation, {"type": "greeting", "msg": "1"})
        await asyncio.to_thread(redis_cluster.reshard, source, target, 1000)

        async def markers_on_every_primary() -> bool:
            # A marker carried to another primary by the resharding: its old primary gets one of
            # its own with the writer's next layout read (within a second).
            markers = [key.decode() async for key in client.scan_iter(match=f"{prefix}:store:epoch*")]
            return {await port_of(client, key) for key in markers} == set(redis_cluster.primaries())

        await until(markers_on_every_primary, "a data-loss marker on every primary")
    finally:
        stop.set()
        await task
    await writer.close()
    moved = [
        c
        for c in conversations
        if before[c] == source and await port_of(client, conversation_keys(prefix, c)[0]) == target
    ]
    assert len(moved) >= 5 and writes_during >= 5  # the resharding moved some of them while they were written
    redirected = 0
    for stats in (await client.info("errorstats", target_nodes=RedisCluster.PRIMARIES)).values():
        redirected += sum(int(stats.get(f"errorstat_{kind}", {}).get("count", 0)) for kind in ("ASK", "MOVED"))
    assert redirected > 0  # and the write-behind met (and followed) ASK or MOVED replies
    reader = RedisConversationStore(url=redis_cluster.url, prefix=prefix, process_id="r", max_frames=100_000)
    await reader.start()
    try:
        for conversation in conversations:
            stored = await reader.transcript(conversation)
            assert [f["seq"] for f in stored] == list(range(1, sent[conversation] + 1))
            assert await client.get(conversation_keys(prefix, conversation)[1]) is None  # released by close()
    finally:
        await reader.close()
        await close_client(client)


async def test_a_shard_restarted_empty_gets_its_conversations_rewritten(redis_cluster: RedisClusterProcs) -> None:
    prefix = unique_prefix()
    client = cluster_client(redis_cluster.url)
    store = RedisConversationStore(url=redis_cluster.url, prefix=prefix, process_id="p1")
    await store.start()
    conversations = [await store.create() for _ in range(60)]
    for conversation in conversations:
        for n in range(3):
            store.append(conversation, {"type": "user", "msg": f"{conversation[:4]}-{n}"})
    await store.flush()
    lost = redis_cluster.primaries()[0]
    on_lost = [c for c in conversations if await port_of(client, conversation_keys(prefix, c)[0]) == lost]
    assert on_lost  # 60 random ids: some on every primary (a miss has odds of ~1e-10)
    node = next(node for node in redis_cluster.nodes if node.port == lost)
    node.kill()
    node.start()  # empty (save "" and appendonly no); its nodes.conf gives it back its slots
    redis_cluster.wait_ok()

    async def rewritten() -> bool:
        return store.stats.rewritten >= len(on_lost)

    await until(rewritten, "the holder to rewrite the lost shard's conversations")  # idle: the epoch check
    assert (store.stats.data_lost, store.stats.rewritten) == (1, len(on_lost))  # that shard's, not all 60
    reader = RedisConversationStore(url=redis_cluster.url, prefix=prefix, process_id="r")
    await reader.start()
    try:
        for conversation in conversations:
            stored = await reader.transcript(conversation)
            assert [f["msg"] for f in stored] == [f"{conversation[:4]}-{n}" for n in range(3)]
            assert await reader.acquire(conversation) == "p1"  # the owner keys were written again too
    finally:
        await reader.close()
        await store.close()
        await close_client(client)


async def test_resume_on_another_app_on_a_cluster(aiohttp_client: Any, redis_cluster_url: str) -> None:
    redis = {"url": redis_cluster_url, "prefix": unique_prefix(), "heartbeat_interval": 0.2}
    sections: dict[str, Any] = {"layer": {"backend": "redis", "redis": redis}, "history": {"takeover_timeout": 0.5}}
    apps = []
    for _ in range(2):
        app = web.Application()
        setup(app, make_settings(**sections))
        apps.append(await aiohttp_client(app))
    one, two = apps
    ws = await one.ws_connect("/ws")
    seen = [await receive_json(ws)]
    conversation = seen[0]["conversation"]
    for n in range(2):
        await ws.send_json({"type": "message", "text": f"问题{n}", "id": f"m{n}"})
        seen += [await receive_json(ws), await receive_json(ws)]
    await ws.close()
    ws = await two.ws_connect(f"/ws?conversation={conversation}&last_seq=1")
    replay = [await receive_json(ws) for _ in range(4)]
    assert replay == seen[1:]
    resumed = await receive_json(ws)
    assert (resumed["event"], resumed["last_seq"]) == ("resumed", 5)
    await ws.send_json({"type": "message", "text": "问题2", "id": "m2"})
    assert [(await receive_json(ws))["seq"] for _ in range(2)] == [6, 7]
    await ws.close()
