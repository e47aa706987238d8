"""The Redis layer's inbox reader: takes what other processes sent this one and delivers it locally.

One blocking reader per process pops entries in batches; an entry is a message for local
channels, a group message for our members, a join/leave notice from another process, or this
process's own delivery probe.
A part of RedisChannelLayer (layers/redis.py), which supplies the state declared here.
"""

from __future__ import annotations

import logging
import time
from typing import Any

import orjson
from redis.asyncio.cluster import RedisCluster

from ..ops.redis import BLOCK_SECONDS, RedisClient
from . import redis_scripts as scripts
from .redis_probe import DeliveryProbe

log = logging.getLogger("chatbot_server.layers.redis")  # the layer's one logger, as before the split

# BLOCK_SECONDS (ops/redis.py): a blocking pop returns at least this often, so a dead socket is noticed
READ_BATCH = 256  # inbox entries taken per round trip


async def _route(client: RedisClient, key: str) -> dict[str, Any]:
    """On a cluster, name the node serving `key`'s slot: BLMPOP's key position moves (numkeys), so
    redis-py would otherwise ask a node with COMMAND GETKEYS before every pop (a round trip, and a
    command on some unrelated node). A MOVED after a resharding is still followed by redis-py,
    which updates its slot table: the next pop goes to the new node."""
    if not isinstance(client, RedisCluster):
        return {}
    await client.initialize()  # a no-op once the slot table is known
    return {"target_nodes": client.get_node_from_key(key)}


class InboxReader(DeliveryProbe):
    """The inbox-reading part of RedisChannelLayer (not used on its own)."""

    # Set by RedisChannelLayer.__init__.
    _inbox_key: str
    _blocking: RedisClient
    _blmpop: bool | None

    async def _read_inbox(self) -> None:
        key = self._inbox_key
        client = self._blocking
        while not self._closed:
            entries: list[bytes]
            if self._blmpop:
                # Raw command: the keyword for COUNT differs between redis-py releases.
                reply: Any = await client.execute_command(  # type: ignore[no-untyped-call]
                    "BLMPOP", BLOCK_SECONDS, 1, key, "LEFT", "COUNT", READ_BATCH, **await _route(client, key)
                )
                entries = list(reply[1]) if reply else []
            else:  # Redis < 7: one blocking pop, then take what else is queued
                popped: Any = await client.blpop([key], timeout=BLOCK_SECONDS)
                if not popped:
                    continue
                entries = [popped[1]]
                more: Any = await client.lpop(key, READ_BATCH)
                if more:
                    entries.extend(more)
            now_ms = time.time() * 1000
            for raw in entries:
                self._handle_entry(raw, now_ms)

    def _handle_entry(self, raw: bytes, now_ms: float) -> None:
        try:
            if int(raw[: scripts.HEADER_WIDTH]) < now_ms:
                return  # waited longer than `expiry`
            doc = orjson.loads(raw[scripts.HEADER_WIDTH :])
            local = self.local
            if "g" in doc:
                group = doc["g"]
                members = self._groups.members(group, time.time() - self.group_expiry)
                # A released channel gets nothing more.
                local.deliver_many(members, doc["m"], known_only=True)
                if not members:
                    self._schedule_sync(group)  # stop others sending us this group
            elif "m" in doc:
                local.deliver_many(doc["c"], doc["m"], known_only=True)
            elif "j" in doc:
                if doc["c"] in local:
                    self._groups.add(doc["j"], doc["c"], float(doc["t"]))
            elif "l" in doc:
                self._groups.discard(doc["l"], doc["c"])
                if not self._groups.has(doc["l"]):
                    self._schedule_sync(doc["l"])
            elif "p" in doc:  # this process's own delivery probe (redis_probe.py)
                self._probe_returned(doc["p"])
        except (ValueError, KeyError, TypeError) as error:
            log.warning("dropped a malformed inbox entry in %s: %s", self._inbox_key, error)
