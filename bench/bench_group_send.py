"""Benchmark: one group_send to 1,000 members spread over two processes, ours vs per-member writes.

Run from the repository root: `python bench/bench_group_send.py [--members 1000] [--rounds 200]`.
Starts its own redis-server on a free port (never the shared one), two RedisChannelLayer instances
("processes") with half of the members each, and prints a table: Redis commands per group_send
(INFO commandstats delta, scripts' inner commands included) and wall time (median, p95), next to
a naive per-member approach in the style of channels_redis (one list write per member: pipelined,
and one round trip per member), measured in the same run on the same server.
Also times a burst of 10,000 joins then releases with default settings.
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import sys
import time
from pathlib import Path
from typing import Any

import redis.asyncio as aioredis

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from chatbot_server.layers.redis import RedisChannelLayer
from tests.redis_server import RedisProcess

GROUP = "users"


async def total_calls(client: aioredis.Redis) -> int:
    stats: dict[str, Any] = await client.info("commandstats")
    return sum(int(entry["calls"]) for entry in stats.values())


async def count_commands(client: aioredis.Redis, action: Any) -> int:
    """Commands Redis ran during `action()`, net of the two INFO calls that measure it."""
    baseline_before = await total_calls(client)
    baseline_after = await total_calls(client)
    overhead = baseline_after - baseline_before
    before = await total_calls(client)
    await action()
    await asyncio.sleep(0.05)  # let the other process's reader issue its next blocking pop
    return await total_calls(client) - before - overhead


def summarise(samples: list[float]) -> tuple[float, float]:
    ordered = sorted(samples)
    return statistics.median(ordered) * 1000, ordered[int(len(ordered) * 0.95) - 1] * 1000


class Naive:
    """channels_redis-style group_send: read the group, then write each member's own list."""

    def __init__(self, client: aioredis.Redis, prefix: str, expiry: float, group_expiry: float) -> None:
        self.client = client
        self.prefix = prefix
        self.expiry_ms = int(expiry * 1000)
        self.group_expiry = group_expiry

    async def members(self) -> list[bytes]:
        key = f"{self.prefix}:group:{GROUP}"
        await self.client.zremrangebyscore(key, "-inf", time.time() - self.group_expiry)
        members: list[bytes] = await self.client.zrange(key, 0, -1)
        return members

    async def send_pipelined(self, payload: bytes) -> None:
        members = await self.members()
        pipe = self.client.pipeline(transaction=False)
        for channel in members:
            key = f"{self.prefix}:naive:{channel.decode()}"
            pipe.rpush(key, payload)
            pipe.pexpire(key, self.expiry_ms)
        await pipe.execute()

    async def send_sequential(self, payload: bytes) -> None:
        for channel in await self.members():
            key = f"{self.prefix}:naive:{channel.decode()}"
            await self.client.rpush(key, payload)
            await self.client.pexpire(key, self.expiry_ms)

    async def clear(self) -> None:
        keys = [key async for key in self.client.scan_iter(match=f"{self.prefix}:naive:*", count=1000)]
        for start in range(0, len(keys), 500):
            await self.client.unlink(*keys[start : start + 500])


async def run(members: int, rounds: int) -> None:
    server = RedisProcess()
    server.start()
    inspect = aioredis.Redis.from_url(server.url)
    prefix = "bench"
    one = RedisChannelLayer(url=server.url, prefix=prefix, heartbeat_interval=3600)
    two = RedisChannelLayer(url=server.url, prefix=prefix, heartbeat_interval=3600)
    try:
        await one.start()
        await two.start()
        channels: list[tuple[RedisChannelLayer, str]] = []
        for n in range(members):
            layer = one if n % 2 == 0 else two
            channel = await layer.new_channel()
            channels.append((layer, channel))
        await asyncio.gather(*(layer.group_add(GROUP, channel) for layer, channel in channels))
        message = {"type": "chat.message", "text": "您好,系统将于今晚 23:00 维护。", "seq": 1}
        payload = b'{"type":"chat.message","text":"\\u60a8\\u597d","seq":1}'

        # Ours: time of the call, and time until the other process has delivered to its members.
        last_remote = next(channel for layer, channel in reversed(channels) if layer is two)
        arrived = asyncio.Event()

        def heard(message: object) -> bool:
            arrived.set()
            return True

        for layer, channel in channels:  # members take and drop what they get
            layer.subscribe(channel, heard if channel == last_remote else (lambda message: True))
        ours_call: list[float] = []
        ours_delivered: list[float] = []
        for _ in range(rounds):
            arrived.clear()
            started = time.perf_counter()
            await one.group_send(GROUP, message)
            ours_call.append(time.perf_counter() - started)
            async with asyncio.timeout(5):
                await arrived.wait()
            ours_delivered.append(time.perf_counter() - started)
        ours_commands = await count_commands(inspect, lambda: one.group_send(GROUP, message))

        naive = Naive(inspect, prefix, one.expiry, one.group_expiry)
        pipelined: list[float] = []
        for n in range(rounds):
            started = time.perf_counter()
            await naive.send_pipelined(payload)
            pipelined.append(time.perf_counter() - started)
            if n % 50 == 49:
                await naive.clear()
        pipelined_commands = await count_commands(inspect, lambda: naive.send_pipelined(payload))
        sequential: list[float] = []
        for _ in range(max(5, rounds // 10)):
            started = time.perf_counter()
            await naive.send_sequential(payload)
            sequential.append(time.perf_counter() - started)
        sequential_commands = await count_commands(inspect, lambda: naive.send_sequential(payload))
        await naive.clear()

        burst = [await one.new_channel() for _ in range(10_000)]
        started = time.perf_counter()
        await asyncio.gather(*(one.group_add("burst", channel) for channel in burst))
        joined = time.perf_counter() - started
        started = time.perf_counter()
        await asyncio.gather(*(one.release_channel(channel) for channel in burst))
        released = time.perf_counter() - started
        leftover = len(await one.group_members("burst"))
    finally:
        await one.close()
        await two.close()
        await inspect.aclose()
        server.cleanup()

    ours_ms, ours_p95 = summarise(ours_call)
    rows = [
        ("ours: one inbox entry per process (Lua)", ours_commands, ours_ms, ours_p95),
        ("naive: per-member RPUSH, pipelined", pipelined_commands, *summarise(pipelined)),
        ("naive: per-member RPUSH, round trip each", sequential_commands, *summarise(sequential)),
    ]
    print(f"group_send to {members} members over 2 processes, {rounds} rounds, redis-server on a private port")
    print(f"{'approach':<44} {'commands':>9} {'median ms':>10} {'p95 ms':>8} {'cmd ratio':>10} {'time ratio':>10}")
    for name, commands, median, p95 in rows:
        print(
            f"{name:<44} {commands:>9} {median:>10.3f} {p95:>8.3f} "
            f"{commands / ours_commands:>9.1f}x {median / ours_ms:>9.1f}x"
        )
    delivered_ms, delivered_p95 = summarise(ours_delivered)
    print(
        f"ours, until the other process has delivered to its {members // 2} members: "
        f"median {delivered_ms:.3f} ms, p95 {delivered_p95:.3f} ms"
    )
    print(
        f"burst of 10,000 concurrent group_add: {joined * 1000:.0f} ms; release: {released * 1000:.0f} ms; "
        f"members left: {leftover}"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--members", type=int, default=1000)
    parser.add_argument("--rounds", type=int, default=200)
    args = parser.parse_args()
    asyncio.run(run(args.members, args.rounds))


if __name__ == "__main__":
    main()
