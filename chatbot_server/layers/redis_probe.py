"""The Redis layer's delivery probe: at an interval, each process sends itself a message through Redis.

A reader can starve while every other command works: parked on a connection that a failover or a
network fault left open but dead (centrifugo#1189: after a Sentinel failover its subscribers got
nothing while publishes returned 200 and /health was green, until a restart). So each process
writes a probe entry, `{"p": token}`, to its own inbox with the SEND script a remote sender uses
(the same key, heartbeat check and reader), and expects its reader to hand it back within one
`probe_interval`. A probe that does not come back (or whose write fails or times out) marks the
layer down and drops every connection, so the supervisor connects afresh (a Sentinel pool asks the
sentinels for the primary again) and re-registers memberships; `health()` is not ok until a probe
comes back. So starvation is noticed, and a reconnect started, within two probe intervals.
A part of RedisChannelLayer (layers/redis.py), which supplies the state declared here.
"""

from __future__ import annotations

import asyncio
import itertools
import logging
import time
from dataclasses import dataclass

from redis.commands.core import AsyncScript
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import RedisError

from ..ops.redis import RedisClient, disconnect
from . import redis_scripts as scripts
from .redis_members import DOWN_ERRORS, MembershipWrites

log = logging.getLogger("chatbot_server.layers.redis")  # the layer's one logger

MIN_PROBE_INTERVAL = 0.05
# Within one failing episode the first two failures reconnect, then the 4th, 8th, 16th and every
# 16th after: a fault a new connection does not cure (every reader connection black-holed) must
# not churn connections and log lines every interval; health() stays not ok meanwhile.
RECONNECT_EVERY = 16


class DeliveryStalledError(RedisConnectionError):
    """The delivery probe did not come back in time: the layer is down and reconnects."""


@dataclass
class ProbeStats:
    """The delivery probe's counters (read by /metrics)."""

    sent: int = 0
    returned: int = 0
    failures: int = 0  # probes that did not come back within the interval (or could not be written)
    round_trip: float = 0.0  # seconds from write to arrival of the last probe that came back


class DeliveryProbe(MembershipWrites):
    """The delivery-probing part of RedisChannelLayer (not used on its own)."""

    # Set by RedisChannelLayer.__init__.
    _inbox_key: str
    _process_key: str
    _blocking: RedisClient
    _send_script: AsyncScript
    inbox_capacity: int
    socket_timeout: float

    def _init_probe(self, interval: float) -> None:
        if interval < MIN_PROBE_INTERVAL:
            raise ValueError(f"probe_interval must be at least {MIN_PROBE_INTERVAL:g} s")
        self.probe_interval = interval
        self.probe_stats = ProbeStats()
        self._probe_tokens = itertools.count(1)
        self._probe_token = ""
        self._probe_waiter: asyncio.Future[float] | None = None  # resolved with the arrival time
        self._probe_sent_at: float | None = None  # loop time of the probe in flight
        self._probe_ok_at: float | None = None  # loop time the last probe came back (or probing began)
        self._probe_failure = ""  # why the last probe failed; "" once one came back
        self._probe_streak = 0  # probes failed in a row
        self._probe_warned = False  # this episode's warning is logged

    def _probe_returned(self, token: object) -> None:
        """The inbox reader met a probe entry: resolve it if it is the one in flight (an older one,
        read after a reconnect, is ignored)."""
        waiter = self._probe_waiter
        if waiter is not None and token == self._probe_token and not waiter.done():
            waiter.set_result(asyncio.get_running_loop().time())

    def _probe_problem(self) -> str:
        """What health() reports while the last probe failed or the one in flight is overdue, or ""."""
        now = asyncio.get_running_loop().time()
        sent = self._probe_sent_at
        overdue = sent is not None and now - sent > self.probe_interval
        if not (overdue or self._probe_failure) or self._probe_ok_at is None:
            return ""
        detail = (
            "delivery probe overdue: no message from Redis through this process's inbox "
            f"for {now - self._probe_ok_at:.1f} s"
        )
        return f"{detail} ({self._probe_failure})" if self._probe_failure else detail

    async def _probe_delivery(self) -> None:
        """Probe every `probe_interval` while connected (run by `_serve` next to the reader)."""
        loop = asyncio.get_running_loop()
        if self._probe_ok_at is None:
            self._probe_ok_at = loop.time()
        if not self._probe_failure:
            # The connect just proved the connections; after a failed probe, probe at once so
            # that health() recovers as soon as delivery does.
            await asyncio.sleep(self.probe_interval)
        while not self._closed:
            sent_at = loop.time()
            failure, reconnect = await self._probe_once(sent_at + self.probe_interval)
            if failure:
                await self._probe_failed(failure, reconnect=reconnect)
                if not self._up:
                    return  # _serve stops; the supervisor connects afresh
            await asyncio.sleep(max(0.0, sent_at + self.probe_interval - loop.time()))

    async def _probe_once(self, deadline: float) -> tuple[str, bool]:
        """Write one probe and wait for it until `deadline`: ("", _) when it came back, else why
        not and whether a fresh connection may cure it (not when Redis refuses writes: OOM)."""
        loop = asyncio.get_running_loop()
        token = str(next(self._probe_tokens))
        waiter: asyncio.Future[float] = loop.create_future()
        # Armed before the write: the reader may pop the entry before the script's reply arrives.
        self._probe_token, self._probe_waiter = token, waiter
        self._probe_sent_at = sent_at = loop.time()
        self.probe_stats.sent += 1
        now = time.time()
        entry = scripts.header(now + self.expiry) + b'{"p":"' + token.encode() + b'"}'
        written = False
        try:
            async with asyncio.timeout_at(deadline):
                result = await self._send_script(
                    keys=[self._inbox_key, self._process_key],
                    args=[entry, self.inbox_capacity, self._expiry_ms(), int(now * 1000)],
                )
                written = True
                if result == 0:
                    return "Redis dropped it: this process's heartbeat key is missing", True
                if result == -1:
                    return f"this process's inbox holds {self.inbox_capacity} unread entries", True
                arrived = await waiter
        except TimeoutError:  # before DOWN_ERRORS: it is an OSError
            return ("written, not read back" if written else "its write got no answer"), True
        except DOWN_ERRORS as error:
            return f"its write failed: {type(error).__name__}: {error}", True
        except RedisError as error:  # reachable but refusing writes: a new connection will not help
            self._write_refused(error)
            return f"its write was refused: {type(error).__name__}: {error}", False
        finally:
            self._probe_waiter = None
            self._probe_sent_at = None
        self.probe_stats.returned += 1
        self.probe_stats.round_trip = arrived - sent_at
        if self._probe_failure:
            log.info("delivery probe came back after %d failed; delivery works again", self._probe_streak)
        self._probe_failure = ""
        self._probe_streak = 0
        self._probe_warned = False
        self._probe_ok_at = arrived
        return "", False

    async def _probe_failed(self, failure: str, *, reconnect: bool) -> None:
        self.probe_stats.failures += 1
        self._probe_streak += 1
        self._probe_failure = f"last probe: {failure}"
        if not reconnect:
            return  # Redis refuses writes: logged once by _write_refused, health() reports it
        if not self._probe_warned:  # one line per episode, until a probe comes back
            self._probe_warned = True
            log.warning(
                "delivery probe did not come back within %g s (%s); reconnecting to Redis at %s",
                self.probe_interval,
                failure,
                self.url,
            )
        streak = self._probe_streak
        if streak & (streak - 1) and streak % RECONNECT_EVERY:
            return  # backing off within the episode; the next probe goes on the same connections
        self._outage_logged = True  # the line above is the episode's: no "unreachable" line too
        self._mark_down(DeliveryStalledError(f"delivery probe did not come back within {self.probe_interval:g} s"))
        # _mark_down stops _serve, which cancels this task; the supervisor must not connect before
        # the old connections are gone, so the drop finishes even then.
        dropping = asyncio.ensure_future(self._drop_connections())
        try:
            await asyncio.shield(dropping)
        except asyncio.CancelledError:
            await dropping
            raise

    async def _drop_connections(self) -> None:
        """Close the reader's and the shared pool's connections: the next command connects afresh
        (redis-py's SentinelConnectionPool asks the sentinels for the primary on each new one)."""
        for client in (self._blocking, self._client):
            try:
                async with asyncio.timeout(self.socket_timeout):
                    await disconnect(client)
            except (RedisError, OSError) as error:  # TimeoutError is an OSError
                log.debug("closing Redis connections after a lost probe: %s", error)
