// Given secret keys, when requests present credentials, then only the configured keys are accepted,
// and the development key is made once and reused.
import { mkdtemp, readFile, rm, stat } from "node:fs/promises";
import { tmpdir } from "node:os";
import path from "node:path";
import { createHash } from "node:crypto";
import { afterEach, describe, expect, it } from "vitest";
import { loadOrCreateDevKey } from "../../src/auth/dev-key.js";
import { SecretKeyAuthenticator } from "../../src/auth/secret-keys.js";

const headers =
  (values: Record<string, string>) =>
  (name: string): string | undefined =>
    values[name.toLowerCase()];

describe("SecretKeyAuthenticator", () => {
  const auth = new SecretKeyAuthenticator(["sk_one", "sk_two"]);
  const keyId = (key: string): string => createHash("sha256").update(key).digest("hex").slice(0, 8);

  it("accepts a configured key as a Bearer token or as x-api-key", () => {
    expect(auth.authenticate(headers({ authorization: "Bearer sk_one" }))).toEqual({ kind: "secret", keyId: keyId("sk_one") });
    expect(auth.authenticate(headers({ authorization: "bearer   sk_two " }))).toEqual({ kind: "secret", keyId: keyId("sk_two") });
    expect(auth.authenticate(headers({ "x-api-key": "sk_two" }))).toEqual({ kind: "secret", keyId: keyId("sk_two") });
  });

  it("refuses a missing, wrong, or differently shaped credential", () => {
    expect(auth.authenticate(headers({}))).toBeNull();
    expect(auth.authenticate(headers({ authorization: "Bearer sk_three" }))).toBeNull();
    expect(auth.authenticate(headers({ authorization: "Basic sk_one" }))).toBeNull();
    expect(auth.authenticate(headers({ authorization: "Bearer" }))).toBeNull();
    expect(auth.authenticate(headers({ "x-api-key": "sk_on" }))).toBeNull();
    expect(auth.authenticate(headers({ "x-api-key": "sk_one_and_more" }))).toBeNull();
  });

  it("accepts nothing when no key is configured, and refuses an empty key", () => {
    expect(new SecretKeyAuthenticator([]).authenticate(headers({ "x-api-key": "" }))).toBeNull();
    expect(() => new SecretKeyAuthenticator([" "])).toThrow(/empty/);
  });
});

describe("loadOrCreateDevKey", () => {
  let dir: string | undefined;
  afterEach(async () => {
    if (dir !== undefined) await rm(dir, { recursive: true, force: true });
  });

  it("makes a key readable only by its owner, then reuses it", async () => {
    dir = await mkdtemp(path.join(tmpdir(), "meterd-devkey-"));
    const dataDir = path.join(dir, "nested", "data");
    const first = await loadOrCreateDevKey(dataDir);
    expect(first.created).toBe(true);
    expect(first.key).toMatch(/^sk_dev_[A-Za-z0-9_-]{43}$/);
    const file = path.join(dataDir, "dev-key");
    expect((await stat(file)).mode & 0o777).toBe(0o600);
    expect((await readFile(file, "utf8")).trim()).toBe(first.key);

    const second = await loadOrCreateDevKey(dataDir);
    expect(second).toEqual({ key: first.key, created: false });
  });

  it("gives the same key to concurrent first starts", async () => {
    const fresh = await mkdtemp(path.join(tmpdir(), "meterd-devkey-"));
    dir = fresh;
    // Enough of them that one finds the file another has just made, whatever the machine's pace.
    const results = await Promise.all(Array.from({ length: 20 }, () => loadOrCreateDevKey(fresh)));
    expect(new Set(results.map((r) => r.key)).size).toBe(1);
    expect(results.filter((r) => r.created).length).toBe(1);
  });
});
