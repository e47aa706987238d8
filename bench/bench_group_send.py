"""Benchmark: one group_send to 1,000 members spread over two processes, ours vs per-member writes.

Run from the repository root: `python bench/bench_group_send.py [--members 1000] [--rounds 200]
[--cluster]`. Starts its own redis-server on a free port (never the shared one), or with `--cluster`
its own 3-primary Redis Cluster (tests/redis_cluster.py), two RedisChannelLayer instances
("processes") with half of the members each, and prints a table: Redis commands per group_send
(INFO commandstats delta over every primary, scripts' inner commands included) and wall time
(median, p95), next to a naive per-member approach in the style of channels_redis (one list write
per member: pipelined, and one round trip per member), measured in the same run on the same server.
Also times a burst of 10,000 joins then releases with default settings. With `--cluster` it then
measures the spread over the primaries under a mixed load (8 processes, 200 groups, sends and
group sends): commands per primary (INFO commandstats), and which keys each one holds.
"""

from __future__ import annotations

import argparse
import asyncio
import random
import statistics
import sys
import time
from pathlib import Path
from typing import Any

import redis.asyncio as aioredis
from redis.asyncio.cluster import RedisCluster

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from chatbot_server.layers.redis import RedisChannelLayer
from chatbot_server.ops.redis import RedisClient, close_client, redis_client
from tests.redis_cluster import RedisClusterProcs
from tests.redis_server import RedisProcess

GROUP = "users"


async def calls_by_node(client: RedisClient, command: str | None = None) -> dict[str, int]:
    """Commands each primary has run (all of them, or one: e.g. "evalsha"), by node name."""
    if isinstance(client, RedisCluster):
        replies: dict[str, dict[str, Any]] = await client.info("commandstats", target_nodes=RedisCluster.PRIMARIES)
    else:
        replies = {"redis": await client.info("commandstats")}
    return {
        node: sum(
            int(entry["calls"]) for name, entry in stats.items() if command is None or name == f"cmdstat_{command}"
        )
        for node, stats in replies.items()
    }


async def total_calls(client: RedisClient) -> int:
    return sum((await calls_by_node(client)).values())


async def count_commands(client: RedisClient, action: Any) -> int:
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

    def __init__(self, client: RedisClient, prefix: str, expiry: float, group_expiry: float) -> None:
        self.client = client
        self.prefix = prefix
        self.expiry_ms = int(expiry * 1000)
        self.group_expiry = group_expiry

    async def members(self) -> list[bytes]:
        key = f"{self.prefix}:group:{{{GROUP}}}"
        await self.client.zremrangebyscore(key, "-inf", time.time() - self.group_expiry)
        members: Any = await self.client.zrange(key, 0, -1)
        return list(members)

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


async def run(members: int, rounds: int, cluster: bool) -> None:
    procs: RedisClusterProcs | RedisProcess = RedisClusterProcs() if cluster else RedisProcess()
    procs.start()
    inspect = redis_client(procs.url, name="bench-inspect")
    prefix = "bench"
    one = RedisChannelLayer(url=procs.url, prefix=prefix, heartbeat_interval=3600)
    two = RedisChannelLayer(url=procs.url, prefix=prefix, heartbeat_interval=3600)
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
        evalsha_before = await calls_by_node(inspect, "evalsha")
        await one.group_send(GROUP, message)
        evalsha = {n: c - evalsha_before[n] for n, c in (await calls_by_node(inspect, "evalsha")).items()}

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
        if isinstance(inspect, RedisCluster):
            await inspect.initialize()
            group_node = inspect.get_node_from_key(f"{prefix}:group:{{{GROUP}}}")
            inboxes = {
                name: inspect.get_node_from_key(f"{prefix}:inbox:{{{layer.process_id}}}")
                for name, layer in (("one", one), ("two", two))
            }
            placement = f"group keys on {group_node.name if group_node else '?'}; inboxes: " + ", ".join(
                f"{name} on {node.name if node else '?'}" for name, node in inboxes.items()
            )
    finally:
        await one.close()
        await two.close()
        await close_client(inspect)
        procs.cleanup()

    ours_ms, ours_p95 = summarise(ours_call)
    rows = [
        ("ours: one inbox entry per process (Lua)", ours_commands, ours_ms, ours_p95),
        ("naive: per-member RPUSH, pipelined", pipelined_commands, *summarise(pipelined)),
        ("naive: per-member RPUSH, round trip each", sequential_commands, *summarise(sequential)),
    ]
    where = "a 3-primary Redis Cluster" if cluster else "redis-server"
    print(f"group_send to {members} members over 2 processes, {rounds} rounds, {where} on private ports")
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
    print(f"EVALSHA per group_send by node (sender one): {evalsha}")
    if cluster:
        print(placement)


async def spread(processes: int, groups: int, operations: int) -> None:
    """Commands per primary under a mixed load: `processes` layers (default settings: heartbeat,
    delivery probe), `groups` groups with members in 3 random processes (5 channels each), then
    `operations` alternating direct sends (to a random other process's channel) and group sends
    (to a random group), each from a random process."""
    procs = RedisClusterProcs()
    procs.start()
    inspect = RedisCluster(host="127.0.0.1", port=procs.ports[0])
    rng = random.Random(15)
    layers = [RedisChannelLayer(url=procs.url, prefix="spread") for _ in range(processes)]
    try:
        for layer in layers:
            await layer.start()
        await inspect.initialize()
        channels: list[list[str]] = [[] for _ in layers]
        names = [f"room-{n}" for n in range(groups)]
        for group in names:
            for index in rng.sample(range(processes), 3):
                for _ in range(5):
                    channel = await layers[index].new_channel()
                    layers[index].subscribe(channel, lambda message: True)
                    await layers[index].group_add(group, channel)
                    channels[index].append(channel)
        procs.reset_stats()
        started = time.perf_counter()
        for n in range(operations):
            sender = rng.randrange(processes)
            if n % 2:
                await layers[sender].group_send(rng.choice(names), {"type": "chat.broadcast", "n": n})
            else:
                target = rng.choice([index for index in range(processes) if index != sender])
                await layers[sender].send(rng.choice(channels[target]), {"type": "chat.message", "n": n})
        elapsed = time.perf_counter() - started
        # Everything sent has been read once a marker to every process came back.
        arrived = [asyncio.Event() for _ in layers]
        for index, layer in enumerate(layers):
            marker = await layer.new_channel()
            layer.subscribe(marker, _setter(arrived[index]))
            await layers[(index + 1) % processes].send(marker, {"type": "marker"})
        async with asyncio.timeout(10):
            for event in arrived:
                await event.wait()
        counts = procs.command_counts()
        lost = sum(layer.stats.write_failures + layer.stats.late_writes + layer.stats.failures for layer in layers)
        slots = {port: 0 for port in counts}
        one_node = aioredis.Redis(host="127.0.0.1", port=procs.ports[0])
        ranges: Any = await one_node.execute_command("CLUSTER", "SLOTS")  # raw: [start, end, [host, port, id]]
        await one_node.aclose()
        for start, end, node, *_ in ranges:
            slots[int(node[1])] = slots.get(int(node[1]), 0) + end - start + 1
        inboxes = {port: 0 for port in counts}
        for layer in layers:
            inboxes[_port(inspect, f"spread:inbox:{{{layer.process_id}}}")] += 1
        group_keys = {port: 0 for port in counts}
        for group in names:
            group_keys[_port(inspect, f"spread:group:{{{group}}}")] += 1
    finally:
        for layer in layers:
            await layer.close()
        await inspect.aclose()
        procs.cleanup()
    total = sum(counts.values())
    print(
        f"\nspread: {processes} processes, {groups} groups (3 processes x 5 channels each), "
        f"{operations} operations (half sends, half group sends) in {elapsed:.1f} s; "
        f"counted as not done in Redis: {lost}"
    )
    print(f"{'primary':<10} {'slots':>6} {'inboxes':>8} {'groups':>7} {'commands':>9} {'share':>6}")
    for port, count in counts.items():
        print(
            f"{port:<10} {slots.get(port, 0):>6} {inboxes[port]:>8} {group_keys[port]:>7} "
            f"{count:>9} {count / total:>6.1%}"
        )


def _setter(event: asyncio.Event) -> Any:
    def deliver(message: object) -> bool:
        event.set()
        return True

    return deliver


def _port(inspect: RedisCluster, key: str) -> int:
    node = inspect.get_node_from_key(key)
    assert node is not None
    return int(node.port)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--members", type=int, default=1000)
    parser.add_argument("--rounds", type=int, default=200)
    parser.add_argument("--cluster", action="store_true", help="on a private 3-primary Redis Cluster, plus the spread")
    parser.add_argument("--processes", type=int, default=8, help="spread: layer instances")
    parser.add_argument("--groups", type=int, default=200, help="spread: groups")
    parser.add_argument("--operations", type=int, default=4000, help="spread: sends + group sends")
    args = parser.parse_args()
    asyncio.run(run(args.members, args.rounds, args.cluster))
    if args.cluster:
        asyncio.run(spread(args.processes, args.groups, args.operations))


if __name__ == "__main__":
    main()
