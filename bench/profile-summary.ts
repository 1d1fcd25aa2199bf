// Summarises a V8 .cpuprofile (node --cpu-prof): the functions with the most self time, this repository's
// functions by total time, and self time by package or source file.
//   node --import tsx bench/profile-summary.ts FILE [N]              the summary, top N (default 25)
//   node --import tsx bench/profile-summary.ts FILE --callers NAME   where NAME's self time comes from
import { readFileSync } from "node:fs";
import { pathToFileURL } from "node:url";

interface ProfileNode {
  id: number;
  callFrame: { functionName: string; url: string; lineNumber: number; columnNumber: number };
  children?: number[];
}

interface Profile {
  nodes: ProfileNode[];
  samples: number[];
  timeDeltas: number[];
  startTime: number;
  endTime: number;
}

/** Where a function lives: an npm package, a file of this repository, node's own code, or V8's buckets. */
export function ownerOf(url: string, name: string): string {
  if (url === "") return name.startsWith("(") ? name : "(native)";
  const pkg = /node_modules\/((?:@[^/]+\/)?[^/]+)/.exec(url);
  if (pkg) return pkg[1]!;
  if (url.startsWith("node:")) return "node:internal";
  const repo = /\/(src|gen|bench)\/(.*)$/.exec(url);
  if (repo) return `${repo[1]}/${repo[2]}`;
  return url;
}

function shortUrl(url: string): string {
  const pkg = /node_modules\/(.*)$/.exec(url);
  if (pkg) return pkg[1]!;
  const repo = /\/((?:src|gen|bench)\/.*)$/.exec(url);
  if (repo) return repo[1]!;
  return url.replace(/^file:\/\//, "");
}

/** Busy (non-idle) time of a profile, in µs: to tell the main thread's profile from a helper thread's. */
export function busyTime(file: string): number {
  const profile = JSON.parse(readFileSync(file, "utf8")) as Profile;
  const idleIds = new Set(profile.nodes.filter((n) => n.callFrame.functionName === "(idle)").map((n) => n.id));
  let busy = 0;
  for (let i = 0; i < profile.samples.length; i++) if (!idleIds.has(profile.samples[i]!)) busy += profile.timeDeltas[i + 1] ?? 0;
  return busy;
}

export function summarizeProfile(file: string, top = 25): string {
  const profile = JSON.parse(readFileSync(file, "utf8")) as Profile;
  const byId = new Map(profile.nodes.map((n) => [n.id, n]));
  const self = new Map<number, number>();
  // Sample i's time is timeDeltas[i + 1] (the time until the next sample), as Chrome DevTools counts it.
  for (let i = 0; i < profile.samples.length; i++) {
    const dt = profile.timeDeltas[i + 1] ?? 0;
    self.set(profile.samples[i]!, (self.get(profile.samples[i]!) ?? 0) + dt);
  }
  const total = profile.endTime - profile.startTime;
  const fnTime = new Map<string, number>();
  const ownerTime = new Map<string, number>();
  for (const [id, us] of self) {
    const node = byId.get(id);
    if (!node) continue;
    const { functionName, url, lineNumber } = node.callFrame;
    const name = functionName || "(anonymous)";
    const key = url === "" ? name : `${name}  ${shortUrl(url)}:${lineNumber + 1}`;
    fnTime.set(key, (fnTime.get(key) ?? 0) + us);
    const owner = ownerOf(url, name);
    ownerTime.set(owner, (ownerTime.get(owner) ?? 0) + us);
  }
  // Inclusive ("total") time of this repository's functions: each sample counts once for every distinct
  // function on its stack, so that recursion is not counted twice.
  const parent = new Map<number, number>();
  for (const n of profile.nodes) for (const c of n.children ?? []) parent.set(c, n.id);
  const keyOf = (node: ProfileNode) => `${node.callFrame.functionName || "(anonymous)"}  ${shortUrl(node.callFrame.url)}:${node.callFrame.lineNumber + 1}`;
  const inclusive = new Map<string, number>();
  for (const [id, us] of self) {
    const seen = new Set<string>();
    for (let at: number | undefined = id; at !== undefined; at = parent.get(at)) {
      const node = byId.get(at)!;
      if (!/\/(src|gen)\//.test(node.callFrame.url) || /node_modules/.test(node.callFrame.url)) continue;
      const key = keyOf(node);
      if (seen.has(key)) continue;
      seen.add(key);
      inclusive.set(key, (inclusive.get(key) ?? 0) + us);
    }
  }
  const idle = fnTime.get("(idle)") ?? 0;
  const busy = total - idle;
  const pct = (us: number, of: number) => `${((us / of) * 100).toFixed(1).padStart(5)}%`;
  const ms = (us: number) => `${(us / 1000).toFixed(0).padStart(7)} ms`;
  const lines = [
    `profile ${(total / 1e6).toFixed(1)} s, idle ${pct(idle, total).trim()}, busy ${(busy / 1e6).toFixed(1)} s; shares below are of busy time`,
    "",
    `top ${top} functions by self time:`,
  ];
  for (const [key, us] of [...fnTime].filter(([k]) => k !== "(idle)").sort((a, b) => b[1] - a[1]).slice(0, top)) {
    lines.push(`  ${ms(us)} ${pct(us, busy)}  ${key}`);
  }
  lines.push("", "this repository's functions by total time (self + what they call):");
  for (const [key, us] of [...inclusive].sort((a, b) => b[1] - a[1]).slice(0, top)) {
    lines.push(`  ${ms(us)} ${pct(us, busy)}  ${key}`);
  }
  lines.push("", "self time by package / file:");
  for (const [owner, us] of [...ownerTime].filter(([k]) => k !== "(idle)").sort((a, b) => b[1] - a[1]).slice(0, 20)) {
    lines.push(`  ${ms(us)} ${pct(us, busy)}  ${owner}`);
  }
  return lines.join("\n");
}

/** The call chains (up to `depth` frames) under which the function `name` spent its self time. */
export function callersOf(file: string, name: string, depth = 6, top = 12): string {
  const profile = JSON.parse(readFileSync(file, "utf8")) as Profile;
  const byId = new Map(profile.nodes.map((n) => [n.id, n]));
  const parent = new Map<number, number>();
  for (const n of profile.nodes) for (const c of n.children ?? []) parent.set(c, n.id);
  const chains = new Map<string, number>();
  let total = 0;
  for (let i = 0; i < profile.samples.length; i++) {
    const id = profile.samples[i]!;
    if (byId.get(id)?.callFrame.functionName !== name) continue;
    const dt = profile.timeDeltas[i + 1] ?? 0;
    total += dt;
    const chain: string[] = [];
    for (let at = parent.get(id), d = 0; at !== undefined && d < depth; at = parent.get(at), d++) {
      const f = byId.get(at)!.callFrame;
      chain.push(`${f.functionName || "(anonymous)"} ${shortUrl(f.url)}`.trim());
    }
    const key = chain.join(" < ");
    chains.set(key, (chains.get(key) ?? 0) + dt);
  }
  const lines = [`${name}: ${(total / 1000).toFixed(0)} ms of self time, called from:`];
  for (const [chain, us] of [...chains].sort((a, b) => b[1] - a[1]).slice(0, top)) lines.push(`  ${(us / 1000).toFixed(0).padStart(7)} ms  ${chain}`);
  return lines.join("\n");
}

if (import.meta.url === pathToFileURL(process.argv[1] ?? "").href) {
  const args = process.argv.slice(2);
  const file = args[0];
  if (!file) {
    process.stderr.write("usage: node --import tsx bench/profile-summary.ts FILE.cpuprofile [TOP | --callers NAME [DEPTH]]\n");
    process.exit(2);
  }
  if (args[1] === "--callers" && args[2]) process.stdout.write(`${callersOf(file, args[2], args[3] ? Number(args[3]) : 6)}\n`);
  else process.stdout.write(`${summarizeProfile(file, args[1] ? Number(args[1]) : 25)}\n`);
}
