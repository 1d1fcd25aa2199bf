// The usage page at /ui/ on the Connect listener: web/index.html, web/style.css, and web/main.ts
// bundled by esbuild into app.js on first request (kept in memory, so it always matches the source).
// The page holds a customer token, never a secret key; see web/main.ts.
import { readFile } from "node:fs/promises";
import { fileURLToPath } from "node:url";
import type { RpcLogger } from "./errors.js";
import type { HttpRequest, HttpResponse } from "./http-listener.js";

export const WEB_DIR = fileURLToPath(new URL("../../web/", import.meta.url));

/** Bundles the page's script: one classic script (IIFE), so that other origins can embed it too. */
export async function buildUsagePageScript(): Promise<Buffer> {
  const { build } = await import("esbuild");
  const result = await build({
    entryPoints: [`${WEB_DIR}main.ts`],
    tsconfig: `${WEB_DIR}tsconfig.json`,
    bundle: true,
    format: "iife",
    platform: "browser",
    target: "es2022",
    minify: true,
    legalComments: "none",
    write: false,
    logLevel: "silent",
  });
  const output = result.outputFiles[0];
  if (output === undefined) throw new Error("esbuild wrote no bundle");
  return Buffer.from(output.contents);
}

interface Asset {
  type: string;
  load: () => Promise<Buffer>;
}

const SECURITY_HEADERS = {
  // The page talks only to the origin that served it; the token in the fragment never leaves it.
  "content-security-policy":
    "default-src 'none'; script-src 'self'; style-src 'self'; connect-src 'self'; img-src 'self' data:; base-uri 'none'; form-action 'none'; frame-ancestors 'none'",
  "referrer-policy": "no-referrer",
  "x-content-type-options": "nosniff",
  "cache-control": "no-cache",
};

/** An extraRoutes handler for the Connect listener: answers /ui and everything under /ui/. */
export function usagePageRoute(logger: RpcLogger): (req: HttpRequest, res: HttpResponse) => boolean {
  const cache = new Map<string, Promise<Buffer>>();
  const once = (name: string, load: () => Promise<Buffer>) => () => {
    let loaded = cache.get(name);
    if (loaded === undefined) {
      loaded = load();
      cache.set(name, loaded);
      // A failed build is tried again on the next request.
      loaded.catch(() => cache.delete(name));
    }
    return loaded;
  };
  const assets = new Map<string, Asset>([
    ["/ui/", { type: "text/html; charset=utf-8", load: once("html", () => readFile(`${WEB_DIR}index.html`)) }],
    ["/ui/style.css", { type: "text/css; charset=utf-8", load: once("css", () => readFile(`${WEB_DIR}style.css`)) }],
    ["/ui/app.js", { type: "text/javascript; charset=utf-8", load: once("js", buildUsagePageScript) }],
  ]);

  return (req, res) => {
    const path = (req.url ?? "").split("?", 1)[0] ?? "";
    if (path !== "/ui" && !path.startsWith("/ui/")) return false;
    if (req.method !== "GET" && req.method !== "HEAD") {
      res.writeHead(405, { allow: "GET, HEAD", "content-type": "text/plain; charset=utf-8" });
      res.end("method not allowed\n");
      return true;
    }
    if (path === "/ui" || path === "/ui/index.html") {
      res.writeHead(308, { location: "/ui/" });
      res.end();
      return true;
    }
    const asset = assets.get(path);
    if (asset === undefined) {
      res.writeHead(404, { "content-type": "text/plain; charset=utf-8" });
      res.end("not found\n");
      return true;
    }
    asset.load().then(
      (body) => {
        res.writeHead(200, { ...SECURITY_HEADERS, "content-type": asset.type, "content-length": String(body.length) });
        if (req.method === "HEAD") res.end();
        else res.end(body);
      },
      (err: unknown) => {
        logger.error({ err, path }, "usage page asset failed");
        if (!res.headersSent) res.writeHead(500, { "content-type": "text/plain; charset=utf-8" });
        res.end("the usage page could not be built; see the server log\n");
      },
    );
    return true;
  };
}
