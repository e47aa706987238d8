"""Benchmark runner: raw aiohttp vs chatbot_server (memory and Redis layers), interleaved, medians.

    python bench/run.py --quick          # under 2 minutes: fewer sockets, shorter windows, 2 rounds
    python bench/run.py                  # full: 10,000 idle sockets, 5 s windows, 3 rounds
    python bench/run.py --peers          # also Django Channels on daphne and uvicorn (bench/peers/)

Servers run on core 0 and the load generator on core 1 (`taskset`); the private redis-server also
runs on core 0 (it is server-side work). Every round starts fresh server processes and runs the
targets one after the other (raw, memory, redis, raw, memory, redis, ...), so slow drifts in
machine load hit every target alike; the table shows medians over rounds and ratios to raw aiohttp.
No uvloop anywhere (the servers and the client use the stock asyncio loop; the CLI would install
uvloop if it were importable, and the runner refuses to run then, to keep the comparison fair).
Raw results are written to bench/results/<time>.json (git-ignored).
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import importlib.util
import json
import os
import platform
import resource
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from collections import defaultdict
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

BENCH = Path(__file__).resolve().parent
ROOT = BENCH.parent
PEERS = BENCH / "peers"
DJANGO_VENV = PEERS / ".venv-django"
SERVER_CORE = "0"
CLIENT_CORE = "1"

KIB = 1024


@dataclass(frozen=True)
class Plan:
    """How long and how big each scenario is."""

    rounds: int
    rtt_clients: tuple[int, ...]
    rtt_warmup: float
    rtt_duration: float  # one window; the targets take turns, rtt_cycles times per round
    rtt_cycles: int
    conn_sockets: int
    conn_settle: float
    fanout_members: int
    fanout_warmup: float
    fanout_duration: float
    fanout_window: int


QUICK = Plan(2, (1, 100, 1000), 0.5, 0.4, 3, 2000, 0.5, 1000, 0.3, 0.8, 4)
FULL = Plan(3, (1, 100, 1000), 1.0, 1.0, 6, 10_000, 2.0, 1000, 1.0, 4.0, 4)
# After each rtt window: replies in flight are read and the servers finish what they do behind a
# reply (the Redis store writes history every 50 ms) before the next target's window starts.
RTT_SETTLE = 0.1


# ------------------------------------------------------------------------------ processes
def raise_nofile() -> int:
    """Lift the open-files limit for this process and the children it starts."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft < hard:
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    return hard


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def wait_port(port: int, proc: subprocess.Popen[bytes], timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"server exited with {proc.returncode} before listening on {port}: {proc.args}")
        with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", port), timeout=0.5):
            return
        time.sleep(0.05)
    raise RuntimeError(f"nothing listens on port {port} after {timeout}s: {proc.args}")


def redis_argv(port: int) -> list[str]:
    """A private, throwaway redis-server on loopback: no persistence, room for 10,000+ sockets' worth."""
    return ["redis-server", "--port", str(port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no",
            "--maxclients", "20000"]  # fmt: skip


class Proc:
    """A server-side process pinned to the server core, logging to a file, stopped on exit."""

    def __init__(
        self,
        argv: Sequence[str],
        *,
        logdir: Path,
        name: str,
        env: dict[str, str] | None = None,
        cwd: Path = ROOT,
        port: int | None = None,
    ) -> None:
        self.log = logdir / f"{name}.log"
        self.argv = ["taskset", "-c", SERVER_CORE, *argv]
        with open(self.log, "ab") as log:
            self.popen = subprocess.Popen(
                self.argv,
                stdout=log,
                stderr=subprocess.STDOUT,
                cwd=cwd,
                env={**os.environ, **(env or {})},
                stdin=subprocess.DEVNULL,
            )
        self.pid = self.popen.pid  # taskset execs the command: same pid
        if port is not None:
            wait_port(port, self.popen)

    def stop(self) -> None:
        if self.popen.poll() is None:
            self.popen.send_signal(signal.SIGINT)
            try:
                self.popen.wait(15)
            except subprocess.TimeoutExpired:
                self.popen.kill()
                self.popen.wait()


@contextlib.contextmanager
def running(*procs: Proc) -> Iterator[None]:
    try:
        yield
    finally:
        for p in procs:
            p.stop()


def run_client(name: str, command: Sequence[str], args: Sequence[str], timeout: float = 300.0) -> dict[str, Any]:
    """Run a load-generator command on the client core and return its JSON result (the last line)."""
    argv = ["taskset", "-c", CLIENT_CORE, *command, *args]
    done = subprocess.run(
        argv, capture_output=True, text=True, timeout=timeout, cwd=ROOT, env={**os.environ, "PYTHONPATH": str(ROOT)}
    )
    if done.returncode != 0:
        raise RuntimeError(f"{name} failed ({done.returncode}): {' '.join(args)}\n{done.stderr[-2000:]}")
    if done.stderr.strip():
        print(f"    {name}: {done.stderr.strip()[-300:]}", file=sys.stderr)
    result = json.loads(done.stdout.strip().splitlines()[-1])
    # JSON has no NaN: JavaScript writes null where loadgen.py writes NaN (e.g. every broadcast lost).
    return {key: float("nan") if value is None else value for key, value in result.items()}


def loadgen(args: Sequence[str]) -> dict[str, Any]:
    """Run bench/loadgen.py on the client core."""
    return run_client("loadgen", [sys.executable, str(BENCH / "loadgen.py")], args)


NODE_CLIENT = BENCH / "node"


def node_fanout_ready() -> bool:
    """Whether the Node fan-out client can run (node on PATH, `ws` installed by bench/node/setup.sh)."""
    return shutil.which("node") is not None and (NODE_CLIENT / "node_modules" / "ws").is_dir()


def node_fanout(args: Sequence[str]) -> dict[str, Any]:
    """The fan-out scenario with bench/node/fanout.mjs as the members, on the client core."""
    command = ["node", str(NODE_CLIENT / "fanout.mjs")]
    return run_client(
        "fanout.mjs", command, [*args, "--python", sys.executable, "--loadgen", str(BENCH / "loadgen.py")]
    )


# ------------------------------------------------------------------------------ targets
@dataclass
class Env:
    """What every target needs: a log folder, the private Redis and a counter for key prefixes."""

    logdir: Path
    redis_url: str
    redis_pid: int
    log_level: str
    extra: dict[str, Any] = field(default_factory=dict)  # --set dotted.key=value for chatbot configs
    node_fanout: bool = False  # fan-out members on Node's ws client (bench/node) instead of loadgen.py
    serial: int = 0

    def prefix(self, name: str) -> str:
        self.serial += 1
        return f"bench{self.serial}{name.replace('-', '')}"


def bench_limits() -> dict[str, Any]:
    """Limits that let one load generator on 127.0.0.1 open 10,000 sockets and send flat out.

    Only keys this checkout's LimitSettings knows are set, so the runner works across versions.
    """
    sys.path.insert(0, str(ROOT))
    from chatbot_server.config import LimitSettings

    wanted = {
        "max_connections": 50_000,
        "max_connections_per_ip": 50_000,
        "rate_per_second": 1e9,
        "rate_burst": 1_000_000_000,
        "abuse_strikes": 1_000_000_000,
    }
    known = {f.name for f in dataclasses.fields(LimitSettings)}
    return {k: v for k, v in wanted.items() if k in known}


def chatbot_yaml(env: Env, port: int, backend: str, prefix: str) -> Path:
    layer: dict[str, Any] = {"backend": backend}
    if backend == "redis":
        layer["redis"] = {"url": env.redis_url, "prefix": prefix}
    config = {
        "server": {
            "host": "127.0.0.1",
            "port": port,
            "trusted_proxies": ["127.0.0.1"],
        },  # one load generator: no per-address budgets
        "bot": {"name": "echo"},
        "limits": bench_limits(),
        "layer": layer,
        "logging": {"level": env.log_level},
    }
    for dotted, value in env.extra.items():
        node = config
        *parents, last = dotted.split(".")
        for part in parents:
            node = node.setdefault(part, {})
        node[last] = value
    path = env.logdir / f"{prefix}.yaml"
    path.write_text(json.dumps(config))  # JSON is YAML
    return path


@dataclass
class Started:
    """Servers of one target: websocket URLs, how to trigger a broadcast, pids to watch."""

    procs: list[Proc]
    ws_urls: list[str]
    trigger: list[str] = field(default_factory=list)  # loadgen args
    watch: list[int] = field(default_factory=list)

    @property
    def server_pids(self) -> list[int]:
        return [p.pid for p in self.procs]


def start_target(env: Env, target: str, *, fanout: bool, processes: int = 1) -> Started:
    """Start the servers of `target` ("raw", "memory", "redis", "daphne", "uvicorn", ...)."""
    procs: list[Proc] = []
    urls: list[str] = []
    ports: list[int] = []
    prefix = env.prefix(target)
    py = sys.executable
    pypath = {"PYTHONPATH": str(ROOT)}
    try:
        for i in range(processes):
            port = free_port()
            ports.append(port)
            name = f"{prefix}-{i}"
            if target == "raw":
                argv = [py, str(BENCH / "raw_server.py"), "--port", str(port)]
                procs.append(Proc(argv, logdir=env.logdir, name=name, port=port))
            elif target in ("memory", "redis"):
                yaml = chatbot_yaml(env, port, target, prefix)
                if fanout:  # needs the bench-only broadcast route
                    argv = [py, str(BENCH / "chatbot_bench_server.py"), "--config", str(yaml), "--port", str(port)]
                else:  # exactly what users run
                    argv = [py, "-m", "chatbot_server", "--config", str(yaml)]
                procs.append(Proc(argv, logdir=env.logdir, name=name, env=pypath, port=port))
            elif target.startswith(("daphne", "uvicorn")):
                server, _, layer = target.partition("-")
                venv_bin = DJANGO_VENV / "bin"
                denv = {
                    "BENCH_LAYER": "redis" if layer == "redis" else "memory",
                    "BENCH_REDIS_URL": env.redis_url,
                    "BENCH_PREFIX": prefix,
                    "DJANGO_SETTINGS_MODULE": "benchapp.settings",
                }
                if server == "daphne":
                    argv = [
                        str(venv_bin / "daphne"),
                        "-v",
                        "0",
                        "-b",
                        "127.0.0.1",
                        "-p",
                        str(port),
                        "benchapp.asgi:application",
                    ]
                else:
                    argv = [
                        str(venv_bin / "uvicorn"),
                        "benchapp.asgi:application",
                        "--host",
                        "127.0.0.1",
                        "--port",
                        str(port),
                        "--loop",
                        "asyncio",
                        "--ws",
                        "websockets",
                        "--http",
                        "h11",
                        "--log-level",
                        "warning",
                        "--no-access-log",
                    ]
                procs.append(Proc(argv, logdir=env.logdir, name=name, env=denv, cwd=PEERS / "django_app", port=port))
            else:
                raise ValueError(f"unknown target {target!r}")
            urls.append(f"ws://127.0.0.1:{port}/ws")
    except BaseException:
        for p in procs:
            p.stop()
        raise
    started = Started(procs, urls, watch=[p.pid for p in procs])
    if target == "redis" or target.endswith("-redis"):
        started.watch.append(env.redis_pid)
    if target == "redis" and processes > 1:
        # From outside the server processes: a RedisChannelLayer of the load generator's own.
        started.trigger = ["--trigger", env.redis_url, "--prefix", prefix]
    else:
        started.trigger = ["--trigger", f"http://127.0.0.1:{ports[0]}/bench/broadcast"]
    return started


# ------------------------------------------------------------------------------ the run
Results = dict[str, dict[str, list[dict[str, Any]]]]  # scenario -> target -> one result per round


def watch_args(pids: Sequence[int]) -> list[str]:
    return [a for pid in pids for a in ("--watch", str(pid))]


def run_round(
    env: Env,
    plan: Plan,
    rtt_targets: Sequence[str],
    fanout_targets: Sequence[tuple[str, int]],
    results: Results,
    only: set[str],
    round_index: int,
) -> None:
    if "conn" in only:
        for target in rtt_targets:
            s = start_target(env, target, fanout=False)
            with running(*s.procs):
                r = loadgen(
                    [
                        "conn",
                        "--url",
                        s.ws_urls[0],
                        "--clients",
                        str(plan.conn_sockets),
                        "--settle",
                        str(plan.conn_settle),
                        *watch_args(s.server_pids),
                    ]
                )
                results[f"conn@{plan.conn_sockets}"][target].append(r)
                progress(f"conn   {target:<14} {r['rss_per_socket'] / KIB:7.1f} KiB/socket  ({r['clients']} open)")
    if "rtt" in only:
        # Every target up at once, idle but for its own windows: the load generator gives each its
        # turn, cycle after cycle, so a change in machine speed (a noisy VM) hits all of them alike.
        started = [start_target(env, target, fanout=False) for target in rtt_targets]
        with running(*(p for s in started for p in s.procs)):
            urls = [a for s in started for a in ("--url", s.ws_urls[0])]
            watch = watch_args(sorted({pid for s in started for pid in s.watch}))
            for n in plan.rtt_clients:
                r = loadgen(
                    [
                        "rtt",
                        *urls,
                        "--clients",
                        str(n),
                        "--warmup",
                        str(plan.rtt_warmup),
                        "--duration",
                        str(plan.rtt_duration),
                        "--cycles",
                        str(plan.rtt_cycles),
                        "--settle",
                        str(RTT_SETTLE),
                        *watch,
                    ]
                )
                for target, s, windows in zip(rtt_targets, started, r["windows"], strict=True):
                    for w in windows:
                        w["pair"] = f"{round_index}.{w['cycle']}"
                        w["watched_cpu_server"] = server_cpu(w, s.server_pids)
                        results[f"rtt@{n}"][target].append(w)
                        if w["error_frames"]:
                            progress(f"WARNING {w['error_frames']} error frames, e.g. {w['sample_error'][:200]}")
                    rates = [w["msgs_per_s"] for w in windows]
                    if sum(w.get("lost_sockets", 0) for w in windows):
                        progress(
                            f"WARNING {target} closed {sum(w['lost_sockets'] for w in windows)} of {n} sockets "
                            f"during the windows (its server log is in {env.logdir})"
                        )
                    progress(
                        f"rtt    {target:<14} {n:>5} clients {med(rates):9.0f} msg/s (windows "
                        f"{min(rates):.0f}-{max(rates):.0f})  server cpu "
                        f"{med([w['watched_cpu_server'] for w in windows]):.2f}"
                    )
    if "fanout" not in only:
        return
    for target, processes in fanout_targets:
        s = start_target(env, target, fanout=True, processes=processes)
        label = fanout_label(target, processes)
        with running(*s.procs):
            urls = [a for u in s.ws_urls for a in ("--url", u)]
            fanout_args = [
                *urls,
                "--members",
                str(plan.fanout_members),
                "--warmup",
                str(plan.fanout_warmup),
                "--duration",
                str(plan.fanout_duration),
                "--window",
                str(plan.fanout_window),
                *s.trigger,
                *watch_args(s.watch),
            ]
            r = node_fanout(fanout_args) if env.node_fanout else loadgen(["fanout", *fanout_args])
            results[f"fanout@{plan.fanout_members}"][label].append(r)
            progress(
                f"fanout {label:<14} {r['broadcasts_per_s']:7.1f} bcast/s  p50 {r['p50_ms']:7.2f} ms  "
                f"p99 {r['p99_ms']:7.2f} ms  lost {r['lost']}  client cpu {r['client_cpu']:.2f}"
            )


def fanout_label(target: str, processes: int) -> str:
    return target if processes == 1 else f"{target} x{processes}"


def server_cpu(r: dict[str, Any], pids: Sequence[int]) -> float:
    return sum(r["watched_cpu"].get(str(pid), 0.0) for pid in pids)


_T0 = time.monotonic()


def progress(line: str) -> None:
    print(f"[{time.monotonic() - _T0:6.1f}s] {line}", file=sys.stderr, flush=True)


# ------------------------------------------------------------------------------ reporting
def med(values: Sequence[float]) -> float:
    values = [v for v in values if v == v]  # drop NaN
    return statistics.median(values) if values else float("nan")


def fmt(value: float, spec: str = ".0f") -> str:
    return "-" if value != value else format(value, spec)


def client_bound(rs: Sequence[dict[str, Any]]) -> str:
    """A flag for rows where the load generator, not the server, was the busy one."""
    return "  client-bound: use x raw/cpu" if med([r["client_cpu"] for r in rs]) > 0.85 else ""


def per_cpu(r: dict[str, Any]) -> float:
    """Messages per server CPU second (over the metered time, replies read after the window included)."""
    return r.get("cpu_msgs_per_s", r["msgs_per_s"]) / max(r["watched_cpu_server"], 1e-9)


def paired(per_target: dict[str, list[dict[str, Any]]], target: str, value: Any) -> float:
    """Median over rtt windows of value(target) / value(raw) in the same cycle (ratio of medians if unpaired)."""
    raw = {r["pair"]: value(r) for r in per_target.get("raw", []) if "pair" in r}
    ratios = [value(r) / raw[r["pair"]] for r in per_target.get(target, []) if raw.get(r.get("pair"))]
    if ratios:
        return med(ratios)
    return med([value(r) for r in per_target.get(target, [])]) / med([value(r) for r in per_target.get("raw", [])])


def fanout_cost(r: dict[str, Any]) -> float:
    """Server CPU milliseconds per broadcast (closed-loop phase), all server processes together."""
    per_s = r["closed_loop_per_s"]
    return r["watched_cpu_server"] / per_s * 1000 if per_s else float("nan")


def report(results: Results, plan: Plan) -> tuple[str, list[tuple[str, bool | None, str]]]:
    """The table of medians and the PASS/FAIL list."""
    out: list[str] = []
    for key in sorted(results, key=lambda k: (k.split("@")[0], int(k.split("@")[1]))):
        per_target = results[key]
        kind = key.split("@")[0]
        out.append("")
        if kind == "rtt":
            out.append(
                f"rtt, {key.split('@')[1]} clients per target (closed loops, echo bot; targets take turns in "
                f"{plan.rtt_duration:g} s windows, {plan.rtt_cycles} per round; x raw = median of per-cycle ratios)"
            )
            out.append(
                f"  {'target':<14}{'msg/s':>9}{'x raw':>7}{'p50 ms':>9}{'p99 ms':>9}{'srv cpu':>9}"
                f"{'us/msg':>8}{'x raw/cpu':>10}{'cli cpu':>9}"
            )
            for target, rs in per_target.items():
                rate = med([r["msgs_per_s"] for r in rs])
                eff = med([per_cpu(r) for r in rs])
                out.append(
                    f"  {target:<14}{fmt(rate):>9}{fmt(paired(per_target, target, lambda r: r['msgs_per_s']), '.2f'):>7}"
                    f"{fmt(med([r['p50_ms'] for r in rs]), '.2f'):>9}{fmt(med([r['p99_ms'] for r in rs]), '.2f'):>9}"
                    f"{fmt(med([r['watched_cpu_server'] for r in rs]), '.2f'):>9}{fmt(1e6 / eff, '.0f'):>8}"
                    f"{fmt(paired(per_target, target, per_cpu), '.2f'):>10}{fmt(med([r['client_cpu'] for r in rs]), '.2f'):>9}"
                    + client_bound(rs)
                )
        elif kind == "conn":
            out.append(f"conn, {key.split('@')[1]} idle sockets (server RSS after - before, / sockets)")
            out.append(f"  {'target':<14}{'KiB/sock':>9}{'open':>7}{'RSS MiB':>9}{'conn/s':>8}")
            for target, rs in per_target.items():
                out.append(
                    f"  {target:<14}{fmt(med([r['rss_per_socket'] / KIB for r in rs]), '.1f'):>9}"
                    f"{fmt(med([r['clients'] for r in rs])):>7}{fmt(med([r['rss_after'] / KIB / KIB for r in rs]), '.0f'):>9}"
                    f"{fmt(med([r['connects_per_s'] for r in rs])):>8}"
                )
        elif kind == "fanout":
            engines = sorted({r.get("engine", "?") for rs in per_target.values() for r in rs})
            out.append(
                f"fanout, group_send to {key.split('@')[1]} members (rate: {plan.fanout_window} in flight; "
                f"latency: 1 in flight, until all received; client: {', '.join(engines)})"
            )
            out.append(
                f"  {'target':<14}{'bcast/s':>9}{'x raw':>7}{'p50 ms':>9}{'p99 ms':>9}{'srv cpu':>9}"
                f"{'cpu ms/b':>9}{'x raw/cpu':>10}{'cli cpu':>9}{'lost':>6}"
            )
            raw_rate = med([r["broadcasts_per_s"] for r in per_target.get("raw", [])])
            raw_cost = med([fanout_cost(r) for r in per_target.get("raw", [])])
            for target, rs in per_target.items():
                rate = med([r["broadcasts_per_s"] for r in rs])
                cost = med([fanout_cost(r) for r in rs])
                out.append(
                    f"  {target:<14}{fmt(rate, '.1f'):>9}{fmt(rate / raw_rate, '.2f'):>7}"
                    f"{fmt(med([r['p50_ms'] for r in rs]), '.2f'):>9}{fmt(med([r['p99_ms'] for r in rs]), '.2f'):>9}"
                    f"{fmt(med([r['watched_cpu_server'] for r in rs]), '.2f'):>9}{fmt(cost, '.2f'):>9}"
                    f"{fmt(raw_cost / cost, '.2f'):>10}"
                    f"{fmt(med([r['client_cpu'] for r in rs]), '.2f'):>9}{sum(r['lost'] for r in rs):>6}"
                    + client_bound(rs)
                )
    verdicts: list[tuple[str, bool | None, str]] = []

    def rate(key: str, target: str, field_: str) -> float:
        return med([r[field_] for r in results.get(key, {}).get(target, [])])

    def verdict(name: str, value: float, ok: bool, shown: str) -> None:
        verdicts.append((name, None if value != value else ok, shown))

    rtt100 = results.get("rtt@100", {})
    for target, floor in (("memory", 0.85), ("redis", 0.8)):
        ratio = paired(rtt100, target, lambda r: r["msgs_per_s"])
        eff = paired(rtt100, target, per_cpu)
        verdict(
            f"{target} layer msgs/s at 100 clients >= {floor}x raw aiohttp",
            ratio,
            ratio >= floor,
            f"{ratio:.2f}x (per server CPU second: {eff:.2f}x)",
        )
    conn_key = f"conn@{plan.conn_sockets}"
    per_sock = rate(conn_key, "memory", "rss_per_socket") / KIB
    verdict("<= 16 KiB server RSS per idle socket (memory layer)", per_sock, per_sock <= 16, f"{per_sock:.1f} KiB")
    fan_key = f"fanout@{plan.fanout_members}"
    fan = rate(fan_key, "memory", "broadcasts_per_s") / rate(fan_key, "raw", "broadcasts_per_s")
    fan_cpu = med([fanout_cost(r) for r in results.get(fan_key, {}).get("raw", [])]) / med(
        [fanout_cost(r) for r in results.get(fan_key, {}).get("memory", [])]
    )
    verdict(
        f"fan-out to {plan.fanout_members} in one process >= 0.7x raw aiohttp",
        fan,
        fan >= 0.7,
        f"{fan:.2f}x (per server CPU second: {fan_cpu:.2f}x)",
    )
    p99 = rate(fan_key, "redis x2", "p99_ms")
    verdict("p99 all-received <= 20 ms across 2 processes on Redis", p99, p99 <= 20, f"{p99:.1f} ms")
    return "\n".join(out), verdicts


def machine() -> dict[str, str]:
    model = ""
    with contextlib.suppress(OSError), open("/proc/cpuinfo") as f:
        for line in f:
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    import aiohttp

    return {
        "nproc": str(os.cpu_count()),
        "cpu": model,
        "python": platform.python_version(),
        "aiohttp": aiohttp.__version__,
        "loop": "asyncio (no uvloop)",
        "loadavg": " ".join(os.getloadavg().__repr__().strip("()").split(", ")),
    }


def redis_version() -> str:
    out = subprocess.run(["redis-server", "--version"], capture_output=True, text=True).stdout
    return next((w.split("=")[1] for w in out.split() if w.startswith("v=")), "?")


# ------------------------------------------------------------------------------ main
def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="small and short (under 2 minutes)")
    parser.add_argument("--peers", action="store_true", help="also Django Channels on daphne and uvicorn")
    parser.add_argument("--rounds", type=int, help="interleaved rounds (default: 2 quick, 3 full)")
    parser.add_argument("--only", default="rtt,conn,fanout", help="comma-separated scenarios to run")
    parser.add_argument(
        "--log-level",
        default="INFO",
        choices=["DEBUG", "INFO", "WARNING", "ERROR"],
        help="chatbot_server's logging.level (default INFO, the shipped default)",
    )
    parser.add_argument("--conn-sockets", type=int, help="idle sockets of the conn scenario")
    parser.add_argument("--rtt-clients", help="comma-separated client counts of the rtt scenario (default 1,100,1000)")
    parser.add_argument(
        "--python-fanout",
        action="store_true",
        help="fan-out members on loadgen.py even if the Node client (bench/node/setup.sh) is installed",
    )
    parser.add_argument(
        "--set",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="extra chatbot_server config, e.g. --set bot.history_turns=0 (value parsed as JSON)",
    )
    args = parser.parse_args(argv)
    if importlib.util.find_spec("uvloop") is not None:
        print(
            "uvloop is importable: chatbot_server's CLI would use it and raw aiohttp would not; "
            "run in an environment without uvloop",
            file=sys.stderr,
        )
        return 2
    if not os.path.exists("/usr/bin/taskset") and not any(
        os.access(os.path.join(d, "taskset"), os.X_OK) for d in os.environ.get("PATH", "").split(os.pathsep)
    ):
        print("taskset (util-linux) is needed to pin server and client to cores", file=sys.stderr)
        return 2
    if (os.cpu_count() or 1) < 2:
        print("needs at least 2 cores (server on core 0, client on core 1)", file=sys.stderr)
        return 2
    plan = QUICK if args.quick else FULL
    if args.rounds:
        plan = dataclasses.replace(plan, rounds=args.rounds)
    if args.conn_sockets:
        plan = dataclasses.replace(plan, conn_sockets=args.conn_sockets)
    if args.rtt_clients:
        plan = dataclasses.replace(plan, rtt_clients=tuple(int(n) for n in args.rtt_clients.split(",")))
    extra: dict[str, Any] = {}
    for item in args.set:
        key, _, raw_value = item.partition("=")
        try:
            extra[key] = json.loads(raw_value)
        except ValueError:
            extra[key] = raw_value
    only = set(args.only.split(","))
    nofile = raise_nofile()
    if nofile < plan.conn_sockets + 1000:
        print(f"open-files hard limit {nofile} is too low for {plan.conn_sockets} sockets", file=sys.stderr)
        return 2
    rtt_targets = ["raw", "memory", "redis"]
    fanout_targets: list[tuple[str, int]] = [("raw", 1), ("memory", 1), ("redis", 2)]
    if not args.quick:
        fanout_targets.insert(2, ("redis", 1))
    if args.peers:
        if not (DJANGO_VENV / "bin" / "daphne").exists():
            print("Django peer not set up: run bench/peers/setup_django.sh first", file=sys.stderr)
            return 2
        rtt_targets += ["daphne", "uvicorn", "daphne-redis"]
        fanout_targets += [("daphne", 1), ("uvicorn", 1), ("daphne-redis", 2)]
    info = machine()
    results: Results = defaultdict(lambda: defaultdict(list))
    logdir = Path(tempfile.mkdtemp(prefix="chatbot-bench-"))
    redis_port = free_port()
    redis = Proc(
        redis_argv(redis_port),
        logdir=logdir,
        name="redis",
        port=redis_port,
    )
    env = Env(
        logdir,
        f"redis://127.0.0.1:{redis_port}/0",
        redis.pid,
        args.log_level,
        extra,
        node_fanout=node_fanout_ready() and not args.python_fanout,
    )
    if not env.node_fanout and not args.python_fanout and "fanout" in only:
        progress(
            "fan-out members on loadgen.py: run bench/node/setup.sh for the faster Node client (on this "
            "2-core VM the Python client's own reading sets the fan-out latency)"
        )
    progress(
        f"{'quick' if args.quick else 'full'} run, {plan.rounds} rounds; logs in {logdir}; "
        f"load average at start {info['loadavg']}"
    )
    try:
        for i in range(plan.rounds):
            progress(f"round {i + 1}/{plan.rounds}")
            run_round(env, plan, rtt_targets, fanout_targets, results, only, i)
    finally:
        redis.stop()
    for per_target in results.values():
        for rs in per_target.values():
            for r in rs:
                if "watched_cpu_server" in r:
                    continue
                pids = [int(p) for p in r.get("watched_cpu", {})]
                r["watched_cpu_server"] = (
                    sum(v for p, v in r.get("watched_cpu", {}).items() if int(p) != env.redis_pid)
                    if pids
                    else float("nan")
                )
    table, verdicts = report(results, plan)
    end_load = machine()["loadavg"]
    print(
        f"chatbot_server benchmark ({'quick' if args.quick else 'full'}), medians of {plan.rounds} interleaved "
        f"rounds (rtt: of {plan.rounds * plan.rtt_cycles} paired windows); {time.monotonic() - _T0:.0f} s"
    )
    print(
        f"machine: {info['nproc']} cores, {info['cpu']}; Python {info['python']}, aiohttp {info['aiohttp']}, "
        f"redis-server {redis_version()}, {info['loop']}"
    )
    print(
        f"load average: {info['loadavg']} at start, {end_load} at end (other work on the machine makes "
        "figures noisy; 'x raw/cpu' normalises by server CPU share)"
    )
    print(
        "server core 0 (+ redis-server), client core 1; srv cpu / cli cpu = share of one core; "
        "us/msg = server CPU microseconds per message"
    )
    print(table)
    print()
    for name, ok, shown in verdicts:
        print(f"  {'n/a ' if ok is None else 'PASS' if ok else 'FAIL'}  {name}: {shown}")
    out_dir = BENCH / "results"
    out_dir.mkdir(exist_ok=True)
    out = out_dir / time.strftime("%Y%m%d-%H%M%S.json")
    out.write_text(
        json.dumps(
            {"machine": info, "load_end": end_load, "plan": plan.__dict__, "results": results, "verdicts": verdicts},
            indent=1,
            ensure_ascii=False,
            default=list,
        )
    )
    print(f"\nraw results: {out.relative_to(ROOT)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
