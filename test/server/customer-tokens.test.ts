// Given the real meterd server with configured signing keys, when browsers' customer tokens call it
// on either listener, then a token may only Track positive amounts, Check, GetMetrics and WatchUsage
// for its own customer and features; everything else is PERMISSION_DENIED, an expired or forged token
// is UNAUTHENTICATED before the body is read, each token is rate-limited, and minting follows its rules.
import http from "node:http";
import { setTimeout as sleep } from "node:timers/promises";
import { timestampFromMs, timestampMs } from "@bufbuild/protobuf/wkt";
import { createClient, type Client, type Transport } from "@connectrpc/connect";
import { createConnectTransport, createGrpcTransport } from "@connectrpc/connect-node";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { AuthService } from "../../gen/meterd/v1/auth_pb.js";
import { CatalogService } from "../../gen/meterd/v1/catalog_pb.js";
import { EventKind, EventOrder, MeteringService, UsageWindow } from "../../gen/meterd/v1/metering_pb.js";
import { Decision, ErrorDetailSchema } from "../../gen/meterd/v1/usage_pb.js";
import { CustomerTokens } from "../../src/auth/customer-tokens.js";
import type { Server } from "../../src/server.js";
import { auth, Code, errorOf, makeDataDir, removeDir, Sessions, startMeterd } from "./harness.js";
import type { ConnectError } from "@connectrpc/connect";

const NEW_KEY = { id: "k2026b", secret: "new-signing-secret-0123456789abcdef" };
const OLD_KEY = { id: "k2026a", secret: "old-signing-secret-0123456789abcdef" };
const BURST = 40;

let server: Server;
let dataDir: string;
const sessions = new Sessions();
let authClient: Client<typeof AuthService>;
let admin: Client<typeof MeteringService>;

beforeAll(async () => {
  dataDir = await makeDataDir();
  server = await startMeterd(dataDir, {
    METERD_TOKEN_KEYS: `${NEW_KEY.id}:${NEW_KEY.secret},${OLD_KEY.id}:${OLD_KEY.secret}`,
    METERD_TOKEN_RATE: "1/s",
    METERD_TOKEN_BURST: String(BURST),
  });
  const transport = createConnectTransport({ baseUrl: httpUrl(), httpVersion: "1.1" });
  authClient = createClient(AuthService, transport);
  admin = createClient(MeteringService, transport);
});

afterAll(async () => {
  sessions.abortAll();
  await server?.close(1000);
  await removeDir(dataDir);
});

function httpUrl(): string {
  return `http://127.0.0.1:${server.httpPort}`;
}
function grpcUrl(): string {
  return `http://127.0.0.1:${server.grpcPort}`;
}

async function mint(customerId: string, featureKeys: string[] = [], ttlSeconds?: number): Promise<string> {
  const res = await authClient.createCustomerToken({ customerId, featureKeys, ...(ttlSeconds === undefined ? {} : { ttlSeconds }) }, { headers: auth });
  return res.token;
}

const bearer = (token: string) => ({ headers: { authorization: `Bearer ${token}` } });

function reasonOf(err: ConnectError): string | undefined {
  return err.findDetails(ErrorDetailSchema)[0]?.reason;
}

async function consumed(customerId: string, featureKey = "api_calls"): Promise<number> {
  const { metrics } = await admin.getMetrics({ customerId, featureKey }, { headers: auth });
  return metrics[0]?.consumed ?? 0;
}

/** The first message of a WatchUsage stream, then the stream is cancelled. */
async function firstWatch(client: Client<typeof MeteringService>, customerId: string, token: string, featureKey = "") {
  const stop = new AbortController();
  try {
    for await (const res of client.watchUsage({ customerId, featureKey }, { ...bearer(token), signal: stop.signal })) return res;
    throw new Error("the stream ended without a message");
  } finally {
    stop.abort();
  }
}

interface ListenerCase {
  name: string;
  prefix: string;
  /** Unary and server-streaming calls. */
  transport: () => Transport;
  /** Bidirectional streams need HTTP/2. */
  bidiTransport: () => Transport;
}

const listeners: ListenerCase[] = [
  {
    name: "Connect listener (Connect JSON over HTTP/1.1, as a browser)",
    prefix: "conn",
    transport: () => createConnectTransport({ baseUrl: httpUrl(), httpVersion: "1.1" }),
    bidiTransport: () => createConnectTransport({ baseUrl: httpUrl(), httpVersion: "2", sessionManager: sessions.h2(httpUrl()) }),
  },
  {
    name: "grpc-js listener (gRPC)",
    prefix: "grpc",
    transport: () => createGrpcTransport({ baseUrl: grpcUrl(), sessionManager: sessions.h2(grpcUrl()) }),
    bidiTransport: () => createGrpcTransport({ baseUrl: grpcUrl(), sessionManager: sessions.h2(grpcUrl()) }),
  },
];

describe.each(listeners)("a customer token on the $name", (l) => {
  let metering: Client<typeof MeteringService>;
  const customer = (name: string): string => `tok-${l.prefix}-${name}`;
  beforeAll(() => {
    metering = createClient(MeteringService, l.transport());
  });

  it("tracks positive amounts for its own customer, and reads its usage with Check, GetMetrics and WatchUsage", async () => {
    const a = customer("own");
    const token = await mint(a);
    const tracked = await metering.track({ customerId: a, featureKey: "api_calls", amount: 2, idempotencyKey: "own-1" }, bearer(token));
    expect(tracked.decision).toBe(Decision.ALLOWED);
    expect(tracked.usage?.consumed).toBe(2);
    // An event dated a minute ago is still "now" for a browser.
    const recent = await metering.track({ customerId: a, featureKey: "api_calls", amount: 1, timestamp: timestampFromMs(Date.now() - 60_000) }, bearer(token));
    expect(recent.decision).toBe(Decision.ALLOWED);

    expect((await metering.check({ customerId: a, featureKey: "api_calls", amount: 5 }, bearer(token))).allowed).toBe(true);
    const { metrics } = await metering.getMetrics({ customerId: a }, bearer(token));
    expect(metrics.map((m) => [m.featureKey, m.consumed])).toEqual([
      ["api_calls", 3],
      ["storage_gb", 0],
      ["seats", 0],
      ["ai_tokens", 0],
    ]);
    const watched = await firstWatch(metering, a, token);
    expect(watched.metrics.find((m) => m.featureKey === "api_calls")?.consumed).toBe(3);
  });

  it("counts a Track without an amount as 1, and refuses an explicit 0 with nothing counted", async () => {
    const a = customer("no-amount");
    const token = await mint(a);
    const tracked = await metering.track({ customerId: a, featureKey: "api_calls", idempotencyKey: "unset-1" }, bearer(token));
    expect(tracked.usage?.consumed).toBe(1);
    const zero = await errorOf(() => metering.track({ customerId: a, featureKey: "api_calls", amount: 0, idempotencyKey: "zero-1" }, bearer(token)));
    expect(zero.code).toBe(Code.InvalidArgument);
    expect(reasonOf(zero)).toBe("AMOUNT_ZERO");
    expect(await consumed(a)).toBe(1);
  });

  it("cannot read or track for another customer", async () => {
    const [a, b] = [customer("a"), customer("b")];
    await admin.track({ customerId: b, featureKey: "api_calls", amount: 5 }, { headers: auth });
    const token = await mint(a);
    const calls = [
      () => metering.track({ customerId: b, featureKey: "api_calls", amount: 1 }, bearer(token)),
      () => metering.check({ customerId: b, featureKey: "api_calls" }, bearer(token)),
      () => metering.getMetrics({ customerId: b }, bearer(token)),
      () => firstWatch(metering, b, token),
    ];
    for (const call of calls) {
      const err = await errorOf(call);
      expect(err.code).toBe(Code.PermissionDenied);
      expect(reasonOf(err)).toBe("CUSTOMER_NOT_ALLOWED");
      expect(err.rawMessage).toBe(`this customer token is for customer "${a}" only`);
    }
    expect(await consumed(b)).toBe(5);
  });

  it("cannot track a negative amount, nor date an event back into the past", async () => {
    const a = customer("neg");
    await admin.track({ customerId: a, featureKey: "seats", amount: 3 }, { headers: auth });
    const token = await mint(a);
    const negative = await errorOf(() => metering.track({ customerId: a, featureKey: "seats", amount: -1 }, bearer(token)));
    expect(negative.code).toBe(Code.PermissionDenied);
    expect(reasonOf(negative)).toBe("NEGATIVE_AMOUNT_FORBIDDEN");
    const backdated = await errorOf(() =>
      metering.track({ customerId: a, featureKey: "seats", amount: 1, timestamp: timestampFromMs(Date.now() - 3_600_000) }, bearer(token)),
    );
    expect(backdated.code).toBe(Code.PermissionDenied);
    expect(reasonOf(backdated)).toBe("BACKDATE_FORBIDDEN");
    expect(await consumed(a, "seats")).toBe(3);
  });

  it("uses only the features it was minted for", async () => {
    const a = customer("features");
    const token = await mint(a, ["api_calls"]);
    const err = await errorOf(() => metering.track({ customerId: a, featureKey: "seats", amount: 1 }, bearer(token)));
    expect(err.code).toBe(Code.PermissionDenied);
    expect(reasonOf(err)).toBe("FEATURE_NOT_ALLOWED");
    expect((await errorOf(() => metering.getMetrics({ customerId: a, featureKey: "seats" }, bearer(token)))).code).toBe(Code.PermissionDenied);
    expect((await errorOf(() => metering.check({ customerId: a, featureKey: "seats" }, bearer(token)))).code).toBe(Code.PermissionDenied);
    expect((await metering.getMetrics({ customerId: a }, bearer(token))).metrics.map((m) => m.featureKey)).toEqual(["api_calls"]);
    expect((await firstWatch(metering, a, token)).metrics.map((m) => m.featureKey)).toEqual(["api_calls"]);
    expect(await consumed(a, "seats")).toBe(0);
  });

  it("lists its own customer's events of its features, a page at a time, and no one else's", async () => {
    const a = customer("events");
    await admin.track({ customerId: a, featureKey: "api_calls", amount: 1.5, idempotencyKey: "e1", properties: { path: "/v1/x" } }, { headers: auth });
    await admin.track({ customerId: a, featureKey: "api_calls", amount: 2, idempotencyKey: "e2" }, { headers: auth });
    await admin.track({ customerId: a, featureKey: "seats", amount: 1, idempotencyKey: "e3" }, { headers: auth });
    const token = await mint(a, ["api_calls"]);
    const first = await metering.listEvents({ customerId: a, pageSize: 1, order: EventOrder.OLDEST_FIRST }, bearer(token));
    expect(first.events.map((e) => [e.featureKey, e.kind, e.amount, e.idempotencyKey, e.properties])).toEqual([["api_calls", EventKind.TRACK, "2", "e1", { path: "/v1/x" }]]);
    expect(first.events[0]?.occurredAt).toBeDefined();
    const second = await metering.listEvents({ customerId: a, pageSize: 1, order: EventOrder.OLDEST_FIRST, pageToken: first.nextPageToken }, bearer(token));
    expect(second.events.map((e) => e.idempotencyKey)).toEqual(["e2"]);
    expect(second.nextPageToken).toBe("");
    const seats = await errorOf(() => metering.listEvents({ customerId: a, featureKey: "seats" }, bearer(token)));
    expect(reasonOf(seats)).toBe("FEATURE_NOT_ALLOWED");
    const other = await errorOf(() => metering.listEvents({ customerId: customer("someone-else") }, bearer(token)));
    expect(reasonOf(other)).toBe("CUSTOMER_NOT_ALLOWED");
    // A secret key sees every feature.
    expect((await admin.listEvents({ customerId: a }, { headers: auth })).events.map((e) => e.idempotencyKey)).toEqual(["e3", "e2", "e1"]);
  });

  it("queries its own customer's usage over time, for its features only; every customer's needs a secret key", async () => {
    const a = customer("usage");
    await admin.track({ customerId: a, featureKey: "api_calls", amount: 3, idempotencyKey: "u1", properties: { region: "eu" } }, { headers: auth });
    const token = await mint(a, ["api_calls"]);
    const now = Date.now();
    const range = { from: timestampFromMs(now - 2 * 86_400_000), to: timestampFromMs(now + 60_000) };
    const { buckets } = await metering.queryUsage({ customerId: a, featureKeys: ["api_calls"], window: UsageWindow.DAY, ...range, groupBy: ["region"] }, bearer(token));
    expect(buckets.map((b) => [b.featureKey, b.value, b.group])).toEqual([["api_calls", "3", { region: "eu" }]]);
    const seats = await errorOf(() => metering.queryUsage({ customerId: a, featureKeys: ["seats"], window: UsageWindow.DAY, ...range }, bearer(token)));
    expect(reasonOf(seats)).toBe("FEATURE_NOT_ALLOWED");
    const everyone = await errorOf(() => metering.queryUsage({ customerId: "", featureKeys: ["api_calls"], window: UsageWindow.DAY, ...range }, bearer(token)));
    expect(reasonOf(everyone)).toBe("CUSTOMER_NOT_ALLOWED");
    const all = await admin.queryUsage({ featureKeys: ["api_calls"], window: UsageWindow.MONTH, ...range }, { headers: auth });
    expect(all.buckets.reduce((sum, b) => sum + Number(b.value), 0)).toBeGreaterThanOrEqual(3);
  });

  it("cannot call SetUsage, TrackBatch, TrackStream, the CatalogService or the AuthService", async () => {
    const a = customer("secret-only");
    const token = await mint(a);
    const bidi = createClient(MeteringService, l.bidiTransport());
    const catalog = createClient(CatalogService, l.transport());
    const tokens = createClient(AuthService, l.transport());
    const event = { customerId: a, featureKey: "api_calls", amount: 1 };
    const calls: Array<[string, () => Promise<unknown>]> = [
      ["SetUsage", () => metering.setUsage({ customerId: a, featureKey: "api_calls", used: 0 }, bearer(token))],
      ["TrackBatch", () => metering.trackBatch({ events: [event] }, bearer(token))],
      [
        "TrackStream",
        async () => {
          async function* one() {
            yield { events: [event] };
          }
          for await (const _ of bidi.trackStream(one(), bearer(token))) void _;
        },
      ],
      ["ListFeatures", () => catalog.listFeatures({}, bearer(token))],
      ["UpsertCustomer", () => catalog.upsertCustomer({ customer: { id: a, planKey: "default" } }, bearer(token))],
      ["CreateCustomerToken", () => tokens.createCustomerToken({ customerId: a }, bearer(token))],
    ];
    for (const [name, call] of calls) {
      const err = await errorOf(call);
      expect(err.code, name).toBe(Code.PermissionDenied);
      expect(reasonOf(err), name).toBe("SECRET_KEY_REQUIRED");
      expect(err.rawMessage, name).toContain(`${name} needs a secret key`);
    }
    expect(await consumed(a)).toBe(0);
  });

  it("is refused with UNAUTHENTICATED when expired or forged; a token of the previous signing key still works", async () => {
    const a = customer("forged");
    const signer = (key: { id: string; secret: string }, now = Date.now) => new CustomerTokens([{ id: key.id, secret: Buffer.from(key.secret) }], now);
    const expired = signer(NEW_KEY, () => Date.now() - 3_600_000).mint({ customerId: a, featureKeys: [], ttlSeconds: 900 }).token;
    const genuine = await mint(a);
    const [prefix, payload, signature] = genuine.split(".") as [string, string, string];
    const claims = JSON.parse(Buffer.from(payload, "base64url").toString()) as Record<string, unknown>;
    const otherCustomer = `${prefix}.${Buffer.from(JSON.stringify({ ...claims, cus: customer("victim") })).toString("base64url")}.${signature}`;
    const guessedKey = signer({ id: NEW_KEY.id, secret: "a guess at the signing secret 0123456789" }).mint({ customerId: a, featureKeys: [], ttlSeconds: 900 }).token;
    const unknownKey = signer({ id: "k1999", secret: NEW_KEY.secret }).mint({ customerId: a, featureKeys: [], ttlSeconds: 900 }).token;

    const cases: Array<[string, string, string]> = [
      ["expired", expired, "TOKEN_EXPIRED"],
      ["another customer's id under the same signature", otherCustomer, "TOKEN_INVALID"],
      ["signed with a guessed secret", guessedKey, "TOKEN_INVALID"],
      ["signed with a key that is not configured", unknownKey, "TOKEN_INVALID"],
    ];
    for (const [what, token, reason] of cases) {
      const err = await errorOf(() => metering.track({ customerId: a, featureKey: "api_calls", amount: 1 }, bearer(token)));
      expect(err.code, what).toBe(Code.Unauthenticated);
      expect(reasonOf(err), what).toBe(reason);
      expect((await errorOf(() => firstWatch(metering, a, token))).code, what).toBe(Code.Unauthenticated);
    }
    expect(await consumed(a)).toBe(0);
    expect(await consumed(customer("victim"))).toBe(0);

    // Rotation: tokens minted now name the first key; a token of the second key is still accepted.
    expect(JSON.parse(Buffer.from(payload, "base64url").toString())).toMatchObject({ kid: NEW_KEY.id, cus: a });
    const previous = signer(OLD_KEY).mint({ customerId: a, featureKeys: [], ttlSeconds: 900 }).token;
    expect((await metering.track({ customerId: a, featureKey: "api_calls", amount: 1 }, bearer(previous))).decision).toBe(Decision.ALLOWED);
  });

  it("WatchUsage ends with UNAUTHENTICATED when the token expires", async () => {
    const a = customer("watch-expiry");
    const token = await mint(a, [], 2);
    const started = Date.now();
    const messages: number[] = [];
    const err = await errorOf(async () => {
      for await (const res of metering.watchUsage({ customerId: a }, bearer(token))) messages.push(res.metrics.length);
    });
    expect(messages).toEqual([4]);
    expect(err.code).toBe(Code.Unauthenticated);
    expect(reasonOf(err)).toBe("TOKEN_EXPIRED");
    expect(Date.now() - started).toBeLessThan(4000);
  });

  it("is rate-limited per token: RESOURCE_EXHAUSTED with a retry-after hint", async () => {
    const a = customer("rate");
    const token = await mint(a);
    let limited: ConnectError | undefined;
    for (let i = 0; i <= BURST + 2 && limited === undefined; i++) {
      try {
        await metering.check({ customerId: a, featureKey: "api_calls" }, bearer(token));
      } catch (err) {
        limited = err as ConnectError;
      }
    }
    expect(limited?.code).toBe(Code.ResourceExhausted);
    expect(reasonOf(limited!)).toBe("TOKEN_RATE_LIMITED");
    expect(Number(limited?.metadata.get("retry-after"))).toBeGreaterThanOrEqual(1);
    expect(Number(limited?.metadata.get("retry-after-ms"))).toBeGreaterThan(0);
    // Another token of the same customer has a bucket of its own; the first one recovers.
    const other = await mint(a);
    expect((await metering.check({ customerId: a, featureKey: "api_calls" }, bearer(other))).allowed).toBe(true);
    await sleep(Number(limited?.metadata.get("retry-after-ms")) + 50);
    expect((await metering.check({ customerId: a, featureKey: "api_calls" }, bearer(token))).allowed).toBe(true);
  });
});

describe("AuthService/CreateCustomerToken", () => {
  it("mints a token that lasts 15 minutes by default, up to 24 hours", async () => {
    const before = Date.now();
    const res = await authClient.createCustomerToken({ customerId: "mint-1" }, { headers: auth });
    expect(res.token).toMatch(/^ct1\./);
    expect(res.tokenId).toMatch(/^[A-Za-z0-9_-]{16}$/);
    const expires = timestampMs(res.expiresAt!);
    expect(expires).toBeGreaterThanOrEqual(Math.floor(before / 1000) * 1000 + 900_000);
    expect(expires).toBeLessThanOrEqual(Date.now() + 900_000);
    const day = await authClient.createCustomerToken({ customerId: "mint-1", ttlSeconds: 86_400 }, { headers: auth });
    expect(timestampMs(day.expiresAt!) - Date.now()).toBeGreaterThan(86_000_000);
  });

  it.each([
    [{ customerId: "mint-2", ttlSeconds: 0 }, "ttl_seconds", "TTL_OUT_OF_RANGE"],
    [{ customerId: "mint-2", ttlSeconds: 86_401 }, "ttl_seconds", "TTL_OUT_OF_RANGE"],
    [{ customerId: "mint-2", ttlSeconds: -5 }, "ttl_seconds", "TTL_OUT_OF_RANGE"],
    [{ customerId: "mint-2", featureKeys: ["api_calls", "nope"] }, "feature_keys[1]", "UNKNOWN_FEATURE"],
    [{ customerId: "" }, "customer_id", "CUSTOMER_ID_EMPTY"],
  ])("refuses %j with INVALID_ARGUMENT", async (req, field, reason) => {
    const err = await errorOf(() => authClient.createCustomerToken(req, { headers: auth }));
    expect(err.code).toBe(Code.InvalidArgument);
    expect(err.findDetails(ErrorDetailSchema)[0]).toMatchObject({ field, reason });
  });

  it("needs a secret key on the gRPC listener too", async () => {
    const grpcAuth = createClient(AuthService, createGrpcTransport({ baseUrl: grpcUrl(), sessionManager: sessions.h2(grpcUrl()) }));
    expect((await grpcAuth.createCustomerToken({ customerId: "mint-3" }, { headers: auth })).token).toMatch(/^ct1\./);
    expect((await errorOf(() => grpcAuth.createCustomerToken({ customerId: "mint-3" }))).code).toBe(Code.Unauthenticated);
  });
});

describe("refused before the body is read", () => {
  /** Sends the headers of a Connect unary call that announces a body it never sends. */
  function heldRequest(path: string, token: string): Promise<{ status: number; body: string; headers: http.IncomingHttpHeaders }> {
    return new Promise((resolve, reject) => {
      const req = http.request(
        {
          host: "127.0.0.1",
          port: server.httpPort,
          method: "POST",
          path,
          agent: false,
          headers: { "content-type": "application/json", "content-length": "1000", authorization: `Bearer ${token}` },
        },
        (res) => {
          let body = "";
          res.on("data", (chunk: Buffer) => (body += chunk.toString()));
          res.on("end", () => {
            resolve({ status: res.statusCode ?? 0, body, headers: res.headers });
            req.destroy();
          });
        },
      );
      req.on("error", reject);
      req.flushHeaders();
    });
  }

  it("an expired token: 401 with TOKEN_EXPIRED; a token on SetUsage: 403", async () => {
    const expired = new CustomerTokens([{ id: NEW_KEY.id, secret: Buffer.from(NEW_KEY.secret) }], () => Date.now() - 3_600_000).mint({
      customerId: "held",
      featureKeys: [],
      ttlSeconds: 60,
    }).token;
    const res = await heldRequest("/meterd.v1.MeteringService/Track", expired);
    expect(res.status).toBe(401);
    expect(JSON.parse(res.body)).toMatchObject({ code: "unauthenticated", details: [{ debug: { reason: "TOKEN_EXPIRED" } }] });

    const denied = await heldRequest("/meterd.v1.MeteringService/SetUsage", await mint("held"));
    expect(denied.status).toBe(403);
    expect(JSON.parse(denied.body)).toMatchObject({ code: "permission_denied", details: [{ debug: { reason: "SECRET_KEY_REQUIRED" } }] });
  });
});

describe("without METERD_TOKEN_KEYS", () => {
  it("signs with a key derived from the development key, so tokens outlive a restart", async () => {
    const dir = await makeDataDir();
    try {
      let dev = await startMeterd(dir, { METERD_SECRET_KEYS: "" });
      const devKey = dev.devKey?.key ?? "";
      const devAuth = { headers: { authorization: `Bearer ${devKey}` } };
      const url = (s: Server) => `http://127.0.0.1:${s.httpPort}`;
      const { token } = await createClient(AuthService, createConnectTransport({ baseUrl: url(dev), httpVersion: "1.1" })).createCustomerToken(
        { customerId: "dev-cus" },
        devAuth,
      );
      await dev.close(500);
      dev = await startMeterd(dir, { METERD_SECRET_KEYS: "" });
      try {
        expect(dev.devKey?.key).toBe(devKey);
        const client = createClient(MeteringService, createConnectTransport({ baseUrl: url(dev), httpVersion: "1.1" }));
        expect((await client.track({ customerId: "dev-cus", featureKey: "api_calls", amount: 1 }, bearer(token))).decision).toBe(Decision.ALLOWED);
      } finally {
        await dev.close(500);
      }
    } finally {
      await removeDir(dir);
    }
  });
});
