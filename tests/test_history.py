"""The conversation store contract (every store backend runs these tests)."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import pytest

from chatbot_server.jsonutil import loads
from chatbot_server.store import ConversationStore, MemoryConversationStore
from chatbot_server.store.redis import RedisConversationStore

from .helpers import until
from .redis_server import unique_prefix

StoreFactory = Callable[..., Awaitable[ConversationStore]]


@pytest.fixture(params=["memory", "redis", "cluster"])
async def store_factory(request: pytest.FixtureRequest) -> AsyncIterator[StoreFactory]:
    made: list[ConversationStore] = []
    fixture = {"redis": "redis_server", "cluster": "redis_cluster_url"}.get(request.param)
    redis_url = request.getfixturevalue(fixture) if fixture else ""  # a 3-primary cluster: redis_cluster.py
    prefix = unique_prefix()

    async def make(**options: Any) -> ConversationStore:
        store: ConversationStore
        if redis_url:
            store = RedisConversationStore(url=redis_url, prefix=prefix, process_id=f"p{len(made)}", **options)
        else:
            store = MemoryConversationStore(**options)
        await store.start()
        made.append(store)
        return store

    yield make
    for store in made:
        await store.close()


async def test_append_assigns_contiguous_seqs(store_factory: StoreFactory) -> None:
    store = await store_factory()
    conv = await store.create()
    seqs = [loads(store.append(conv, {"type": "user", "msg": str(n)}))["seq"] for n in range(5)]
    assert seqs == [1, 2, 3, 4, 5]
    assert await store.last_seq(conv) == 5


async def test_read_since_and_recent(store_factory: StoreFactory) -> None:
    store = await store_factory()
    conv = await store.create()
    for n in range(10):
        store.append(conv, {"type": "user", "msg": str(n)})
    assert [f["seq"] for f in await store.read_since(conv, 7)] == [8, 9, 10]
    assert await store.read_since(conv, 10) == []
    assert [f["msg"] for f in await store.recent(conv, 3)] == ["7", "8", "9"]
    assert len(await store.transcript(conv)) == 10


async def test_max_frames_keeps_the_newest(store_factory: StoreFactory) -> None:
    store = await store_factory(max_frames=4)
    conv = await store.create()
    for n in range(10):
        store.append(conv, {"type": "user", "msg": str(n)})
    assert [f["seq"] for f in await store.read_since(conv, 0)] == [7, 8, 9, 10]
    assert [f["seq"] for f in await store.read_since(conv, 8)] == [9, 10]
    await store.flush()
    await store.release(conv)
    reader = await store_factory(max_frames=4) if store.backend == "redis" else store
    assert [f["seq"] for f in await reader.read_since(conv, 0)] == [7, 8, 9, 10]  # as written out


async def test_ids_are_unguessable_and_unknown_ids_do_not_exist(store_factory: StoreFactory) -> None:
    store = await store_factory()
    ids = {await store.create() for _ in range(100)}
    assert len(ids) == 100 and all(len(i) >= 32 for i in ids)
    assert not await store.exists("nope")
    assert await store.read_since("nope", 0) == []


async def test_client_ids_are_claimed_once(store_factory: StoreFactory) -> None:
    store = await store_factory()
    conv = await store.create()
    assert await store.claim_client_id(conv, "a")
    assert not await store.claim_client_id(conv, "a")
    assert await store.claim_client_id(conv, "b")


async def test_conversations_expire(store_factory: StoreFactory) -> None:
    store = await store_factory(ttl=0.05)
    conv = await store.create()
    store.append(conv, {"type": "user", "msg": "x"})
    await store.release(conv)  # an owned conversation lives while its socket does

    await asyncio.sleep(0.1)  # the passing of time is what is tested
    assert not await store.exists(conv)


async def test_released_frames_are_read_by_another_process(store_factory: StoreFactory) -> None:
    one = await store_factory()
    conv = await one.create()
    sent = [{"type": "user", "msg": str(n), "id": f"m{n}"} for n in range(20)]
    for f in sent:
        one.append(conv, dict(f))
    await one.release(conv)
    two = await store_factory() if one.backend == "redis" else one
    assert await two.exists(conv)
    assert [f["msg"] for f in await two.transcript(conv)] == [f["msg"] for f in sent]
    assert await two.acquire(conv) is None
    await two.adopt(conv)
    assert await two.last_seq(conv) == 20
    assert not await two.claim_client_id(conv, "m3")
    assert loads(two.append(conv, {"type": "reply", "msg": "ok", "reply_to": "m19"}))["seq"] == 21
    assert await two.reply_stored(conv, "m19") and not await two.reply_stored(conv, "m18")


async def test_owner_is_reported_and_unowned_appends_are_atomic(store_factory: StoreFactory) -> None:
    one = await store_factory()
    conv = await one.create()
    one.append(conv, {"type": "greeting", "msg": "hi"})
    if one.backend == "redis":
        await one.flush()  # a new conversation's owner key is written behind, with its first frames
        two = await store_factory()
        # Only one writer: while one owns it, the other is told to send the frame to the owner.
        assert await two.append_if_unowned(conv, {"type": "agent", "msg": "x"}) is None
        assert await two.acquire(conv) == one.process_id
        await one.release(conv)  # the takeover: the old owner writes out and stops
        await two.adopt(conv)
        assert await two.last_seq(conv) == 1
        await two.release(conv)
    else:
        assert await one.append_if_unowned(conv, {"type": "agent", "msg": "x"}) is None
        await one.release(conv)
        two = one
    seqs = await asyncio.gather(*(two.append_if_unowned(conv, {"type": "agent", "msg": str(n)}) for n in range(10)))
    assert sorted(s for s in seqs if s is not None) == list(range(2, 12))
    assert [f["seq"] for f in await two.transcript(conv)] == list(range(1, 12))


async def test_write_behind_does_not_wait_and_survives_close(store_factory: StoreFactory) -> None:
    one = await store_factory()
    conv = await one.create()
    for n in range(100):
        one.append(conv, {"type": "reply", "msg": str(n)})
    await one.close()  # flushes
    two = await store_factory()
    if one.backend == "redis":
        assert [f["seq"] for f in await two.transcript(conv)] == list(range(1, 101))


async def test_redis_store_gathers_frames_into_one_write_per_conversation_and_interval(redis_server: str) -> None:
    import redis.asyncio as aioredis

    prefix = unique_prefix()
    store = RedisConversationStore(url=redis_server, prefix=prefix, process_id="p", write_interval=5)
    await store.start()
    client = aioredis.from_url(redis_server)
    conversations = [await store.create() for _ in range(3)]
    for conv in conversations:
        store.append(conv, {"type": "greeting", "msg": "hi"})
    await store.flush()  # new conversations are written at once (a quick resume elsewhere finds them)

    async def rpush_calls() -> int:  # RPUSHX: frames of a conversation already in Redis
        stats = await client.info("commandstats")
        return sum(int(stats.get(name, {}).get("calls", 0)) for name in ("cmdstat_rpush", "cmdstat_rpushx"))

    async def stored() -> list[int]:
        return [await client.llen(f"{prefix}:conv:{{{conv}}}:frames") for conv in conversations]

    before = await rpush_calls()
    for n in range(10):
        for conv in conversations:
            store.append(conv, {"type": "user", "msg": str(n)})
        await asyncio.sleep(0)  # one loop pass: the writer wakes and starts gathering
    assert await stored() == [1, 1, 1]  # still gathering (write_interval 5 s)
    await store.close()  # writes everything gathered, in one write
    assert await stored() == [11, 11, 11]
    assert await rpush_calls() - before == 3  # one RPUSH per conversation, not one per frame
    await client.aclose()


async def test_redis_store_writes_a_large_batch_with_newlines_intact(redis_server: str) -> None:
    prefix = unique_prefix()
    one = RedisConversationStore(url=redis_server, prefix=prefix, process_id="p1", max_frames=3000, write_interval=5)
    await one.start()
    conv = await one.create()
    texts = [f'第{n}行\n第二行\r\n\u2028 {{"x": [1]}}' for n in range(2500)]  # one batch > 1000 entries
    for text in texts:
        one.append(conv, {"type": "user", "msg": text})
    await one.close()
    two = RedisConversationStore(url=redis_server, prefix=prefix, process_id="p2", max_frames=3000)
    await two.start()
    stored = await two.transcript(conv)
    assert [f["msg"] for f in stored] == texts and [f["seq"] for f in stored] == list(range(1, 2501))
    assert await two.last_seq(conv) == 2500
    await two.close()


async def test_redis_store_splits_a_big_batch_into_writes_and_keeps_release_order(
    redis_server: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    import chatbot_server.store.redis as history_redis

    monkeypatch.setattr(history_redis, "FRAMES_PER_BATCH", 50)
    prefix = unique_prefix()
    one = RedisConversationStore(url=redis_server, prefix=prefix, process_id="p1", write_interval=5)
    await one.start()
    conversations = [await one.create() for _ in range(12)]
    await one.flush()
    for n in range(20):  # 240 frames: five writes of about 50
        for conv in conversations:
            one.append(conv, {"type": "user", "msg": f"{conv[:4]}-{n}"})
    await one.release(conversations[-1])  # its owner key goes after its frames, in the last write
    two = RedisConversationStore(url=redis_server, prefix=prefix, process_id="p2")
    await two.start()
    assert await two.acquire(conversations[-1]) is None  # released: nobody owns it any more
    for conv in conversations[:-1]:
        assert await two.acquire(conv) == "p1"  # still owned by the first process
    await one.close()
    for conv in conversations:
        assert [f["msg"] for f in await two.transcript(conv)] == [f"{conv[:4]}-{n}" for n in range(20)]
    await two.close()


async def test_a_rewrite_of_everything_held_goes_out_in_bounded_writes(
    redis_server: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    # After a failover or an empty restart a process rewrites all it holds: in one write, a process
    # holding thousands of long conversations would outlast the write timeout on every retry.
    import redis.asyncio as aioredis

    import chatbot_server.store.redis as history_redis
    import chatbot_server.store.redis_writer as writer

    monkeypatch.setattr(history_redis, "FRAMES_PER_BATCH", 50)
    sizes: list[int] = []
    real_send = writer.send_batch

    async def counted(client: Any, batch: Any, timeout: float) -> list[Any]:
        sizes.append(batch.payload().count(b"\r\nEVAL\r\n"))  # rewrites are EVALs (frames are JSON)
        return await real_send(client, batch, timeout)

    monkeypatch.setattr(writer, "send_batch", counted)
    prefix = unique_prefix()
    store = RedisConversationStore(url=redis_server, prefix=prefix, process_id="p1")
    await store.start()
    conversations = [await store.create() for _ in range(12)]
    for n in range(20):  # 240 frames held
        for conv in conversations:
            store.append(conv, {"type": "user", "msg": f"{conv[:4]}-{n}"})
    await store.flush()
    client = aioredis.from_url(redis_server)
    try:
        keys = [key async for key in client.scan_iter(match=f"{prefix}:*")]
        await client.unlink(*keys)  # Redis lost the data (as a restart without persistence would)
        sizes.clear()
        # The epoch check runs every second while nothing is written.
        await until(lambda: store.stats.rewritten == 12, "the store to rewrite what it holds", deadline=10)
        writes = list(sizes)
        lengths = [await client.llen(f"{prefix}:conv:{{{conv}}}:frames") for conv in conversations]
    finally:
        await client.aclose()
        await store.close()
    assert lengths == [20] * 12
    assert max(writes) <= 2 and sum(writes) == 12  # 20 frames each: two conversations per write of 50


async def test_redis_store_readers_skip_frames_a_retried_batch_wrote_twice(redis_server: str) -> None:
    import orjson
    import redis.asyncio as aioredis

    prefix = unique_prefix()
    one = RedisConversationStore(url=redis_server, prefix=prefix, process_id="p1")
    await one.start()
    conv = await one.create()
    for n in range(4):
        one.append(conv, {"type": "user", "msg": str(n)})
    await one.close()
    client = aioredis.from_url(redis_server)
    # A write that failed after its RPUSH reached Redis is retried: frames 3 and 4 twice.
    await client.rpush(
        f"{prefix}:conv:{{{conv}}}:frames",
        *[orjson.dumps({"type": "user", "msg": str(n), "seq": n + 1}) for n in (2, 3)],
    )
    await client.aclose()
    two = RedisConversationStore(url=redis_server, prefix=prefix, process_id="p2")
    await two.start()
    assert [f["seq"] for f in await two.transcript(conv)] == [1, 2, 3, 4]
    await two.adopt(conv)
    assert [f["seq"] for f in await two.read_since(conv, 0)] == [1, 2, 3, 4]
    assert loads(two.append(conv, {"type": "user", "msg": "next"}))["seq"] == 5
    await two.close()
