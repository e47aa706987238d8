"""Where a process's inbox goes on Redis Cluster: the primary with the fewest live inboxes.

A process's inbox and heartbeat share the hash tag `{<process id>}`, so the id picks their shard,
and inbox traffic (sends, the reader's pops, the delivery probe) is most of the layer's commands.
With random ids, 8 processes on 3 primaries put 2 to 5 inboxes, and 25-60 % of the commands, on one
primary (docs/redis.md, "Spread"). So a layer on a cluster chooses its id when it starts, before it
writes its heartbeat or names a channel: it counts the live heartbeats of its prefix on every
primary (SCAN on each, concurrently) and draws random ids until the inbox's slot is on a primary
with the fewest (ties broken at random).

Processes that start at the same moment may count the same and pick the same primary; a resharding
or failover later moves slots under running processes, whose ids are fixed by then (their channel
names carry them). Either only drifts back toward the random layout; nothing depends on the
placement for correctness.
"""

from __future__ import annotations

import asyncio
import logging
import random
from collections.abc import Callable

from redis.asyncio.cluster import ClusterNode, RedisCluster
from redis.exceptions import RedisClusterException, RedisError

from ..ops.redis import RedisClient
from .base import new_token

log = logging.getLogger("chatbot_server.layers.redis")

# One draw lands on a given primary with a chance of (its slots / 16384): with 3 primaries a miss
# in every draw is (2/3)**1000, with 100 primaries 0.99**1000, about 4e-5 (then the id stays random).
DRAWS = 1000
# SCAN walks a primary's whole keyspace (MATCH filters after the walk): a bound on start-up time
# when a primary holds millions of conversation keys. Past it the id stays random.
PLACE_TIMEOUT = 2.0
SCAN_COUNT = 1000


async def live_inboxes(client: RedisCluster, prefix: str) -> dict[str, int]:
    """The live heartbeat keys (one per running process) of `prefix` on each primary, by node name."""
    await client.initialize()  # a no-op once the slot table is known
    primaries = client.get_primaries()
    pattern = f"{prefix}:process:{{*}}"  # braces are literal in a SCAN pattern; a prefix has no glob

    async def count(node: ClusterNode) -> int:
        return len([key async for key in client.scan_iter(match=pattern, count=SCAN_COUNT, target_nodes=node)])

    counts = await asyncio.gather(*(count(node) for node in primaries))
    return {node.name: n for node, n in zip(primaries, counts, strict=True)}


async def choose_process_id(client: RedisClient, key: Callable[[str, str], str], prefix: str) -> str | None:
    """A new process id whose inbox, `key("inbox", id)`, is on a primary with the fewest live
    inboxes of `prefix`; None when `client` is not a cluster's (one server: any id will do), the
    cluster did not answer within PLACE_TIMEOUT, or no draw landed there (the caller keeps its id)."""
    if not isinstance(client, RedisCluster):
        return None
    try:
        async with asyncio.timeout(PLACE_TIMEOUT):
            counts = await live_inboxes(client, prefix)
        fewest = min(counts.values())
        target = random.choice([name for name, n in counts.items() if n == fewest])
        for _ in range(DRAWS):
            candidate = new_token(6)
            node = client.get_node_from_key(key("inbox", candidate))  # the client's slot table
            if node is not None and node.name == target:
                log.info("process %s: inbox on primary %s (live inboxes per primary: %s)", candidate, target, counts)
                return candidate
    # TimeoutError is an OSError; an unreachable cluster or an uncovered slot is a
    # RedisClusterException. The layer's connect, right after, reports an outage.
    except (RedisError, RedisClusterException, OSError, ValueError) as error:  # ValueError: no primaries
        log.info("inbox placement skipped (%s: %s): the process id stays random", type(error).__name__, error)
    return None
