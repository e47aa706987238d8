#!/usr/bin/env bash
# A/B of two checkouts in paired windows: both servers up at once on the server core, the load
# generator (loadgen.py rtt, 100 closed-loop clients) giving each a 1 s turn, 12 cycles; prints
# the median of the per-cycle ratios B/A. Drift on a shared VM hits both alike, which separate
# runs (run.py --quick on A, then on B) do not see.
#
#   bash bench/ab.sh /path/to/checkout-A /path/to/checkout-B [memory|redis] [clients]
#   AB_CLIENT=node bash bench/ab.sh ...     # the same on Node's ws client (bench/node/rtt.mjs)
#   AB_WARM1=2 bash bench/ab.sh ...         # first a 2 s 1-client closed loop on each (like run.py's rtt steps)
set -euo pipefail
A=$1; B=$2; BACKEND=${3:-memory}; CLIENTS=${4:-100}
BENCH="$(cd "$(dirname "$0")" && pwd)"
SITE="$(python -c 'import site; print(site.getsitepackages()[0])')"
TMP="$(mktemp -d)"
free_port() { python -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
REDIS_PORT=$(free_port)
pids=()
cleanup() { kill "${pids[@]}" 2>/dev/null || true; wait 2>/dev/null || true; rm -rf "$TMP"; }
trap cleanup EXIT
if [ "$BACKEND" = redis ]; then
  taskset -c 0 redis-server --port "$REDIS_PORT" --bind 127.0.0.1 --save '' --appendonly no >/dev/null &
  pids+=($!)
fi
start() {  # root port -> pid
  cat >"$TMP/$2.yaml" <<Y
{"server": {"host": "127.0.0.1", "port": $2}, "bot": {"name": "echo"},
 "limits": {"max_connections": 50000, "max_connections_per_ip": 50000, "rate_per_second": 1e9,
            "rate_burst": 1000000000, "abuse_strikes": 1000000000},
 "layer": {"backend": "$BACKEND", "redis": {"url": "redis://127.0.0.1:$REDIS_PORT/0", "prefix": "ab$2"}}}
Y
  (cd "$1" && PYTHONPATH="$1:$SITE" exec taskset -c 0 python -m chatbot_server --config "$TMP/$2.yaml" 2>"$TMP/$2.log") &
  pids+=($!)
}
PA=$(free_port); start "$A" "$PA"; PIDA=$!
PB=$(free_port); start "$B" "$PB"; PIDB=$!
for port in "$PA" "$PB"; do
  for _ in $(seq 100); do (echo >"/dev/tcp/127.0.0.1/$port") 2>/dev/null && break; sleep 0.1; done
done
if [ -n "${AB_WARM1:-}" ]; then  # a 1-client closed loop on each first, as run.py's rtt sequence does
  for port in "$PA" "$PB"; do
    PYTHONPATH="$SITE" taskset -c 1 python "$BENCH/loadgen.py" rtt --url "ws://127.0.0.1:$port/ws" --clients 1 \
      --duration "$AB_WARM1" --warmup 0.5 >/dev/null
  done
fi
if [ "${AB_CLIENT:-loadgen}" = node ]; then
  client=(node "$BENCH/node/rtt.mjs")
else
  client=(env PYTHONPATH="$SITE" python "$BENCH/loadgen.py" rtt)
fi
taskset -c 1 "${client[@]}" --url "ws://127.0.0.1:$PA/ws" --url "ws://127.0.0.1:$PB/ws" \
  --clients "$CLIENTS" --duration "${AB_WINDOW:-1}" --warmup 1 --cycles 12 --settle 0.1 --watch "$PIDA" --watch "$PIDB" | tail -1 |
python -c '
import json, statistics as st, sys
a, b = json.loads(sys.stdin.read())["windows"]
ratios = [y["msgs_per_s"] / x["msgs_per_s"] for x, y in zip(a, b)]
med = lambda rs: round(st.median(r["msgs_per_s"] for r in rs))
print(f"A {med(a)} msg/s  B {med(b)} msg/s  B/A median {st.median(ratios):.3f} (cycles {min(ratios):.2f}-{max(ratios):.2f})")'
