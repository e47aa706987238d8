"""A throwaway Sentinel deployment for tests and the failover bench: one primary, one replica and
three sentinels on free loopback ports (the shared Redis on 6379 is never touched).

Built as an operator would: plain redis-server processes, the replica started with `--replicaof`,
each sentinel `redis-server <its own config file> --sentinel` (Sentinel rewrites that file, so
each has one of its own), `sentinel monitor <name> 127.0.0.1 <primary> 2`. Tests kill -9 the
primary, await the failover (Sentinel's own `+switch-master` event), and start the old primary
again as a replica of the new one.

The waits here are async (redis.asyncio), so a test that awaits a failover keeps serving the
layer and the store under test in the same event loop.
"""

from __future__ import annotations

import asyncio
import shutil
import subprocess
import tempfile
import time
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import pytest
import redis.asyncio as aioredis

from .redis_server import RedisProcess, free_port, ping, wait_answering

SERVICE = "chatbot"
# Sentinel's own timing: a primary silent this long is subjectively down; a failover attempt that
# stalls is abandoned after FAILOVER_TIMEOUT (and the same primary is not failed over again within
# twice that). Not below 1000 ms: a sentinel pings (and reconnects a link) once a second, so with
# 500 ms it took the new primary for down right after a switch, and failed over back and forth.
DOWN_AFTER_MS = 1000
FAILOVER_TIMEOUT_MS = 1000
FAILOVER_DEADLINE = 20.0  # seconds a test waits for Sentinel to promote the replica
# A primary waits 5 s by default before a diskless full sync (for more replicas to join it): a
# restarted replica would take that long to be in sync.
NODE_ARGS = ("--repl-diskless-sync-delay", "0")
SKIP_REASON = "redis-server is not installed (apt-get install redis-server): the Sentinel tests need it"


def sentinel_available() -> bool:
    """Whether redis-server (which runs as a sentinel with --sentinel) is installed."""
    return shutil.which("redis-server") is not None


class SentinelProcess:
    """One sentinel: `redis-server <config> --sentinel` with a config file of its own."""

    def __init__(self, primary_port: int, *, down_after_ms: int, failover_timeout_ms: int) -> None:
        binary = shutil.which("redis-server")
        if binary is None:
            pytest.skip(SKIP_REASON)
        self.binary = binary
        self.port = free_port()
        self._dir = tempfile.TemporaryDirectory(prefix="chatbot-sentinel-")
        self.config = Path(self._dir.name) / "sentinel.conf"
        self.config.write_text(
            f"port {self.port}\n"
            "bind 127.0.0.1\n"
            f"dir {self._dir.name}\n"
            "loglevel warning\n"
            f"sentinel monitor {SERVICE} 127.0.0.1 {primary_port} 2\n"
            f"sentinel down-after-milliseconds {SERVICE} {down_after_ms}\n"
            f"sentinel failover-timeout {SERVICE} {failover_timeout_ms}\n"
            f"sentinel parallel-syncs {SERVICE} 1\n",
            encoding="utf-8",
        )
        self._proc: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        """Start the sentinel and wait until it answers PING."""
        self._proc = subprocess.Popen(
            [self.binary, str(self.config), "--sentinel"], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
        )
        wait_answering(self._proc, lambda: ping(self.port), f"sentinel on port {self.port}")

    def cleanup(self) -> None:
        """Kill the sentinel and remove its directory."""
        if self._proc is not None and self._proc.poll() is None:
            self._proc.kill()
            self._proc.wait()
        self._dir.cleanup()


class SentinelDeployment:
    """A primary, a replica and three sentinels watching them, on loopback."""

    def __init__(self, *, down_after_ms: int = DOWN_AFTER_MS, failover_timeout_ms: int = FAILOVER_TIMEOUT_MS) -> None:
        if not sentinel_available():
            pytest.skip(SKIP_REASON)
        self.down_after_ms = down_after_ms
        first = RedisProcess(extra_args=NODE_ARGS)
        second = RedisProcess(extra_args=[*NODE_ARGS, "--replicaof", "127.0.0.1", str(first.port)])
        self.nodes = {first.port: first, second.port: second}
        self._primary = first.port
        self.sentinels = [
            SentinelProcess(first.port, down_after_ms=down_after_ms, failover_timeout_ms=failover_timeout_ms)
            for _ in range(3)
        ]

    # ------------------------------------------------------------------ what it is
    @property
    def url(self) -> str:
        """The `redis+sentinel://` URL naming the three sentinels and the service."""
        return "redis+sentinel://" + ",".join(f"127.0.0.1:{s.port}" for s in self.sentinels) + f"/{SERVICE}"

    @property
    def sentinel_ports(self) -> list[int]:
        """The sentinels' ports."""
        return [s.port for s in self.sentinels]

    async def primary_url(self) -> str:
        """A plain redis:// URL of the current primary (for inspection)."""
        self._primary = await self.primary_port()
        return f"redis://127.0.0.1:{self._primary}/0"

    async def primary_port(self) -> int:
        """The primary's port as the first sentinel reports it now."""
        return await self._master_port(self.sentinels[0].port)

    # ------------------------------------------------------------------ lifecycle
    async def start(self) -> None:
        """Start both nodes and the sentinels; return once every sentinel knows the primary,
        the replica (in sync) and the two other sentinels, so a failover can be voted."""
        first, second = self.nodes.values()
        first.start()
        second.start()
        await self._wait_synced(second.port)
        for sentinel in self.sentinels:
            sentinel.start()
        await self.wait_healthy()

    async def wait_healthy(self, timeout: float = FAILOVER_DEADLINE) -> None:
        """Wait until every sentinel names the same running primary, sees one replica that is up
        and in sync, and knows both other sentinels: ready for the next failover."""
        deadline = time.monotonic() + timeout
        while True:
            views = await self.views()
            if self._healthy(views):
                return
            if time.monotonic() > deadline:
                raise RuntimeError(f"the sentinels did not settle in {timeout:g} s: {_summary(views)}")
            await asyncio.sleep(0.05)  # sentinels publish their view at intervals, no event

    async def views(self) -> list[tuple[dict[str, str], list[dict[str, str]]]]:
        """What each sentinel reports: the primary (SENTINEL MASTER) and its replicas."""
        views = []
        for sentinel in self.sentinels:
            async with aioredis.Redis(port=sentinel.port, decode_responses=True) as client:
                master: Any = await client.execute_command("SENTINEL", "MASTER", SERVICE)  # type: ignore[no-untyped-call]
                replicas: Any = await client.execute_command("SENTINEL", "REPLICAS", SERVICE)  # type: ignore[no-untyped-call]
            views.append((_pairs(master), [_pairs(replica) for replica in replicas]))
        return views

    def _healthy(self, views: list[tuple[dict[str, str], list[dict[str, str]]]]) -> bool:
        primaries = set()
        for master, replicas in views:
            if master["flags"] != "master" or master["num-other-sentinels"] != "2":
                return False
            # Not "master-link-status": a sentinel refreshes a replica's INFO every 10 s (every
            # second once the primary is down), so it may still show the link down since a restart;
            # restart_old and start ask the replica itself.
            if not any(r["flags"] == "slave" for r in replicas):
                return False
            primaries.add(int(master["port"]))
        if len(primaries) != 1:
            return False
        (primary,) = primaries
        return primary in self.nodes and self.nodes[primary].running

    async def kill_primary(self) -> int:
        """kill -9 the current primary (all its unreplicated writes die with it); its port."""
        port = self._primary = await self.primary_port()
        self.nodes[port].kill()
        return port

    async def wait_new_primary(self, old: int, timeout: float = FAILOVER_DEADLINE) -> int:
        """Wait until every sentinel names a primary other than `old` and it answers as one."""
        async with asyncio.timeout(timeout):
            while True:
                ports = {await self._master_port(s.port) for s in self.sentinels}
                if len(ports) == 1 and old not in ports:
                    (port,) = ports
                    async with aioredis.Redis(port=port, decode_responses=True) as client:
                        role: Any = await client.execute_command("ROLE")  # type: ignore[no-untyped-call]
                    if role[0] == "master":
                        self._primary = port
                        return port
                await asyncio.sleep(0.02)  # polled: only the leader sentinel publishes the switch first

    async def switch_events(self, subscribed: asyncio.Event | None = None) -> AsyncIterator[tuple[str, float]]:
        """Sentinel's events (`+sdown`, `+odown`, `+switch-master`, ...) from the first sentinel,
        each with the `time.monotonic()` it arrived; `subscribed` is set once listening (await
        it before the kill)."""
        client = aioredis.Redis(port=self.sentinels[0].port, decode_responses=True)
        pubsub = client.pubsub()
        await pubsub.psubscribe("*")
        if subscribed is not None:
            subscribed.set()
        try:
            async for event in pubsub.listen():
                if event["type"] == "pmessage":
                    yield str(event["channel"]), time.monotonic()
        finally:
            await pubsub.aclose()
            await client.aclose()

    async def restart_old(self, port: int) -> None:
        """Start the killed node again, as a replica of the current primary, and wait until it is
        in sync and every sentinel sees it up (the deployment is ready for another failover)."""
        primary = await self.primary_port()
        node = self.nodes[port]
        node.extra_args = [*NODE_ARGS, "--replicaof", "127.0.0.1", str(primary)]
        node.start()
        await self._wait_synced(port)
        await self.wait_healthy()

    async def detach_replica(self) -> None:
        """Point the replica at a port nobody listens on: it keeps its data but gets none of the
        primary's later writes, which a kill of the primary then loses, as asynchronous
        replication loses the writes it had not sent yet. (SIGSTOP would not do: the kernel still
        takes the stream into the stopped replica's socket.) Sentinel still counts it a replica
        it can promote; it would point it back at the primary after about 8 s."""
        async with aioredis.Redis(port=self._replica().port) as client:
            await client.replicaof("127.0.0.1", str(free_port()))

    def _replica(self) -> RedisProcess:
        (node,) = [node for port, node in self.nodes.items() if port != self._primary]
        return node

    def cleanup(self) -> None:
        """Kill every process and remove their directories."""
        for sentinel in self.sentinels:
            sentinel.cleanup()
        for node in self.nodes.values():
            node.cleanup()

    # ------------------------------------------------------------------ helpers
    async def _master_port(self, sentinel_port: int) -> int:
        async with aioredis.Redis(port=sentinel_port, decode_responses=True) as client:
            address: Any = await client.execute_command(  # type: ignore[no-untyped-call]
                "SENTINEL", "GET-MASTER-ADDR-BY-NAME", SERVICE
            )
        return int(address[1])

    async def _wait_synced(self, port: int, timeout: float = FAILOVER_DEADLINE) -> None:
        async with asyncio.timeout(timeout):
            while True:
                async with aioredis.Redis(port=port, decode_responses=True) as client:
                    info = await client.info("replication")
                if info.get("master_link_status") == "up" and not info.get("master_sync_in_progress"):
                    return
                await asyncio.sleep(0.02)  # a replica reports its link state only when asked


def _summary(views: list[tuple[dict[str, str], list[dict[str, str]]]]) -> str:
    return "; ".join(
        f"primary {m['port']} ({m['flags']}, {m['num-other-sentinels']} other sentinels), replicas "
        + ", ".join(f"{r['port']} ({r['flags']}, link {r['master-link-status']})" for r in rs)
        for m, rs in views
    )


def _pairs(flat: Any) -> dict[str, str]:
    """A Sentinel reply of alternating names and values as a dict (redis-py may already parse it)."""
    if isinstance(flat, dict):
        return {str(k): str(v) for k, v in flat.items()}
    return {str(flat[i]): str(flat[i + 1]) for i in range(0, len(flat), 2)}


@pytest.fixture(scope="module")
def sentinel_deployment() -> Iterator[SentinelDeployment]:
    """One Sentinel deployment per test module (started lazily by `sentinel`)."""
    deployment = SentinelDeployment()
    try:
        yield deployment
    finally:
        deployment.cleanup()


@pytest.fixture
async def sentinel(sentinel_deployment: SentinelDeployment) -> SentinelDeployment:
    """The module's Sentinel deployment, started, with both nodes up and ready for a failover."""
    if not any(node.running for node in sentinel_deployment.nodes.values()):
        await sentinel_deployment.start()
    for port, node in sentinel_deployment.nodes.items():
        if not node.running:
            await sentinel_deployment.restart_old(port)
    await sentinel_deployment.wait_healthy()
    return sentinel_deployment
