// Given signing keys, when customer tokens are minted, tampered with, expire or are rotated, then
// only genuine, unexpired tokens verify; the authenticator tells secret keys and tokens apart, keeps
// tokens to the browser's procedures and rate-limits them per token; the configuration parses.
import { Code } from "@connectrpc/connect";
import { describe, expect, it } from "vitest";
import { ErrorDetailSchema } from "../../gen/meterd/v1/usage_pb.js";
import { Authenticator } from "../../src/auth/authenticator.js";
import { CustomerTokens, deriveSigningKeys, type SigningKey } from "../../src/auth/customer-tokens.js";
import { parseRate, TokenBucketLimiter } from "../../src/auth/rate-limit.js";
import { SecretKeyAuthenticator } from "../../src/auth/secret-keys.js";
import { ConfigError, loadConfig } from "../../src/config.js";
import { MeterError } from "../../src/metering/errors.js";
import { CUSTOMER_TOKEN_PROCEDURES } from "../../src/rpc/customer-scope.js";

const key = (id: string): SigningKey => ({ id, secret: Buffer.from(`${id}-0123456789abcdef0123456789abcdef`) });
const T0 = Date.UTC(2026, 0, 10, 12, 0, 0);

/** A clock that tests move by hand. */
function clock(start = T0) {
  let now = start;
  return { now: () => now, advance: (ms: number) => (now += ms) };
}

describe("CustomerTokens", () => {
  it("mints a token that verifies to its customer, features, expiry and ids", () => {
    const c = clock();
    const tokens = new CustomerTokens([key("k1")], c.now);
    const minted = tokens.mint({ customerId: "cus_a", featureKeys: ["api_calls"], ttlSeconds: 900 });
    expect(minted.token).toMatch(/^ct1\.[A-Za-z0-9_-]+\.[A-Za-z0-9_-]{43}$/);
    expect(minted.expiresAt).toBe(T0 + 900_000);
    expect(tokens.verify(minted.token)).toEqual({
      ok: true,
      principal: { kind: "customer", keyId: "k1", tokenId: minted.tokenId, customerId: "cus_a", featureKeys: ["api_calls"], expiresAt: T0 + 900_000 },
    });
    const all = tokens.mint({ customerId: "cus_a", featureKeys: [], ttlSeconds: 60 });
    expect(tokens.verify(all.token)).toMatchObject({ ok: true, principal: { featureKeys: null } });
    expect(all.tokenId).not.toBe(minted.tokenId);
  });

  it("refuses an expired token as TOKEN_EXPIRED, from the second it expires", () => {
    const c = clock();
    const tokens = new CustomerTokens([key("k1")], c.now);
    const { token } = tokens.mint({ customerId: "cus_a", featureKeys: [], ttlSeconds: 60 });
    c.advance(59_999);
    expect(tokens.verify(token).ok).toBe(true);
    c.advance(1);
    expect(tokens.verify(token)).toMatchObject({ ok: false, reason: "TOKEN_EXPIRED", message: expect.stringMatching(/expired at 2026-01-10T12:01:00.000Z/) });
  });

  it("refuses forged, tampered and malformed tokens as TOKEN_INVALID", () => {
    const tokens = new CustomerTokens([key("k1")]);
    const { token } = tokens.mint({ customerId: "cus_a", featureKeys: [], ttlSeconds: 60 });
    const [prefix, payload, signature] = token.split(".") as [string, string, string];
    const claims = JSON.parse(Buffer.from(payload, "base64url").toString()) as Record<string, unknown>;
    const reencode = (c: object): string => Buffer.from(JSON.stringify(c)).toString("base64url");
    const otherSigner = new CustomerTokens([{ id: "k1", secret: Buffer.from("another secret of the same id, 32+ chars") }]);
    const cases = [
      `${prefix}.${reencode({ ...claims, cus: "cus_b" })}.${signature}`, // another customer, same signature
      `${prefix}.${reencode({ ...claims, exp: (claims["exp"] as number) + 86_400 })}.${signature}`, // longer life
      `${prefix}.${payload}.${signature.slice(0, -2)}AA`,
      `${prefix}.${payload}.`,
      `${prefix}.${payload}`,
      `ct2.${payload}.${signature}`,
      `${prefix}.not-json.${signature}`,
      `${prefix}.${payload}.${signature}.extra`,
      otherSigner.mint({ customerId: "cus_a", featureKeys: [], ttlSeconds: 60 }).token, // forged with a guessed key
      new CustomerTokens([key("k9")]).mint({ customerId: "cus_a", featureKeys: [], ttlSeconds: 60 }).token, // unknown key id
      `ct1.${"A".repeat(9000)}.x`,
    ];
    for (const forged of cases) expect(tokens.verify(forged), forged.slice(0, 60)).toMatchObject({ ok: false, reason: "TOKEN_INVALID" });
  });

  it("reports a forged token as invalid even when its claims say it has expired", () => {
    const c = clock();
    const genuine = new CustomerTokens([key("k1")], c.now);
    const forger = new CustomerTokens([{ id: "k1", secret: Buffer.from("a guess at the secret, long enough!!") }], c.now);
    const { token } = forger.mint({ customerId: "cus_a", featureKeys: [], ttlSeconds: 1 });
    c.advance(5000);
    expect(genuine.verify(token)).toMatchObject({ ok: false, reason: "TOKEN_INVALID" });
  });

  it("rotates: the first key signs, every configured key verifies", () => {
    const before = new CustomerTokens([key("old")]);
    const oldToken = before.mint({ customerId: "cus_a", featureKeys: [], ttlSeconds: 60 }).token;
    // Rotation, step 1: the new key signs, the old one still verifies.
    const during = new CustomerTokens([key("new"), key("old")]);
    const newToken = during.mint({ customerId: "cus_a", featureKeys: [], ttlSeconds: 60 }).token;
    expect(during.signingKeyId).toBe("new");
    expect(during.verify(oldToken)).toMatchObject({ ok: true, principal: { keyId: "old" } });
    expect(during.verify(newToken)).toMatchObject({ ok: true, principal: { keyId: "new" } });
    // Step 2, once old tokens have expired: the old key is removed.
    const after = new CustomerTokens([key("new")]);
    expect(after.verify(oldToken)).toMatchObject({ ok: false, reason: "TOKEN_INVALID", message: expect.stringMatching(/key "old", which is not configured/) });
    expect(after.verify(newToken).ok).toBe(true);
  });

  it("derives one stable signing key per secret key when none is configured", () => {
    const [a, b] = deriveSigningKeys(["sk_one", "sk_two"]);
    expect(a?.id).toMatch(/^sk-[0-9a-f]{8}$/);
    expect(a?.secret.length).toBe(32);
    expect(a?.secret.equals(deriveSigningKeys(["sk_one"])[0]!.secret)).toBe(true);
    expect(a?.secret.equals(b!.secret)).toBe(false);
    // Neither the key nor its id reveals the secret key.
    expect(a?.secret.toString("utf8")).not.toContain("sk_one");
  });

  it("refuses a configuration without keys, with a bad id, or with the same id twice", () => {
    expect(() => new CustomerTokens([])).toThrow(/at least one/);
    expect(() => new CustomerTokens([key("bad id")])).toThrow(/must match/);
    expect(() => new CustomerTokens([key("k1"), key("k1")])).toThrow(/twice/);
  });
});

describe("TokenBucketLimiter", () => {
  it("admits a burst, then one call per 1/rate seconds, and says how long to wait", () => {
    const c = clock();
    const limiter = new TokenBucketLimiter({ perSecond: 2, burst: 3 }, c.now);
    expect([limiter.take("t"), limiter.take("t"), limiter.take("t")].every((a) => a.ok)).toBe(true);
    expect(limiter.take("t")).toEqual({ ok: false, retryAfterMs: 500 });
    c.advance(200);
    expect(limiter.take("t")).toEqual({ ok: false, retryAfterMs: 300 });
    c.advance(300);
    expect(limiter.take("t").ok).toBe(true);
    // Another token has its own bucket.
    expect(limiter.take("u").ok).toBe(true);
  });

  it("forgets buckets that have filled up again", () => {
    const c = clock();
    const limiter = new TokenBucketLimiter({ perSecond: 10, burst: 5 }, c.now);
    for (let i = 0; i < 999; i++) limiter.take(`token-${i}`);
    expect(limiter.size).toBe(999);
    c.advance(1000);
    limiter.take("last");
    expect(limiter.size).toBe(1);
  });

  it("parses rates", () => {
    expect(parseRate("20/s")).toBe(20);
    expect(parseRate("600/m")).toBe(10);
    expect(parseRate(" 3600 / h ")).toBe(1);
    expect(parseRate("0.5/s")).toBe(0.5);
    for (const bad of ["0/s", "20", "20/d", "-1/s", "fast"]) expect(parseRate(bad), bad).toBeNull();
  });
});

describe("Authenticator", () => {
  const signing = key("k1");
  const c = clock(Date.now());
  const tokens = new CustomerTokens([signing], c.now);
  const auth = new Authenticator({
    secretKeys: new SecretKeyAuthenticator(["sk_live_secret"]),
    tokens,
    limiter: new TokenBucketLimiter({ perSecond: 1, burst: 2 }, c.now),
    customerProcedures: CUSTOMER_TOKEN_PROCEDURES,
  });
  const TRACK = "/meterd.v1.MeteringService/Track";
  const bearer = (credential: string) => (name: string) => (name === "authorization" ? `Bearer ${credential}` : undefined);

  function refusal(credential: string | null, procedure = TRACK): { code: Code; reason: string; message: string; metadata: Headers } {
    try {
      auth.authenticate(credential === null ? () => undefined : bearer(credential), procedure);
    } catch (err) {
      expect(err).toBeInstanceOf(MeterError);
      const e = err as MeterError;
      const detail = e.findDetails(ErrorDetailSchema)[0];
      return { code: e.code, reason: detail?.reason ?? "", message: e.rawMessage, metadata: e.metadata };
    }
    throw new Error("the call was admitted");
  }

  it("admits a secret key for any procedure, and a token for the browser's six", () => {
    expect(auth.authenticate(bearer("sk_live_secret"), "/meterd.v1.CatalogService/ListFeatures")).toMatchObject({ kind: "secret" });
    const { token } = tokens.mint({ customerId: "cus_a", featureKeys: [], ttlSeconds: 60 });
    for (const procedure of CUSTOMER_TOKEN_PROCEDURES) {
      expect(auth.authenticate(bearer(token), procedure)).toMatchObject({ kind: "customer", customerId: "cus_a" });
      c.advance(1000);
    }
    expect([...CUSTOMER_TOKEN_PROCEDURES].map((p) => p.split("/")[2])).toEqual(["Track", "Check", "GetMetrics", "WatchUsage", "ListEvents", "QueryUsage"]);
  });

  it("refuses with UNAUTHENTICATED and a reason: missing, unknown key, forged or expired token", () => {
    expect(refusal(null)).toMatchObject({ code: Code.Unauthenticated, reason: "CREDENTIAL_MISSING" });
    expect(refusal("sk_live_wrong")).toMatchObject({ code: Code.Unauthenticated, reason: "CREDENTIAL_INVALID" });
    const { token } = tokens.mint({ customerId: "cus_a", featureKeys: [], ttlSeconds: 60 });
    expect(refusal(`${token.slice(0, -3)}abc`)).toMatchObject({ code: Code.Unauthenticated, reason: "TOKEN_INVALID" });
    c.advance(61_000);
    expect(refusal(token)).toMatchObject({ code: Code.Unauthenticated, reason: "TOKEN_EXPIRED" });
  });

  it("refuses a token with PERMISSION_DENIED on every other procedure", () => {
    for (const procedure of [
      "/meterd.v1.MeteringService/SetUsage",
      "/meterd.v1.MeteringService/TrackBatch",
      "/meterd.v1.MeteringService/TrackStream",
      "/meterd.v1.CatalogService/UpsertPlan",
      "/meterd.v1.AuthService/CreateCustomerToken",
    ]) {
      const { token } = tokens.mint({ customerId: "cus_a", featureKeys: [], ttlSeconds: 60 });
      expect(refusal(token, procedure), procedure).toMatchObject({
        code: Code.PermissionDenied,
        reason: "SECRET_KEY_REQUIRED",
        message: expect.stringMatching(/needs a secret key; a customer token may call only Track, Check, GetMetrics, WatchUsage, ListEvents, QueryUsage/),
      });
    }
  });

  it("rate-limits each token with RESOURCE_EXHAUSTED and a retry-after hint", () => {
    const { token } = tokens.mint({ customerId: "cus_a", featureKeys: [], ttlSeconds: 60 });
    auth.authenticate(bearer(token), TRACK);
    auth.authenticate(bearer(token), TRACK);
    const limited = refusal(token);
    expect(limited).toMatchObject({ code: Code.ResourceExhausted, reason: "TOKEN_RATE_LIMITED", message: expect.stringMatching(/retry in 1000 ms/) });
    expect(limited.metadata.get("retry-after")).toBe("1");
    expect(limited.metadata.get("retry-after-ms")).toBe("1000");
    // Another token of the same customer is not held back.
    const other = tokens.mint({ customerId: "cus_a", featureKeys: [], ttlSeconds: 60 }).token;
    expect(auth.authenticate(bearer(other), TRACK)).toMatchObject({ kind: "customer" });
    c.advance(1000);
    expect(auth.authenticate(bearer(token), TRACK)).toMatchObject({ kind: "customer" });
  });
});

describe("configuration", () => {
  const secret = "0123456789abcdef0123456789abcdef";

  it("has defaults: derived signing keys, 10 calls per second with bursts of 20", () => {
    const config = loadConfig({});
    expect(config.tokenKeys).toEqual([]);
    expect(config.tokenRate).toEqual({ perSecond: 10, burst: 20 });
  });

  it("reads signing keys in order, a rate and a burst, or no limit", () => {
    const config = loadConfig({ METERD_TOKEN_KEYS: `k2:${secret}x, k1:${secret}:with:colons`, METERD_TOKEN_RATE: "120/m", METERD_TOKEN_BURST: "5" });
    expect(config.tokenKeys).toEqual([
      { id: "k2", secret: `${secret}x` },
      { id: "k1", secret: `${secret}:with:colons` },
    ]);
    expect(config.tokenRate).toEqual({ perSecond: 2, burst: 5 });
    expect(loadConfig({ METERD_TOKEN_RATE: "off" }).tokenRate).toBeNull();
  });

  it.each([
    ["METERD_TOKEN_KEYS", "no-colon"],
    ["METERD_TOKEN_KEYS", "k1:short"],
    ["METERD_TOKEN_KEYS", `bad id:${secret}`],
    ["METERD_TOKEN_KEYS", `k1:${secret},k1:${secret}`],
    ["METERD_TOKEN_RATE", "lots"],
    ["METERD_TOKEN_BURST", "0"],
  ])("refuses %s=%s", (name, value) => {
    expect(() => loadConfig({ [name]: value })).toThrow(ConfigError);
  });
});
