"""Server instructions per message (valgrind) with each rtt client: does the client change the server's work?

    python bench/client_instructions.py                      # raw, memory x epoll, node, node-zero
    python bench/client_instructions.py memory --clients node,epoll --messages 40
    python bench/client_instructions.py --root /work/base

Like bench/instructions.py (callgrind, counting only the exchange: 100 clients x --messages closed-loop
round trips, echo bot), but the client is a separate process, one of:
  epoll      loadgen.py's client (bare epoll loop, all-zero masking key, one send per frame)
  node       bench/node/rtt.mjs: Node's ws (random masking keys, header + payload in one corked write)
  node-zero  rtt.mjs with the all-zero key (tells masking apart from everything else Node does)
Also counts the server's system calls per message over the same exchange with `strace -c -f`
(--strace, a second run without valgrind), since callgrind sees user space only.
"""

from __future__ import annotations

import argparse
import glob
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

BENCH = Path(__file__).resolve().parent
sys.path.insert(0, str(BENCH))
import instructions  # noqa: E402
import run  # noqa: E402

CLIENTS = 100


def epoll_client(url: str, clients: int, messages: int) -> None:
    """Child mode: loadgen.py's sockets and framing, `messages` round trips each after a line on stdin."""
    import select

    import loadgen

    socks, _ = loadgen.connect_all([url] * clients)
    frame = loadgen.text_frame(json.dumps({"text": instructions.TEXT}, ensure_ascii=False).encode())
    print("ready", flush=True)
    sys.stdin.readline()
    t0 = time.perf_counter()
    ep = select.epoll()
    left = {}
    for s in socks:
        ep.register(s.fileno(), select.EPOLLIN)
        left[s.fileno()] = [s, messages]
        s.send(frame)
    active = len(socks)
    while active:
        for fd, _ in ep.poll(5.0):
            st = left[fd]
            data = st[0].recv(65536)  # one reply per read: one request in flight per socket
            if not data:
                raise SystemExit("server closed a socket")
            st[1] -= 1
            if st[1]:
                st[0].send(frame)
            else:
                ep.unregister(fd)
                active -= 1
    print(
        json.dumps(
            {
                "scenario": "rtt-counted",
                "engine": "epoll",
                "clients": len(socks),
                "messages": len(socks) * messages,
                "wall": time.perf_counter() - t0,
            }
        ),
        flush=True,
    )
    sys.stdin.readline()


def client_argv(kind: str, url: str, messages: int) -> list[str]:
    if kind == "epoll":
        return [sys.executable, __file__, "--child", url, "--messages", str(messages)]
    mask = "zero" if kind == "node-zero" else "random"
    return [
        "node",
        str(BENCH / "node" / "rtt.mjs"),
        "--url",
        url,
        "--clients",
        str(CLIENTS),
        "--messages",
        str(messages),
        "--mask",
        mask,
    ]


def exchange(
    server: subprocess.Popen[bytes], url: str, kind: str, messages: int, on: list[str] | None, off: list[str] | None
) -> dict:
    """Run a client: connect, (on), go, wait for its result, (off), close."""
    client = subprocess.Popen(
        client_argv(kind, url, messages),
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
        env={**os.environ, "PYTHONPATH": str(BENCH)},
    )
    try:
        line = client.stdout.readline()
        if line.strip() != "ready":
            raise RuntimeError(f"client {kind} said {line!r}")
        if on:
            subprocess.run(on, check=False, capture_output=True)
        client.stdin.write("go\n")
        client.stdin.flush()
        result = json.loads(client.stdout.readline())
        if off:
            subprocess.run(off, check=False, capture_output=True)
        client.stdin.write("close\n")
        client.stdin.flush()
        client.wait(30)
        return result
    finally:
        if client.poll() is None:
            client.kill()


def count_instructions(argv: list[str], port: int, kind: str, messages: int, outdir: Path, root: Path) -> float:
    out = outdir / "callgrind.out.%p"
    server = subprocess.Popen(
        ["valgrind", "--tool=callgrind", "--instr-atstart=no", f"--callgrind-out-file={out}", *argv],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        cwd=root,
        env={**os.environ, "PYTHONPATH": str(root)},
    )
    try:
        run.wait_port(port, server, timeout=300)
        url = f"ws://127.0.0.1:{port}/ws"
        exchange(server, url, kind, 3, None, None)  # first-use work
        result = exchange(
            server,
            url,
            kind,
            messages,
            ["callgrind_control", "-i", "on", str(server.pid)],
            ["callgrind_control", "-i", "off", str(server.pid)],
        )
        subprocess.run(["callgrind_control", "-d", str(server.pid)], check=False, capture_output=True)
    finally:
        server.terminate()
        server.wait(60)
    totals = [
        int(line.split()[1])
        for path in glob.glob(str(outdir / "callgrind.out.*"))
        for line in Path(path).read_text().splitlines()
        if line.startswith(("summary:", "totals:"))
    ]
    for path in glob.glob(str(outdir / "callgrind.out.*")):
        os.remove(path)
    return max(totals) / result["messages"]


def count_syscalls(argv: list[str], port: int, kind: str, messages: int, outdir: Path, root: Path) -> dict[str, float]:
    server = subprocess.Popen(
        argv,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        cwd=root,
        env={**os.environ, "PYTHONPATH": str(root)},
    )
    out = outdir / "strace.txt"
    tracer = None
    try:
        run.wait_port(port, server)
        url = f"ws://127.0.0.1:{port}/ws"
        exchange(server, url, kind, 3, None, None)
        client = subprocess.Popen(
            client_argv(kind, url, messages),
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
            env={**os.environ, "PYTHONPATH": str(BENCH)},
        )
        assert client.stdout.readline().strip() == "ready"
        tracer = subprocess.Popen(
            ["strace", "-c", "-f", "-p", str(server.pid), "-o", str(out)], stderr=subprocess.DEVNULL
        )
        time.sleep(1.0)  # strace attaches to every thread
        client.stdin.write("go\n")
        client.stdin.flush()
        result = json.loads(client.stdout.readline())
        tracer.send_signal(2)
        tracer.wait(30)
        client.stdin.write("close\n")
        client.stdin.flush()
        client.wait(30)
    finally:
        if tracer is not None and tracer.poll() is None:
            tracer.kill()
        server.terminate()
        server.wait(30)
    calls: dict[str, float] = {}
    for line in out.read_text().splitlines():
        parts = line.split()
        if len(parts) >= 5 and parts[0][0].isdigit() and parts[-1] != "total":
            calls[parts[-1]] = int(parts[3]) / result["messages"]
    return calls


def server_argv(target: str, port: int, redis_url: str, workdir: Path) -> list[str]:
    """instructions.py's server command, started by this interpreter's path (a venv's python is a
    symlink: its real path would not find the venv's site-packages)."""
    argv = instructions.server_argv(target, port, redis_url, workdir, fanout=False)
    return [sys.executable, *argv[1:]]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("targets", nargs="*", help="raw, memory, redis (default raw, memory)")
    parser.add_argument("--clients", default="epoll,node,node-zero")
    parser.add_argument("--messages", type=int, default=40, help="round trips per client (100 clients)")
    parser.add_argument("--root", type=Path, default=BENCH.parent)
    parser.add_argument("--strace", action="store_true", help="also system calls per message (strace -c)")
    parser.add_argument("--child", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        epoll_client(args.child, CLIENTS, args.messages)
        return 0
    root = args.root.resolve()
    run.ROOT = root
    targets = args.targets or ["raw", "memory"]
    kinds = args.clients.split(",")
    with tempfile.TemporaryDirectory(prefix="chatbot-cinstr-") as tmp:
        workdir = Path(tmp)
        redis_port = run.free_port()
        redis = subprocess.Popen(
            ["redis-server", "--port", str(redis_port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no"],
            stdout=subprocess.DEVNULL,
        )
        try:
            for target in targets:
                for kind in kinds:
                    port = run.free_port()
                    argv = server_argv(target, port, f"redis://127.0.0.1:{redis_port}/0", workdir)
                    per = count_instructions(argv, port, kind, args.messages, workdir, root)
                    line = f"{target:8s} {kind:10s} {per:10,.0f} instructions/message"
                    if args.strace:
                        port = run.free_port()
                        argv = server_argv(target, port, f"redis://127.0.0.1:{redis_port}/0", workdir)
                        calls = count_syscalls(argv, port, kind, args.messages * 5, workdir, root)
                        top = sorted(calls.items(), key=lambda kv: -kv[1])[:6]
                        line += "  syscalls/msg: " + " ".join(f"{k}={v:.3f}" for k, v in top)
                    print(line, flush=True)
        finally:
            redis.terminate()
            redis.wait()
    return 0


if __name__ == "__main__":
    sys.exit(main())
