"""Two clients, one scenario: the rtt scenario on loadgen.py's epoll client and on Node's `ws` client.

    python bench/clients.py                        # 100 and 1,000 clients, 3 repetitions (~5 min)
    python bench/clients.py --root /work/base      # the server code of another checkout
    python bench/clients.py --reps 5 --clients 100 --duration 3

For every repetition, client count and client, each target (raw aiohttp, chatbot_server's memory
layer, its Redis layer) gets a FRESH server process (pinned to the server core, as in run.py) and
one closed-loop run of the client (pinned to the client core): warmup, then --duration seconds.
Targets are interleaved (the first target rotates every repetition). `x raw` is the median over
repetitions of target / raw aiohttp of the same repetition, client and client count.

The clients: `loadgen.py rtt` (bare epoll loop, frames masked with the all-zero key, header and
payload in one send) and `node/rtt.mjs` (Node's `ws`, random masking keys, its own segmentation:
what browsers look like). `--node-mask zero` makes rtt.mjs mask with the all-zero key too.

`--paired` runs the targets the way run.py does instead: every repetition starts one fresh server per
target, all up at once, and each client gives them turns of --duration seconds, --cycles times
(`x raw` is then the median of per-cycle ratios, which a drift in machine speed cannot skew).
Needs `bash bench/node/setup.sh` once. The servers are started by run.py's start_target, with
run.py's configuration (echo bot, bench_limits, default settings otherwise: history on).
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
from collections import defaultdict
from pathlib import Path
from typing import Any

BENCH = Path(__file__).resolve().parent
sys.path.insert(0, str(BENCH))
import run  # noqa: E402  (bench/run.py: processes, targets, pinning)

TARGETS = ("raw", "memory", "redis")


def rtt(client: str, extra: list[str], n: int, args: argparse.Namespace) -> dict[str, Any]:
    """The rtt scenario on `client` ("loadgen" or "node") with N clients, plus `extra` arguments."""
    common = ["--clients", str(n), "--warmup", str(args.warmup), "--duration", str(args.duration), *extra]
    if client == "loadgen":
        return run.loadgen(["rtt", *common])
    node = ["node", str(BENCH / "node" / "rtt.mjs")]
    return run.run_client("rtt.mjs", node, [*common, "--mask", args.node_mask])


def one_run(env: run.Env, target: str, client: str, n: int, args: argparse.Namespace) -> dict[str, Any]:
    s = run.start_target(env, target, fanout=False)
    with run.running(*s.procs):
        r = rtt(client, ["--url", s.ws_urls[0], *run.watch_args(s.server_pids)], n, args)
    r["server_cpu"] = run.server_cpu(r, s.server_pids)
    return r


def paired_runs(
    env: run.Env, targets: list[str], client: str, n: int, args: argparse.Namespace, rep: int
) -> dict[str, list[dict[str, Any]]]:
    """Fresh servers for every target, all up; the client gives them turns (paired windows)."""
    started = [run.start_target(env, target, fanout=False) for target in targets]
    with run.running(*(p for s in started for p in s.procs)):
        urls = [a for s in started for a in ("--url", s.ws_urls[0])]
        watch = run.watch_args(sorted({pid for s in started for pid in s.server_pids}))
        paired = ["--cycles", str(args.cycles), "--settle", str(run.RTT_SETTLE)]
        r = rtt(client, [*urls, *paired, *watch], n, args)
    out: dict[str, list[dict[str, Any]]] = {}
    for target, s, windows in zip(targets, started, r["windows"], strict=True):
        for w in windows:
            w["server_cpu"] = run.server_cpu(w, s.server_pids)
            w["rep"] = f"{rep}.{w['cycle']}"
        out[target] = windows
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--root",
        type=Path,
        default=BENCH.parent,
        help="checkout whose chatbot_server runs (default: the repo this script is in)",
    )
    parser.add_argument("--clients", default="100,1000", help="comma-separated client counts")
    parser.add_argument("--reps", type=int, default=3, help="repetitions (fresh servers every run)")
    parser.add_argument("--warmup", type=float, default=1.0)
    parser.add_argument("--duration", type=float, default=3.0)
    parser.add_argument("--targets", default=",".join(TARGETS))
    parser.add_argument("--which", default="loadgen,node", help="clients to run: loadgen, node")
    parser.add_argument("--node-mask", default="random", choices=["random", "zero"])
    parser.add_argument("--log-level", default="INFO")
    parser.add_argument(
        "--set",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="extra chatbot_server config, e.g. --set bot.history_turns=0 (JSON value)",
    )
    parser.add_argument("--paired", action="store_true", help="all targets up at once, paired windows (run.py's way)")
    parser.add_argument("--cycles", type=int, default=6, help="--paired: windows per target per repetition")
    parser.add_argument("--json", type=Path, help="write every run's result here")
    args = parser.parse_args(argv)
    root = args.root.resolve()
    if not (root / "chatbot_server" / "__init__.py").exists():
        parser.error(f"{root} has no chatbot_server package")
    run.ROOT = root  # start_target / bench_limits / run_client read it at call time
    # Proc's cwd default was bound at import; `python -m` puts the cwd first on sys.path, so it must
    # be the root too, or the other checkout's chatbot_server would be imported.
    run.Proc.__init__.__kwdefaults__["cwd"] = root
    if "node" in args.which and not run.node_fanout_ready():
        parser.error("Node's ws is not installed: bash bench/node/setup.sh")
    run.raise_nofile()
    extra: dict[str, Any] = {}
    for item in args.set:
        key, _, value = item.partition("=")
        try:
            extra[key] = json.loads(value)
        except ValueError:
            extra[key] = value
    counts = [int(c) for c in args.clients.split(",")]
    targets = args.targets.split(",")
    clients = args.which.split(",")
    logdir = Path(tempfile.mkdtemp(prefix="chatbot-clients-"))
    redis_port = run.free_port()
    redis = run.Proc(
        run.redis_argv(redis_port),
        logdir=logdir,
        name="redis",
        port=redis_port,
    )
    env = run.Env(logdir, f"redis://127.0.0.1:{redis_port}/0", redis.pid, args.log_level, extra)
    results: dict[tuple[str, int, str], list[dict[str, Any]]] = defaultdict(list)
    run.progress(f"server code from {root}; logs in {logdir}")
    try:
        for rep in range(args.reps):
            for n in counts:
                for c_index, client in enumerate(clients):
                    if args.paired:
                        for target, windows in paired_runs(env, targets, client, n, args, rep).items():
                            results[(client, n, target)].extend(windows)
                            rates = [w["msgs_per_s"] for w in windows]
                            run.progress(
                                f"rep {rep + 1} {client:<7} {n:>5} {target:<7} {run.med(rates):8.0f} msg/s "
                                f"(windows {min(rates):.0f}-{max(rates):.0f})"
                            )
                        continue
                    order = [targets[(rep + c_index + k) % len(targets)] for k in range(len(targets))]
                    for target in order:
                        r = one_run(env, target, client, n, args)
                        r["rep"] = rep
                        results[(client, n, target)].append(r)
                        run.progress(
                            f"rep {rep + 1} {client:<7} {n:>5} {target:<7} {r['msgs_per_s']:8.0f} msg/s  "
                            f"p50 {r['p50_ms']:6.2f} ms  srv cpu {r['server_cpu']:.2f}  "
                            f"cli cpu {r['client_cpu']:.2f}  errors {r['error_frames']}"
                        )
    finally:
        redis.stop()
    how = (
        f"paired windows: fresh servers per repetition, all up, {args.cycles} turns of {args.duration:g} s each"
        if args.paired
        else f"fresh server per run, {args.duration:g} s (+{args.warmup:g} s warmup)"
    )
    print(f"rtt, echo bot, {how}, {args.reps} reps; server code: {root}")
    print(
        f"  {'client':<9}{'N':>6}  {'target':<8}{'msg/s':>8}{'x raw':>7}{'(min-max)':>12}{'p50 ms':>8}"
        f"{'srv cpu':>8}{'us/msg':>7}{'cli cpu':>8}"
    )
    for client in clients:
        for n in counts:
            raw = {r["rep"]: r["msgs_per_s"] for r in results[(client, n, "raw")]}
            for target in targets:
                rs = results[(client, n, target)]
                ratios = [r["msgs_per_s"] / raw[r["rep"]] for r in rs if raw.get(r["rep"])]
                rate = statistics.median(r["msgs_per_s"] for r in rs)
                us = statistics.median(r["server_cpu"] / r["cpu_msgs_per_s"] * 1e6 for r in rs if r["cpu_msgs_per_s"])
                spread = f"{min(ratios):.2f}-{max(ratios):.2f}" if ratios else "-"
                print(
                    f"  {client:<9}{n:>6}  {target:<8}{rate:8.0f}{statistics.median(ratios):7.2f}{spread:>12}"
                    f"{statistics.median(r['p50_ms'] for r in rs):8.2f}"
                    f"{statistics.median(r['server_cpu'] for r in rs):8.2f}{us:7.1f}"
                    f"{statistics.median(r['client_cpu'] for r in rs):8.2f}"
                )
    if args.json:
        args.json.write_text(
            json.dumps({f"{c}@{n}@{t}": v for (c, n, t), v in results.items()}, ensure_ascii=False, indent=1)
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
