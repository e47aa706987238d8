"""Benchmark: our CPU per frame for one write-behind batch, packed by us or by redis-py's pipelines.

Run from the repository root: `python bench/bench_store_batch.py [--conversations 100] [--frames 40]`.
Starts a private redis-server and a private 3-primary Redis Cluster (never the shared Redis), and
writes batches shaped like the store's (one RPUSH of `frames` frames per conversation, then a
PEXPIRE) three ways: `send_batch` with a CommandBatch (packed by us, one server), redis-py's
Pipeline on the same server, and `send_batch` with a PipelineBatch (redis-py's ClusterPipeline) on
the cluster. Prints the median process CPU time per frame (our process only: Redis runs apart)
and the median wall time per batch; redis_batch.py keeps the packed path for one server while it
is measurably cheaper. Then the spread: 1,000 conversations written through a RedisConversationStore
on the cluster (a greeting, 10 frames each, released), and the commands each primary ran (INFO
commandstats, CONFIG RESETSTAT before) next to its share of the slots.
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import sys
import time
from pathlib import Path

import orjson

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from chatbot_server.ops.redis import RedisClient, close_client, redis_client
from chatbot_server.store.redis import RedisConversationStore
from chatbot_server.store.redis_batch import CommandBatch, PipelineBatch, bulk, new_batch, send_batch
from tests.redis_cluster import RedisClusterProcs
from tests.redis_server import RedisProcess


def frames_for(conversations: int, frames: int) -> dict[str, list[bytes]]:
    return {
        f"bench:conv:{{{n:032x}}}:frames": [
            bulk(orjson.dumps({"type": "user", "msg": f"第{i}个问题,您好", "seq": i, "id": f"m{i}"}))
            for i in range(frames)
        ]
        for n in range(conversations)
    }


async def ours(client: RedisClient, batch: dict[str, list[bytes]]) -> None:
    commands = new_batch(client)
    for key, frames in batch.items():
        commands.add_with_bulks("RPUSH", key, bulks=frames)
        commands.add("PEXPIRE", key, 86_400_000)
    await send_batch(client, commands, 5.0)


async def redis_py_pipeline(client: RedisClient, batch: dict[str, list[bytes]]) -> None:
    async with client.pipeline(transaction=False) as pipe:
        for key, frames in batch.items():
            pipe.execute_command("RPUSH", key, *(packed[packed.index(b"\r\n") + 2 : -2] for packed in frames))
            pipe.execute_command("PEXPIRE", key, 86_400_000)
        await pipe.execute()


async def measure(name: str, client: RedisClient, write: object, batch: dict[str, list[bytes]], rounds: int) -> None:
    assert callable(write)
    frames = sum(len(f) for f in batch.values())
    cpu: list[float] = []
    wall: list[float] = []
    for _ in range(5):
        await write(client, batch)  # warm up: connections, slot tables
    for _ in range(rounds):
        cpu0, wall0 = time.process_time(), time.perf_counter()
        await write(client, batch)
        cpu.append(time.process_time() - cpu0)
        wall.append(time.perf_counter() - wall0)
        for key in batch:  # keep the lists short (not timed)
            await client.delete(key)
    print(f"| {name} | {statistics.median(cpu) / frames * 1e6:.2f} | {statistics.median(wall) * 1000:.1f} |")


async def spread(cluster: RedisClusterProcs, conversations: int = 1000) -> None:
    store = RedisConversationStore(url=cluster.url, prefix="bench", process_id="bench")
    await store.start()
    ids = [await store.create() for _ in range(conversations)]
    await store.flush()
    cluster.reset_stats()
    for round_ in range(10):
        for conversation in ids:
            store.append(conversation, {"type": "user", "msg": f"第{round_}个问题"})
        await store.flush()
    for conversation in ids:
        await store.release(conversation)
    await store.close()
    counts = cluster.command_counts()  # CONFIG RESETSTAT and INFO themselves are not counted
    total = sum(counts.values())
    print(f"\n{conversations} conversations x 10 frames, released: commands per primary")
    print("| primary | commands | share |\n| --- | ---: | ---: |")
    for port, count in sorted(counts.items()):
        print(f"| :{port} | {count:,} | {count / total:.1%} |")


async def main(conversations: int, frames: int, rounds: int) -> None:
    server = RedisProcess()
    cluster = RedisClusterProcs()
    server.start()
    cluster.start()
    try:
        batch = frames_for(conversations, frames)
        one = redis_client(server.url)
        many = redis_client(cluster.url)
        assert isinstance(new_batch(one), CommandBatch) and isinstance(new_batch(many), PipelineBatch)
        print(f"{conversations} conversations x {frames} frames per batch, {rounds} rounds")
        print("| batch | our CPU per frame (µs) | wall per batch (ms) |\n| --- | ---: | ---: |")
        await measure("one server: packed by us (CommandBatch)", one, ours, batch, rounds)
        await measure("one server: redis-py Pipeline", one, redis_py_pipeline, batch, rounds)
        await measure("cluster, 3 primaries: ClusterPipeline (PipelineBatch)", many, ours, batch, rounds)
        await close_client(one)
        await close_client(many)
        await spread(cluster)
    finally:
        server.cleanup()
        cluster.cleanup()


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--conversations", type=int, default=100)
    parser.add_argument("--frames", type=int, default=40)
    parser.add_argument("--rounds", type=int, default=50)
    args = parser.parse_args()
    asyncio.run(main(args.conversations, args.frames, args.rounds))
