"""Chat round trips while agent sign-ins fail: does the PBKDF2 check stall the event loop? (#14)

Starts `python -m chatbot_server` from a given checkout (echo bot, one agent account hashed at
the default 310,000 iterations) on a free loopback port, then measures the chat socket's round
trip (message -> reply) first alone, then while `--signins` clients post wrong passwords in a
loop. Prints p50/p99 of both phases and the failed sign-ins per second.

Run: python bench/signin_p99.py --tree /work/main [--seconds 10] [--signins 4]
The server gets PYTHONPATH=<tree>:<site-packages>, so the checkout's package is the one served.
"""

from __future__ import annotations

import argparse
import asyncio
import itertools
import json
import os
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import aiohttp

ROOT = Path(__file__).resolve().parent.parent
SITE_PACKAGES = "/work/venv/lib/python3.11/site-packages"
_IDS = itertools.count(1)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


def config(port: int) -> dict[str, object]:
    sys.path.insert(0, str(ROOT))
    from chatbot_server.agents.passwords import hash_password  # the format is the same in both trees

    return {
        "server": {"host": "127.0.0.1", "port": port, "shutdown_timeout": 1},
        "bot": {"name": "echo"},
        "limits": {"rate_per_second": 1000.0, "rate_burst": 1000},
        "agents": {
            "accounts": [{"username": "li", "name": "客服小李", "password_hash": hash_password("li-password-1")}],
            "session_secret": "bench-session-secret-0123456789",
            "login_failures": 1_000_000,  # the limiter must not answer instead of the hash
        },
        "logging": {"level": "WARNING"},
    }


async def wait_ready(base: str, proc: subprocess.Popen[bytes]) -> None:
    async with aiohttp.ClientSession() as session:
        for _ in range(300):
            if proc.poll() is not None:
                raise SystemExit(f"server exited with {proc.returncode}")
            try:
                async with session.get(f"{base}/healthz") as response:
                    if response.status == 200:
                        return
            except aiohttp.ClientError:
                pass
            await asyncio.sleep(0.1)
    raise SystemExit("server did not start")


async def round_trips(ws: aiohttp.ClientWebSocketResponse, seconds: float) -> list[float]:
    """Sequential message -> reply times in ms, one message every 20 ms."""
    times: list[float] = []
    deadline = time.perf_counter() + seconds
    while time.perf_counter() < deadline:
        n = next(_IDS)  # ids are never reused: the server answers a repeated id only once
        started = time.perf_counter()
        await ws.send_json({"type": "message", "text": f"你好{n}", "id": f"m{n}"})
        while True:
            data = await ws.receive_json(timeout=30)
            if data.get("type") == "reply" and data.get("reply_to") == f"m{n}":
                break
        times.append((time.perf_counter() - started) * 1000)
        await asyncio.sleep(0.02)
    return times


async def fail_sign_ins(base: str, stop: asyncio.Event, counter: list[int]) -> None:
    async with aiohttp.ClientSession(cookie_jar=aiohttp.DummyCookieJar()) as session:
        while not stop.is_set():
            async with session.post(
                f"{base}/agent/login",
                data={"username": "li", "password": "wrong password"},
                headers={"Origin": base},
                allow_redirects=False,
            ) as response:
                await response.read()
                assert response.status == 401, response.status
                counter[0] += 1


def summary(name: str, times: list[float]) -> str:
    cuts = statistics.quantiles(times, n=100, method="inclusive")
    return f"{name:<22} n={len(times):5d}  p50={cuts[49]:8.2f} ms  p99={cuts[98]:8.2f} ms  max={max(times):8.2f} ms"


async def measure(base: str, seconds: float, signins: int) -> None:
    async with aiohttp.ClientSession() as session:
        ws = await session.ws_connect(f"{base}/ws")
        await ws.receive_json(timeout=10)  # the welcome frame(s): wait for the first, then start
        await round_trips(ws, 1.0)  # warm-up
        alone = await round_trips(ws, seconds)
        stop, counter = asyncio.Event(), [0]
        tasks = [asyncio.create_task(fail_sign_ins(base, stop, counter)) for _ in range(signins)]
        await asyncio.sleep(0.5)
        started, done_before = time.perf_counter(), counter[0]
        loaded = await round_trips(ws, seconds)
        rate = (counter[0] - done_before) / (time.perf_counter() - started)
        stop.set()
        await asyncio.gather(*tasks)
        await ws.close()
    print(summary("alone", alone))
    print(summary(f"{signins} failing sign-ins", loaded))
    print(f"failed sign-ins/s      {rate:.1f}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--tree", required=True, help="the checkout to serve (its chatbot_server package)")
    parser.add_argument("--seconds", type=float, default=10.0, help="length of each phase")
    parser.add_argument("--signins", type=int, default=4, help="concurrent failing sign-in clients")
    args = parser.parse_args()
    port = free_port()
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "bench.yaml"
        path.write_text(json.dumps(config(port), ensure_ascii=False), encoding="utf-8")  # JSON is YAML
        env = {**os.environ, "PYTHONPATH": f"{Path(args.tree).resolve()}:{SITE_PACKAGES}"}
        served = subprocess.run(
            [sys.executable, "-c", "import chatbot_server; print(chatbot_server.__file__)"],
            env=env,
            cwd=tmp,  # not the current directory: sys.path[0] would be it, ahead of PYTHONPATH
            capture_output=True,
            text=True,
            check=True,
        ).stdout.strip()
        print(f"serving {served}")
        proc = subprocess.Popen([sys.executable, "-m", "chatbot_server", "--config", str(path)], env=env, cwd=tmp)
        try:
            base = f"http://127.0.0.1:{port}"
            asyncio.run(wait_ready(base, proc))
            asyncio.run(measure(base, args.seconds, args.signins))
        finally:
            proc.terminate()
            proc.wait(timeout=10)


if __name__ == "__main__":
    main()
