// Child processes of the harness and what /proc says about them: RSS, peak RSS and CPU time.
// Every child is started here and stopped here, by its PID; nothing is ever killed by name.
import { type ChildProcess, spawn } from "node:child_process";
import { readFileSync, readdirSync } from "node:fs";
import net from "node:net";

/** Clock ticks per second of utime/stime in /proc/<pid>/stat (getconf CLK_TCK; 100 on Linux). */
const CLK_TCK = 100;

export const ROOT = new URL("../../", import.meta.url).pathname.replace(/\/$/, "");

/** A port that was free a moment ago. */
export function freePort(): Promise<number> {
  return new Promise((resolve, reject) => {
    const probe = net.createServer();
    probe.once("error", reject);
    probe.listen(0, "127.0.0.1", () => {
      const { port } = probe.address() as net.AddressInfo;
      probe.close(() => resolve(port));
    });
  });
}

export interface Child {
  name: string;
  pid: number;
  process: ChildProcess;
  /** The last lines the child wrote (stdout and stderr), for error messages. */
  tail(): string;
  /** What the child printed on stdout and stderr so far (kept up to 64 KiB). */
  output(): string;
  exited: Promise<{ code: number | null; signal: NodeJS.Signals | null }>;
  /** SIGTERM, then SIGKILL after graceMs; resolves when the child has exited. */
  stop(graceMs?: number): Promise<void>;
}

const running = new Set<Child>();

/** Starts `node <args>` in the repository root with its own environment. */
export function startNode(name: string, args: string[], env: NodeJS.ProcessEnv): Child {
  const child = spawn(process.execPath, args, { cwd: ROOT, env, stdio: ["ignore", "pipe", "pipe"] });
  if (child.pid === undefined) throw new Error(`could not start ${name}`);
  let out = "";
  const lines: string[] = [];
  const keep = (chunk: string) => {
    for (const line of chunk.split("\n")) if (line !== "") lines.push(line);
    if (lines.length > 60) lines.splice(0, lines.length - 60);
  };
  const both = (chunk: string) => {
    if (out.length < 65536) out += chunk;
    keep(chunk);
  };
  child.stdout!.setEncoding("utf8").on("data", both);
  child.stderr!.setEncoding("utf8").on("data", both);
  const exited = new Promise<{ code: number | null; signal: NodeJS.Signals | null }>((resolve) =>
    child.once("exit", (code, signal) => resolve({ code, signal })),
  );
  const handle: Child = {
    name,
    pid: child.pid,
    process: child,
    tail: () => lines.join("\n"),
    output: () => out,
    exited,
    async stop(graceMs = 15_000) {
      if (child.exitCode === null && child.signalCode === null) {
        child.kill("SIGTERM");
        const timer = setTimeout(() => child.kill("SIGKILL"), graceMs);
        await exited;
        clearTimeout(timer);
      }
      running.delete(handle);
    },
  };
  running.add(handle);
  void exited.then(() => running.delete(handle));
  return handle;
}

/** Kills (SIGKILL, by PID) every child still running: the harness's last resort on a failure. */
export function killAllChildren(): void {
  for (const child of running) {
    try {
      process.kill(child.pid, "SIGKILL");
    } catch {
      // already gone
    }
  }
  running.clear();
}

/** Resolves with the first match of `pattern` in the child's output, or rejects on exit or timeout. */
export function waitForOutput(child: Child, pattern: RegExp, timeoutMs: number): Promise<RegExpExecArray> {
  return new Promise((resolve, reject) => {
    const started = Date.now();
    const timer = setInterval(() => {
      const match = pattern.exec(child.output());
      if (match) {
        clearInterval(timer);
        resolve(match);
      } else if (child.process.exitCode !== null || child.process.signalCode !== null) {
        clearInterval(timer);
        reject(new Error(`${child.name} exited before it was ready:\n${child.tail()}`));
      } else if (Date.now() - started > timeoutMs) {
        clearInterval(timer);
        reject(new Error(`${child.name} was not ready within ${timeoutMs} ms:\n${child.tail()}`));
      }
    }, 50);
  });
}

/** Resident set size and its peak (VmHWM), in bytes, from /proc/<pid>/status; null once it is gone. */
export function memoryOf(pid: number): { rss: number; hwm: number } | null {
  try {
    const status = readFileSync(`/proc/${pid}/status`, "utf8");
    const kb = (field: string) => Number(new RegExp(`^${field}:\\s+(\\d+) kB`, "m").exec(status)?.[1] ?? NaN) * 1024;
    return { rss: kb("VmRSS"), hwm: kb("VmHWM") };
  } catch {
    return null;
  }
}

/** CPU time (user + system) of a process, in microseconds; null once it is gone. */
export function cpuOf(pid: number): number | null {
  try {
    const stat = readFileSync(`/proc/${pid}/stat`, "utf8");
    // The command name (field 2) may hold spaces: count fields after its closing parenthesis.
    const fields = stat.slice(stat.lastIndexOf(")") + 2).split(" ");
    const ticks = Number(fields[11]) + Number(fields[12]); // utime, stime (fields 14 and 15)
    return (ticks * 1_000_000) / CLK_TCK;
  } catch {
    return null;
  }
}

/** CPU time (user + system, µs) of each live process whose command is `comm` (for example "postgres"), by PID. */
export function cpuByPid(comm: string): Map<number, number> {
  const out = new Map<number, number>();
  for (const entry of readdirSync("/proc")) {
    if (!/^\d+$/.test(entry)) continue;
    try {
      const stat = readFileSync(`/proc/${entry}/stat`, "utf8");
      const name = stat.slice(stat.indexOf("(") + 1, stat.lastIndexOf(")"));
      if (name !== comm) continue;
      const fields = stat.slice(stat.lastIndexOf(")") + 2).split(" ");
      out.set(Number(entry), ((Number(fields[11]) + Number(fields[12])) * 1_000_000) / CLK_TCK);
    } catch {
      // a process that ended while we looked
    }
  }
  return out;
}

/** Busy and total CPU time of the whole machine, in µs, from /proc/stat. */
export function machineCpu(): { busy: number; total: number } {
  const line = readFileSync("/proc/stat", "utf8").split("\n")[0]!;
  const values = line.trim().split(/\s+/).slice(1).map(Number);
  const [user = 0, nice = 0, system = 0, idle = 0, iowait = 0, irq = 0, softirq = 0, steal = 0] = values;
  const busy = user + nice + system + irq + softirq + steal;
  return { busy: (busy * 1_000_000) / CLK_TCK, total: ((busy + idle + iowait) * 1_000_000) / CLK_TCK };
}

/** Samples a process's RSS every `everyMs`; stop() returns the samples. */
export function sampleRss(pid: number, everyMs: number): { stop(): Array<{ t: number; rss: number }>; peak(): number } {
  const samples: Array<{ t: number; rss: number }> = [];
  let peak = 0;
  const take = () => {
    const m = memoryOf(pid);
    if (m) {
      samples.push({ t: Date.now(), rss: m.rss });
      peak = Math.max(peak, m.rss, m.hwm);
    }
  };
  take();
  const timer = setInterval(take, everyMs);
  return {
    stop() {
      clearInterval(timer);
      take();
      return samples;
    },
    peak: () => peak,
  };
}
