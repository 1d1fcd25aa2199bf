// Given both listeners serving one implementation, when real connect-es clients call them over every
// protocol, then each call behaves the same: results, caller, errors, limits and health.
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { Code, ConnectError, createClient, type Transport } from "@connectrpc/connect";
import { createConnectTransport, createGrpcTransport, createGrpcWebTransport, Http2SessionManager } from "@connectrpc/connect-node";
import { keyIdOf } from "../../src/auth/secret-keys.js";
import { Health, ServingStatus } from "../../src/rpc/health.js";
import { HealthCheckRequestSchema } from "../../gen/grpc/health/v1/health_pb.js";
import { MeteringService } from "../../gen/meterd/v1/metering_pb.js";
import { KEY, MAX_MESSAGE_BYTES, MAX_TIMEOUT_MS, startServers, type Servers } from "./fixture.js";

let servers: Servers;
let watchCount = 0;
const sessions: Http2SessionManager[] = [];

beforeAll(async () => {
  servers = await startServers();
});

afterAll(async () => {
  for (const session of sessions) session.abort();
  await servers.close(500);
});

function h2(url: string): { httpVersion: "2"; sessionManager: Http2SessionManager } {
  const sessionManager = new Http2SessionManager(url);
  sessions.push(sessionManager);
  return { httpVersion: "2", sessionManager };
}

interface ClientCase {
  name: string;
  /** Bidirectional streams need HTTP/2. */
  bidi: boolean;
  transport: () => Transport;
}

const httpUrl = (): string => `http://127.0.0.1:${servers.httpPort}`;
const grpcUrl = (): string => `http://127.0.0.1:${servers.grpcPort}`;

const cases: ClientCase[] = [
  {
    name: "Connect JSON over HTTP/1.1 -> Connect listener",
    bidi: false,
    transport: () => createConnectTransport({ baseUrl: httpUrl(), httpVersion: "1.1", useBinaryFormat: false }),
  },
  {
    name: "Connect binary over HTTP/2 -> Connect listener",
    bidi: true,
    transport: () => createConnectTransport({ baseUrl: httpUrl(), ...h2(httpUrl()), useBinaryFormat: true }),
  },
  {
    name: "gRPC-web over HTTP/1.1 -> Connect listener",
    bidi: false,
    transport: () => createGrpcWebTransport({ baseUrl: httpUrl(), httpVersion: "1.1" }),
  },
  {
    name: "gRPC over h2c -> Connect listener",
    bidi: true,
    transport: () => createGrpcTransport({ baseUrl: httpUrl(), sessionManager: h2(httpUrl()).sessionManager }),
  },
  {
    name: "gRPC over h2c -> grpc-js listener",
    bidi: true,
    transport: () => createGrpcTransport({ baseUrl: grpcUrl(), sessionManager: h2(grpcUrl()).sessionManager }),
  },
];

const auth = { authorization: `Bearer ${KEY}` };

async function errorOf(call: () => Promise<unknown>): Promise<ConnectError> {
  try {
    await call();
  } catch (err) {
    return ConnectError.from(err);
  }
  throw new Error("the call succeeded");
}

describe.each(cases)("$name", (c) => {
  let transport: Transport;
  beforeAll(() => {
    transport = c.transport();
  });

  it("Track returns the response, the caller's key id in a header, and the trailer", async () => {
    const client = createClient(MeteringService, transport);
    let header: Headers | undefined;
    let trailer: Headers | undefined;
    const res = await client.track(
      { customerId: "c1", featureKey: "api_calls", amount: 1, idempotencyKey: "evt-1" },
      { headers: auth, onHeader: (h) => (header = h), onTrailer: (t) => (trailer = t) },
    );
    expect(res.eventId).toBe("evt-1");
    expect(res.thresholdsCrossed).toEqual([80]);
    expect(header?.get("x-key-id")).toBe(keyIdOf(KEY));
    expect(trailer?.get("x-trailer")).toBe("bye");
  });

  it("accepts the key as x-api-key too", async () => {
    const client = createClient(MeteringService, transport);
    const res = await client.track({ customerId: "c1", idempotencyKey: "evt-2" }, { headers: { "x-api-key": KEY } });
    expect(res.eventId).toBe("evt-2");
  });

  it("WatchUsage streams three messages", async () => {
    const client = createClient(MeteringService, transport);
    const consumed: number[] = [];
    for await (const res of client.watchUsage({ customerId: "c1", featureKey: "seats" }, { headers: auth })) {
      expect(res.metrics[0]?.featureKey).toBe("seats");
      consumed.push(res.metrics[0]?.consumed ?? -1);
    }
    expect(consumed).toEqual([1, 2, 3]);
  });

  it.runIf(c.bidi)("TrackStream answers each request in order", async () => {
    const client = createClient(MeteringService, transport);
    async function* requests() {
      for (const key of ["a", "b", "c"]) yield { events: [{ customerId: "c1", idempotencyKey: key }] };
    }
    const acks: string[] = [];
    for await (const res of client.trackStream(requests(), { headers: auth })) {
      const outcome = res.results[0]?.outcome;
      acks.push(`${res.sequence}:${outcome?.case === "tracked" ? outcome.value.eventId : "?"}`);
    }
    expect(acks).toEqual(["1:a", "2:b", "3:c"]);
  });

  it("refuses a missing or wrong key with UNAUTHENTICATED, without calling the handler", async () => {
    const client = createClient(MeteringService, transport);
    const before = servers.observed.trackCalls;
    const missing = await errorOf(() => client.track({ customerId: "c1" }));
    expect(missing.code).toBe(Code.Unauthenticated);
    expect(missing.rawMessage).toMatch(/missing credential/);
    const wrong = await errorOf(() => client.track({ customerId: "c1" }, { headers: { authorization: "Bearer sk_nope" } }));
    expect(wrong.code).toBe(Code.Unauthenticated);
    expect(wrong.rawMessage).toMatch(/invalid credential/);
    const stream = await errorOf(async () => {
      for await (const _ of client.watchUsage({ customerId: "c1" }, { headers: { "x-api-key": "wrong" } })) {
        // no message expected
      }
    });
    expect(stream.code).toBe(Code.Unauthenticated);
    expect(servers.observed.trackCalls).toBe(before);
  });

  it("keeps a ConnectError's code, message and details", async () => {
    const client = createClient(MeteringService, transport);
    const invalid = await errorOf(() => client.track({ customerId: "c1", amount: Number.NaN }, { headers: auth }));
    expect(invalid.code).toBe(Code.InvalidArgument);
    expect(invalid.rawMessage).toBe("amount must be a number");
    const withDetails = await errorOf(() => client.track({ customerId: "details" }, { headers: auth }));
    expect(withDetails.code).toBe(Code.FailedPrecondition);
    expect(withDetails.rawMessage).toBe("bad request");
    expect(withDetails.findDetails(HealthCheckRequestSchema).map((d) => d.service)).toEqual(["detail-payload"]);
  });

  it("turns a plain Error into INTERNAL without leaking its message, and logs it", async () => {
    const client = createClient(MeteringService, transport);
    const logged = servers.observed.logged.length;
    const err = await errorOf(() => client.track({ customerId: "boom" }, { headers: auth }));
    expect(err.code).toBe(Code.Internal);
    expect(err.rawMessage).toBe("internal error");
    expect(servers.observed.logged.length).toBe(logged + 1);
  });

  it("refuses an oversized message with RESOURCE_EXHAUSTED", async () => {
    const client = createClient(MeteringService, transport);
    const big = "x".repeat(MAX_MESSAGE_BYTES + 1);
    const err = await errorOf(() => client.track({ customerId: "c1", properties: { big } }, { headers: auth }));
    expect(err.code).toBe(Code.ResourceExhausted);
  });

  it("caps a long client deadline at maxTimeoutMs", async () => {
    const client = createClient(MeteringService, transport);
    const started = Date.now();
    const err = await errorOf(() => client.track({ customerId: "hang" }, { headers: auth, timeoutMs: 20_000 }));
    expect(err.code).toBe(Code.DeadlineExceeded);
    expect(Date.now() - started).toBeGreaterThanOrEqual(MAX_TIMEOUT_MS - 100);
    expect(Date.now() - started).toBeLessThan(MAX_TIMEOUT_MS + 3000);
  });

  it("aborts the handler's signal when the client cancels", async () => {
    const client = createClient(MeteringService, transport);
    const aborts = servers.observed.aborts.length;
    const abort = new AbortController();
    const call = errorOf(() => client.track({ customerId: "hang" }, { headers: auth, signal: abort.signal }));
    await new Promise((resolve) => setTimeout(resolve, 100));
    abort.abort();
    expect((await call).code).toBe(Code.Canceled);
    await expect.poll(() => servers.observed.aborts.slice(aborts)).toEqual([Code.Canceled]);
  });

  it("honours a client deadline shorter than the cap", async () => {
    const client = createClient(MeteringService, transport);
    const started = Date.now();
    const err = await errorOf(() => client.track({ customerId: "hang" }, { headers: auth, timeoutMs: 200 }));
    expect(err.code).toBe(Code.DeadlineExceeded);
    expect(Date.now() - started).toBeLessThan(MAX_TIMEOUT_MS);
  });

  it("does not refuse a server stream whose deadline is longer than the cap", async () => {
    const client = createClient(MeteringService, transport);
    let count = 0;
    for await (const _ of client.watchUsage({ customerId: "c1" }, { headers: auth, timeoutMs: 60_000 })) count++;
    expect(count).toBe(3);
  });

  it("serves health without a key: Check, List, unknown service, Watch", async () => {
    const client = createClient(Health, transport);
    expect((await client.check({ service: "" })).status).toBe(ServingStatus.SERVING);
    expect((await client.check({ service: MeteringService.typeName })).status).toBe(ServingStatus.SERVING);
    const unknown = await errorOf(() => client.check({ service: "nope.v1.Nope" }));
    expect(unknown.code).toBe(Code.NotFound);
    const list = await client.list({});
    expect(list.statuses[""]?.status).toBe(ServingStatus.SERVING);
    expect(list.statuses[MeteringService.typeName]?.status).toBe(ServingStatus.SERVING);

    const abort = new AbortController();
    const watched = `test.Watched${++watchCount}`;
    const seen: ServingStatus[] = [];
    const watching = (async () => {
      try {
        for await (const res of client.watch({ service: watched }, { signal: abort.signal })) {
          seen.push(res.status);
          if (seen.length === 1) servers.health.set(watched, ServingStatus.SERVING);
          if (seen.length === 2) abort.abort();
        }
      } catch (err) {
        if (ConnectError.from(err).code !== Code.Canceled) throw err;
      }
    })();
    await watching;
    expect(seen).toEqual([ServingStatus.SERVICE_UNKNOWN, ServingStatus.SERVING]);
  });
});
