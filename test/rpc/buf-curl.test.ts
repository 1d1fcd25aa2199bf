// Given both listeners, when `npx buf curl` calls them exactly as the README shows, then it gets the
// answers, and an UNAUTHENTICATED error without a key.
import { execFile } from "node:child_process";
import path from "node:path";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { KEY, startServers, type Servers } from "./fixture.js";

const ROOT = path.resolve(import.meta.dirname, "../..");

let servers: Servers;

beforeAll(async () => {
  servers = await startServers();
});

afterAll(async () => {
  await servers.close(500);
});

function bufCurl(args: string[]): Promise<{ code: number; stdout: string; stderr: string }> {
  return new Promise((resolve) => {
    execFile("npx", ["buf", "curl", "--schema", "proto", ...args], { cwd: ROOT, timeout: 20_000 }, (err, stdout, stderr) => {
      const code = err === null ? 0 : typeof err.code === "number" ? err.code : 1;
      resolve({ code, stdout, stderr });
    });
  });
}

const track = JSON.stringify({ customer_id: "c1", feature_key: "api_calls", amount: 1, idempotency_key: "evt-curl" });

describe.each([
  { name: "--protocol grpc to the grpc-js listener", protocol: ["--protocol", "grpc", "--http2-prior-knowledge"], port: () => servers.grpcPort },
  { name: "--protocol grpc (h2c) to the Connect listener", protocol: ["--protocol", "grpc", "--http2-prior-knowledge"], port: () => servers.httpPort },
  { name: "--protocol connect to the Connect listener", protocol: ["--protocol", "connect"], port: () => servers.httpPort },
  { name: "--protocol grpcweb to the Connect listener", protocol: ["--protocol", "grpcweb"], port: () => servers.httpPort },
])("buf curl $name", ({ protocol, port }) => {
  const url = (procedure: string): string => `http://127.0.0.1:${port()}/${procedure}`;

  it("calls Track with a key", async () => {
    const res = await bufCurl([...protocol, "-H", `authorization: Bearer ${KEY}`, "-d", track, url("meterd.v1.MeteringService/Track")]);
    expect(res.stderr).not.toMatch(/"code"/);
    expect(res.code).toBe(0);
    expect(JSON.parse(res.stdout)).toMatchObject({ eventId: "evt-curl", thresholdsCrossed: [80] });
  });

  it("calls ListEvents with the README's request", async () => {
    const body = JSON.stringify({ customer_id: "cus_42", feature_key: "api_calls", from: "2026-11-01T00:00:00Z", page_size: 50 });
    const res = await bufCurl([...protocol, "-H", `authorization: Bearer ${KEY}`, "-d", body, url("meterd.v1.MeteringService/ListEvents")]);
    expect(res.code).toBe(0);
    expect(JSON.parse(res.stdout)).toEqual({
      events: [{ id: "evt-50", customerId: "cus_42", featureKey: "api_calls", amount: "1.5", credits: "0", idempotencyKey: "2026-11-01T00:00:00.000Z" }],
    });
  });

  it("gets UNAUTHENTICATED without a key", async () => {
    const res = await bufCurl([...protocol, "-d", track, url("meterd.v1.MeteringService/Track")]);
    expect(res.code).not.toBe(0);
    expect(res.stderr).toMatch(/"code": "unauthenticated"/);
  });

  it("checks health without a key", async () => {
    const res = await bufCurl([...protocol, "-d", "{}", url("grpc.health.v1.Health/Check")]);
    expect(res.code).toBe(0);
    expect(JSON.parse(res.stdout)).toEqual({ status: "SERVING" });
  });
});
