// Property-based fuzzing of a real meterd process on Redis and Postgres. Given generated malformed
// requests (cases.ts) to both listeners: grpc-js with raw bytes and any deadline, connect-node's
// clients, and HTTP/1.1 and HTTP/2 requests written by hand (garbage and oversized messages, lying
// envelope lengths, bad JSON, strings that are not UTF-8, unpaired surrogates and NULs, nanos out of
// range, truncated and corrupt compression, timeouts from 0 to 2^40 ms), then every answer is a
// non-INTERNAL, non-UNKNOWN, non-5xx error or a correct success (judge.ts), the ledger holds exactly
// the events answered ALLOWED (and none that were refused), and the process is alive at the end.
//
// Seeded and reproducible: the seed is printed; FUZZ_SEED=<seed> replays a run (and FUZZ_PATH=<path>,
// from a failure's report, goes straight to the failing case); FUZZ_RUNS and FUZZ_SECONDS change its
// length (about a minute in all by default).
import { randomBytes } from "node:crypto";
import fc from "fast-check";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { type Backing, exitWithin, faultsSkipReason, KEY, killAllSpawned, type MeterdProcess, meterdEnv, openBacking, spawnMeterd } from "./support.js";
import { fuzzCase } from "./fuzz/cases.js";
import { type Booked, judge, ledgerProblems, type LedgerRow } from "./fuzz/judge.js";
import { Sender } from "./fuzz/send.js";
import { h2Request, outcomeOf } from "../support/raw-http.js";

const SEED = process.env.FUZZ_SEED !== undefined ? Number(process.env.FUZZ_SEED) : randomBytes(4).readInt32LE(0);
const RUNS = Number(process.env.FUZZ_RUNS ?? 1500);
const SECONDS = Number(process.env.FUZZ_SECONDS ?? 50);
/** Smaller than the default, so that oversized messages stay cheap to send. */
const MAX_MESSAGE_BYTES = 65_536;

const skip = await faultsSkipReason();

describe.skipIf(skip !== null)("fuzz: malformed requests to both listeners", () => {
  let backing: Backing;
  let meterd: MeterdProcess;
  let sender: Sender;

  beforeAll(async () => {
    backing = await openBacking();
    meterd = await spawnMeterd({ ...meterdEnv(backing), METERD_MAX_MESSAGE_BYTES: String(MAX_MESSAGE_BYTES) });
    sender = new Sender({ grpc: meterd.grpcPort, http: meterd.httpPort }, KEY, SEED.toString(36).replace("-", "n"));
  }, 90_000);

  afterAll(async () => {
    sender?.close();
    killAllSpawned();
    await backing?.cleanup();
  });

  it(`every answer is a proper error or a correct success; the ledger holds exactly what was ALLOWED (seed ${SEED})`, { timeout: (SECONDS + 60) * 1000 }, async () => {
    console.info(`fuzz seed ${SEED}: replay with FUZZ_SEED=${SEED}`);
    const book: Booked[] = [];
    const tally = new Map<string, number>();
    let sent = 0;

    await fc.assert(
      fc.asyncProperty(fuzzCase, async (c) => {
        const { sent: what, answer } = await sender.send(c);
        sent++;
        const label = `${what.fuzzCase.wire.kind}/${what.fuzzCase.method}: ${answer.code}`;
        tally.set(label, (tally.get(label) ?? 0) + 1);
        const problem = judge(what, answer, book);
        if (problem !== null) {
          throw new Error(`${problem}\ncase: ${JSON.stringify(what.fuzzCase, (_k, v: unknown) => (typeof v === "bigint" ? String(v) : v instanceof Uint8Array ? `bytes(${v.length})` : v))}`);
        }
        // The process must still be there after every call: an exit is the worst answer of all.
        const exit = await exitWithin(meterd, 0);
        if (exit !== null) throw new Error(`meterd exited (${JSON.stringify(exit)}) after this case:\n${meterd.output().slice(-3000)}`);
      }),
      {
        seed: SEED,
        ...(process.env.FUZZ_PATH === undefined ? {} : { path: process.env.FUZZ_PATH }),
        numRuns: RUNS,
        interruptAfterTimeLimit: SECONDS * 1000,
        markInterruptAsFailure: false,
        // No shrinking: each attempt is a call to a live server, and the seed already replays the case.
        endOnFailure: true,
      },
    );

    const counts = [...tally].sort((a, b) => b[1] - a[1]).map(([k, n]) => `${n} ${k}`);
    console.info(`fuzz: ${sent} calls, ${book.length} events booked\n  ${counts.join("\n  ")}`);

    // Let commits of calls that ended without an answer (deadlines) land before reading the ledger.
    await new Promise((resolve) => setTimeout(resolve, 4000));
    const { rows } = await backing.pool.query<LedgerRow>("SELECT id, customer_id, idempotency_key FROM meterd_events");
    expect(ledgerProblems(book, rows)).toEqual([]);
    const allowed = book.filter((b) => b.fate === "allowed").length;
    const indeterminate = book.filter((b) => b.fate === "indeterminate").length;
    expect(rows.length).toBeGreaterThanOrEqual(allowed);
    expect(rows.length).toBeLessThanOrEqual(allowed + indeterminate);
    // A run that allowed nothing would show nothing about the ledger.
    expect(allowed).toBeGreaterThan(0);

    // Alive, and serving on both listeners.
    expect(await exitWithin(meterd, 0)).toBeNull();
    for (const port of [meterd.grpcPort, meterd.httpPort]) {
      const health = await h2Request(port, {
        path: "/grpc.health.v1.Health/Check",
        headers: { "content-type": "application/grpc", te: "trailers" },
        body: Buffer.from([0, 0, 0, 0, 0]),
      });
      expect(outcomeOf("grpc", health).code).toBe("ok");
    }
  });
});
