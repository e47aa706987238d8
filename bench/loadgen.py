"""A lean websocket load generator: asyncio Protocols speaking RFC 6455 by hand, one process.

Why not aiohttp's client: its per-frame cost (reader task, WSMessage objects, futures) is of the
same order as the server's, so the client would be what is measured. Here a reply costs one
`data_received` call, a header parse and one `transport.write` of a pre-built frame. Client frames
are masked with the all-zero key (legal, and the payload needs no XOR). Pings are answered.

One process on purpose: the runner pins it to one core, and several processes on one core only add
switching. It reports its own CPU share (CPU seconds / wall seconds from os.times()) and the CPU
share of the processes named with --watch (from /proc/<pid>/stat), so the report can show that the
server, not the client, was saturated.

Scenarios (each prints one JSON object on stdout):
  rtt     N clients in closed loops: send {"text": ...}, wait for the next frame, repeat.
  conn    hold N idle sockets; server RSS before and after, per socket.
  fanout  M members; trigger broadcasts (HTTP POST or a RedisChannelLayer.group_send) and time
          until every member has the frame.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import resource
import sys
import time
from collections.abc import Callable, Sequence
from typing import Any
from urllib.parse import urlsplit

pc = time.perf_counter
CLK_TCK = os.sysconf("SC_CLK_TCK")
CONNECT_CONCURRENCY = 100  # handshakes in flight; more overflows a 128-entry listen backlog
CONNECT_TIMEOUT = 15.0


def raise_nofile() -> int:
    """Lift the soft open-files limit to the hard limit; returns the new soft limit."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft < hard:
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    return hard


def text_frame(payload: bytes) -> bytes:
    """A final, masked (all-zero key) text frame."""
    n = len(payload)
    if n < 126:
        head = bytes((0x81, 0x80 | n))
    elif n < 65536:
        head = bytes((0x81, 0x80 | 126)) + n.to_bytes(2, "big")
    else:
        head = bytes((0x81, 0x80 | 127)) + n.to_bytes(8, "big")
    return head + b"\0\0\0\0" + payload


def control_frame(opcode: int, payload: bytes) -> bytes:
    return bytes((0x80 | opcode, 0x80 | len(payload))) + b"\0\0\0\0" + payload


FrameHandler = Callable[["Conn", bytes], None]


class Conn(asyncio.Protocol):
    """One websocket client connection; `handler(conn, payload)` is called per data frame."""

    __slots__ = ("transport", "buf", "upgraded", "handler", "ready", "request", "t_sent", "greeting")

    def __init__(self, request: bytes, ready: asyncio.Future[None]) -> None:
        self.request = request
        self.ready = ready
        self.buf = bytearray()
        self.upgraded = False
        self.handler: FrameHandler = Conn._on_greeting
        self.transport: asyncio.Transport | None = None
        self.t_sent = 0.0
        self.greeting = b""

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]
        transport.write(self.request)  # type: ignore[attr-defined]

    def connection_lost(self, exc: Exception | None) -> None:
        if not self.ready.done():
            self.ready.set_exception(ConnectionError(f"closed during handshake: {exc}"))

    def _on_greeting(self, payload: bytes) -> None:
        self.greeting = payload
        self.handler = Conn._ignore
        if not self.ready.done():
            self.ready.set_result(None)

    def _ignore(self, payload: bytes) -> None:
        pass

    def data_received(self, data: bytes) -> None:
        if not self.upgraded:
            self.buf += data
            end = self.buf.find(b"\r\n\r\n")
            if end < 0:
                return
            head = bytes(self.buf[:end])
            data = bytes(self.buf[end + 4 :])
            self.buf.clear()
            if not head.startswith(b"HTTP/1.1 101"):
                if not self.ready.done():
                    self.ready.set_exception(ConnectionError(head.split(b"\r\n", 1)[0].decode("latin-1")))
                self.transport.close()  # type: ignore[union-attr]
                return
            self.upgraded = True
            if not data:
                return
        buf = self.buf
        if buf:
            buf += data
            data = bytes(buf)
            buf.clear()
        pos = 0
        n = len(data)
        while n - pos >= 2:
            b0 = data[pos]
            length = data[pos + 1] & 0x7F
            start = pos + 2
            if length == 126:
                if n - pos < 4:
                    break
                length = int.from_bytes(data[pos + 2 : pos + 4], "big")
                start = pos + 4
            elif length == 127:
                if n - pos < 10:
                    break
                length = int.from_bytes(data[pos + 2 : pos + 10], "big")
                start = pos + 10
            end = start + length
            if end > n:
                break
            opcode = b0 & 0x0F
            pos = end
            if opcode == 1 or opcode == 2:
                self.handler(self, data[start:end])
            elif opcode == 9:
                self.transport.write(control_frame(0xA, data[start:end]))  # type: ignore[union-attr]
            elif opcode == 8:
                self.transport.close()  # type: ignore[union-attr]
                return
        if pos < n:
            buf += data[pos:]


def handshake(url: str) -> tuple[str, int, bytes]:
    parts = urlsplit(url)
    host = parts.hostname or "127.0.0.1"
    port = parts.port or 80
    path = parts.path or "/"
    if parts.query:
        path += "?" + parts.query
    request = (
        f"GET {path} HTTP/1.1\r\nHost: {host}:{port}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
        "Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n"
    ).encode()
    return host, port, request


async def open_many(urls: Sequence[str], n: int) -> tuple[list[Conn], int]:
    """Open n sockets round-robin over urls and wait for each greeting; returns (conns, failures)."""
    loop = asyncio.get_running_loop()
    targets = [handshake(u) for u in urls]
    sem = asyncio.Semaphore(CONNECT_CONCURRENCY)

    async def one(i: int) -> Conn:
        host, port, request = targets[i % len(targets)]
        async with sem:
            conn = Conn(request, loop.create_future())
            await loop.create_connection(lambda: conn, host, port)
            await asyncio.wait_for(conn.ready, CONNECT_TIMEOUT)
            return conn

    results = await asyncio.gather(*(one(i) for i in range(n)), return_exceptions=True)
    conns = [r for r in results if isinstance(r, Conn)]
    errors = [r for r in results if not isinstance(r, Conn)]
    if errors:
        print(f"loadgen: {len(errors)} connections failed, first: {errors[0]!r}", file=sys.stderr)
    return conns, len(errors)


async def close_all(conns: Sequence[Conn]) -> None:
    for c in conns:
        if c.transport is not None:
            c.transport.close()
    await asyncio.sleep(0.2)


# ----------------------------------------------------------------------- accounting
def proc_cpu(pid: int) -> float:
    """CPU seconds (user + system) a process has used, from /proc/<pid>/stat."""
    with open(f"/proc/{pid}/stat", "rb") as f:
        fields = f.read().rsplit(b")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / CLK_TCK


def rss_bytes(pid: int) -> int:
    with open(f"/proc/{pid}/status", "rb") as f:
        for line in f:
            if line.startswith(b"VmRSS:"):
                return int(line.split()[1]) * 1024
    raise RuntimeError(f"no VmRSS for pid {pid}")


class CpuMeter:
    """CPU share of this process and of watched pids over a wall-clock window."""

    def __init__(self, watch: Sequence[int]) -> None:
        self.watch = list(watch)

    def start(self) -> None:
        t = os.times()
        self.t0 = pc()
        self.self0 = t.user + t.system
        self.w0 = {pid: proc_cpu(pid) for pid in self.watch}

    def stop(self) -> dict[str, Any]:
        t = os.times()
        wall = pc() - self.t0
        return {
            "client_cpu": (t.user + t.system - self.self0) / wall,
            "watched_cpu": {str(pid): (proc_cpu(pid) - self.w0[pid]) / wall for pid in self.watch},
        }


def percentile(sorted_values: Sequence[float], p: float) -> float:
    if not sorted_values:
        return float("nan")
    k = min(len(sorted_values) - 1, max(0, round(p / 100 * (len(sorted_values) - 1))))
    return sorted_values[k]


# ----------------------------------------------------------------------- scenarios
async def scenario_rtt(args: argparse.Namespace) -> dict[str, Any]:
    conns, failed = await open_many(args.url, args.clients)
    if not conns:
        raise SystemExit("loadgen: no connection could be opened")
    frame = text_frame(json.dumps({"text": args.text}, ensure_ascii=False).encode())
    meter = CpuMeter(args.watch)
    latencies: list[float] = []
    record = latencies.append
    sample: list[bytes] = []
    t_start = pc() + args.warmup
    t_end = t_start + args.duration
    measuring = False

    def on_reply(c: Conn, payload: bytes) -> None:
        nonlocal measuring
        now = pc()
        if now >= t_start:
            if now >= t_end:
                return  # stop this loop
            if not measuring:
                measuring = True
                meter.start()
                sample.append(payload)
            record(now - c.t_sent)
        c.t_sent = now
        c.transport.write(frame)  # type: ignore[union-attr]

    for c in conns:
        c.handler = on_reply
        c.t_sent = pc()
        c.transport.write(frame)  # type: ignore[union-attr]
    await asyncio.sleep(t_end - pc())
    cpu = meter.stop() if measuring else {"client_cpu": float("nan"), "watched_cpu": {}}
    await close_all(conns)
    latencies.sort()
    return {
        "scenario": "rtt",
        "clients": len(conns),
        "failed": failed,
        "messages": len(latencies),
        "msgs_per_s": len(latencies) / args.duration,
        "p50_ms": percentile(latencies, 50) * 1000,
        "p99_ms": percentile(latencies, 99) * 1000,
        "sample_reply": sample[0].decode("utf-8", "replace") if sample else "",
        **cpu,
    }


async def scenario_conn(args: argparse.Namespace) -> dict[str, Any]:
    pid = args.watch[0]
    warm, _ = await open_many(args.url, 50)  # first-use allocations are not per-socket cost
    await close_all(warm)
    await asyncio.sleep(args.settle)
    before = rss_bytes(pid)
    t0 = pc()
    conns, failed = await open_many(args.url, args.clients)
    connect_s = pc() - t0
    await asyncio.sleep(args.settle)
    after = rss_bytes(pid)
    await close_all(conns)
    n = len(conns)
    return {
        "scenario": "conn",
        "clients": n,
        "failed": failed,
        "rss_before": before,
        "rss_after": after,
        "rss_per_socket": (after - before) / n if n else float("nan"),
        "connects_per_s": n / connect_s if connect_s else float("nan"),
    }


class HttpTrigger:
    """POST {"text": ...} to a broadcast route."""

    def __init__(self, url: str) -> None:
        self.url = url

    async def start(self) -> None:
        import aiohttp

        self.session = aiohttp.ClientSession()

    async def fire(self, text: str) -> None:
        async with self.session.post(self.url, json={"text": text}) as response:
            await response.read()
            if response.status != 200:
                raise RuntimeError(f"broadcast route answered {response.status}")

    async def close(self) -> None:
        await self.session.close()


class RedisTrigger:
    """group_send("users", chat.broadcast) from a RedisChannelLayer of our own."""

    def __init__(self, url: str, prefix: str) -> None:
        self.url = url
        self.prefix = prefix

    async def start(self) -> None:
        sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
        from chatbot_server.layers.redis_impl import RedisChannelLayer

        self.layer = RedisChannelLayer(url=self.url, prefix=self.prefix, required=True)
        await self.layer.start()
        await asyncio.wait_for(self.layer.wait_connected(), 10)

    async def fire(self, text: str) -> None:
        await self.layer.group_send("users", {"type": "chat.broadcast", "text": text})

    async def close(self) -> None:
        await self.layer.close()


async def scenario_fanout(args: argparse.Namespace) -> dict[str, Any]:
    loop = asyncio.get_running_loop()
    conns, failed = await open_many(args.url, args.members)
    members = len(conns)
    if args.trigger.startswith("redis"):
        trigger: HttpTrigger | RedisTrigger = RedisTrigger(args.trigger, args.prefix)
    else:
        trigger = HttpTrigger(args.trigger)
    await trigger.start()
    counts: dict[int, int] = {}
    waiting: dict[int, tuple[float, asyncio.Future[float]]] = {}
    sample: list[bytes] = []

    def on_frame(c: Conn, payload: bytes) -> None:
        i = payload.find(b"bcast:")
        if i < 0:
            return
        seq = int(payload[i + 6 : payload.index(b":", i + 6)])
        n = counts.get(seq, 0) + 1
        counts[seq] = n
        if n == members:
            del counts[seq]
            started, fut = waiting.pop(seq)
            if not fut.done():
                fut.set_result(pc() - started)
            if not sample:
                sample.append(payload)

    for c in conns:
        c.handler = on_frame
    next_seq = 0

    async def phase(window: int, duration: float) -> tuple[list[float], int, float]:
        latencies: list[float] = []
        lost = 0
        end = pc() + duration

        async def worker() -> None:
            nonlocal next_seq, lost
            while pc() < end:
                next_seq += 1
                seq = next_seq
                fut = loop.create_future()
                waiting[seq] = (pc(), fut)
                await trigger.fire(f"bcast:{seq}:")
                try:
                    latencies.append(await asyncio.wait_for(fut, 5.0))
                except TimeoutError:
                    lost += 1
                    waiting.pop(seq, None)
                    counts.pop(seq, None)

        t0 = pc()
        await asyncio.gather(*(worker() for _ in range(window)))
        return latencies, lost, pc() - t0

    await phase(1, args.warmup)
    meter = CpuMeter(args.watch)
    meter.start()
    lat, lost1, _ = await phase(1, args.duration)
    cpu = meter.stop()
    done, lost2, elapsed = await phase(args.window, args.duration)
    await trigger.close()
    await close_all(conns)
    lat.sort()
    return {
        "scenario": "fanout",
        "members": members,
        "failed": failed,
        "broadcasts_per_s": len(done) / elapsed,
        "window": args.window,
        "closed_loop_per_s": len(lat) / args.duration,
        "p50_ms": percentile(lat, 50) * 1000,
        "p99_ms": percentile(lat, 99) * 1000,
        "lost": lost1 + lost2,
        "sample_frame": sample[0].decode("utf-8", "replace") if sample else "",
        **cpu,
    }


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description="lean websocket load generator (see module docstring)")
    parser.add_argument("scenario", choices=["rtt", "conn", "fanout"])
    parser.add_argument("--url", action="append", required=True, help="ws://host:port/path (repeatable)")
    parser.add_argument("--clients", type=int, default=100)
    parser.add_argument("--members", type=int, default=1000)
    parser.add_argument("--duration", type=float, default=5.0)
    parser.add_argument("--warmup", type=float, default=1.0)
    parser.add_argument("--settle", type=float, default=1.0, help="conn: seconds to wait before reading RSS")
    parser.add_argument("--text", default="银行卡丢了怎么挂失?")
    parser.add_argument("--trigger", default="", help="fanout: http://.../bench/broadcast or redis://...")
    parser.add_argument("--prefix", default="chatbot", help="fanout over redis: the layer's key prefix")
    parser.add_argument("--window", type=int, default=4, help="fanout: broadcasts in flight (rate phase)")
    parser.add_argument("--watch", type=int, action="append", default=[], help="pid to report CPU share of")
    args = parser.parse_args(argv)
    raise_nofile()
    run = {"rtt": scenario_rtt, "conn": scenario_conn, "fanout": scenario_fanout}[args.scenario]
    result = asyncio.run(run(args))
    print(json.dumps(result, ensure_ascii=False))


if __name__ == "__main__":
    main()
