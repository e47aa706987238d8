"""The conversation store contract (every store backend runs these tests)."""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import pytest

from chatbot_server.history import ConversationStore, MemoryConversationStore

StoreFactory = Callable[..., Awaitable[ConversationStore]]


@pytest.fixture(params=["memory"])
async def store_factory(request: pytest.FixtureRequest) -> AsyncIterator[StoreFactory]:
    made: list[ConversationStore] = []

    async def make(**options: Any) -> ConversationStore:
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
    seqs = [await store.append(conv, {"type": "user", "msg": str(n)}) for n in range(5)]
    assert seqs == [1, 2, 3, 4, 5]
    assert await store.last_seq(conv) == 5


async def test_read_since_and_recent(store_factory: StoreFactory) -> None:
    store = await store_factory()
    conv = await store.create()
    for n in range(10):
        await store.append(conv, {"type": "user", "msg": str(n)})
    assert [f["seq"] for f in await store.read_since(conv, 7)] == [8, 9, 10]
    assert await store.read_since(conv, 10) == []
    assert [f["msg"] for f in await store.recent(conv, 3)] == ["7", "8", "9"]
    assert len(await store.transcript(conv)) == 10


async def test_max_frames_keeps_the_newest(store_factory: StoreFactory) -> None:
    store = await store_factory(max_frames=4)
    conv = await store.create()
    for n in range(10):
        await store.append(conv, {"type": "user", "msg": str(n)})
    assert [f["seq"] for f in await store.read_since(conv, 0)] == [7, 8, 9, 10]
    assert [f["seq"] for f in await store.read_since(conv, 8)] == [9, 10]


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
    await store.append(conv, {"type": "user", "msg": "x"})
    import asyncio

    await asyncio.sleep(0.1)  # the passing of time is what is tested
    assert not await store.exists(conv)
