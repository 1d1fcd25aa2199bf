// The access log as a recorder: which calls it logs (sampling of successful high-volume calls only),
// and what a line holds (procedure, protocol, code, duration, the caller's key or token id, never a
// secret).
import { describe, expect, it } from "vitest";
import { accessLog } from "../../src/ops/access-log.js";

function capture(): { lines: Array<Record<string, unknown>>; logger: { info(obj: object, msg: string): void } } {
  const lines: Array<Record<string, unknown>> = [];
  return { lines, logger: { info: (obj, msg) => void lines.push({ ...obj, msg }) } };
}

const TRACK = "/meterd.v1.MeteringService/Track";
const UPSERT = "/meterd.v1.CatalogService/UpsertPlan";
const secret = { kind: "secret" as const, keyId: "key_ab12" };
const token = { kind: "customer" as const, keyId: "tk_1", tokenId: "tok_9", customerId: "cus_7", featureKeys: null, expiresAt: 0 };

describe("accessLog", () => {
  it("logs a sampled share of successful Tracks, every failed one, and every call of other methods", () => {
    const { lines, logger } = capture();
    const draws = [0.2, 0.7, 0.9];
    const record = accessLog(logger, 0.5, () => draws.shift() ?? 1);
    const track = record(TRACK, "grpc");
    track.done(0, 0.001, secret); // 0.2 < 0.5: logged
    track.done(0, 0.001, secret); // 0.7: not
    track.done(3, 0.0004, secret); // a failure: always, without a draw
    record(UPSERT, "connect").done(0, 0.0123456, secret); // not a high-volume method: always
    expect(lines.map((l) => [l.procedure, l.code])).toEqual([
      [TRACK, "OK"],
      [TRACK, "INVALID_ARGUMENT"],
      [UPSERT, "OK"],
    ]);
    expect(draws).toEqual([0.9]);
    expect(lines[2]).toEqual({ access: true, procedure: UPSERT, protocol: "connect", code: "OK", ms: 12.35, key: "key_ab12", msg: "call" });
  });

  it("names a customer token by its id and customer, and logs calls refused from their headers", () => {
    const { lines, logger } = capture();
    const record = accessLog(logger, 1)(TRACK, "grpc-web");
    record.done(0, 0.002, token);
    record.done(1, 0.003, token);
    record.refused(16);
    expect(lines).toEqual([
      { access: true, procedure: TRACK, protocol: "grpc-web", code: "OK", ms: 2, token: "tok_9", customer: "cus_7", msg: "call" },
      // gRPC's spelling, as the metrics' code label has it.
      { access: true, procedure: TRACK, protocol: "grpc-web", code: "CANCELLED", ms: 3, token: "tok_9", customer: "cus_7", msg: "call" },
      { access: true, procedure: TRACK, protocol: "grpc-web", code: "UNAUTHENTICATED", msg: "call refused" },
    ]);
  });

  it("logs no successful high-volume call at a rate of 0", () => {
    const { lines, logger } = capture();
    const record = accessLog(logger, 0, () => 0)(TRACK, "connect");
    record.done(0, 0.001, secret);
    expect(lines).toEqual([]);
  });
});
