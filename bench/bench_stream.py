"""What streaming costs the server (#18): time to the first delta, and the cost of each delta.

    python bench/bench_stream.py                 # 2,000 round trips per case
    python bench/bench_stream.py --rounds 500

One `python -m chatbot_server` per case (memory layer, the bots of bench/stream_bots.py, which
answer at once), one client process sending a question and waiting for the answer, one at a time:

- plain:    an `async def answer` bot, the reply frame (the path before streaming);
- reply:    a streaming bot that yields only its Reply (the streaming turn, no delta);
- first:    a streaming bot's first delta (time to first delta) ...
- 50:       ... and the final reply after 50 deltas: (50 - reply) / 50 is the cost per delta.

Prints p50 and p99 in ms per case. The client runs on the same 2 cores: compare cases of one run.
"""

from __future__ import annotations

import argparse
import asyncio
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
CASES = {
    "plain": ("stream_bots:PlainAsyncBot", {}, "reply"),
    "reply": ("stream_bots:InstantStreamBot", {"pieces": 0}, "reply"),
    "first": ("stream_bots:InstantStreamBot", {"pieces": 1}, "reply_delta"),
    "50": ("stream_bots:InstantStreamBot", {"pieces": 50}, "reply"),
}


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


async def measure(url: str, until: str, rounds: int, warmup: int) -> list[float]:
    """Milliseconds from sending each question to the first frame of type `until` (then the reply)."""
    times = []
    async with aiohttp.ClientSession() as session:
        for _ in range(200):  # the server is starting
            try:
                async with session.get(url + "/healthz") as response:
                    if response.status == 200:
                        break
            except aiohttp.ClientError:
                pass
            await asyncio.sleep(0.05)
        async with session.ws_connect(url + "/ws", max_msg_size=0) as ws:
            await ws.receive_json()  # greeting
            for n in range(warmup + rounds):
                started = time.perf_counter()
                await ws.send_json({"type": "message", "text": "问题", "id": f"m{n}"})
                got = None
                while True:
                    frame = await ws.receive_json()
                    if got is None and frame["type"] == until:
                        got = time.perf_counter() - started
                    if frame["type"] == "reply":
                        break
                if n >= warmup:
                    times.append(got * 1000)  # type: ignore[operator]
    return times


def run_case(name: str, rounds: int, warmup: int) -> list[float]:
    spec, options, until = CASES[name]
    port = free_port()
    with tempfile.TemporaryDirectory() as tmp:
        config = Path(tmp) / "bench.yaml"
        config.write_text(
            f"server: {{port: {port}}}\nbot: {{name: '{spec}', options: {options!r}}}\n"
            "limits: {rate_per_second: 100000, rate_burst: 100000}\nlogging: {level: WARNING}\n",
            encoding="utf-8",
        )
        env = {**os.environ, "PYTHONPATH": f"{ROOT / 'bench'}{os.pathsep}{ROOT}"}
        server = subprocess.Popen([sys.executable, "-m", "chatbot_server", "--config", str(config)], env=env)
        try:
            return asyncio.run(measure(f"http://127.0.0.1:{port}", until, rounds, warmup))
        finally:
            server.terminate()
            server.wait(10)


def pct(values: list[float], q: float) -> float:
    return statistics.quantiles(values, n=100)[int(q) - 1] if len(values) > 1 else values[0]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=2000)
    parser.add_argument("--warmup", type=int, default=200)
    args = parser.parse_args()
    results = {name: run_case(name, args.rounds, args.warmup) for name in CASES}
    for name, values in results.items():
        print(f"{name:>6}: p50 {statistics.median(values):.3f} ms  p99 {pct(values, 99):.3f} ms")
    per_delta = (statistics.median(results["50"]) - statistics.median(results["reply"])) / 50
    print(f"per delta (median of 50-delta reply minus reply-only, / 50): {per_delta * 1000:.1f} µs")
    print(
        f"time to first delta minus a plain reply (medians): "
        f"{(statistics.median(results['first']) - statistics.median(results['plain'])) * 1000:.1f} µs"
    )


if __name__ == "__main__":
    main()
