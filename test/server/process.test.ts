// Given the real process (`node --import tsx src/cli.ts serve --catalog examples/catalog.json`) with
// no secret key configured, when it is started, called with `buf curl` as a README would show, and
// stopped with SIGTERM while Tracks are in flight, then: it prints both addresses and a development
// key, the key works on both listeners, it exits 0, every Track answered ALLOWED is in the ledger
// after a restart on the same data directory, and the restart prints the same development key.
import { type ChildProcess, execFile, spawn } from "node:child_process";
import { readFile } from "node:fs/promises";
import net from "node:net";
import path from "node:path";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { createClient, type Transport } from "@connectrpc/connect";
import { createConnectTransport, createGrpcTransport } from "@connectrpc/connect-node";
import { MeteringService } from "../../gen/meterd/v1/metering_pb.js";
import { Decision } from "../../gen/meterd/v1/usage_pb.js";
import { makeDataDir, removeDir, ROOT, Sessions } from "./harness.js";

const STARTUP_TIMEOUT_MS = 60_000;
const sleep = (ms: number): Promise<void> => new Promise((resolve) => setTimeout(resolve, ms));

/** A port that was free a moment ago: bind port 0, read the port, close. */
function freePort(): Promise<number> {
  return new Promise((resolve, reject) => {
    const probe = net.createServer();
    probe.once("error", reject);
    probe.listen(0, "127.0.0.1", () => {
      const { port } = probe.address() as net.AddressInfo;
      probe.close(() => resolve(port));
    });
  });
}

interface Exit {
  code: number | null;
  signal: NodeJS.Signals | null;
}

interface Meterd {
  child: ChildProcess;
  grpcPort: number;
  httpPort: number;
  devKey: string;
  stdout: () => string;
  stderr: () => string;
  exited: Promise<Exit>;
}

const running = new Set<ChildProcess>();

/** Spawns `meterd serve` and resolves once it has printed both addresses and the development key. */
async function spawnMeterd(dataDir: string): Promise<Meterd> {
  const [grpcPort, httpPort] = [await freePort(), await freePort()];
  const env: NodeJS.ProcessEnv = { ...process.env };
  for (const name of Object.keys(env)) {
    if (name.startsWith("METERD_") || name === "DATABASE_URL" || name === "REDIS_URL") delete env[name];
  }
  // Every call in the access log, not a sample of the Tracks: the test reads their lines.
  Object.assign(env, { METERD_GRPC_PORT: String(grpcPort), METERD_HTTP_PORT: String(httpPort), METERD_DATA_DIR: dataDir, METERD_ACCESS_LOG_SAMPLE: "1" });

  const child = spawn(process.execPath, ["--import", "tsx", "src/cli.ts", "serve", "--catalog", "examples/catalog.json"], {
    cwd: ROOT,
    env,
    stdio: ["ignore", "pipe", "pipe"],
  });
  running.add(child);
  let stdout = "";
  let stderr = "";
  child.stdout!.setEncoding("utf8").on("data", (chunk: string) => (stdout += chunk));
  child.stderr!.setEncoding("utf8").on("data", (chunk: string) => (stderr += chunk));
  const exited = new Promise<Exit>((resolve) =>
    child.once("exit", (code, signal) => {
      running.delete(child);
      resolve({ code, signal });
    }),
  );

  const ready = await new Promise<{ grpc: number; http: number; key: string }>((resolve, reject) => {
    const timer = setTimeout(() => reject(new Error(`meterd did not start in time\nstdout:\n${stdout}\nstderr:\n${stderr}`)), STARTUP_TIMEOUT_MS);
    const look = (): void => {
      // Each value must be followed by whitespace, so that a line cut between two chunks is not taken.
      // The banner goes to stderr: stdout holds the JSON log lines only.
      const grpc = /^ {2}gRPC +127\.0\.0\.1:(\d+)\s/m.exec(stderr);
      const http = /^ {2}Connect +http:\/\/127\.0\.0\.1:(\d+)\s/m.exec(stderr);
      const key = /^ {2}development key.*\n?.*?(sk_dev_[A-Za-z0-9_-]+)\s/m.exec(stderr);
      if (grpc && http && key) {
        clearTimeout(timer);
        child.stderr!.off("data", look);
        resolve({ grpc: Number(grpc[1]), http: Number(http[1]), key: key[1]! });
      }
    };
    child.stderr!.on("data", look);
    void exited.then((exit) => {
      clearTimeout(timer);
      reject(new Error(`meterd exited (${JSON.stringify(exit)}) before it was ready\nstdout:\n${stdout}\nstderr:\n${stderr}`));
    });
  });
  expect(ready.grpc).toBe(grpcPort);
  expect(ready.http).toBe(httpPort);
  return { child, grpcPort, httpPort, devKey: ready.key, stdout: () => stdout, stderr: () => stderr, exited };
}

/** `npx buf curl --schema proto ...` from the repository root, as the README shows it. */
function bufCurl(args: string[]): Promise<{ code: number; stdout: string; stderr: string }> {
  return new Promise((resolve) => {
    execFile("npx", ["buf", "curl", "--schema", "proto", ...args], { cwd: ROOT, timeout: 30_000 }, (err, stdout, stderr) => {
      resolve({ code: err === null ? 0 : typeof err.code === "number" ? err.code : 1, stdout, stderr });
    });
  });
}

let dataDir: string;
const sessions = new Sessions();

beforeAll(async () => {
  dataDir = await makeDataDir();
});

afterAll(async () => {
  sessions.abortAll();
  for (const child of running) child.kill("SIGKILL");
  await removeDir(dataDir);
});

describe("meterd serve, the process", () => {
  let first: Meterd;
  const acked: Array<{ key: string; eventId: string }> = [];
  let attempted = 0;
  const CUSTOMER = "cust-process";

  it("prints both addresses and a new development key, and the key works with buf curl on both listeners", { timeout: 120_000 }, async () => {
    first = await spawnMeterd(dataDir);
    expect(first.stderr()).toMatch(/meterd is serving \(embedded storage, catalogue examples\/catalog\.json\)/);
    // stdout is for a log collector: JSON lines and nothing else.
    const logLines = first.stdout().split("\n").filter((line) => line !== "");
    expect(logLines.length).toBeGreaterThan(0);
    for (const line of logLines) expect(() => JSON.parse(line), line).not.toThrow();
    const key = first.devKey;
    expect(key).toMatch(/^sk_dev_[A-Za-z0-9_-]{43}$/);
    const keyFile = path.join(dataDir, "dev-key");
    expect(first.stderr()).toContain(`  development key (made now, kept in ${keyFile}):\n    ${key}\n`);
    expect((await readFile(keyFile, "utf8")).trim()).toBe(key);

    const body = (idempotencyKey: string) =>
      JSON.stringify({ customer_id: "cust-curl", feature_key: "api_calls", amount: 1, idempotency_key: idempotencyKey });
    const viaGrpc = await bufCurl([
      "--protocol", "grpc", "--http2-prior-knowledge",
      "-H", `authorization: Bearer ${key}`,
      "-d", body("curl-grpc"),
      `http://127.0.0.1:${first.grpcPort}/meterd.v1.MeteringService/Track`,
    ]);
    expect(viaGrpc.stderr).not.toMatch(/"code"/);
    expect(viaGrpc.code).toBe(0);
    expect(JSON.parse(viaGrpc.stdout)).toMatchObject({ decision: "DECISION_ALLOWED", usage: { featureKey: "api_calls", consumed: 1, limit: 1000, remaining: 999 } });

    const viaConnect = await bufCurl([
      "--protocol", "connect",
      "-H", `authorization: Bearer ${key}`,
      "-d", body("curl-connect"),
      `http://127.0.0.1:${first.httpPort}/meterd.v1.MeteringService/Track`,
    ]);
    expect(viaConnect.stderr).not.toMatch(/"code"/);
    expect(viaConnect.code).toBe(0);
    expect(JSON.parse(viaConnect.stdout)).toMatchObject({ decision: "DECISION_ALLOWED", usage: { consumed: 2, remaining: 998 } });

    // The same command again is a replay of the first event.
    const replay = await bufCurl([
      "--protocol", "connect",
      "-H", `authorization: Bearer ${key}`,
      "-d", body("curl-connect"),
      `http://127.0.0.1:${first.httpPort}/meterd.v1.MeteringService/Track`,
    ]);
    expect(JSON.parse(replay.stdout)).toMatchObject({ eventId: JSON.parse(viaConnect.stdout).eventId, duplicate: true });

    // One access-log line per call, naming the key by its id: the key itself is never logged.
    const access = () =>
      first
        .stdout()
        .split("\n")
        .filter((line) => line.includes('"access":true'))
        .map((line) => JSON.parse(line) as { procedure: string; protocol: string; code: string; ms: number; key?: string });
    for (let waited = 0; access().length < 3 && waited < 5000; waited += 50) await sleep(50);
    expect(access().map((l) => [l.procedure, l.protocol, l.code])).toEqual([
      ["/meterd.v1.MeteringService/Track", "grpc", "OK"],
      ["/meterd.v1.MeteringService/Track", "connect", "OK"],
      ["/meterd.v1.MeteringService/Track", "connect", "OK"],
    ]);
    for (const line of access()) expect(line.key).toMatch(/^[\w-]+$/);
    expect(first.stdout()).not.toContain(key);

    const noKey = await bufCurl(["--protocol", "connect", "-d", body("curl-nokey"), `http://127.0.0.1:${first.httpPort}/meterd.v1.MeteringService/Track`]);
    expect(noKey.code).not.toBe(0);
    expect(noKey.stderr).toMatch(/"code": "unauthenticated"/);
  });

  it("SIGTERM while Tracks are in flight: exits 0 after answering what it took", { timeout: 120_000 }, async () => {
    const headers = { authorization: `Bearer ${first.devKey}` };
    const grpcUrl = `http://127.0.0.1:${first.grpcPort}`;
    const transports: Transport[] = [
      createConnectTransport({ baseUrl: `http://127.0.0.1:${first.httpPort}`, httpVersion: "1.1" }),
      createGrpcTransport({ baseUrl: grpcUrl, sessionManager: sessions.h2(grpcUrl) }),
    ];
    const WORKERS_PER_TRANSPORT = 6;
    const SIGTERM_AFTER_ACKS = 60;
    const MAX_ATTEMPTS = 900; // under the default plan's 1,000 calls: no denial muddles the count
    let signalled = false;
    let signalledAt = 0;
    const failures: string[] = [];

    async function worker(transport: Transport, w: number): Promise<void> {
      const client = createClient(MeteringService, transport);
      for (let i = 0; attempted < MAX_ATTEMPTS; i++) {
        const key = `sig-${w}-${i}`;
        attempted++;
        try {
          const res = await client.track({ customerId: CUSTOMER, featureKey: "api_calls", amount: 1, idempotencyKey: key }, { headers, timeoutMs: 15_000 });
          if (res.decision === Decision.ALLOWED) acked.push({ key, eventId: res.eventId });
        } catch (err) {
          // After SIGTERM a call may be refused or cut; before it, nothing may fail.
          if (!signalled) failures.push(String(err));
          return;
        }
        if (!signalled && acked.length >= SIGTERM_AFTER_ACKS) {
          signalled = true;
          signalledAt = acked.length;
          first.child.kill("SIGTERM");
        }
      }
    }

    const workers = transports.flatMap((t, ti) => Array.from({ length: WORKERS_PER_TRANSPORT }, (_, i) => worker(t, ti * 100 + i)));
    await Promise.all(workers);
    const exit = await first.exited;

    expect(failures).toEqual([]);
    expect(signalled).toBe(true);
    expect(exit, first.stderr()).toEqual({ code: 0, signal: null });
    // Calls were in flight when the signal came, and were answered while it shut down.
    expect(acked.length).toBeGreaterThan(signalledAt);
    expect(attempted).toBeGreaterThan(acked.length);
    expect(attempted).toBeLessThan(MAX_ATTEMPTS);
  });

  it("a restart on the same data directory prints the same development key, and holds every ALLOWED Track", { timeout: 120_000 }, async () => {
    const second = await spawnMeterd(dataDir);
    expect(second.devKey).toBe(first.devKey);
    expect(second.stderr()).toContain(`  development key: ${first.devKey}  (from ${path.join(dataDir, "dev-key")})\n`);
    expect(second.stderr()).not.toMatch(/made now/);

    const client = createClient(MeteringService, createConnectTransport({ baseUrl: `http://127.0.0.1:${second.httpPort}`, httpVersion: "1.1" }));
    const headers = { authorization: `Bearer ${second.devKey}` };
    const { metrics } = await client.getMetrics({ customerId: CUSTOMER, featureKey: "api_calls" }, { headers });
    const consumed = metrics[0]?.consumed ?? -1;
    expect(consumed).toBeGreaterThanOrEqual(acked.length);
    expect(consumed).toBeLessThanOrEqual(attempted);

    // Each acknowledged event, by its key: a replay with the event id it was given.
    const replays = await Promise.all(
      acked.map(({ key }) => client.track({ customerId: CUSTOMER, featureKey: "api_calls", amount: 1, idempotencyKey: key }, { headers })),
    );
    expect(replays.map((r) => [r.eventId, r.duplicate])).toEqual(acked.map((a) => [a.eventId, true]));
    expect((await client.getMetrics({ customerId: CUSTOMER, featureKey: "api_calls" }, { headers })).metrics[0]?.consumed).toBe(consumed);

    // The buf curl events of the first run are there too.
    const curl = await client.getMetrics({ customerId: "cust-curl", featureKey: "api_calls" }, { headers });
    expect(curl.metrics[0]?.consumed).toBe(2);

    second.child.kill("SIGTERM");
    expect(await second.exited).toEqual({ code: 0, signal: null });
  });
});
