// The build (`npm run build`, scripts/build.mjs). Given the build written to a fresh directory inside
// the repository, when the compiled command line runs with plain node (no tsx) on Redis and Postgres,
// with its own database and prefix, then: `--help` works through the file's own shebang; `serve`
// prints the same banner as the source; a Track over each listener is ALLOWED and in the ledger (the
// Redis scripts and the ledger migrations were found next to the compiled files); the usage page and
// its script, bundled at run time from the copied web/, are served; SIGTERM exits 0. The same holds
// with --workers 2.
import { type ChildProcess, execFile, spawn } from "node:child_process";
import { randomBytes, randomUUID } from "node:crypto";
import { rm, stat } from "node:fs/promises";
import path from "node:path";
import { promisify } from "node:util";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { Decision } from "../../gen/meterd/v1/usage_pb.js";
import {
  type Backing,
  clientsOf,
  faultsSkipReason,
  headers,
  ledgerRows,
  meterdEnv,
  openBacking,
  ROOT,
  Sessions,
} from "../faults/support.js";

const run = promisify(execFile);
const skip = await faultsSkipReason();

// Inside the repository, so that the compiled files resolve packages from its node_modules.
const OUT = path.join(ROOT, "node_modules", ".cache", `meterd-build-test-${randomBytes(4).toString("hex")}`);
const CLI = path.join(OUT, "src", "cli.js");

interface Served {
  child: ChildProcess;
  output: () => string;
  grpcPort: number;
  httpPort: number;
  exited: Promise<{ code: number | null; signal: NodeJS.Signals | null }>;
}

const running = new Set<ChildProcess>();

/** Runs `node <build>/src/cli.js serve ...args` and waits for the banner (with the workers' line when asked). */
async function serveBuild(env: Record<string, string>, args: string[], waitFor: RegExp): Promise<Served> {
  const childEnv: NodeJS.ProcessEnv = { ...process.env };
  for (const name of Object.keys(childEnv)) {
    if (name.startsWith("METERD_") || name === "DATABASE_URL" || name === "REDIS_URL") delete childEnv[name];
  }
  // No tsx anywhere: not in the flags, and not through NODE_OPTIONS.
  delete childEnv.NODE_OPTIONS;
  Object.assign(childEnv, { METERD_LOG_LEVEL: "warn", ...env });
  const child = spawn(process.execPath, [CLI, "serve", ...args], { cwd: ROOT, env: childEnv, stdio: ["ignore", "pipe", "pipe"] });
  running.add(child);
  let output = "";
  child.stdout!.setEncoding("utf8").on("data", (chunk: string) => (output += chunk));
  child.stderr!.setEncoding("utf8").on("data", (chunk: string) => (output += chunk));
  const exited = new Promise<{ code: number | null; signal: NodeJS.Signals | null }>((resolve) =>
    child.once("exit", (code, signal) => {
      running.delete(child);
      resolve({ code, signal });
    }),
  );
  const ports = await new Promise<{ grpcPort: number; httpPort: number }>((resolve, reject) => {
    const timer = setTimeout(() => reject(new Error(`the build did not start in time\n${output}`)), 60_000);
    const look = (): void => {
      const grpc = /^ {2}gRPC +127\.0\.0\.1:(\d+)\s/m.exec(output);
      const http = /^ {2}Connect +http:\/\/127\.0\.0\.1:(\d+)\s/m.exec(output);
      if (grpc && http && waitFor.test(output)) {
        clearTimeout(timer);
        child.stdout!.off("data", look);
        child.stderr!.off("data", look);
        resolve({ grpcPort: Number(grpc[1]), httpPort: Number(http[1]) });
      }
    };
    // The banner is on stderr, the log lines on stdout.
    child.stdout!.on("data", look);
    child.stderr!.on("data", look);
    void exited.then((exit) => {
      clearTimeout(timer);
      reject(new Error(`the build exited (${JSON.stringify(exit)}) before it was ready\n${output}`));
    });
  });
  return { child, output: () => output, exited, ...ports };
}

describe("npm run build", () => {
  beforeAll(async () => {
    await run(process.execPath, ["scripts/build.mjs", "--outdir", OUT], { cwd: ROOT });
  }, 120_000);

  afterAll(async () => {
    for (const child of running) child.kill("SIGKILL");
    await rm(OUT, { recursive: true, force: true });
  });

  it("makes an executable command line that runs without tsx", { timeout: 60_000 }, async () => {
    expect((await stat(CLI)).mode & 0o111).not.toBe(0);
    const { stdout } = await run(CLI, ["--help"], { cwd: ROOT, env: { ...process.env, NODE_OPTIONS: "" } });
    expect(stdout).toMatch(/^Usage: meterd <command> \[options\]/);
    expect(stdout).toContain("--workers N");
  });

  describe.skipIf(skip !== null)("the compiled server on Redis and Postgres", () => {
    let backing: Backing;
    const sessions = new Sessions();

    beforeAll(async () => {
      backing = await openBacking();
    });

    afterAll(async () => {
      sessions.abortAll();
      await backing?.cleanup();
    });

    for (const workers of [1, 2]) {
      it(`serves with --workers ${workers}: the same banner, Track on both listeners, the usage page; SIGTERM exits 0`, { timeout: 90_000 }, async () => {
        const served = await serveBuild(
          meterdEnv(backing),
          ["--workers", String(workers)],
          workers === 1 ? /usage page/ : /^ {2}workers +2 \(pids \d+, \d+\)\s/m,
        );
        const lines = served.output().split("\n").filter((l) => !l.startsWith("{"));
        expect(lines.slice(0, 4)).toEqual([
          `meterd is serving (redis + postgres storage, catalogue ${path.join(ROOT, "examples/catalog.json")})`,
          `  gRPC     127.0.0.1:${served.grpcPort}   (grpc-js: internal services)`,
          `  Connect  http://127.0.0.1:${served.httpPort}   (Connect, gRPC-web and gRPC over HTTP/1.1 and h2c)`,
          `  usage page  http://127.0.0.1:${served.httpPort}/ui/   (open it with #token=<a customer token>)`,
        ]);

        const c = clientsOf(served, sessions);
        const customerId = `cust-build-${randomUUID().slice(0, 8)}`;
        const viaGrpc = await c.grpc.track({ customerId, featureKey: "api_calls", amount: 1, idempotencyKey: "b-1" }, { headers, timeoutMs: 15_000 });
        const viaConnect = await c.connect.track({ customerId, featureKey: "api_calls", amount: 1, idempotencyKey: "b-2" }, { headers, timeoutMs: 15_000 });
        expect([viaGrpc.decision, viaConnect.decision]).toEqual([Decision.ALLOWED, Decision.ALLOWED]);
        const rows = await ledgerRows(backing.pool, customerId);
        expect(new Map(rows.map((r) => [r.idempotency_key, r.id]))).toEqual(
          new Map([
            ["b-1", viaGrpc.eventId],
            ["b-2", viaConnect.eventId],
          ]),
        );

        const page = await fetch(`http://127.0.0.1:${served.httpPort}/ui/`);
        expect(page.status).toBe(200);
        expect(await page.text()).toContain("<html");
        const script = await fetch(`http://127.0.0.1:${served.httpPort}/ui/app.js`);
        expect(script.status).toBe(200);
        expect(script.headers.get("content-type")).toMatch(/^text\/javascript/);
        expect((await script.text()).length).toBeGreaterThan(1000);

        served.child.kill("SIGTERM");
        expect(await served.exited, served.output().slice(-3000)).toEqual({ code: 0, signal: null });
      });
    }
  });
});
