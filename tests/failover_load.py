"""Chat and broadcast load across a Sentinel failover, counted frame by frame (tests and bench).

Two `python -m chatbot_server` processes on one `redis+sentinel://` URL; websocket clients split
between them, each chatting (typed messages with ids, so every acknowledged frame has a seq);
a broadcaster (this process's own RedisChannelLayer on the same prefix, as a host handler would
broadcast: docs/consumers.md) sends a numbered `chat.broadcast` to group "users" every
BROADCAST_EVERY seconds. `failover()` kills the primary with kill -9 and measures:

- how long until every process delivers again: for each server process, the first broadcast sent
  after the kill that reached all of its clients, at the time its last client got it;
- Sentinel's own share: the kill to `+sdown` (down-after-milliseconds), to `+odown`, and to
  `+switch-master` (the promotion), from the sentinels' own event stream;
- acknowledged chat frames lost or duplicated: every client then resumes its conversation on the
  *other* process (a takeover through Redis) from seq 0 and compares the replay with every `user`
  and `reply` frame it was sent;
- broadcasts lost (outside the outage, and during it) or duplicated, per client.
"""

from __future__ import annotations

import asyncio
import itertools
import random
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiohttp

from chatbot_server.layers.redis import RedisChannelLayer

from .helpers import stop_process, wait_healthy
from .redis_sentinel import SentinelDeployment
from .redis_server import free_port

BROADCAST_EVERY = 0.05
CHAT_EVERY = 0.5  # each client's mean seconds between messages (randomised)
READY_DEADLINE = 30.0
DELIVERY_DEADLINE = 30.0


class ServerProcess:
    """One `python -m chatbot_server` on the Sentinel URL."""

    def __init__(self, workdir: Path, name: str, url: str, prefix: str) -> None:
        self.name = name
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        config = workdir / f"{name}.yaml"
        config.write_text(
            f"server: {{host: 127.0.0.1, port: {self.port}, shutdown_timeout: 1, trusted_proxies: ['127.0.0.1']}}\n"
            "layer:\n  backend: redis\n"
            f"  redis: {{url: '{url}', prefix: {prefix}, heartbeat_interval: 0.5, probe_interval: 0.5,"
            " connect_timeout: 1.0, socket_timeout: 1.0, required: true}\n"
            "history: {max_frames: 100000, quota_per_ip: 1000000000}\n"
            "limits: {replay_frames: 10000, replay_per_ip: 100000000, rate_per_second: 50, rate_burst: 100}\n"
            "bot: {name: echo}\n"
            "logging: {level: WARNING}\n",
            encoding="utf-8",
        )
        self.log = workdir / f"{name}.log"
        with self.log.open("wb") as out:
            self.proc = subprocess.Popen(
                [sys.executable, "-m", "chatbot_server", "--config", str(config)], stdout=out, stderr=subprocess.STDOUT
            )

    async def wait_ready(self, session: aiohttp.ClientSession) -> None:
        """Wait until /healthz says 200."""

        def exited() -> str | None:
            if self.proc.poll() is None:
                return None
            return f"{self.name} exited:\n{self.log.read_text(errors='replace')}"

        await wait_healthy(session, f"{self.url}/healthz", exited=exited, deadline=READY_DEADLINE)

    async def healthy(self, session: aiohttp.ClientSession) -> bool:
        """Whether /healthz says 200 now."""
        try:
            async with session.get(f"{self.url}/healthz") as response:
                return response.status == 200
        except aiohttp.ClientConnectionError:
            return False

    def stop(self) -> None:
        """SIGTERM, then SIGKILL after 10 s."""
        stop_process(self.proc)


@dataclass
class Client:
    """One chat page: its socket, its conversation, and every frame it was sent."""

    index: int
    server: int  # which server process it is on now
    ws: aiohttp.ClientWebSocketResponse | None = None
    conversation: str = ""
    acked: dict[int, dict[str, Any]] = field(default_factory=dict)  # seq -> user/reply frame
    repeated: int = 0  # acknowledged frames sent twice (the same seq)
    broadcasts: dict[int, list[float]] = field(default_factory=dict)  # number -> arrival times
    sent: int = 0
    reader: asyncio.Task[None] | None = None


@dataclass
class FailoverResult:
    """What one failover cost."""

    recovery: float  # seconds from the kill until every process delivered a broadcast to all its clients
    per_process: list[float]
    sdown: float  # seconds from the kill to Sentinel's +sdown, +odown, +switch-master
    odown: float
    switch: float
    healthy: float  # seconds from the kill until both /healthz say 200 again
    chat_frames: int  # acknowledged chat frames checked
    chat_lost: int
    chat_duplicated: int
    broadcasts: int  # broadcasts sent during the run
    lost_outside: int  # (client, broadcast) pairs missed outside the outage window
    lost_during: int  # ... missed between the kill and the recovery
    broadcast_duplicated: int

    def line(self) -> str:
        """One line for the bench's table."""
        return (
            f"recovery {self.recovery:5.2f} s (per process {', '.join(f'{t:.2f}' for t in self.per_process)}; "
            f"sentinel +sdown {self.sdown:.2f} +odown {self.odown:.2f} +switch-master {self.switch:.2f}; "
            f"/healthz ok {self.healthy:.2f}) | chat frames {self.chat_frames}: lost {self.chat_lost}, "
            f"duplicated {self.chat_duplicated} | broadcasts {self.broadcasts}: missed outside the outage "
            f"{self.lost_outside}, during it {self.lost_during} (client x broadcast), duplicated "
            f"{self.broadcast_duplicated}"
        )


class FailoverLoad:
    """Servers, clients and a broadcaster around one Sentinel deployment."""

    def __init__(self, sentinel: SentinelDeployment, workdir: Path, prefix: str, clients: int) -> None:
        self.sentinel = sentinel
        self.servers = [ServerProcess(workdir, f"server{i}", sentinel.url, prefix) for i in range(2)]
        self.clients = [Client(index=i, server=i % 2) for i in range(clients)]
        self.broadcaster = RedisChannelLayer(url=sentinel.url, prefix=prefix, required=True, heartbeat_interval=0.5)
        # No connector limit: aiohttp allows 100 connections by default, and every page keeps one.
        self.session = aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=0))
        self._numbers = itertools.count()
        self.sent_at: dict[int, float] = {}  # broadcast number -> monotonic time sent
        self._tasks: list[asyncio.Task[None]] = []
        self._running = False
        self._ids = itertools.count()
        self._arrived = asyncio.Event()  # set by the readers on every frame counted

    async def start(self) -> None:
        """Wait for both servers, start the broadcaster, connect every client."""
        for server in self.servers:
            await server.wait_ready(self.session)
        await self.broadcaster.start()
        for chunk in range(0, len(self.clients), 50):  # a few at a time: no connect storm
            await asyncio.gather(*(self._connect(c) for c in self.clients[chunk : chunk + 50]))

    async def close(self) -> None:
        """Stop everything this load started."""
        await self.stop_traffic()
        for client in self.clients:
            await self._disconnect(client)
        await self.broadcaster.close()
        await self.session.close()
        for server in self.servers:
            server.stop()

    # ---------------------------------------------------------------- clients
    async def _connect(self, client: Client, *, resume: bool = False) -> list[dict[str, Any]]:
        server = self.servers[client.server]
        query = f"?conversation={client.conversation}&last_seq=0" if resume else ""
        ws = await self.session.ws_connect(f"{server.url}/ws{query}", autoping=True, heartbeat=None)
        replay: list[dict[str, Any]] = []
        async with asyncio.timeout(DELIVERY_DEADLINE):
            while True:
                frame = await ws.receive_json()
                if not resume and frame.get("type") == "greeting":
                    client.conversation = frame["conversation"]
                    break
                if resume and frame.get("event") == "resumed":
                    break
                if resume and frame.get("event") == "conversation_expired":
                    raise AssertionError(f"client {client.index}: conversation expired on resume")
                if frame.get("event") == "broadcast":
                    self._note_broadcast(client, frame)
                elif resume and "seq" in frame:
                    replay.append(frame)
        client.ws = ws
        client.reader = asyncio.create_task(self._read(client, ws))
        return replay

    async def _disconnect(self, client: Client) -> None:
        if client.ws is not None:
            await client.ws.close()
        if client.reader is not None:
            await asyncio.gather(client.reader, return_exceptions=True)
        client.ws = client.reader = None

    async def _read(self, client: Client, ws: aiohttp.ClientWebSocketResponse) -> None:
        async for message in ws:
            if message.type != aiohttp.WSMsgType.TEXT:
                continue
            frame = message.json()
            kind = frame.get("type")
            if frame.get("event") == "broadcast":
                self._note_broadcast(client, frame)
            elif kind in ("user", "reply") and "seq" in frame:
                if frame["seq"] in client.acked:
                    client.repeated += 1
                client.acked[frame["seq"]] = frame
                self._arrived.set()

    def _note_broadcast(self, client: Client, frame: dict[str, Any]) -> None:
        text = str(frame.get("msg", ""))
        if text.startswith("b#"):
            client.broadcasts.setdefault(int(text[2:]), []).append(time.monotonic())
            self._arrived.set()

    # ---------------------------------------------------------------- traffic
    def start_traffic(self) -> None:
        """Start the broadcaster's loop and every client's chat loop."""
        self._running = True
        self._tasks = [asyncio.create_task(self._broadcast())]
        self._tasks += [asyncio.create_task(self._chat(c)) for c in self.clients]

    async def stop_traffic(self) -> None:
        """Stop sending, then wait until every reply of a sent message has arrived."""
        self._running = False
        await asyncio.gather(*self._tasks, return_exceptions=True)
        self._tasks = []
        async with asyncio.timeout(DELIVERY_DEADLINE):
            while any(c.ws is not None and len(c.acked) < 2 * c.sent for c in self.clients):
                self._arrived.clear()
                await self._arrived.wait()

    async def _broadcast(self) -> None:
        loop = asyncio.get_running_loop()
        next_at = loop.time()
        while self._running:
            number = next(self._numbers)
            self.sent_at[number] = time.monotonic()
            await self.broadcaster.group_send("users", {"type": "chat.broadcast", "text": f"b#{number}"})
            next_at += BROADCAST_EVERY
            await asyncio.sleep(max(0.0, next_at - loop.time()))  # a rate, not a synchronisation

    async def _chat(self, client: Client) -> None:
        rng = random.Random(client.index)
        while self._running:
            await asyncio.sleep(rng.uniform(0.5, 1.5) * CHAT_EVERY)  # a rate, not a synchronisation
            ws = client.ws
            if ws is None or ws.closed or not self._running:
                continue
            await ws.send_json({"type": "message", "text": f"问题{client.sent}", "id": f"c{next(self._ids)}"})
            client.sent += 1

    # ---------------------------------------------------------------- one failover
    async def failover(self, *, settle: float = 1.0) -> FailoverResult:
        """Under traffic: kill -9 the primary, wait for the promotion and for delivery on every
        process, let traffic run `settle` s more, then stop it and check every frame."""
        events: list[tuple[str, float]] = []
        subscribed = asyncio.Event()
        watcher = asyncio.create_task(self._watch(events, subscribed))
        await subscribed.wait()
        self.start_traffic()
        await asyncio.sleep(1.0)  # steady traffic before the kill (a load, not a synchronisation)
        first_broadcast = min(self.sent_at, default=0)
        old = await self.sentinel.kill_primary()
        killed_at = time.monotonic()  # once it is dead: what was sent before reached a live primary
        await self.sentinel.wait_new_primary(old)
        per_process = await self._wait_delivery(killed_at)
        healthy = await self._wait_healthy(killed_at)
        await asyncio.sleep(settle)  # traffic on the new primary (a load, not a synchronisation)
        await self.stop_traffic()
        watcher.cancel()
        await asyncio.gather(watcher, return_exceptions=True)
        recovered_at = killed_at + max(per_process)
        chat_frames, lost, duplicated = await self._check_chats()
        for client in self.clients:  # the next run checks its own frames
            client.acked.clear()
            client.sent = 0
        numbers = [n for n in self.sent_at if n >= first_broadcast]
        outside = during = repeated = 0
        for client in self.clients:
            for number in numbers:
                got = client.broadcasts.get(number, [])
                repeated += max(0, len(got) - 1)
                if not got:
                    if killed_at <= self.sent_at[number] <= recovered_at:
                        during += 1
                    else:
                        outside += 1
        self.sent_at.clear()
        for client in self.clients:
            client.broadcasts.clear()

        def since_kill(name: str) -> float:
            return next((at - killed_at for event, at in events if event == name and at >= killed_at), float("nan"))

        await self.sentinel.restart_old(old)
        return FailoverResult(
            recovery=max(per_process),
            per_process=per_process,
            sdown=since_kill("+sdown"),
            odown=since_kill("+odown"),
            switch=since_kill("+switch-master"),
            healthy=healthy,
            chat_frames=chat_frames,
            chat_lost=lost,
            chat_duplicated=duplicated,
            broadcasts=len(numbers),
            lost_outside=outside,
            lost_during=during,
            broadcast_duplicated=repeated,
        )

    async def _watch(self, events: list[tuple[str, float]], subscribed: asyncio.Event) -> None:
        async for event in self.sentinel.switch_events(subscribed):
            events.append(event)

    async def _wait_delivery(self, killed_at: float) -> list[float]:
        """Per server process: seconds from the kill until a broadcast sent after it reached all of
        that process's clients (at the arrival of the last of them)."""
        async with asyncio.timeout(DELIVERY_DEADLINE):
            while True:
                times = [self._delivered(index, killed_at) for index in range(len(self.servers))]
                if all(t is not None for t in times):
                    return [t for t in times if t is not None]
                self._arrived.clear()
                await self._arrived.wait()

    def _delivered(self, server: int, killed_at: float) -> float | None:
        clients = [c for c in self.clients if c.server == server]
        for number, sent in sorted(self.sent_at.items()):
            if sent < killed_at:
                continue
            arrivals = [c.broadcasts.get(number) for c in clients]
            if all(arrivals):
                return max(times[0] for times in arrivals if times) - killed_at
        return None

    async def _wait_healthy(self, killed_at: float) -> float:
        async with asyncio.timeout(DELIVERY_DEADLINE):
            while True:
                if all([await s.healthy(self.session) for s in self.servers]):
                    break
                await asyncio.sleep(0.05)  # /healthz is polled, as a load balancer does
        return time.monotonic() - killed_at

    async def _check_chats(self) -> tuple[int, int, int]:
        """Every client resumes on the other process from seq 0: (frames checked, lost, duplicated)."""
        checked = lost = duplicated = 0
        for chunk in range(0, len(self.clients), 25):
            results = await asyncio.gather(*(self._move(c) for c in self.clients[chunk : chunk + 25]))
            for frames, missing, repeated in results:
                checked, lost, duplicated = checked + frames, lost + missing, duplicated + repeated
        return checked, lost, duplicated

    async def _move(self, client: Client) -> tuple[int, int, int]:
        await self._disconnect(client)
        client.server = 1 - client.server
        replay = await self._connect(client, resume=True)
        stored: dict[int, dict[str, Any]] = {}
        repeated = client.repeated
        client.repeated = 0
        ids: set[tuple[str, str]] = set()
        for frame in replay:
            if frame["seq"] in stored:
                repeated += 1
            stored[frame["seq"]] = frame
            key = (frame["type"], str(frame.get("id") or frame.get("reply_to") or ""))
            if frame["type"] in ("user", "reply") and key[1]:
                if key in ids:
                    repeated += 1  # one message stored (or answered) twice
                ids.add(key)
        missing = sum(1 for seq, frame in client.acked.items() if _essence(stored.get(seq)) != _essence(frame))
        return len(client.acked), missing, repeated


def _essence(frame: dict[str, Any] | None) -> tuple[Any, ...] | None:
    if frame is None:
        return None
    return (frame.get("type"), frame.get("msg"), frame.get("id"), frame.get("reply_to"))
