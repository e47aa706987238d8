// The rtt scenario of `loadgen.py rtt` on Node's `ws` client: N clients in closed loops send
// {"text": "银行卡丢了怎么挂失?"} and wait for the next frame (the greeting is read first).
// Client frames are masked with random keys and written as ws writes them (header and payload in
// one corked write), which is what browsers and most real clients look like on the wire; loadgen.py
// masks with the all-zero key from a bare epoll loop.
//
//   node bench/node/rtt.mjs --url ws://127.0.0.1:8081/ws --clients 100 --warmup 1 --duration 4 \
//        [--watch <pid>]... [--text ...] [--mask random|zero]
//   node bench/node/rtt.mjs --url A --url B --clients 100 --cycles 6 --duration 1 --settle 0.1  # paired windows:
//        N clients per url, the targets take turns (like loadgen.py rtt --cycles); prints {"windows": [[...], ...]}
//   node bench/node/rtt.mjs --url ... --clients 100 --messages 60   # counted mode (bench/client_instructions.py):
//        connect, print "ready", wait for a line on stdin, run exactly 60 round trips per client, print the result
//
// Prints one JSON object with the fields of loadgen.py's rtt result (msgs_per_s, p50_ms, p99_ms,
// client_cpu, watched_cpu, ...). Bounded: it exits after warmup + duration + 5 s whatever happens.

import WebSocket from "ws";

import { cpuMeter, now } from "./meter.mjs";

const CONNECT_CONCURRENCY = 100;

function parseArgs(argv) {
  const args = { url: [], watch: [], clients: 100, messages: 0, cycles: 0, settle: 0.1, warmup: 1, duration: 4, text: "银行卡丢了怎么挂失?", mask: "random" };
  for (let i = 0; i < argv.length; i += 2) {
    const key = argv[i].replace(/^--/, "");
    const value = argv[i + 1];
    if (key === "url" || key === "watch") args[key].push(value);
    else if (key === "clients" || key === "messages") args[key] = parseInt(value, 10);
    else if (key === "cycles") args[key] = parseInt(value, 10);
    else if (["warmup", "duration", "settle"].includes(key)) args[key] = parseFloat(value);
    else args[key] = value;
  }
  return args;
}

function percentile(sorted, p) {
  if (!sorted.length) return NaN;
  const k = Math.min(sorted.length - 1, Math.max(0, Math.round((p / 100) * (sorted.length - 1))));
  return sorted[k];
}

async function connectAll(urls, n, options) {
  const sockets = [];
  let failed = 0;
  let next = 0;
  async function worker() {
    while (next < n) {
      const url = urls[next % urls.length];
      next += 1;
      try {
        sockets.push(await new Promise((resolve, reject) => {
          const ws = new WebSocket(url, options);
          ws.once("message", () => resolve(ws)); // the greeting
          ws.once("error", reject);
          ws.once("close", () => reject(new Error("closed during handshake")));
        }));
      } catch (error) {
        failed += 1;
        if (failed === 1) process.stderr.write(`rtt.mjs: connection failed: ${error}\n`);
      }
    }
  }
  await Promise.all(Array.from({ length: CONNECT_CONCURRENCY }, worker));
  return { sockets, failed };
}

async function main() {
  const args = parseArgs(process.argv.slice(2));
  const options = { perMessageDeflate: false };
  if (args.mask === "zero") options.generateMask = (mask) => mask.fill(0); // like loadgen.py
  const payload = JSON.stringify({ text: args.text });
  if (args.cycles) return paired(args, options, payload);
  const { sockets, failed } = await connectAll(args.url, args.clients, options);
  if (!sockets.length) throw new Error("no connection could be opened");
  if (args.messages) return counted(sockets, payload, args.messages);
  const latencies = [];
  let errors = 0;
  let drained = 0;
  let sample = "";
  let sampleError = "";
  let stop = null;
  let cpu = null;
  let lost = 0;
  const t0 = now();
  const tStart = t0 + args.warmup;
  const tEnd = tStart + args.duration;
  let active = sockets.length;
  let finish;
  const finished = new Promise((resolve) => { finish = resolve; });
  const bail = setTimeout(() => finish(), (args.warmup + args.duration + 5) * 1000); // replies that never come

  for (const ws of sockets) {
    let sent = now();
    let live = true;
    const retire = (isLost) => {
      if (!live) return;
      live = false;
      if (isLost) lost += 1;
      else drained += 1;
      active -= 1;
      if (!active) finish();
    };
    ws.on("message", (data) => {
      const t = now();
      if (t >= tStart) {
        if (t >= tEnd) { retire(false); return; } // this loop stops; its reply counts for CPU only
        if (stop === null) { stop = cpuMeter(args.watch); }
        const text = data.toString();
        if (!sample) sample = text;
        if (text.includes('"error"')) { errors += 1; if (!sampleError) sampleError = text; }
        else latencies.push(t - sent);
      }
      sent = t;
      ws.send(payload);
    });
    ws.on("close", () => retire(true));
    ws.on("error", () => {});
    ws.send(payload);
  }
  await finished;
  clearTimeout(bail);
  if (stop !== null) cpu = stop();
  for (const ws of sockets) ws.terminate();
  latencies.sort((a, b) => a - b);
  process.stdout.write(JSON.stringify({
    scenario: "rtt",
    engine: "node-ws",
    mask: args.mask,
    clients: sockets.length,
    failed,
    lost_sockets: lost,
    messages: latencies.length,
    error_frames: errors,
    msgs_per_s: latencies.length / args.duration,
    cpu_msgs_per_s: cpu ? (latencies.length + drained) / cpu.wall : NaN,
    p50_ms: percentile(latencies, 50) * 1000,
    p99_ms: percentile(latencies, 99) * 1000,
    sample_reply: sample,
    sample_error: sampleError,
    client_cpu: cpu ? cpu.client_cpu : NaN,
    watched_cpu: cpu ? cpu.watched_cpu : {},
  }) + "\n");
  process.exit(0);
}

// One closed-loop window on `sockets`: every socket sends, and sends again on each reply, until
// `duration` seconds after `warmup`; the replies in flight are read before it resolves (bounded).
function closedLoop(sockets, payload, args, warmup) {
  return new Promise((resolve) => {
    const latencies = [];
    let errors = 0;
    let drained = 0;
    let lost = 0;
    let stop = null;
    const tStart = now() + warmup;
    const tEnd = tStart + args.duration;
    let active = sockets.length;
    let done = false;
    const finish = () => {
      if (done) return;
      done = true;
      clearTimeout(bail);
      const cpu = stop ? stop() : null;
      for (const ws of sockets) { ws.removeAllListeners("message"); ws.removeAllListeners("close"); }
      latencies.sort((a, b) => a - b);
      resolve({
        scenario: "rtt", engine: "node-ws", mask: args.mask, clients: sockets.length, lost_sockets: lost,
        messages: latencies.length, error_frames: errors, msgs_per_s: latencies.length / args.duration,
        cpu_msgs_per_s: cpu ? (latencies.length + drained) / cpu.wall : NaN,
        p50_ms: percentile(latencies, 50) * 1000, p99_ms: percentile(latencies, 99) * 1000,
        client_cpu: cpu ? cpu.client_cpu : NaN, watched_cpu: cpu ? cpu.watched_cpu : {},
      });
    };
    const bail = setTimeout(finish, (warmup + args.duration + 5) * 1000);
    for (const ws of sockets) {
      let sent = now();
      let live = true;
      const retire = (isLost) => {
        if (!live) return;
        live = false;
        if (isLost) lost += 1; else drained += 1;
        active -= 1;
        if (!active) finish();
      };
      ws.on("message", (data) => {
        const t = now();
        if (t >= tStart) {
          if (t >= tEnd) { retire(false); return; }
          if (stop === null) stop = cpuMeter(args.watch);
          if (data.includes('"error"')) errors += 1;
          else latencies.push(t - sent);
        }
        sent = t;
        ws.send(payload);
      });
      ws.on("close", () => retire(true));
      ws.send(payload);
    }
  });
}

async function paired(args, options, payload) {
  const groups = [];
  let failed = 0;
  for (const url of args.url) {
    const { sockets, failed: f } = await connectAll([url], args.clients, options);
    if (!sockets.length) throw new Error(`no connection could be opened to ${url}`);
    for (const ws of sockets) ws.on("error", () => {});
    groups.push(sockets);
    failed += f;
  }
  const windows = groups.map(() => []);
  for (let cycle = 0; cycle < args.cycles; cycle += 1) {
    for (let k = 0; k < groups.length; k += 1) { // each cycle starts with another target
      const index = (cycle + k) % groups.length;
      const result = await closedLoop(groups[index], payload, args, cycle === 0 ? args.warmup : 0);
      windows[index].push({ ...result, cycle, url: args.url[index] });
      await new Promise((resolve) => setTimeout(resolve, args.settle * 1000));
    }
  }
  for (const sockets of groups) for (const ws of sockets) ws.terminate();
  process.stdout.write(JSON.stringify({ scenario: "rtt-paired", engine: "node-ws", failed, windows }) + "\n");
  process.exit(0);
}

async function counted(sockets, payload, messages) {
  process.stdout.write("ready\n");
  await new Promise((resolve) => process.stdin.once("data", resolve));
  const t0 = now();
  await Promise.all(sockets.map((ws) => new Promise((resolve) => {
    let left = messages;
    ws.on("message", () => { left -= 1; if (left > 0) ws.send(payload); else resolve(); });
    ws.send(payload);
  })));
  const wall = now() - t0;
  process.stdout.write(JSON.stringify({ scenario: "rtt-counted", engine: "node-ws", clients: sockets.length,
    messages: sockets.length * messages, wall }) + "\n");
  await new Promise((resolve) => process.stdin.once("data", resolve)); // closing is not per-message work
  for (const ws of sockets) ws.terminate();
  process.exit(0);
}

main().catch((error) => {
  process.stderr.write(`rtt.mjs: ${error.stack || error}\n`);
  process.exit(1);
});
