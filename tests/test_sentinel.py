"""Redis Sentinel (issue #15): the layer, the conversation store and the handoff queue on a
`redis+sentinel://` URL follow a failover (kill -9 of the primary) without a restart, and lose
nothing a process still holds, also what asynchronous replication dropped.

Real processes only: a primary, a replica and three sentinels (tests/redis_sentinel.py), and in
the last test two `python -m chatbot_server` processes with chat and broadcast clients.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
import redis.asyncio as aioredis

from chatbot_server.layers.redis import RedisChannelLayer
from chatbot_server.ops.redis import RedisClient, close_client, redis_client
from chatbot_server.store.handoff_redis import RedisHandoffQueue
from chatbot_server.store.redis import RedisConversationStore, conversation_keys

from .failover_load import FailoverLoad
from .redis_sentinel import FAILOVER_DEADLINE, SentinelDeployment, sentinel, sentinel_deployment
from .redis_server import unique_prefix

__all__ = ["sentinel", "sentinel_deployment"]

pytestmark = pytest.mark.timeout(90)

DEADLINE = FAILOVER_DEADLINE  # a failover, then our reconnect: generous on a loaded machine
CLIENTS = 50  # bench/failover.py runs the same with 200, ten times


class Process:
    """What one server process runs on Redis: one shared client (as app.setup builds it), the
    layer, the store and the handoff queue on it."""

    def __init__(self, url: str, prefix: str) -> None:
        self.client: RedisClient = redis_client(url, connect_timeout=1.0, socket_timeout=1.0)
        self.layer = RedisChannelLayer(
            url=url, prefix=prefix, client=self.client, heartbeat_interval=0.5, required=True
        )
        self.store = RedisConversationStore(
            url=url, prefix=prefix, process_id=self.layer.process_id, client=self.client, write_interval=0
        )
        self.queue = RedisHandoffQueue(url=url, prefix=prefix, client=self.client)

    async def start(self) -> None:
        await self.layer.start()
        await self.store.start()
        await self.queue.start()

    async def close(self) -> None:
        await self.queue.close()
        await self.store.close()
        await self.layer.close()
        await close_client(self.client)


@pytest.fixture
async def processes(sentinel: SentinelDeployment) -> AsyncIterator[tuple[Process, Process]]:
    prefix = unique_prefix()
    one, two = Process(sentinel.url, prefix), Process(sentinel.url, prefix)
    await one.start()
    await two.start()
    try:
        yield one, two
    finally:
        await one.close()
        await two.close()


async def flushed(store: RedisConversationStore) -> None:
    """Wait until everything held is written and the store is healthy again (its write-behind
    retries every 0.2 s while Redis is away; a store has no event for "recovered")."""
    async with asyncio.timeout(DEADLINE):
        while True:
            try:
                await store.flush()
                if (await store.health())[0]:
                    return
            except (OSError, aioredis.RedisError):
                pass
            await asyncio.sleep(0.05)  # the write-behind's own retry is a timer too


def chat(store: RedisConversationStore, conversation: str, first: int, last: int) -> None:
    """Append frames `first`..`last` (a user line each), as the holding socket does."""
    for n in range(first, last + 1):
        store.append(conversation, {"type": "user", "msg": f"第{n}句", "id": f"m{n}"})


async def test_layer_store_and_queue_follow_a_failover(
    sentinel: SentinelDeployment, processes: tuple[Process, Process]
) -> None:
    one, two = processes
    member = await two.layer.new_channel()
    await two.layer.group_add("users", member)
    await one.layer.group_send("users", {"type": "note", "n": 0})
    assert await asyncio.wait_for(two.layer.receive(member), 5) == {"type": "note", "n": 0}
    conversation = await one.store.create()
    chat(one.store, conversation, 1, 3)
    await flushed(one.store)
    queued = await one.queue.enqueue(conversation, "我要转人工")
    assert queued.status == "added"

    old = await sentinel.kill_primary()
    chat(one.store, conversation, 4, 6)  # the socket goes on: held in memory, written behind
    await sentinel.wait_new_primary(old)
    async with asyncio.timeout(DEADLINE):
        await one.layer.wait_connected()  # reconnected and every membership registered again
        await two.layer.wait_connected()

    # A group_send from one instance reaches the member on the other, through the new primary.
    await one.layer.group_send("users", {"type": "note", "n": 1})
    assert await asyncio.wait_for(two.layer.receive(member), 5) == {"type": "note", "n": 1}
    assert (await one.layer.health()).ok and (await two.layer.health()).ok
    # The conversation resumes on the other process with every frame, the queue entry is there.
    await flushed(one.store)
    await one.store.release(conversation)
    assert await two.store.acquire(conversation) is None  # released: nobody holds it
    await two.store.adopt(conversation)
    assert [f["seq"] for f in await two.store.read_since(conversation, 0)] == [1, 2, 3, 4, 5, 6]
    assert await two.queue.position(conversation) == 1
    assert await two.queue.claim(conversation, "alice")
    assert await two.queue.agent_of(conversation) == "alice"


async def test_frames_replication_dropped_are_written_again(
    sentinel: SentinelDeployment, processes: tuple[Process, Process]
) -> None:
    one, two = processes
    conversation = await one.store.create()
    chat(one.store, conversation, 1, 3)
    await flushed(one.store)
    async with aioredis.Redis.from_url(await sentinel.primary_url()) as primary:
        # Frames 1..3 on the replica too. A replica just restarted after the previous test's
        # failover may take a while to acknowledge under load (it failed once with WAIT 1 2000 in
        # a full run on the shared 2-core machine): wait for the acknowledgement, bounded.
        async with asyncio.timeout(DEADLINE):
            while await primary.execute_command("WAIT", 1, 1000) != 1:  # type: ignore[no-untyped-call]
                pass
        # The replica stops taking the replication stream: frames 4..6 are acknowledged by the
        # primary (and to the user) but never reach the replica; the kill loses them.
        await sentinel.detach_replica()
        chat(one.store, conversation, 4, 6)
        await one.store.flush()
        frames = await primary.lrange(conversation_keys(one.store.prefix, conversation)[0], 0, -1)
        assert len(frames) == 6
    old = await sentinel.kill_primary()
    await sentinel.wait_new_primary(old)
    await flushed(one.store)
    await one.store.release(conversation)
    await two.store.adopt(conversation)
    assert [f["seq"] for f in await two.store.read_since(conversation, 0)] == [1, 2, 3, 4, 5, 6]
    assert one.store.stats.rewritten >= 1


async def test_two_server_processes_deliver_again_after_a_failover(
    sentinel: SentinelDeployment, tmp_path: Path
) -> None:
    load = FailoverLoad(sentinel, tmp_path, unique_prefix(), clients=CLIENTS)
    try:
        await load.start()
        result = await load.failover()
    finally:
        await load.close()
    print(result.line())  # shown with -s: the CI figures next to the bench's
    assert result.chat_frames > CLIENTS  # every client chatted through the failover
    assert result.chat_lost == 0 and result.chat_duplicated == 0
    assert result.broadcast_duplicated == 0
    assert result.lost_outside == 0  # only broadcasts sent while Redis was away may be missed
    assert result.recovery < DEADLINE
