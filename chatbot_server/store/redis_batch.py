"""Batches of Redis commands packed by us, sent in one write, their replies read under one timeout.

The Redis store writes thousands of frames a second behind the sockets, every one of them already
JSON bytes. redis-py's pipeline encodes each argument in Python (most of the write-behind's
cost, bench/README.md) and reads each reply under a timeout of its own; here a frame costs one
bytes-format, and a batch one timer.
"""

from __future__ import annotations

import asyncio
import math
from typing import Any

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


async def send_batch(client: RedisClient, batch: CommandBatch, timeout: float) -> list[Any]:
    """Send a batch on one pooled connection and return every reply, in order; raise on the first
    error reply.

    On any failure (an error reply, a timeout, a dropped connection, a cancellation) the
    connection is closed, not reused: replies may be left unread on it.
    """
    if not batch.commands:
        return []
    replies: list[Any] = []
    if isinstance(client, RedisCluster):
        raise NotImplementedError("the Redis store's batches do not run on a Redis Cluster yet")
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
            raise TimeoutError(f"no answer from Redis within {timeout:g} s (batch of {batch.commands})") from None
        raise
    finally:
        if connection is not None:
            await pool.release(connection)
    return replies
