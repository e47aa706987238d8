"""Burst: N sockets connect at once to chatbot_server on the Redis layer, then all disconnect at once.

    python bench/bench_burst.py              # 10,000 sockets (the issue's figure)
    python bench/bench_burst.py --sockets 2000

Default settings (only the layer is switched to a private redis-server and the bot to echo). Prints
handshake errors, time to connect and to clean up, members of group "users" left in Redis, and the
server's RSS before, at the peak and after (back to baseline?).
"""

from __future__ import annotations

import argparse
import asyncio
import resource
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import aiohttp
import redis.asyncio as aioredis

ROOT = Path(__file__).resolve().parent.parent


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def rss_kib(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    return 0


async def wait_http(url: str, deadline: float) -> None:
    async with aiohttp.ClientSession() as session:
        while time.monotonic() < deadline:
            try:
                async with session.get(url) as response:
                    if response.status == 200:
                        return
            except aiohttp.ClientError:
                pass
            await asyncio.sleep(0.1)
    raise SystemExit(f"server at {url} did not come up")


async def burst(port: int, redis_url: str, prefix: str, sockets: int, pid: int, rounds: int) -> None:
    base = f"http://127.0.0.1:{port}"
    await wait_http(f"{base}/healthz", time.monotonic() + 30)
    baseline = rss_kib(pid)
    for round_no in range(1, rounds + 1):
        print(f"-- burst {round_no} of {rounds}")
        await one_burst(base, redis_url, prefix, sockets, pid, baseline)


async def one_burst(base: str, redis_url: str, prefix: str, sockets: int, pid: int, baseline: int) -> None:
    connector = aiohttp.TCPConnector(limit=0)
    errors: list[str] = []
    async with aiohttp.ClientSession(connector=connector) as session:

        async def one() -> aiohttp.ClientWebSocketResponse | None:
            try:
                ws = await session.ws_connect(f"{base}/ws", timeout=aiohttp.ClientWSTimeout(ws_close=10))
                await ws.receive_json(timeout=60)
                return ws
            except Exception as exc:  # counted and reported, not raised
                errors.append(type(exc).__name__)
                return None

        started = time.monotonic()
        opened = [ws for ws in await asyncio.gather(*(one() for _ in range(sockets))) if ws is not None]
        connect_s = time.monotonic() - started
        peak = rss_kib(pid)
        client = aioredis.Redis.from_url(redis_url)
        members_open = await client.zcard(f"{prefix}:group:{{users}}")
        started = time.monotonic()
        await asyncio.gather(*(ws.close() for ws in opened), return_exceptions=True)
        left = -1
        for _ in range(300):  # up to 30 s for the server to finish its clean-up
            left = await client.zcard(f"{prefix}:group:{{users}}")
            if left == 0:
                break
            await asyncio.sleep(0.1)
        cleanup_s = time.monotonic() - started
        await client.aclose()
        for _ in range(300):  # and for every socket's clean-up to finish (healthz counts them)
            async with session.get(f"{base}/healthz") as response:
                if (await response.json())["connections"] == 0:
                    break
            await asyncio.sleep(0.1)
        drained_s = time.monotonic() - started
    await asyncio.sleep(2)  # the server hands freed memory back a second after the wave
    after = rss_kib(pid)
    print(f"sockets asked            {sockets}")
    print(f"connected                {len(opened)}  ({connect_s:.2f} s)")
    print(f"handshake errors         {len(errors)}  {sorted(set(errors))}")
    print(f"members in Redis (open)  {members_open}")
    print(f"members left after close {left}  (Redis clean {cleanup_s:.2f} s, all sockets done {drained_s:.2f} s)")
    print(
        f"server RSS KiB           before {baseline}, peak {peak}, after {after} "
        f"({(after - baseline) / max(baseline, 1):+.0%} vs before)"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sockets", type=int, default=10_000)
    parser.add_argument("--rounds", type=int, default=2, help="bursts in a row (is memory reused?)")
    args = parser.parse_args()
    _, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    with tempfile.TemporaryDirectory() as tmp:
        redis_port, port, prefix = free_port(), free_port(), "burst"
        redis_proc = subprocess.Popen(
            ["redis-server", "--port", str(redis_port), "--save", "", "--appendonly", "no", "--dir", tmp],
            stdout=subprocess.DEVNULL,
        )
        redis_url = f"redis://127.0.0.1:{redis_port}/0"
        config = Path(tmp) / "burst.yaml"
        config.write_text(
            f"layer: {{backend: redis, redis: {{url: '{redis_url}', prefix: {prefix}}}}}\n"
            "bot: {name: echo}\nlogging: {level: WARNING}\n",
            encoding="utf-8",
        )
        server = subprocess.Popen(
            [sys.executable, "-m", "chatbot_server", "--config", str(config), "--port", str(port)], cwd=ROOT
        )
        try:
            asyncio.run(burst(port, redis_url, prefix, args.sockets, server.pid, args.rounds))
        finally:
            server.terminate()
            server.wait(30)
            redis_proc.terminate()
            redis_proc.wait(30)


if __name__ == "__main__":
    main()
