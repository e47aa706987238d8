// Shared by the Node bench clients (fanout.mjs, rtt.mjs): a clock and CPU shares over a window.

import { readFileSync } from "node:fs";

const CLK_TCK = 100; // Linux USER_HZ

export const now = () => Number(process.hrtime.bigint()) / 1e9;

function procCpu(pid) {
  const stat = readFileSync(`/proc/${pid}/stat`, "latin1");
  const fields = stat.slice(stat.lastIndexOf(")") + 2).split(" ");
  return (parseInt(fields[11], 10) + parseInt(fields[12], 10)) / CLK_TCK;
}

// Start measuring; the returned function gives the wall time and the CPU share (of one core) of
// this process and of each watched pid since then.
export function cpuMeter(watch) {
  const t0 = now();
  const self0 = process.cpuUsage();
  const w0 = Object.fromEntries(watch.map((pid) => [pid, procCpu(pid)]));
  return () => {
    const wall = now() - t0;
    const self = process.cpuUsage(self0);
    return {
      wall,
      client_cpu: (self.user + self.system) / 1e6 / wall,
      watched_cpu: Object.fromEntries(watch.map((pid) => [pid, (procCpu(pid) - w0[pid]) / wall])),
    };
  };
}
