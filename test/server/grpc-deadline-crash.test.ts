// Given the real meterd process (`meterd serve`, embedded storage), when gRPC calls arrive whose
// deadline has already passed or passes at once (grpc-timeout 1n on an invalid Track; 20 grpc-js
// Tracks with a 2 ms deadline) or lies further ahead than a Node timer holds (a TrackStream with a
// 30-day deadline), then the process does not exit: no promise is left without a handler, later calls
// are answered, and the long stream keeps working past its first message.
import { mkdtemp, rm } from "node:fs/promises";
import { tmpdir } from "node:os";
import path from "node:path";
import { create, fromBinary, toBinary } from "@bufbuild/protobuf";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import {
  TrackRequestSchema,
  TrackResponseSchema,
  TrackStreamRequestSchema,
  TrackStreamResponseSchema,
} from "../../gen/meterd/v1/metering_pb.js";
import { Decision } from "../../gen/meterd/v1/usage_pb.js";
import { EXAMPLE_CATALOG, exitWithin, KEY, killAllSpawned, type MeterdProcess, sleep, spawnMeterd } from "../faults/support.js";
import { bearer, RawGrpcClient } from "../support/grpc-raw.js";
import { envelope, h2Request, outcomeOf } from "../support/raw-http.js";

const DAY_MS = 86_400_000;
const TRACK = "/meterd.v1.MeteringService/Track";
const TRACK_STREAM = "/meterd.v1.MeteringService/TrackStream";

/** The process under test and a grpc-js client of it. */
interface Subject {
  meterd: MeterdProcess;
  client: RawGrpcClient;
}

/**
 * A meterd process of its own for the enclosing describe block, so that one block's crash cannot
 * fail another's tests.
 */
function spawnForBlock(): Subject {
  const subject = {} as Subject;
  let dataDir: string | undefined;
  beforeAll(async () => {
    dataDir = await mkdtemp(path.join(tmpdir(), "meterd-deadlines-"));
    subject.meterd = await spawnMeterd({
      METERD_SECRET_KEYS: KEY,
      METERD_CATALOG: EXAMPLE_CATALOG,
      METERD_GRPC_PORT: "0",
      METERD_HTTP_PORT: "0",
      METERD_DATA_DIR: dataDir,
    });
    subject.client = new RawGrpcClient(subject.meterd.grpcPort);
  }, 90_000);
  afterAll(async () => {
    subject.client?.close();
    if (subject.meterd !== undefined && (await exitWithin(subject.meterd, 0)) === null) {
      subject.meterd.child.kill("SIGKILL");
      await subject.meterd.exited;
    }
    if (dataDir !== undefined) await rm(dataDir, { recursive: true, force: true });
  });
  return subject;
}

afterAll(() => killAllSpawned());

const trackBytes = (init: { customerId: string; idempotencyKey?: string }) =>
  Buffer.from(toBinary(TrackRequestSchema, create(TrackRequestSchema, { featureKey: "api_calls", amount: 1, ...init })));

/** Fails the test, with the process's output, if meterd has exited within `ms`. */
async function expectAlive({ meterd }: Subject, ms: number): Promise<void> {
  const exit = await exitWithin(meterd, ms);
  expect(exit, `meterd exited:\n${meterd.output()}`).toBeNull();
}

/** The same process answers a normal call, and never warned of a timer overflow nor an unhandled rejection. */
async function expectServing(subject: Subject): Promise<void> {
  const ok = await subject.client.unary(TRACK, trackBytes({ customerId: "cus_after", idempotencyKey: `after-${Date.now()}` }), bearer(KEY), Date.now() + 10_000);
  expect(codeName(ok.code)).toBe("OK");
  expect(fromBinary(TrackResponseSchema, ok.response!).decision).toBe(Decision.ALLOWED);
  expect(subject.meterd.output()).not.toMatch(/TimeoutOverflowWarning|unhandled ?rejection|UnhandledPromiseRejection/i);
  await expectAlive(subject, 0);
}

describe("deadlines that have passed", () => {
  const subject = spawnForBlock();

  it.each([
    ["an invalid Track (customer_id empty)", ""],
    ["a valid Track", "cus_expired"],
  ])("%s with grpc-timeout 1n does not stop the process, on either listener", async (_name, customerId) => {
    for (const port of [subject.meterd.grpcPort, subject.meterd.httpPort]) {
      for (let i = 0; i < 5; i++) {
        const answer = await h2Request(port, {
          path: TRACK,
          headers: { "content-type": "application/grpc", te: "trailers", "grpc-timeout": "1n", authorization: `Bearer ${KEY}` },
          body: envelope(trackBytes({ customerId, idempotencyKey: `expired-${port}-${i}` })),
        });
        // An answer at all, in gRPC form; which one depends on a race with the deadline.
        expect(outcomeOf("grpc", answer).code).toMatch(/^(deadline_exceeded|invalid_argument|ok)$/);
      }
    }
    // The unhandled rejection, when there was one, ended the process within a moment.
    await expectAlive(subject, 1000);
  });

  it("20 grpc-js Tracks with a 2 ms deadline, valid and invalid, do not stop the process", async () => {
    const calls = Array.from({ length: 20 }, (_, i) =>
      subject.client.unary(TRACK, trackBytes({ customerId: i % 2 === 0 ? "" : "cus_2ms", idempotencyKey: `2ms-${i}` }), bearer(KEY), Date.now() + 2),
    );
    const outcomes = await Promise.all(calls);
    for (const o of outcomes) expect(["OK", "DEADLINE_EXCEEDED", "INVALID_ARGUMENT"]).toContain(codeName(o.code));
    // A deadline already in the past when the call is made.
    const past = await subject.client.unary(TRACK, trackBytes({ customerId: "", idempotencyKey: "past" }), bearer(KEY), Date.now() - 1);
    expect(codeName(past.code)).toBe("DEADLINE_EXCEEDED");
    await expectAlive(subject, 1000);
  });

  it("afterwards, the same process serves", async () => {
    await expectServing(subject);
  });
});

describe("deadlines longer than a Node timer holds", () => {
  const subject = spawnForBlock();

  it.each([
    ["30 days", 30 * DAY_MS],
    ["one-year", 365 * DAY_MS],
    ["2^40 ms", 2 ** 40],
  ])("a grpc-js TrackStream with a %s deadline stays open and acknowledges each request", async (_name, ms) => {
    const customerId = `cus_long_${ms}`;
    const stream = subject.client.bidi(TRACK_STREAM, bearer(KEY), Date.now() + ms);
    const received: Buffer[] = [];
    const ended = new Promise<{ code: number; details: string }>((resolve) => {
      stream.on("data", (chunk: Buffer) => received.push(chunk));
      stream.on("status", (status: { code: number; details: string }) => resolve(status));
      stream.on("error", () => {}); // the status says it
    });
    const send = (key: string) =>
      stream.write(Buffer.from(toBinary(TrackStreamRequestSchema, create(TrackStreamRequestSchema, { events: [{ customerId, featureKey: "api_calls", amount: 1, idempotencyKey: key }] }))));
    const acknowledged = async (count: number) => {
      for (let waited = 0; received.length < count && waited < 10_000; waited += 20) await sleep(20);
      return received.length;
    };

    send("long-1");
    expect(await acknowledged(1)).toBe(1);
    // Well past the moment an overflowing or negative deadline would have ended the call.
    await sleep(1500);
    send("long-2");
    expect(await acknowledged(2)).toBe(2);
    stream.end();
    expect(await ended).toMatchObject({ code: 0 });

    const responses = received.map((bytes) => fromBinary(TrackStreamResponseSchema, bytes));
    expect(responses.map((r) => r.sequence)).toEqual([1n, 2n]);
    for (const r of responses) {
      const result = r.results[0]?.outcome;
      expect(result?.case === "tracked" ? result.value.decision : result?.case).toBe(Decision.ALLOWED);
    }
    await expectAlive(subject, 200);
  });

  it("afterwards, the same process serves", async () => {
    await expectServing(subject);
  });
});

function codeName(code: number): string {
  return ["OK", "CANCELLED", "UNKNOWN", "INVALID_ARGUMENT", "DEADLINE_EXCEEDED"][code] ?? String(code);
}
