// Given both listeners, when requests are written by hand (HTTP/1.1 and HTTP/2), then credentials are
// refused before any body byte is sent, in each protocol's own format, and CORS answers only the
// allowed origins.
import http from "node:http";
import http2 from "node:http2";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { pino } from "pino";
import { createHttpListener } from "../../src/rpc/http-listener.js";
import { ALLOWED_ORIGIN, KEY, startServers, type Servers } from "./fixture.js";

let servers: Servers;

beforeAll(async () => {
  servers = await startServers();
});

afterAll(async () => {
  await servers.close(500);
});

interface RawResponse {
  status: number;
  headers: http.IncomingHttpHeaders;
  body: Buffer;
}

/** An HTTP/1.1 request; with `holdBody`, the headers announce a body that is never sent. */
function h1Request(
  port: number,
  options: { method?: string; path: string; headers?: Record<string, string>; body?: string; holdBody?: boolean },
): Promise<RawResponse> {
  return new Promise((resolve, reject) => {
    const req = http.request(
      { host: "127.0.0.1", port, method: options.method ?? "POST", path: options.path, headers: options.headers, agent: false },
      (res) => {
        const chunks: Buffer[] = [];
        res.on("data", (c: Buffer) => chunks.push(c));
        res.on("end", () => {
          resolve({ status: res.statusCode ?? 0, headers: res.headers, body: Buffer.concat(chunks) });
          if (options.holdBody === true) req.destroy();
        });
      },
    );
    req.on("error", reject);
    if (options.holdBody === true) req.flushHeaders();
    else req.end(options.body);
  });
}

/** An HTTP/2 request whose body is never sent; resolves with the response headers once the stream ends. */
function h2RequestWithoutBody(port: number, headers: http2.OutgoingHttpHeaders): Promise<{ headers: http2.IncomingHttpHeaders; ended: boolean }> {
  return new Promise((resolve, reject) => {
    const session = http2.connect(`http://127.0.0.1:${port}`);
    session.on("error", reject);
    const stream = session.request(headers, { endStream: false });
    let response: http2.IncomingHttpHeaders = {};
    stream.on("response", (h) => (response = h));
    stream.on("error", () => {});
    stream.resume();
    // The response ends (END_STREAM) although the request side is still open.
    stream.on("end", () => {
      resolve({ headers: response, ended: true });
      stream.close();
      session.close();
    });
  });
}

const TRACK = "/meterd.v1.MeteringService/Track";

describe("refusing a request before its body is read", () => {
  it("Connect unary over HTTP/1.1: 401 with a JSON error", async () => {
    const res = await h1Request(servers.httpPort, {
      path: TRACK,
      headers: { "content-type": "application/json", "content-length": "1000" },
      holdBody: true,
    });
    expect(res.status).toBe(401);
    expect(res.headers["content-type"]).toBe("application/json");
    expect(JSON.parse(res.body.toString())).toEqual({ code: "unauthenticated", message: expect.stringMatching(/missing credential/) });
  });

  it("Connect streaming over HTTP/1.1: 200 with one end-stream message", async () => {
    const res = await h1Request(servers.httpPort, {
      path: "/meterd.v1.MeteringService/WatchUsage",
      headers: { "content-type": "application/connect+proto", "content-length": "1000", "x-api-key": "wrong" },
      holdBody: true,
    });
    expect(res.status).toBe(200);
    expect(res.body.readUInt8(0)).toBe(0x02);
    expect(res.body.readUInt32BE(1)).toBe(res.body.length - 5);
    expect(JSON.parse(res.body.subarray(5).toString())).toEqual({
      error: { code: "unauthenticated", message: "invalid credential: the key is not accepted" },
    });
  });

  it("gRPC-web over HTTP/1.1: trailers-only grpc-status 16", async () => {
    const res = await h1Request(servers.httpPort, {
      path: TRACK,
      headers: { "content-type": "application/grpc-web+proto", "content-length": "1000" },
      holdBody: true,
    });
    expect(res.status).toBe(200);
    expect(res.headers["grpc-status"]).toBe("16");
    expect(res.headers["grpc-message"]).toMatch(/^missing credential: send/);
  });

  it.each([
    { listener: "Connect listener", port: () => servers.httpPort },
    { listener: "grpc-js listener", port: () => servers.grpcPort },
  ])("gRPC over HTTP/2 on the $listener: trailers-only grpc-status 16", async ({ port }) => {
    const res = await h2RequestWithoutBody(port(), {
      ":method": "POST",
      ":path": TRACK,
      "content-type": "application/grpc",
      te: "trailers",
    });
    expect(res.headers[":status"]).toBe(200);
    expect(res.headers["grpc-status"]).toBe("16");
    expect(res.ended).toBe(true);
  });
});

describe("plain HTTP on the Connect listener", () => {
  it("answers a curl-style JSON call with a key, and health without one", async () => {
    const track = await h1Request(servers.httpPort, {
      path: TRACK,
      headers: { "content-type": "application/json", authorization: `Bearer ${KEY}` },
      body: JSON.stringify({ customerId: "c1", idempotencyKey: "curl-1" }),
    });
    expect(track.status).toBe(200);
    expect(JSON.parse(track.body.toString())).toMatchObject({ eventId: "curl-1" });

    const health = await h1Request(servers.httpPort, {
      path: "/grpc.health.v1.Health/Check",
      headers: { "content-type": "application/json" },
      body: "{}",
    });
    expect(health.status).toBe(200);
    expect(JSON.parse(health.body.toString())).toEqual({ status: "SERVING" });
  });

  it("answers an unknown path with 404", async () => {
    const res = await h1Request(servers.httpPort, { method: "GET", path: "/nope" });
    expect(res.status).toBe(404);
  });
});

describe("CORS", () => {
  const preflight = (origin: string): Promise<RawResponse> =>
    h1Request(servers.httpPort, {
      method: "OPTIONS",
      path: TRACK,
      headers: {
        origin,
        "access-control-request-method": "POST",
        "access-control-request-headers": "authorization,content-type,connect-protocol-version",
      },
    });

  it("answers a preflight from an allowed origin with the allowed methods and headers", async () => {
    const res = await preflight(ALLOWED_ORIGIN);
    expect(res.status).toBe(204);
    expect(res.headers["access-control-allow-origin"]).toBe(ALLOWED_ORIGIN);
    expect(res.headers["access-control-allow-methods"]).toContain("POST");
    const allowed = String(res.headers["access-control-allow-headers"]).toLowerCase().split(/,\s*/);
    expect(allowed).toEqual(expect.arrayContaining(["authorization", "x-api-key", "content-type", "connect-protocol-version"]));
    expect(res.headers.vary).toContain("Origin");
  });

  it("gives no CORS headers to another origin", async () => {
    const res = await preflight("https://evil.example.com");
    expect(res.headers["access-control-allow-origin"]).toBeUndefined();
    expect(res.headers["access-control-allow-headers"]).toBeUndefined();
  });

  it("lets an allowed origin read responses, errors included", async () => {
    const res = await h1Request(servers.httpPort, {
      path: TRACK,
      headers: { origin: ALLOWED_ORIGIN, "content-type": "application/json", "connect-protocol-version": "1" },
      body: "{}",
    });
    expect(res.status).toBe(401);
    expect(res.headers["access-control-allow-origin"]).toBe(ALLOWED_ORIGIN);
    const exposed = String(res.headers["access-control-expose-headers"]);
    expect(exposed).toContain("Grpc-Status");
    expect(exposed).toContain("Retry-After");
  });

  it("never answers with a wildcard origin, nor allows credentials (cookies)", async () => {
    for (const origin of [ALLOWED_ORIGIN, "https://evil.example.com", "null"]) {
      const res = await preflight(origin);
      expect(res.headers["access-control-allow-origin"]).not.toBe("*");
      expect(res.headers["access-control-allow-credentials"]).toBeUndefined();
    }
  });

  // A cross-site page can send a "simple" request (a form post, a link) without a preflight. Such a
  // request cannot carry Authorization or X-Api-Key; the guard also refuses it before anything else.
  it.each([
    { name: "a form-like POST", method: "POST", path: TRACK, headers: { "content-type": "text/plain" } },
    { name: "a JSON POST without Connect-Protocol-Version", method: "POST", path: TRACK, headers: { "content-type": "application/json" } },
    { name: "a GET without connect=v1", method: "GET", path: "/meterd.v1.MeteringService/Check?encoding=json&message=%7B%7D", headers: {} },
  ])("refuses $name from a browser with INVALID_ARGUMENT before reading it", async ({ method, path, headers }) => {
    const before = servers.observed.trackCalls;
    const res = await h1Request(servers.httpPort, {
      method,
      path,
      headers: { origin: "https://evil.example.com", authorization: `Bearer ${KEY}`, ...headers },
      ...(method === "POST" ? { body: "{}" } : {}),
    });
    expect(res.status).toBe(400);
    expect(JSON.parse(res.body.toString())).toMatchObject({
      code: "invalid_argument",
      message: expect.stringMatching(/Connect-Protocol-Version: 1/),
      details: [{ type: "meterd.v1.ErrorDetail", debug: { reason: "CONNECT_PROTOCOL_HEADER_REQUIRED" } }],
    });
    expect(res.headers["access-control-allow-origin"]).toBeUndefined();
    expect(servers.observed.trackCalls).toBe(before);
  });

  it("lets browser requests through when they carry what only a preflighted request can", async () => {
    for (const headers of [
      { "content-type": "application/json", "connect-protocol-version": "1" },
      { "content-type": "application/grpc-web+proto" },
    ]) {
      const res = await h1Request(servers.httpPort, { path: TRACK, headers: { origin: ALLOWED_ORIGIN, ...headers }, body: "" });
      // Past the guard: refused for the missing key instead.
      expect(res.headers["grpc-status"] ?? String(res.status)).toMatch(/^(16|401)$/);
    }
  });
});

describe("extraRoutes", () => {
  it("answers its own paths before Connect", async () => {
    const listener = createHttpListener({
      services: [],
      authenticate: () => null,
      corsOrigins: [],
      maxMessageBytes: 1024,
      maxTimeoutMs: 1000,
      logger: pino({ level: "silent" }),
      extraRoutes: (req, res) => {
        if (req.url !== "/metrics") return false;
        res.writeHead(200, { "content-type": "text/plain" });
        res.end("up 1\n");
        return true;
      },
    });
    const port = await listener.listen("127.0.0.1", 0);
    try {
      const metrics = await h1Request(port, { method: "GET", path: "/metrics" });
      expect(metrics.status).toBe(200);
      expect(metrics.body.toString()).toBe("up 1\n");
      expect((await h1Request(port, { method: "GET", path: "/other" })).status).toBe(404);
    } finally {
      await listener.close(100);
    }
  });
});
