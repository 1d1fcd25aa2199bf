// Given the page's source in web/, then it type-checks with its own DOM tsconfig and esbuild bundles
// it; and the Connect listener serves it at /ui/ with headers that keep the token on the page.
import { execFile } from "node:child_process";
import path from "node:path";
import { promisify } from "node:util";
import { pino } from "pino";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { createHttpListener, type HttpListener } from "../../src/rpc/http-listener.js";
import { buildUsagePageScript, usagePageRoute } from "../../src/rpc/usage-page.js";
import { ROOT } from "../server/harness.js";

describe("the page's source", () => {
  it("type-checks (tsc -p web)", async () => {
    const tsc = path.join(ROOT, "node_modules", "typescript", "bin", "tsc");
    await expect(promisify(execFile)(process.execPath, [tsc, "--noEmit", "-p", path.join(ROOT, "web")], { cwd: ROOT })).resolves.toBeDefined();
  }, 60_000);

  it("bundles into one classic script with the generated client and no secret", async () => {
    const script = (await buildUsagePageScript()).toString();
    // Booleans, so that a failure does not print 100 kB of minified code.
    expect(script.length).toBeGreaterThan(10_000);
    expect(script.startsWith('"use strict";(()=>{'), "an IIFE").toBe(true);
    expect(/connect-protocol-version/i.test(script), "connect-web's Connect transport").toBe(true);
    expect(script.includes("Live: the bars move"), "the page's own code").toBe(true);
    expect(/^\s*(import|export)\s/m.test(script), "no module syntax").toBe(false);
    expect(/sk_(live|test|dev)_/.test(script), "no secret key").toBe(false);
  });
});

describe("/ui/ on the Connect listener", () => {
  let listener: HttpListener;
  let base: string;

  beforeAll(async () => {
    listener = createHttpListener({
      services: [],
      authenticate: () => null,
      corsOrigins: [],
      maxMessageBytes: 1024,
      maxTimeoutMs: 1000,
      logger: pino({ level: "silent" }),
      extraRoutes: usagePageRoute(pino({ level: "silent" })),
    });
    base = `http://127.0.0.1:${await listener.listen("127.0.0.1", 0)}`;
  });

  afterAll(async () => {
    await listener.close(100);
  });

  it("serves the page, its style and its script, with a strict CSP and no referrer", async () => {
    for (const [file, type] of [
      ["/ui/", "text/html"],
      ["/ui/style.css", "text/css"],
      ["/ui/app.js", "text/javascript"],
    ] as const) {
      const res = await fetch(`${base}${file}`);
      expect(res.status, file).toBe(200);
      expect(res.headers.get("content-type"), file).toContain(type);
      expect(res.headers.get("content-security-policy"), file).toContain("connect-src 'self'");
      expect(res.headers.get("referrer-policy"), file).toBe("no-referrer");
      expect(res.headers.get("x-content-type-options"), file).toBe("nosniff");
    }
    const html = await (await fetch(`${base}/ui/`)).text();
    expect(html).toContain('<script defer src="app.js"></script>');
    expect(html).toContain('<main id="meterd-usage">');
  });

  it("redirects /ui to /ui/, answers HEAD, and refuses other paths and methods", async () => {
    const redirect = await fetch(`${base}/ui`, { redirect: "manual" });
    expect(redirect.status).toBe(308);
    expect(redirect.headers.get("location")).toBe("/ui/");
    const head = await fetch(`${base}/ui/app.js`, { method: "HEAD" });
    expect(head.status).toBe(200);
    expect(Number(head.headers.get("content-length"))).toBeGreaterThan(10_000);
    expect((await fetch(`${base}/ui/../src/server.ts`)).status).toBe(404);
    expect((await fetch(`${base}/ui/main.ts`)).status).toBe(404);
    expect((await fetch(`${base}/ui/`, { method: "POST", body: "x" })).status).toBe(405);
    expect((await fetch(`${base}/elsewhere`)).status).toBe(404);
  });
});
