// Fan-out members on Node's `ws` client: the same scenario as `loadgen.py fanout`, with a faster
// receiving side. Reading 1,000 frames per broadcast is the client's whole job here; Python's epoll
// loop needs ~20 us a frame, so on a 2-core machine its own reading set the "until all received"
// time. The trigger is still loadgen.py's (a child process told by a pipe: an HTTP POST or a
// RedisChannelLayer.group_send); latency counts from the write to that pipe.
//
//   node bench/node/fanout.mjs --url ws://127.0.0.1:8081/ws --members 1000 --trigger http://... \
//        --warmup 1 --duration 4 --window 4 --watch <pid> --python python3 --loadgen bench/loadgen.py
//
// Prints one JSON object, with the fields of loadgen.py's fanout result.

import { spawn } from "node:child_process";
import { createInterface } from "node:readline";
import WebSocket from "ws";

import { cpuMeter, now } from "./meter.mjs";

const CONNECT_CONCURRENCY = 100;

function parseArgs(argv) {
  const args = { url: [], watch: [], members: 1000, warmup: 1, duration: 4, window: 4, trigger: "", prefix: "chatbot" };
  for (let i = 0; i < argv.length; i += 2) {
    const key = argv[i].replace(/^--/, "");
    const value = argv[i + 1];
    if (key === "url" || key === "watch") args[key].push(value);
    else if (["members", "window"].includes(key)) args[key] = parseInt(value, 10);
    else if (["warmup", "duration"].includes(key)) args[key] = parseFloat(value);
    else args[key] = value;
  }
  return args;
}

function percentile(sorted, p) {
  if (!sorted.length) return NaN;
  const k = Math.min(sorted.length - 1, Math.max(0, Math.round((p / 100) * (sorted.length - 1))));
  return sorted[k];
}

async function connectAll(urls, n) {
  const sockets = [];
  let failed = 0;
  let next = 0;
  async function worker() {
    while (next < n) {
      const url = urls[next % urls.length];
      next += 1;
      try {
        sockets.push(await new Promise((resolve, reject) => {
          const ws = new WebSocket(url, { perMessageDeflate: false });
          ws.once("message", () => resolve(ws)); // the greeting
          ws.once("error", reject);
          ws.once("close", () => reject(new Error("closed during handshake")));
        }));
      } catch (error) {
        failed += 1;
        if (failed === 1) process.stderr.write(`fanout.mjs: connection failed: ${error}\n`);
      }
    }
  }
  await Promise.all(Array.from({ length: CONNECT_CONCURRENCY }, worker));
  return { sockets, failed };
}

async function main() {
  const args = parseArgs(process.argv.slice(2));
  const { sockets, failed } = await connectAll(args.url, args.members);
  const members = sockets.length;
  if (!members) throw new Error("no connection could be opened");
  const child = spawn(args.python, [args.loadgen, "trigger", "--url", "-", "--trigger", args.trigger, "--prefix", args.prefix],
    { stdio: ["pipe", "pipe", "inherit"] });
  const lines = createInterface({ input: child.stdout });
  await new Promise((resolve, reject) => {
    lines.once("line", (line) => (line.trim() === "ready" ? resolve() : reject(new Error(`trigger said ${line}`))));
    child.once("exit", (code) => reject(new Error(`trigger exited with ${code}`)));
  });

  const counts = new Map();
  const started = new Map();
  let nextSeq = 0;
  let phase = null; // {latencies, end, last, lost, done}
  let sample = "";

  function fire() {
    nextSeq += 1;
    started.set(nextSeq, now());
    child.stdin.write(`${nextSeq}\n`);
  }

  function onMessage(data) {
    const text = data.toString();
    const i = text.indexOf("bcast:");
    if (i < 0) return;
    const seq = parseInt(text.slice(i + 6, text.indexOf(":", i + 6)), 10);
    const c = (counts.get(seq) || 0) + 1;
    if (c < members) {
      counts.set(seq, c);
      return;
    }
    counts.delete(seq);
    const t = started.get(seq);
    if (t === undefined || phase === null) return;
    started.delete(seq);
    const t1 = now();
    phase.latencies.push(t1 - t);
    phase.last = t1;
    if (!sample) sample = text;
    if (t1 < phase.end) fire();
    else if (!started.size) phase.done();
  }
  for (const ws of sockets) ws.on("message", onMessage);

  function run(window, duration) {
    return new Promise((resolve) => {
      const t0 = now();
      phase = { latencies: [], end: t0 + duration, last: t0, lost: 0, done: null };
      const current = phase;
      const sweep = setInterval(() => {
        const t = now();
        for (const [seq, sent] of started) {
          if (t - sent > 5.0) { // a member missed it (dropped or never sent)
            current.lost += 1;
            started.delete(seq);
            counts.delete(seq);
            if (t < current.end) fire();
          }
        }
        if (!started.size) current.done();
      }, 200);
      current.done = () => {
        clearInterval(sweep);
        phase = null;
        resolve({ latencies: current.latencies, lost: current.lost, elapsed: current.last - t0 });
      };
      for (let k = 0; k < window; k += 1) fire();
    });
  }

  await run(1, args.warmup);
  const stop = cpuMeter(args.watch);
  const closed = await run(1, args.duration);
  const cpu = stop();
  const rate = await run(args.window, args.duration);
  child.stdin.end();
  await new Promise((resolve) => child.once("exit", resolve));
  for (const ws of sockets) ws.terminate();
  const lat = closed.latencies.sort((a, b) => a - b);
  process.stdout.write(JSON.stringify({
    scenario: "fanout",
    engine: "node-ws",
    members,
    failed,
    broadcasts_per_s: rate.elapsed ? rate.latencies.length / rate.elapsed : NaN,
    window: args.window,
    closed_loop_per_s: closed.elapsed ? lat.length / closed.elapsed : NaN,
    p50_ms: percentile(lat, 50) * 1000,
    p99_ms: percentile(lat, 99) * 1000,
    lost: closed.lost + rate.lost,
    sample_frame: sample,
    ...cpu,
  }) + "\n");
}

main().catch((error) => {
  process.stderr.write(`fanout.mjs: ${error.stack || error}\n`);
  process.exit(1);
});
