// Plain HTTP probes on the Connect port, for load balancers and Kubernetes, without a key:
//   GET /healthz   200 while the process serves HTTP at all (liveness)
//   GET /readyz    200 when ready (readiness.ts), else 503; the body says which dependency failed
// Both answer JSON and are never cached.
import type { RpcLogger } from "../rpc/errors.js";
import type { HttpRequest, HttpResponse } from "../rpc/http-listener.js";
import type { Readiness, ReadinessReport } from "./readiness.js";

const HEADERS = { "content-type": "application/json", "cache-control": "no-store" };

function send(req: HttpRequest, res: HttpResponse, status: number, body: unknown): void {
  const json = `${JSON.stringify(body)}\n`;
  res.writeHead(status, { ...HEADERS, "content-length": String(Buffer.byteLength(json)) });
  if (req.method === "HEAD") res.end();
  else res.end(json);
}

/** The probes as an extra route of the HTTP listener: true when it answered the request. */
export function probesRoute(readiness: Readiness, logger: RpcLogger): (req: HttpRequest, res: HttpResponse) => boolean {
  return (req, res) => {
    const path = (req.url ?? "").split("?", 1)[0];
    if (path !== "/healthz" && path !== "/readyz") return false;
    if (req.method !== "GET" && req.method !== "HEAD") {
      res.writeHead(405, { allow: "GET, HEAD", "content-type": "text/plain; charset=utf-8" });
      res.end("method not allowed\n");
      return true;
    }
    if (path === "/healthz") {
      send(req, res, 200, { status: "up" });
      return true;
    }
    readiness.report().then(
      (report: ReadinessReport) => send(req, res, report.ready ? 200 : 503, { status: report.status, checks: report.checks }),
      (err: unknown) => {
        logger.error({ err }, "readiness check failed");
        send(req, res, 503, { status: "not ready", checks: {} });
      },
    );
    return true;
  };
}
