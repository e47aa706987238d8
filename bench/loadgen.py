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
  rtt     N clients in closed loops: send {"text": ...}, wait for the next frame, repeat. With
          --cycles, N clients per --url and the targets take turns in short windows (paired).
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
import select
import socket
import subprocess
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

    __slots__ = ("buf", "greeting", "handler", "ready", "request", "t_sent", "transport", "upgraded")

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
        # The frame-header parsing below is inlined in each engine on purpose: as a function call per
        # frame it made the client slow enough to lower the measured rates (0.37x -> 0.30x raw, same
        # server), and the client must not be the bottleneck.
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
    errors = 0

    def on_reply(c: Conn, payload: bytes) -> None:
        nonlocal measuring, errors
        now = pc()
        if now >= t_start:
            if now >= t_end:
                return  # stop this loop
            if not measuring:
                measuring = True
                meter.start()
                sample.append(payload)
            if b'"error"' in payload:  # e.g. rate_limited: not a reply, so it must not count as one
                errors += 1
                if len(sample) < 2:
                    sample.append(payload)
            else:
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
        "error_frames": errors,
        "msgs_per_s": len(latencies) / args.duration,
        "p50_ms": percentile(latencies, 50) * 1000,
        "p99_ms": percentile(latencies, 99) * 1000,
        "sample_reply": sample[0].decode("utf-8", "replace") if sample else "",
        "sample_error": sample[1].decode("utf-8", "replace") if len(sample) > 1 else "",
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


def blocking_connect(url: str) -> socket.socket:
    """Open one websocket with plain blocking calls and read its greeting (epoll engine)."""
    host, port, request = handshake(url)
    sock = socket.create_connection((host, port), timeout=CONNECT_TIMEOUT)
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    sock.sendall(request)
    data = b""
    while b"\r\n\r\n" not in data:
        chunk = sock.recv(65536)
        if not chunk:
            raise ConnectionError("closed during handshake")
        data += chunk
    head, _, rest = data.partition(b"\r\n\r\n")
    if not head.startswith(b"HTTP/1.1 101"):
        raise ConnectionError(head.split(b"\r\n", 1)[0].decode("latin-1"))
    while len(rest) < 2 or len(rest) < 2 + (rest[1] & 0x7F if rest[1] & 0x7F < 126 else 2):
        rest += sock.recv(65536)
    length = rest[1] & 0x7F
    start = 2
    if length == 126:
        length, start = int.from_bytes(rest[2:4], "big"), 4
    while len(rest) < start + length:  # the greeting; nothing else is sent before our first message
        rest += sock.recv(65536)
    sock.setblocking(False)
    return sock


def scenario_rtt_epoll(args: argparse.Namespace) -> dict[str, Any]:
    """The rtt scenario on a bare epoll loop: no asyncio, about half the client CPU per message.

    Per reply: one recv, a header walk, one send of a pre-built frame. This keeps the client well
    below one core even when raw aiohttp answers tens of thousands of messages per second.

    With --cycles, each --url gets its own --clients sockets and the targets take turns: one window
    of --duration seconds each, --cycles times over (paired windows: a drift in machine speed hits
    every target alike, so ratios between targets of one cycle are steadier than across runs).
    """
    if args.cycles:
        return scenario_rtt_paired(args)
    socks, failed = connect_all([args.url[i % len(args.url)] for i in range(args.clients)])
    result = closed_loops(socks, args, CpuMeter(args.watch), args.warmup)
    for sock in socks:
        sock.close()
    return {**result, "failed": failed}


def scenario_rtt_paired(args: argparse.Namespace) -> dict[str, Any]:
    groups = []
    failed = 0
    for url in args.url:
        socks, lost = connect_all([url] * args.clients)
        groups.append(socks)
        failed += lost
    windows: list[list[dict[str, Any]]] = [[] for _ in groups]
    for cycle in range(args.cycles):
        # Each cycle starts with another target, so none always follows the same neighbour.
        for index in [(cycle + k) % len(groups) for k in range(len(groups))]:
            socks = groups[index]
            meter = CpuMeter(args.watch)
            result = closed_loops(socks, args, meter, args.warmup if cycle == 0 else 0.0, settle=args.settle)
            windows[index].append({**result, "cycle": cycle, "url": args.url[index]})
            if result["lost_sockets"]:
                print(f"loadgen: {args.url[index]} closed {result['lost_sockets']} sockets", file=sys.stderr)
                groups[index] = socks = [sock for sock in socks if _still_open(sock)]
    for socks in groups:
        for sock in socks:
            sock.close()
    return {"scenario": "rtt-paired", "failed": failed, "windows": windows}


def _still_open(sock: socket.socket) -> bool:
    """False for a socket the peer has closed or reset (a non-blocking peek sees EOF or an error)."""
    try:
        return sock.recv(1, socket.MSG_PEEK) != b""
    except BlockingIOError:
        return True
    except OSError:
        return False


def connect_all(urls: Sequence[str]) -> tuple[list[socket.socket], int]:
    """One blocking websocket per url (greeting read); returns (sockets, failures)."""
    socks: list[socket.socket] = []
    failed = 0
    for url in urls:
        try:
            socks.append(blocking_connect(url))
        except OSError as error:
            failed += 1
            if failed == 1:
                print(f"loadgen: connection failed: {error!r}", file=sys.stderr)
    if not socks:
        raise SystemExit("loadgen: no connection could be opened")
    return socks, failed


def closed_loops(
    socks: Sequence[socket.socket], args: argparse.Namespace, meter: CpuMeter, warmup: float, settle: float = 0.0
) -> dict[str, Any]:
    """Every socket in a closed loop for warmup + args.duration seconds; the window's figures.

    After the window, the replies still in flight are read (they count for CPU per message, not for
    msgs/s), then `settle` seconds pass before the next window, for work the servers do behind a
    reply (the Redis store writes history every 50 ms).
    """
    frame = text_frame(json.dumps({"text": args.text}, ensure_ascii=False).encode())
    ep = select.epoll()
    # fd -> [socket, time sent, leftover bytes, active]
    state: dict[int, list[Any]] = {}
    for sock in socks:
        ep.register(sock.fileno(), select.EPOLLIN)
        state[sock.fileno()] = [sock, 0.0, b"", True]
    latencies: list[float] = []
    record = latencies.append
    errors = 0
    sample: list[bytes] = []
    measuring = False
    drained = 0  # replies read after the window, to requests sent inside it
    t_start = pc() + warmup
    t_end = t_start + args.duration
    active = len(state)
    lost = 0  # sockets the server closed or reset (a peer server may drop idle ones)

    def drop(fd: int, st: list[Any]) -> None:
        nonlocal active, lost
        ep.unregister(fd)
        if st[3]:
            st[3] = False
            active -= 1
            lost += 1

    for fd, st in state.items():
        st[1] = pc()
        try:
            st[0].send(frame)
        except OSError:
            drop(fd, st)
    poll = ep.poll
    while active:
        for fd, _ in poll(0.5):
            st = state[fd]
            sock = st[0]
            try:
                data = sock.recv(65536)
            except BlockingIOError:
                continue
            except ConnectionError:
                data = b""
            if not data:
                drop(fd, st)
                continue
            if st[2]:
                data = st[2] + data
            pos = 0
            n = len(data)
            got = 0
            while n - pos >= 2:
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
                opcode = data[pos] & 0x0F
                if opcode == 1 or opcode == 2:
                    got += 1
                elif opcode == 9:
                    sock.send(control_frame(0xA, data[start:end]))
                pos = end
            st[2] = data[pos:] if pos < n else b""
            if not got:
                continue
            now = pc()
            if now >= t_start:
                if now >= t_end:
                    if st[3]:
                        st[3] = False
                        active -= 1
                        drained += 1
                    continue
                if not measuring:
                    measuring = True
                    meter.start()
                    sample.append(data[2:])  # a short frame's payload, for the eye
                if b'"error"' in data:  # e.g. rate_limited: not a reply
                    errors += got
                    if len(sample) < 2:
                        sample.append(data[2:])
                else:
                    record(now - st[1])
            st[1] = now
            try:
                sock.send(frame)
            except OSError:  # reset between its reply and our next message
                drop(fd, st)
        if pc() > t_end + 5:
            break  # replies that never come must not hang the run
    ep.close()
    # The meter ran from the first reply of the window until the last reply in flight was read:
    # its CPU shares are per second of that time, and `cpu_msgs_per_s` counts every reply in it.
    cpu = meter.stop() if measuring else {"client_cpu": float("nan"), "watched_cpu": {}}
    metered = pc() - meter.t0 if measuring else float("nan")
    if settle:
        time.sleep(settle)
    latencies.sort()
    return {
        "scenario": "rtt",
        "engine": "epoll",
        "clients": len(socks),
        "lost_sockets": lost,
        "messages": len(latencies),
        "error_frames": errors,
        "msgs_per_s": len(latencies) / args.duration,
        "cpu_msgs_per_s": (len(latencies) + drained) / metered,
        "p50_ms": percentile(latencies, 50) * 1000,
        "p99_ms": percentile(latencies, 99) * 1000,
        "sample_reply": sample[0].decode("utf-8", "replace") if sample else "",
        "sample_error": sample[1].decode("utf-8", "replace") if len(sample) > 1 else "",
        **cpu,
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
        from chatbot_server.layers.redis import RedisChannelLayer

        self.layer = RedisChannelLayer(url=self.url, prefix=self.prefix, required=True)
        await self.layer.start()
        await asyncio.wait_for(self.layer.wait_connected(), 10)

    async def fire(self, text: str) -> None:
        await self.layer.group_send("users", {"type": "chat.broadcast", "text": text})

    async def close(self) -> None:
        await self.layer.close()


async def scenario_trigger(args: argparse.Namespace) -> dict[str, Any]:
    """Child of the epoll fan-out: read sequence numbers on stdin, fire one broadcast per line."""
    loop = asyncio.get_running_loop()
    trigger = RedisTrigger(args.trigger, args.prefix) if args.trigger.startswith("redis") else HttpTrigger(args.trigger)
    await trigger.start()
    reader = asyncio.StreamReader()
    await loop.connect_read_pipe(lambda: asyncio.StreamReaderProtocol(reader), sys.stdin)
    sys.stdout.write("ready\n")
    sys.stdout.flush()
    tasks: set[asyncio.Task[None]] = set()
    fired = 0
    while line := await reader.readline():
        task = asyncio.create_task(trigger.fire(f"bcast:{int(line)}:"))
        tasks.add(task)
        task.add_done_callback(tasks.discard)
        fired += 1
    await asyncio.gather(*tasks)
    await trigger.close()
    return {"scenario": "trigger", "fired": fired}


def scenario_fanout_epoll(args: argparse.Namespace) -> dict[str, Any]:
    """Fan-out with members on a bare epoll loop and the trigger in a child process.

    Receiving 1,000 frames per broadcast is the client's whole job here; asyncio Protocols cost
    about 10 us a frame, which would cap raw aiohttp's rate at the client's. The trigger (an HTTP
    POST or a RedisChannelLayer.group_send) runs in its own process, told by a pipe, so the
    member loop never waits for it; latency counts from the write to that pipe.
    """
    socks: list[socket.socket] = []
    failed = 0
    for i in range(args.members):
        try:
            socks.append(blocking_connect(args.url[i % len(args.url)]))
        except OSError as error:
            failed += 1
            if failed == 1:
                print(f"loadgen: connection failed: {error!r}", file=sys.stderr)
    members = len(socks)
    child = subprocess.Popen(
        [
            sys.executable,
            os.path.abspath(__file__),
            "trigger",
            "--url",
            "-",
            "--trigger",
            args.trigger,
            "--prefix",
            args.prefix,
        ],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    if child.stdout is None or child.stdin is None or child.stdout.readline().strip() != "ready":
        raise SystemExit("loadgen: the trigger process did not start")
    pipe = child.stdin
    ep = select.epoll()
    leftovers: dict[int, bytes] = {}
    by_fd: dict[int, socket.socket] = {}
    for sock in socks:
        ep.register(sock.fileno(), select.EPOLLIN)
        by_fd[sock.fileno()] = sock
        leftovers[sock.fileno()] = b""
    counts: dict[int, int] = {}
    started: dict[int, float] = {}
    next_seq = 0
    sample: list[bytes] = []

    def fire() -> None:
        nonlocal next_seq
        next_seq += 1
        started[next_seq] = pc()
        pipe.write(f"{next_seq}\n")
        pipe.flush()

    def phase(window: int, duration: float) -> tuple[list[float], int, float]:
        latencies: list[float] = []
        lost = 0
        t0 = pc()
        end = t0 + duration
        for _ in range(window):
            fire()
        last = t0
        while started:
            events = ep.poll(0.2)
            now = pc()
            for fd, _ in events:
                sock = by_fd[fd]
                try:
                    data = sock.recv(262144)
                except BlockingIOError:
                    continue
                if not data:
                    ep.unregister(fd)
                    continue
                if leftovers[fd]:
                    data = leftovers[fd] + data
                pos = 0
                n = len(data)
                while n - pos >= 2:
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
                    end_ = start + length
                    if end_ > n:
                        break
                    opcode = data[pos] & 0x0F
                    if opcode == 9:
                        sock.send(control_frame(0xA, data[start:end_]))
                    elif opcode == 1:
                        i = data.find(b"bcast:", start, end_)
                        if i >= 0:
                            seq = int(data[i + 6 : data.index(b":", i + 6)])
                            c = counts.get(seq, 0) + 1
                            if c == members:
                                counts.pop(seq, None)
                                t = started.pop(seq, None)
                                if t is not None:
                                    now = pc()
                                    latencies.append(now - t)
                                    last = now
                                    if not sample:
                                        sample.append(data[start:end_])
                                    if now < end:
                                        fire()
                            else:
                                counts[seq] = c
                    pos = end_
                leftovers[fd] = data[pos:] if pos < n else b""
            for seq, t in list(started.items()):
                if now - t > 5.0:  # a member missed it (dropped or never sent)
                    lost += 1
                    del started[seq]
                    counts.pop(seq, None)
                    if now < end:
                        fire()
        return latencies, lost, last - t0

    phase(1, args.warmup)
    meter = CpuMeter(args.watch)
    meter.start()
    lat, lost1, elapsed1 = phase(1, args.duration)
    cpu = meter.stop()
    done, lost2, elapsed = phase(args.window, args.duration)
    pipe.close()
    child.wait(30)
    for sock in socks:
        sock.close()
    ep.close()
    lat.sort()
    return {
        "scenario": "fanout",
        "engine": "epoll",
        "members": members,
        "failed": failed,
        "broadcasts_per_s": len(done) / elapsed if elapsed else float("nan"),
        "window": args.window,
        "closed_loop_per_s": len(lat) / elapsed1 if elapsed1 else float("nan"),
        "p50_ms": percentile(lat, 50) * 1000,
        "p99_ms": percentile(lat, 99) * 1000,
        "lost": lost1 + lost2,
        "sample_frame": sample[0].decode("utf-8", "replace") if sample else "",
        **cpu,
    }


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
    parser.add_argument("scenario", choices=["rtt", "conn", "fanout", "trigger"])
    parser.add_argument("--url", action="append", required=True, help="ws://host:port/path (repeatable)")
    parser.add_argument("--clients", type=int, default=100)
    parser.add_argument("--members", type=int, default=1000)
    parser.add_argument("--duration", type=float, default=5.0)
    parser.add_argument("--warmup", type=float, default=1.0)
    parser.add_argument(
        "--settle",
        type=float,
        default=1.0,
        help="conn: seconds to wait before reading RSS; paired rtt: after each window",
    )
    parser.add_argument("--text", default="银行卡丢了怎么挂失?")
    parser.add_argument("--trigger", default="", help="fanout: http://.../bench/broadcast or redis://...")
    parser.add_argument("--prefix", default="chatbot", help="fanout over redis: the layer's key prefix")
    parser.add_argument("--window", type=int, default=4, help="fanout: broadcasts in flight (rate phase)")
    parser.add_argument(
        "--engine",
        choices=["epoll", "asyncio"],
        default="epoll",
        help="rtt and fanout: bare epoll loop (leaner, default) or asyncio Protocols",
    )
    parser.add_argument("--watch", type=int, action="append", default=[], help="pid to report CPU share of")
    parser.add_argument(
        "--cycles",
        type=int,
        default=0,
        help="rtt: paired windows, each --url in turn, this many times over (epoll engine)",
    )
    args = parser.parse_args(argv)
    raise_nofile()
    if args.engine == "epoll" and args.scenario in ("rtt", "fanout"):
        sync = scenario_rtt_epoll if args.scenario == "rtt" else scenario_fanout_epoll
        print(json.dumps(sync(args), ensure_ascii=False))
        return
    run = {"rtt": scenario_rtt, "conn": scenario_conn, "fanout": scenario_fanout, "trigger": scenario_trigger}[
        args.scenario
    ]
    result = asyncio.run(run(args))
    print(json.dumps(result, ensure_ascii=False))


if __name__ == "__main__":
    main()
