// Given the Connect listener, when a request's bytes cannot be decoded (garbage protobuf, a string that
// is not UTF-8, a truncated or corrupt gzip or brotli body, a frame flagged as compressed with no
// encoding named), in each protocol it serves (Connect unary and streaming, gRPC, gRPC-web), then the
// answer is INVALID_ARGUMENT (HTTP 400 on Connect unary) in that protocol's own format, and a fault
// of the server itself is still INTERNAL. The grpc-js listener answers the same bytes the same way.
import zlib from "node:zlib";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { create, toBinary } from "@bufbuild/protobuf";
import { TrackRequestSchema, TrackStreamRequestSchema } from "../../gen/meterd/v1/metering_pb.js";
import { envelope, h1Request, h2Request, outcomeOf, type RawAnswer } from "../support/raw-http.js";
import { KEY, startServers, type Servers } from "./fixture.js";

let servers: Servers;

beforeAll(async () => {
  servers = await startServers();
});

afterAll(async () => {
  await servers.close(500);
});

const TRACK = "/meterd.v1.MeteringService/Track";
const TRACK_STREAM = "/meterd.v1.MeteringService/TrackStream";
const auth = { authorization: `Bearer ${KEY}` };

/** Not a TrackRequest: field 536870911 with wire type 7. */
const GARBAGE = Buffer.from([0xff, 0xff, 0xff, 0xff, 0x0f]);
/** customer_id (field 1) holding ED A0 80, an unpaired surrogate in CESU-8: not UTF-8. */
const NOT_UTF8 = Buffer.from([0x0a, 0x03, 0xed, 0xa0, 0x80]);
const trackBytes = (customerId: string) => Buffer.from(toBinary(TrackRequestSchema, create(TrackRequestSchema, { customerId, idempotencyKey: "k-1" })));
const trackJson = Buffer.from(JSON.stringify({ customerId: "c1", idempotencyKey: "k-1" }));
const truncated = (bytes: Buffer) => bytes.subarray(0, bytes.length - 6);
const TRUNCATED_GZIP_JSON = truncated(zlib.gzipSync(trackJson));
const TRUNCATED_BROTLI_JSON = zlib.brotliCompressSync(trackJson).subarray(0, 4);
const CORRUPT_GZIP = Buffer.from("this is not gzip at all");

function expectInvalid(outcome: ReturnType<typeof outcomeOf>): void {
  expect({ code: outcome.code, message: outcome.message }).toEqual({ code: "invalid_argument", message: expect.any(String) });
}

describe("Connect unary: HTTP 400 invalid_argument", () => {
  it.each([
    ["garbage application/proto", { "content-type": "application/proto" }, GARBAGE, /^parse binary: /],
    ["a string that is not UTF-8", { "content-type": "application/proto" }, NOT_UTF8, /^parse binary: /],
    ["a truncated gzip body", { "content-type": "application/json", "content-encoding": "gzip" }, TRUNCATED_GZIP_JSON, /^decompression failed$/],
    ["a corrupt gzip body", { "content-type": "application/json", "content-encoding": "gzip" }, CORRUPT_GZIP, /^decompression failed$/],
    ["a truncated brotli body", { "content-type": "application/json", "content-encoding": "br" }, TRUNCATED_BROTLI_JSON, /^decompression failed$/],
  ])("%s over HTTP/1.1", async (_name, headers, body, message) => {
    const answer = await h1Request(servers.httpPort, { path: TRACK, headers: { ...auth, ...headers }, body });
    expect(answer.status).toBe(400);
    expect(answer.headers["content-length"]).toBe(String(answer.body.length));
    expect(outcomeOf("connect", answer)).toEqual({ code: "invalid_argument", message: expect.stringMatching(message), httpStatus: 400 });
  });

  it("garbage application/proto over HTTP/2", async () => {
    const answer = await h2Request(servers.httpPort, { path: TRACK, headers: { ...auth, "content-type": "application/proto" }, body: GARBAGE });
    expect(outcomeOf("connect", answer)).toMatchObject({ code: "invalid_argument", httpStatus: 400 });
  });

  it("a well-formed binary request still succeeds", async () => {
    const answer = await h1Request(servers.httpPort, { path: TRACK, headers: { ...auth, "content-type": "application/proto" }, body: trackBytes("c1") });
    expect(answer.status).toBe(200);
  });
});

describe("Connect streaming (TrackStream): an end-stream message with invalid_argument", () => {
  it.each([
    ["a garbage message", {}, envelope(GARBAGE)],
    ["a truncated gzip message", { "connect-content-encoding": "gzip" }, envelope(truncated(zlib.gzipSync(trackBytes("c1"))), 0x01)],
    ["a message flagged compressed with no encoding named", {}, envelope(trackBytes("c1"), 0x01)],
  ])("%s", async (_name, headers, body) => {
    const answer = await h2Request(servers.httpPort, {
      path: TRACK_STREAM,
      headers: { ...auth, "content-type": "application/connect+proto", ...headers },
      body,
    });
    expectInvalid(outcomeOf("connect-stream", answer));
  });
});

describe("gRPC over HTTP/2: grpc-status 3 in the trailers", () => {
  const cases: Array<[string, string, Record<string, string>, Buffer]> = [
    ["unary, a garbage message", TRACK, {}, envelope(GARBAGE)],
    ["unary, a string that is not UTF-8", TRACK, {}, envelope(NOT_UTF8)],
    ["unary, a truncated gzip message", TRACK, { "grpc-encoding": "gzip" }, envelope(truncated(zlib.gzipSync(trackBytes("c1"))), 0x01)],
    ["unary, a message flagged compressed with no encoding named", TRACK, {}, envelope(trackBytes("c1"), 0x01)],
    [
      "bidi stream, a garbage second message",
      TRACK_STREAM,
      {},
      Buffer.concat([envelope(toBinary(TrackStreamRequestSchema, create(TrackStreamRequestSchema, { events: [{ idempotencyKey: "s1" }] }))), envelope(GARBAGE)]),
    ],
  ];
  it.each(cases)("%s", async (_name, path, headers, body) => {
    const answer = await h2Request(servers.httpPort, { path, headers: { ...auth, "content-type": "application/grpc", te: "trailers", ...headers }, body });
    expectInvalid(outcomeOf("grpc", answer));
  });
});

describe("gRPC on the grpc-js listener: grpc-status 3 as well", () => {
  it.each([
    ["a garbage message", {}, envelope(GARBAGE)],
    ["a string that is not UTF-8", {}, envelope(NOT_UTF8)],
    ["a truncated gzip message", { "grpc-encoding": "gzip" }, envelope(truncated(zlib.gzipSync(trackBytes("c1"))), 0x01)],
  ] as Array<[string, Record<string, string>, Buffer]>)("unary, %s", async (_name, headers, body) => {
    const answer = await h2Request(servers.grpcPort, { path: TRACK, headers: { ...auth, "content-type": "application/grpc", te: "trailers", ...headers }, body });
    expectInvalid(outcomeOf("grpc", answer));
  });
});

describe("gRPC-web: grpc-status 3 in the trailer frame", () => {
  it.each([
    ["unary, a garbage message", TRACK, {}, envelope(GARBAGE)],
    ["unary, a truncated gzip message", TRACK, { "grpc-encoding": "gzip" }, envelope(truncated(zlib.gzipSync(trackBytes("c1"))), 0x01)],
    ["unary, a message flagged compressed with no encoding named", TRACK, {}, envelope(trackBytes("c1"), 0x01)],
  ] as Array<[string, string, Record<string, string>, Buffer]>)("%s", async (_name, path, headers, body) => {
    const answer = await h1Request(servers.httpPort, { path, headers: { ...auth, "content-type": "application/grpc-web+proto", ...headers }, body });
    expectInvalid(outcomeOf("grpc-web", answer));
  });

  // Bidirectional streams need HTTP/2 (over HTTP/1.1, connect-node answers 505).
  it("bidi stream over HTTP/2, a garbage message", async () => {
    const answer = await h2Request(servers.httpPort, {
      path: TRACK_STREAM,
      headers: { ...auth, "content-type": "application/grpc-web+proto" },
      body: envelope(GARBAGE),
    });
    expectInvalid(outcomeOf("grpc-web", answer));
  });
});

describe("a fault of the server is still INTERNAL", () => {
  // The fixture's Track throws a plain Error for customer "boom": a bug, not the caller's bytes.
  const boom = trackBytes("boom");
  const answers: Array<[string, "connect" | "grpc" | "grpc-web", () => Promise<RawAnswer>]> = [
    ["Connect unary", "connect", () => h1Request(servers.httpPort, { path: TRACK, headers: { ...auth, "content-type": "application/proto" }, body: boom })],
    ["gRPC", "grpc", () => h2Request(servers.httpPort, { path: TRACK, headers: { ...auth, "content-type": "application/grpc", te: "trailers" }, body: envelope(boom) })],
    ["gRPC-web", "grpc-web", () => h1Request(servers.httpPort, { path: TRACK, headers: { ...auth, "content-type": "application/grpc-web+proto" }, body: envelope(boom) })],
  ];
  it.each(answers)("%s", async (_name, protocol, send) => {
    const outcome = outcomeOf(protocol, await send());
    expect({ code: outcome.code, message: outcome.message }).toEqual({ code: "internal", message: "internal error" });
    if (protocol === "connect") expect(outcome.httpStatus).toBe(500);
  });
});

describe("JSON keys that name no field: INVALID_ARGUMENT naming the key, in every protocol that carries JSON", () => {
  const misspelt = Buffer.from(JSON.stringify({ customerId: "c1", "idempotency-key": "k-1" }));
  const named = /^idempotency-key is not a field of meterd\.v1\.TrackRequest|key "idempotency-key" is unknown/;

  it("Connect unary JSON: HTTP 400, and the request never reaches the implementation", async () => {
    const before = servers.observed.trackCalls;
    const answer = await h1Request(servers.httpPort, { path: TRACK, headers: { ...auth, "content-type": "application/json" }, body: misspelt });
    expect(outcomeOf("connect", answer)).toEqual({ code: "invalid_argument", message: expect.stringMatching(named), httpStatus: 400 });
    expect(answer.headers["content-length"]).toBe(String(answer.body.length));
    expect(servers.observed.trackCalls).toBe(before);
  });

  it("Connect streaming JSON (TrackStream): an end-stream error", async () => {
    const body = envelope(Buffer.from(JSON.stringify({ events: [{ customerId: "c1", "idempotency-key": "k-1" }] })));
    const answer = await h2Request(servers.httpPort, { path: TRACK_STREAM, headers: { ...auth, "content-type": "application/connect+json" }, body });
    expect(outcomeOf("connect-stream", answer)).toMatchObject({ code: "invalid_argument", message: expect.stringMatching(named) });
  });

  it("gRPC-web with JSON: grpc-status 3", async () => {
    const answer = await h1Request(servers.httpPort, { path: TRACK, headers: { ...auth, "content-type": "application/grpc-web+json" }, body: envelope(misspelt) });
    expect(outcomeOf("grpc-web", answer)).toMatchObject({ code: "invalid_argument", message: expect.stringMatching(named) });
  });
});

describe("the grpc-js listener: a request cut inside a message, or an encoding it cannot read", () => {
  /** A frame whose length prefix promises 100 bytes, followed by 4 and the end of the request. */
  const lyingLength = (): Buffer => {
    const frame = Buffer.alloc(9);
    frame.writeUInt32BE(100, 1);
    frame.set([0x73, 0x09, 0x16, 0xe1], 5);
    return frame;
  };
  const grpc = { ...auth, "content-type": "application/grpc", te: "trailers" };

  it.each([
    ["unary", TRACK],
    ["bidi stream", TRACK_STREAM],
    ["bidi stream, after a whole message", TRACK_STREAM],
  ])("%s: the end of the request inside a message is INVALID_ARGUMENT", async (name, path) => {
    const whole = envelope(toBinary(TrackStreamRequestSchema, create(TrackStreamRequestSchema, { events: [] })));
    const body = name.includes("after") ? Buffer.concat([whole, lyingLength()]) : lyingLength();
    const answer = await h2Request(servers.grpcPort, { path, headers: grpc, body });
    expect(outcomeOf("grpc", answer)).toMatchObject({ code: "invalid_argument", message: expect.stringMatching(/ended inside a message/) });
  });

  it.each([
    ["unary", TRACK, envelope(trackBytes("c1"))],
    ["bidi stream", TRACK_STREAM, Buffer.alloc(0)],
  ])("%s naming an unknown grpc-encoding is UNIMPLEMENTED before any message is read", async (_name, path, body) => {
    const before = servers.observed.trackCalls;
    const answer = await h2Request(servers.grpcPort, { path, headers: { ...grpc, "grpc-encoding": "snappy-x" }, body });
    expect(outcomeOf("grpc", answer)).toMatchObject({ code: "unimplemented", message: expect.stringMatching(/grpc-encoding "snappy-x" is not supported/) });
    expect(servers.observed.trackCalls).toBe(before);
  });

  it("gzip and identity are still read", async () => {
    const answer = await h2Request(servers.grpcPort, { path: TRACK, headers: { ...grpc, "grpc-encoding": "gzip" }, body: envelope(zlib.gzipSync(trackBytes("c1")), 0x01) });
    expect(outcomeOf("grpc", answer)).toMatchObject({ code: "ok" });
  });
});
