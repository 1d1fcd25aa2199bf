// A TrackStream whose deadline passes while meterd answers it must still end. grpc-js sends the
// DEADLINE_EXCEEDED status (ending the HTTP/2 stream, trailers to follow) while the handler may be
// writing one more response; grpc-js 1.14 wrote it anyway, after the end, and the failed write kept the
// trailers from ever going out: the client saw HTTP 200 and then nothing (found by test/faults/fuzz).
// Here: gzip-compressed messages (decompressed asynchronously, which widens the window) and a 2 ms
// deadline, many times over; every call must end with a status.
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import type { FuzzCase } from "./fuzz/cases.js";
import { Sender } from "./fuzz/send.js";
import { type Backing, faultsSkipReason, KEY, killAllSpawned, type MeterdProcess, meterdEnv, openBacking, spawnMeterd } from "./support.js";

const skip = await faultsSkipReason();

/** Four events, each its own stream message, all invalid in their own way: answered at once. */
const streamCase = (customer: string): FuzzCase =>
  ({
    wire: { kind: "raw", listener: "grpc-js", protocol: "grpc", binary: true, http: "2" },
    method: "TrackStream",
    body: {
      kind: "messages",
      events: [
        { customerId: "x".repeat(256), featureKey: "api_calls", amount: 2, idempotencyKey: "k", timestamp: null, properties: {} },
        { customerId: customer, featureKey: "storage_gb", amount: 2, idempotencyKey: "k", timestamp: null, properties: { "": "empty key" } },
        { customerId: customer, featureKey: "api_calls", amount: 1, idempotencyKey: "k", timestamp: { offsetSeconds: 30, nanos: 2_147_483_647 }, properties: {} },
        { customerId: customer, featureKey: "api_calls", amount: 3, idempotencyKey: "k", timestamp: null, properties: { p: "nul\u0000" } },
      ],
    },
    compression: "gzip",
    timeoutMs: 2,
    auth: "key",
  }) as unknown as FuzzCase;

describe.skipIf(skip !== null)("a stream whose deadline passes while it is answered", () => {
  let backing: Backing;
  let meterd: MeterdProcess;
  let sender: Sender;

  beforeAll(async () => {
    backing = await openBacking();
    meterd = await spawnMeterd(meterdEnv(backing));
    sender = new Sender({ grpc: meterd.grpcPort, http: meterd.httpPort }, KEY, "stream-deadline");
  }, 90_000);

  afterAll(async () => {
    sender?.close();
    killAllSpawned();
    await backing?.cleanup();
  });

  it("always ends with a status, DEADLINE_EXCEEDED or the answers", { timeout: 120_000 }, async () => {
    const answers = new Map<string, number>();
    for (let i = 0; i < 60; i++) {
      const { answer } = await sender.send(streamCase(`sd_c${i % 4}`));
      answers.set(answer.code, (answers.get(answer.code) ?? 0) + 1);
    }
    expect(answers.get("no answer") ?? 0, JSON.stringify(Object.fromEntries(answers))).toBe(0);
    // The window is real: most calls meet their deadline.
    expect(answers.get("deadline_exceeded") ?? 0).toBeGreaterThan(0);
  });
});
