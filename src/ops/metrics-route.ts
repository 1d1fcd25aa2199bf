// GET /metrics on the Connect port, without a key: the Prometheus text format of this server's
// registry (prometheus.ts). Keep the port off the public internet, as for the probes.
import type { RpcLogger } from "../rpc/errors.js";
import type { HttpRequest, HttpResponse } from "../rpc/http-listener.js";
import type { PrometheusMetrics } from "./prometheus.js";

/** The metrics as an extra route of the HTTP listener: true when it answered the request. */
export function metricsRoute(metrics: PrometheusMetrics, logger: RpcLogger): (req: HttpRequest, res: HttpResponse) => boolean {
  return (req, res) => {
    if ((req.url ?? "").split("?", 1)[0] !== "/metrics") return false;
    if (req.method !== "GET" && req.method !== "HEAD") {
      res.writeHead(405, { allow: "GET, HEAD", "content-type": "text/plain; charset=utf-8" });
      res.end("method not allowed\n");
      return true;
    }
    metrics.scrape().then(
      ({ contentType, body }) => {
        res.writeHead(200, { "content-type": contentType, "cache-control": "no-store", "content-length": String(Buffer.byteLength(body)) });
        if (req.method === "HEAD") res.end();
        else res.end(body);
      },
      (err: unknown) => {
        logger.error({ err }, "metrics scrape failed");
        res.writeHead(500, { "content-type": "text/plain; charset=utf-8" });
        res.end("metrics scrape failed\n");
      },
    );
    return true;
  };
}
