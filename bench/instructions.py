"""CPU instructions per message, counted by valgrind: an A/B measure that this VM's drift cannot touch.

    python bench/instructions.py                 # raw aiohttp, memory layer, Redis layer
    python bench/instructions.py memory --messages 100
    python bench/instructions.py --fanout        # per member of a 1,000-member broadcast instead

Wall-clock ratios on a shared 2-core VM move by ±0.05 between identical runs (bench/README.md).
This counts the user-space instructions a server executes while 100 clients exchange a fixed
number of messages with it (closed loops, the echo bot, as in `run.py`'s rtt scenario), under
`valgrind --tool=callgrind`: only the exchange is counted (connections are opened before counting
starts), and two runs of the same code agree within ~0.5%. What it cannot see: kernel time
(syscalls are the same for every target, about half of the wall-clock cost) and cache misses
(`--cache-sim` counts them, at 3x the run time). It is the tool for "did this change make the hot
path cheaper", not for the targets, which run.py measures in wall-clock time. With `--fanout`,
1,000 members are connected and `--messages` broadcasts sent (`POST /bench/broadcast`, each
waited for until every member has it): instructions per member per broadcast.

The Redis target writes behind every `history.write_interval`; under valgrind the server runs
~50x slower, so the interval is stretched 50x here (2.5 s) to keep batches the size they have
in real runs. Needs `valgrind` (apt-get install valgrind) and a `redis-server` on PATH.
"""

from __future__ import annotations

import argparse
import asyncio
import functools
import glob
import json
import os
import site
import subprocess
import sys
import tempfile
from collections.abc import Awaitable, Callable
from pathlib import Path

import aiohttp

BENCH = Path(__file__).resolve().parent
sys.path.insert(0, str(BENCH))
from run import bench_limits, free_port, redis_argv  # noqa: E402  (bench/ is not a package)

TEXT = "银行卡丢了怎么挂失?"
CLIENTS = 100
MEMBERS = 1000
TARGETS = ("raw", "memory", "redis")
SLOWDOWN = 50  # valgrind's, roughly: how much to stretch the write-behind interval


async def exchange(
    url: str,
    messages: int,
    ready: asyncio.Event,
    go: asyncio.Event,
    done: asyncio.Event,
    close: asyncio.Event,
    *,
    clients: int,
) -> None:
    """Open `clients` sockets, set `ready`, wait for `go`, run `messages` closed loops on each, set
    `done`, and close the sockets when `close` is set (closing is not per-message work)."""
    payload = json.dumps({"text": TEXT}, ensure_ascii=False)
    async with aiohttp.ClientSession() as session:
        sockets = [await session.ws_connect(url) for _ in range(clients)]
        for ws in sockets:
            await ws.receive()  # the greeting
        ready.set()
        await go.wait()

        async def loop(ws: aiohttp.ClientWebSocketResponse) -> None:
            for _ in range(messages):
                await ws.send_str(payload)
                await ws.receive()

        await asyncio.gather(*(loop(ws) for ws in sockets))
        done.set()
        await close.wait()
        for ws in sockets:
            await ws.close()


async def broadcasts(
    url: str,
    count: int,
    ready: asyncio.Event,
    go: asyncio.Event,
    done: asyncio.Event,
    close: asyncio.Event,
    *,
    members: int,
) -> None:
    """Like exchange(), for `count` broadcasts to `members` sockets, one at a time, each until all have it."""
    broadcast_url = url.replace("ws://", "http://").replace("/ws", "/bench/broadcast")
    async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=0)) as session:
        sockets = [await session.ws_connect(url) for _ in range(members)]
        for ws in sockets:
            await ws.receive()  # the greeting
        ready.set()
        await go.wait()
        for _ in range(count):
            async with session.post(broadcast_url, json={"text": "系统维护通知"}) as response:
                await response.read()
            await asyncio.gather(*(ws.receive() for ws in sockets))
        done.set()
        await close.wait()
        for ws in sockets:
            await ws.close()


Workload = Callable[[str, int, asyncio.Event, asyncio.Event, asyncio.Event, asyncio.Event], Awaitable[None]]


async def count(
    argv: list[str], port: int, workload: Workload, messages: int, outdir: Path, *, cache_sim: bool = False
) -> dict[str, int]:
    """Events the server counts while the workload runs its `messages` (not its set-up): "Ir"
    (instructions) and, with `cache_sim`, callgrind's cache misses (I1mr, D1mr, D1mw, ILmr, ...)."""
    out = outdir / "callgrind.out.%p"
    server = await asyncio.create_subprocess_exec(
        "valgrind",
        "--tool=callgrind",
        f"--cache-sim={'yes' if cache_sim else 'no'}",
        "--instr-atstart=no",
        f"--callgrind-out-file={out}",
        *argv,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        env=server_env(),
    )
    try:
        await listening(port, server)
        url = f"ws://127.0.0.1:{port}/ws"
        warm_ready, warm_go, warm_done, warm_close = (asyncio.Event() for _ in range(4))
        warm_go.set()
        warm_close.set()
        await workload(url, 3, warm_ready, warm_go, warm_done, warm_close)  # first-use work
        ready, go, done, close = (asyncio.Event() for _ in range(4))
        run = asyncio.create_task(workload(url, messages, ready, go, done, close))
        await ready.wait()
        await control(server.pid, "-i", "on")
        go.set()
        await done.wait()
        await control(server.pid, "-i", "off")
        await control(server.pid, "-d")
        close.set()
        await run
    finally:
        server.terminate()
        await server.wait()
    found: list[dict[str, int]] = []
    for path in glob.glob(str(outdir / "callgrind.out.*")):
        events: list[str] = []
        for line in Path(path).read_text().splitlines():
            if line.startswith("events:"):
                events = line.split()[1:]
            elif line.startswith(("summary:", "totals:")):
                found.append(dict(zip(events, map(int, line.split()[1:]), strict=False)))
        os.remove(path)
    best = max(found, key=lambda totals: totals.get("Ir", 0), default={})
    if not best.get("Ir"):
        raise RuntimeError(f"callgrind counted nothing for {argv[-1]!r}: did the server start and get its messages?")
    return best


async def listening(port: int, process: asyncio.subprocess.Process, timeout: float = 300.0) -> None:
    """Wait until something accepts connections on `port` (valgrind starts Python slowly)."""
    async with asyncio.timeout(timeout):
        while True:
            if process.returncode is not None:
                raise RuntimeError(f"the server exited with {process.returncode} before listening on {port}")
            try:
                _, writer = await asyncio.open_connection("127.0.0.1", port)
            except OSError:
                await asyncio.sleep(0.2)  # nothing to await for "a port opened" but another try
                continue
            writer.close()
            return


async def control(pid: int, *args: str) -> None:
    process = await asyncio.create_subprocess_exec(
        "callgrind_control", *args, str(pid), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
    )
    await process.wait()


def server_env() -> dict[str, str]:
    """valgrind starts the real interpreter, not a virtualenv's shim: hand it the venv's packages."""
    env = dict(os.environ)
    if sys.prefix != sys.base_prefix:
        paths = [p for p in (env.get("PYTHONPATH", ""), *site.getsitepackages()) if p]
        env["PYTHONPATH"] = os.pathsep.join(paths)
    return env


def server_argv(
    target: str, port: int, redis_url: str, workdir: Path, *, fanout: bool, plain: bool = False
) -> list[str]:
    python = os.path.realpath(sys.executable)  # valgrind must start the interpreter itself, not a shim
    if target == "raw":
        return [python, str(BENCH / "raw_server.py"), "--port", str(port)]
    config = {
        "server": {
            "host": "127.0.0.1",
            "port": port,
            "trusted_proxies": ["127.0.0.1"],
        },  # one load generator: no per-address budgets
        "bot": {"name": "echo"},
        "limits": bench_limits(),
        "layer": {"backend": target}
        | ({"redis": {"url": redis_url, "prefix": f"instr{port}"}} if target == "redis" else {}),
        "history": {"write_interval": 0.05 * SLOWDOWN},
    }
    path = workdir / f"{target}.yaml"
    path.write_text(json.dumps(config))  # JSON is YAML
    if fanout or plain:  # the bench-only broadcast route; or web.run_app without the transport guard
        extra = ["--plain"] if plain else []
        return [python, str(BENCH / "chatbot_bench_server.py"), "--config", str(path), "--port", str(port), *extra]
    return [python, "-m", "chatbot_server", "--config", str(path)]


async def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("targets", nargs="*", help="raw, memory, redis (default: all three)")
    parser.add_argument("--messages", type=int, help="per client (100 clients; default 60), or broadcasts (default 20)")
    parser.add_argument("--fanout", action="store_true", help="broadcasts to 1,000 members instead of rtt")
    parser.add_argument("--plain", action="store_true", help="serve with web.run_app: without the transport guard")
    parser.add_argument(
        "--cache-sim", action="store_true", help="also callgrind's simulated cache misses (about 3x slower)"
    )
    args = parser.parse_args()
    messages = args.messages or (20 if args.fanout else 60)
    if args.fanout:
        workload: Workload = functools.partial(broadcasts, members=MEMBERS)  # type: ignore[assignment]
        per, unit = MEMBERS * messages, "instructions per member per broadcast"
    else:
        workload = functools.partial(exchange, clients=CLIENTS)  # type: ignore[assignment]
        per, unit = CLIENTS * messages, "instructions per message"
    targets = args.targets or list(TARGETS)
    if unknown := set(targets) - set(TARGETS):
        parser.error(f"unknown targets: {', '.join(sorted(unknown))} (choose from {', '.join(TARGETS)})")
    with tempfile.TemporaryDirectory(prefix="chatbot-instr-") as tmp:
        workdir = Path(tmp)
        redis_port = free_port()
        redis = await asyncio.create_subprocess_exec(*redis_argv(redis_port), stdout=subprocess.DEVNULL)
        try:
            results = {}
            for target in targets:
                port = free_port()
                argv = server_argv(
                    target, port, f"redis://127.0.0.1:{redis_port}/0", workdir, fanout=args.fanout, plain=args.plain
                )
                events = await count(argv, port, workload, messages, workdir, cache_sim=args.cache_sim)
                results[target] = events["Ir"] / per
                ratio = f"  raw/this {results['raw'] / results[target]:.3f}" if "raw" in results else ""
                print(f"{target:8s} {results[target]:9,.0f} {unit}{ratio}", flush=True)
                if args.cache_sim:  # data reads/writes, then L1 and last-level misses, per message
                    misses = "  ".join(f"{name} {value / per:,.0f}" for name, value in events.items() if name != "Ir")
                    print(f"{'':8s} per message: {misses}", flush=True)
        finally:
            redis.terminate()
            await redis.wait()
    return 0


if __name__ == "__main__":
    sys.exit(asyncio.run(main()))
