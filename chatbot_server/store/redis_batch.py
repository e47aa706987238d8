"""Batches of Redis commands packed by us, sent in one write, their replies read under one timeout.

The Redis store writes thousands of frames a second behind the sockets, every one of them already
JSON bytes. redis-py's pipeline encodes each argument in Python (most of the write-behind's
cost, bench/README.md) and reads each reply under a timeout of its own; here a frame costs one
bytes-format, and a batch one timer.

That trick needs one connection to one server. On a Redis Cluster the commands of a batch go to
the nodes of their keys' slots, and a resharding answers some of them with MOVED or ASK, so a
batch for a cluster (`new_batch()` decides) is a list of commands run by redis-py's public
ClusterPipeline (`transaction=False`): it groups them per node, one round trip per node, and
re-sends the redirected ones where they now belong. `python bench/bench_store_batch.py` measures
both (docs/redis.md).
"""

from __future__ import annotations

import asyncio
import math
from typing import Any, TypeAlias

from redis.asyncio.cluster import RedisCluster

from ..ops.redis import RedisClient

Arg = bytes | str | int


class CommandBatch:
    """Commands in Redis's wire format (RESP), in order, and how many replies they will get."""

    __slots__ = ("_parts", "commands")

    def __init__(self) -> None:
        self._parts: list[bytes] = []
        self.commands = 0

    def add(self, *args: Arg) -> int:
        """Append one command, e.g. add("SET", key, value, "PX", 1000); its index among the replies."""
        encoded = [arg if type(arg) is bytes else _encode(arg) for arg in args]
        self._parts.append(b"*%d\r\n" % len(encoded))
        self._parts.append(b"".join([b"$%d\r\n%b\r\n" % (len(arg), arg) for arg in encoded]))
        self.commands += 1
        return self.commands - 1

    def add_with_bulks(self, *args: Arg, bulks: list[bytes]) -> int:
        """Append one command whose last arguments come already packed by bulk(), e.g.
        add_with_bulks("RPUSH", key, bulks=[bulk(frame) for frame in frames]) (no per-argument work
        here); its index among the replies."""
        encoded = [arg if type(arg) is bytes else _encode(arg) for arg in args]
        self._parts.append(b"*%d\r\n" % (len(encoded) + len(bulks)))
        self._parts.append(b"".join([b"$%d\r\n%b\r\n" % (len(arg), arg) for arg in encoded]))
        self._parts.append(b"".join(bulks))
        self.commands += 1
        return self.commands - 1

    def payload(self) -> bytes:
        """Every command, ready to write."""
        return b"".join(self._parts)


class PipelineBatch:
    """The same commands for a Redis Cluster: kept as argument tuples for redis-py's ClusterPipeline
    (it encodes and routes each command)."""

    __slots__ = ("_commands", "commands")

    def __init__(self) -> None:
        self._commands: list[tuple[Arg, ...]] = []
        self.commands = 0

    def add(self, *args: Arg) -> int:
        """Append one command; its index among the replies (as CommandBatch.add)."""
        for arg in args:
            if type(arg) is not bytes:
                _encode(arg)  # the same arguments refused as in CommandBatch
        self._commands.append(args)
        self.commands += 1
        return self.commands - 1

    def add_with_bulks(self, *args: Arg, bulks: list[bytes]) -> int:
        """Append one command whose last arguments come packed by bulk() (as CommandBatch's):
        unpacked here, the pipeline packs them again."""
        values = [packed[packed.index(b"\r\n") + 2 : -2] for packed in bulks]
        self._commands.append((*args, *values))
        self.commands += 1
        return self.commands - 1

    def listed(self) -> list[tuple[Arg, ...]]:
        """Every command's arguments, in order."""
        return self._commands


Batch: TypeAlias = CommandBatch | PipelineBatch


def new_batch(client: RedisClient) -> Batch:
    """An empty batch for `client`: packed by us for one server, a pipeline's for a cluster."""
    return PipelineBatch() if isinstance(client, RedisCluster) else CommandBatch()


def bulk(value: bytes) -> bytes:
    """One argument in Redis's wire format, for add_with_bulks (packed when it is made, not per batch)."""
    return b"$%d\r\n%b\r\n" % (len(value), value)


def _encode(value: Arg) -> bytes:
    if isinstance(value, str):
        return value.encode()
    if isinstance(value, bytes):
        return value
    if isinstance(value, int) and not isinstance(value, bool):
        return b"%d" % value
    raise TypeError(f"a Redis argument must be bytes, str or int, got {type(value).__name__}")


async def send_batch(client: RedisClient, batch: Batch, timeout: float) -> list[Any]:
    """Send a batch and return every reply, in order; raise the first error reply.

    One server: the batch goes on one pooled connection; on any failure (an error reply, a
    timeout, a dropped connection, a cancellation) that connection is closed, not reused: replies
    may be left unread on it. A cluster: see `_send_pipeline`.
    """
    if not batch.commands:
        return []
    if isinstance(batch, PipelineBatch):
        if not isinstance(client, RedisCluster):
            raise TypeError("a PipelineBatch is for a RedisCluster: make batches with new_batch(client)")
        return await _send_pipeline(client, batch, timeout)
    if isinstance(client, RedisCluster):
        raise TypeError("a CommandBatch cannot go to a Redis Cluster: make batches with new_batch(client)")
    replies: list[Any] = []
    pool = client.connection_pool
    connection = None
    try:
        # Taking a connection (and connecting it, after an outage) counts against the timeout too.
        async with asyncio.timeout(timeout):
            connection = await pool.get_connection()  # type: ignore[no-untyped-call]
            await connection.send_packed_command(batch.payload(), check_health=False)
            for _ in range(batch.commands):
                # math.inf: no timer per reply (the whole batch has one).
                replies.append(await connection.read_response(timeout=math.inf))
    except BaseException as exc:
        if connection is not None:
            await connection.disconnect()
        if type(exc) is TimeoutError:  # asyncio's says nothing; the log line and /healthz show this
            raise _timed_out(timeout, batch) from None
        raise
    finally:
        if connection is not None:
            await pool.release(connection)
    return replies


async def _send_pipeline(client: RedisCluster, batch: PipelineBatch, timeout: float) -> list[Any]:
    """Run the batch in a ClusterPipeline: every reply, in order; the first error reply raised.

    `raise_on_error=False`: the pipeline then answers every command (an error reply in its place),
    so each one is looked at here, after the pipeline re-sent those a resharding redirected (MOVED,
    ASK, TRYAGAIN). A connection cut by the timeout is closed by redis-py (a read interrupted by a
    cancellation disconnects), so no reply is left on it for the next command.
    """
    try:
        async with asyncio.timeout(timeout):
            async with client.pipeline(transaction=False) as pipe:
                for args in batch.listed():
                    pipe.execute_command(*args)
                replies = await pipe.execute(raise_on_error=False)
    except TimeoutError as exc:
        if type(exc) is TimeoutError:
            raise _timed_out(timeout, batch) from None
        raise
    for reply in replies:
        if isinstance(reply, Exception):
            raise reply
    return replies


def _timed_out(timeout: float, batch: Batch) -> TimeoutError:
    return TimeoutError(f"no answer from Redis within {timeout:g} s (batch of {batch.commands})")
