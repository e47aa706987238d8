"""Packed command batches (the Redis store's write-behind) against a real redis-server."""

from __future__ import annotations

import asyncio

import orjson
import pytest
import redis.asyncio as aioredis
from redis.asyncio.connection import Connection
from redis.exceptions import RedisError, ResponseError

from chatbot_server.store.redis import RedisConversationStore, conversation_keys
from chatbot_server.store.redis_batch import CommandBatch, bulk, send_batch

from .redis_server import RedisProcess, unique_prefix


def test_batch_packs_commands_exactly_as_redis_py_does() -> None:
    frames = [b'{"msg":"\xe4\xbd\xa0\xe5\xa5\xbd\\r\\n","seq":1}', b"", b"\r\n$3\r\n*1\r\n"]
    batch = CommandBatch()
    batch.add("RPUSH", "p:conv:x:frames", *frames)
    batch.add("SET", "p:conv:x:owner", "进程-1", "PX", 86_400_000)
    batch.add("LTRIM", "k", -500, -1)
    batch.add_with_bulks("RPUSH", "p:conv:y:frames", bulks=[bulk(frame) for frame in frames])
    expected = Connection().pack_commands(
        [
            ("RPUSH", "p:conv:x:frames", *frames),
            ("SET", "p:conv:x:owner", "进程-1", "PX", 86_400_000),
            ("LTRIM", "k", -500, -1),
            ("RPUSH", "p:conv:y:frames", *frames),
        ]
    )
    assert batch.payload() == b"".join(expected)
    assert batch.commands == 4


@pytest.mark.parametrize("bad", [1.5, True, None, ["x"]])
def test_batch_refuses_arguments_redis_would_get_wrong(bad: object) -> None:
    with pytest.raises(TypeError, match="bytes, str or int"):
        CommandBatch().add("SET", "k", bad)  # type: ignore[arg-type]


async def test_send_batch_writes_everything_and_raises_on_an_error_reply(redis_server: str) -> None:
    prefix = unique_prefix()
    client = aioredis.from_url(redis_server)
    ok = CommandBatch()
    ok.add("RPUSH", f"{prefix}:list", *[b"frame %d" % n for n in range(3000)])
    ok.add("SET", f"{prefix}:string", "v")
    await send_batch(client, ok, timeout=5)
    assert await client.llen(f"{prefix}:list") == 3000

    failing = CommandBatch()
    failing.add("RPUSH", f"{prefix}:string", b"x")  # WRONGTYPE: the key holds a string
    failing.add("RPUSH", f"{prefix}:list", b"after the error")
    with pytest.raises(ResponseError, match="WRONGTYPE"):
        await send_batch(client, failing, timeout=5)
    # Redis ran the command after the error; the connection with its unread reply was closed,
    # so the next command on the pool reads its own reply, not the stale one.
    assert await client.lindex(f"{prefix}:list", -1) == b"after the error"
    assert await client.get(f"{prefix}:string") == b"v"
    await client.aclose()


async def test_store_keeps_no_seq_key_and_an_unowned_append_continues_the_seqs(redis_server: str) -> None:
    prefix = unique_prefix()
    client = aioredis.from_url(redis_server)
    one = RedisConversationStore(url=redis_server, prefix=prefix, process_id="p1")
    await one.start()
    conv = await one.create()
    for n in range(3):
        one.append(conv, {"type": "user", "msg": str(n)})
    await one.release(conv)
    # Per conversation only its frames; per prefix one epoch key (how a restart that lost the data is noticed).
    assert sorted(await client.keys(f"{prefix}:*")) == [
        f"{prefix}:conv:{{{conv}}}:frames".encode(),
        f"{prefix}:store:epoch".encode(),
    ]
    # An agent's reply while no process owns the conversation: the script takes the next seq.
    assert await one.append_if_unowned(conv, {"type": "agent", "msg": "人工"}) == 4
    assert await one.last_seq(conv) == 4
    assert [f["seq"] for f in await one.transcript(conv)] == [1, 2, 3, 4]
    await one.close()
    await client.aclose()


async def test_a_batch_redis_does_not_answer_times_out_with_a_message(redis_process: RedisProcess) -> None:
    client = aioredis.from_url(redis_process.url)
    await client.ping()
    batch = CommandBatch()
    batch.add("SET", f"{unique_prefix()}:k", "v")
    redis_process.freeze()
    try:
        with pytest.raises(TimeoutError, match=r"no answer from Redis within 0.3 s \(batch of 1\)"):
            await send_batch(client, batch, timeout=0.3)
    finally:
        redis_process.thaw()
    assert await client.ping()  # the timed-out connection was closed, not handed back with a reply due
    await client.aclose()


async def test_taking_a_connection_to_a_hung_redis_counts_against_the_timeout(redis_process: RedisProcess) -> None:
    client = aioredis.from_url(redis_process.url)  # no connection opened yet
    batch = CommandBatch()
    batch.add("SET", f"{unique_prefix()}:k", "v")
    redis_process.freeze()  # the kernel still accepts the connection; the handshake gets no answer
    try:
        with pytest.raises(TimeoutError, match=r"no answer from Redis within 0\.3 s"):
            await send_batch(client, batch, timeout=0.3)
    finally:
        redis_process.thaw()
    await send_batch(client, batch, timeout=5)  # and the pool works once Redis answers again
    await client.aclose()


async def test_write_soon_writes_gathered_frames_without_waiting_for_the_interval(redis_server: str) -> None:
    prefix = unique_prefix()
    client = aioredis.from_url(redis_server)
    store = RedisConversationStore(url=redis_server, prefix=prefix, process_id="p1", write_interval=30)
    await store.start()
    conv = await store.create()
    key = conversation_keys(prefix, conv)[0]
    store.append(conv, {"type": "greeting", "msg": "hi"})
    await store.flush()
    await store.flush()  # queued behind the writer's own pass: it is idle now
    store.append(conv, {"type": "user", "msg": "人工"})
    for _ in range(3):
        await asyncio.sleep(0)  # the writer wakes and starts gathering for 30 s
    assert await client.llen(key) == 1  # gathering: the user's line is not written yet
    store.append(conv, {"type": "agent", "msg": "人工客服的回答"})
    store.write_soon()  # an agent's answer: at once

    for _ in range(400):  # Redis offers no event for "a list grew": look every 5 ms, 2 s at most
        if await client.llen(key) == 3:
            break
        await asyncio.sleep(0.005)
    assert await client.llen(key) == 3
    await store.close()
    await client.aclose()


async def _owner_whose_write_failed(redis_process: RedisProcess, prefix: str) -> tuple[RedisConversationStore, str]:
    """A store (process "p1") owning a conversation whose greeting was written, whose next frame's
    write failed because Redis was killed, and Redis restarted empty (owner key and frames gone)."""
    store = RedisConversationStore(url=redis_process.url, prefix=prefix, process_id="p1", write_interval=0)
    await store.start()
    conv = await store.create()
    store.append(conv, {"type": "greeting", "msg": "hi"})
    await store.flush()
    redis_process.kill()
    store.append(conv, {"type": "user", "msg": "Redis 不在时说的话"})
    with pytest.raises((RedisError, OSError)):
        await store.flush()  # kept for the next try
    redis_process.start()
    return store, conv


async def test_frames_kept_by_a_failed_flush_are_written_by_the_writer(redis_process: RedisProcess) -> None:
    """The writer is woken by a conversation's first pending frame only: frames that a failed
    flush() put back, and a later frame that joins them without a wake of its own, are written by
    the writer all the same once Redis is back."""
    prefix = unique_prefix()
    store, conv = await _owner_whose_write_failed(redis_process, prefix)
    store.append(conv, {"type": "reply", "msg": "回答"})  # joins the kept list: no wake of its own
    client = aioredis.from_url(redis_process.url)
    key = f"{prefix}:conv:{{{conv}}}:frames"
    for _ in range(400):  # Redis offers no event for "a list grew": look every 5 ms, 2 s at most
        if await client.llen(key) == 3:
            break
        await asyncio.sleep(0.005)
    # The greeting, lost with Redis, is written again with the rest (test_store_faults.py).
    assert [orjson.loads(raw)["seq"] for raw in await client.lrange(key, 0, -1)] == [1, 2, 3]
    await client.aclose()
    await store.close()


async def test_an_owner_sets_its_owner_key_again_after_redis_lost_its_data(redis_process: RedisProcess) -> None:
    prefix = unique_prefix()
    one, conv = await _owner_whose_write_failed(redis_process, prefix)
    await one.flush()
    two = RedisConversationStore(url=redis_process.url, prefix=prefix, process_id="p2")
    await two.start()
    # p1 still holds the conversation: an agent's answer from p2 must go to it, not straight into
    # Redis with a seq p1 will give its own next frame.
    assert await two.append_if_unowned(conv, {"type": "agent", "msg": "人工"}) is None
    assert await two.acquire(conv) == "p1"
    await two.close()
    await one.close()
