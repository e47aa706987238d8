"""The store's data-loss markers: how the write-behind notices that Redis lost the store's data.

A marker ("epoch") is a key with a random value and no TTL, claimed with `SET NX` and read at the
start of every write-behind batch (redis_writer.py). Gone or changed means the server that held
it lost its data (a restart without persistence, a flush): the conversations held here whose keys
lived there are written again whole.

- One server (standalone, or a Sentinel-managed primary): one key, `<prefix>:store:epoch`.
- A Redis Cluster can lose one shard while the others keep their data (a primary without replicas
  restarted empty), so there is one key per primary: `<prefix>:store:epoch:{<n>}`, with the
  smallest n whose slot that primary serves, by the slot layout (`CLUSTER SLOTS`) read at most
  every LAYOUT_INTERVAL. Every process picks the same keys from the same layout. A loss names the
  slots of that primary: only conversations whose keys hash there are rewritten.

The limit, on a cluster: a resharding carries a marker's slot (with the marker) to another
primary; its old primary gets a marker of its own again with the next layout read (within
LAYOUT_INTERVAL). A shard that loses its data within that window is noticed only per
conversation, when a write of one of its lists finds it gone (RPUSHX); an idle held conversation
there stays missing until its next frame.
"""

from __future__ import annotations

import secrets
import time
from collections.abc import Callable, Sequence
from typing import Any

from redis.asyncio.cluster import RedisCluster
from redis.crc import REDIS_CLUSTER_HASH_SLOTS, key_slot

from ..ops.redis import RedisClient
from .redis_batch import Batch

LAYOUT_INTERVAL = 1.0  # seconds between reads of a cluster's slot layout
Ranges = tuple[tuple[int, int], ...]  # slot ranges, inclusive


class Epochs:
    """The markers of one store: which keys, the values last read, and what a batch's replies say."""

    def __init__(self, client: RedisClient, prefix: str) -> None:
        self._client = client
        self._prefix = prefix
        self._cluster = isinstance(client, RedisCluster)
        # marker key -> the slots it vouches for; one server: the one key, every slot.
        self._layout: dict[str, Ranges] = {f"{prefix}:store:epoch": ((0, REDIS_CLUSTER_HASH_SLOTS - 1),)}
        self._known: dict[str, bytes] = {}  # marker key -> value as last read (absent: to claim)
        self._read_at = -1e18
        self._slots: object = None  # the layout as last read

    @property
    def keys(self) -> list[str]:
        """The marker keys now in use."""
        return list(self._layout)

    async def refresh(self) -> None:
        """On a cluster, read the slot layout again when it is LAYOUT_INTERVAL old (a command to one
        node); a marker no longer in use is forgotten, a new one is claimed by the next batch."""
        if not isinstance(self._client, RedisCluster) or time.monotonic() - self._read_at < LAYOUT_INTERVAL:
            return
        # redis-py parses CLUSTER SLOTS into {(first, last): {"primary": (host, port), ...}}.
        slots: dict[tuple[int, int], dict[str, Any]] = dict(await self._client.cluster_slots())
        self._read_at = time.monotonic()
        if slots == self._slots:
            return
        self._slots = slots
        per_primary: dict[object, list[tuple[int, int]]] = {}
        for (start, end), node in slots.items():
            per_primary.setdefault(node["primary"], []).append((int(start), int(end)))
        layout = {
            f"{self._prefix}:store:epoch:{{{_tag_in(ranges)}}}": tuple(sorted(ranges))
            for ranges in per_primary.values()
        }
        if layout:
            self._layout = layout
            self._known = {key: value for key, value in self._known.items() if key in layout}

    def queue(self, commands: Batch) -> list[tuple[int, str]]:
        """Queue a read of every marker (a claim first for those not known yet): (reply index, key)."""
        reads = []
        for key in self._layout:
            if key not in self._known:
                commands.add("SET", key, secrets.token_hex(8), "NX")
            reads.append((commands.add("GET", key), key))
        return reads

    def check(self, replies: Sequence[object], reads: list[tuple[int, str]]) -> Callable[[str], bool] | None:
        """What the markers' replies say: None if nothing was lost, else whether a key (a held
        conversation's) lived where data was lost. A lost marker is claimed anew by the next batch."""
        lost: list[tuple[int, int]] = []
        for at, key in reads:
            seen = replies[at]
            known = self._known.get(key)
            if known is None:  # just claimed (or read): this is the data set we write to
                if isinstance(seen, bytes):
                    self._known[key] = seen
            elif seen != known:
                del self._known[key]
                lost.extend(self._layout.get(key, ()))
        if not lost:
            return None
        if not self._cluster:
            return _everything
        return lambda key: _within(key_slot(key.encode()), lost)


def _everything(key: str) -> bool:
    return True


def _within(slot: int, ranges: Sequence[tuple[int, int]]) -> bool:
    return any(start <= slot <= end for start, end in ranges)


def _tag_in(ranges: Sequence[tuple[int, int]]) -> int:
    """The smallest n whose hash tag `{n}` lands in one of `ranges` (every process finds the same)."""
    n = 0
    while not _within(key_slot(str(n).encode()), ranges):
        n += 1
    return n
