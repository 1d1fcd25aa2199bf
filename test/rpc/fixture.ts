// A tiny MeteringService and the health service, served by both listeners on free ports.
import { setTimeout as sleep } from "node:timers/promises";
import { Code, ConnectError, type ServiceImpl } from "@connectrpc/connect";
import { pino } from "pino";
import { SecretKeyAuthenticator } from "../../src/auth/secret-keys.js";
import { principalKey } from "../../src/rpc/context.js";
import { createGrpcListener, type GrpcListener } from "../../src/rpc/grpc/listener.js";
import { rpcService } from "../../src/rpc/service.js";
import { createHealthService, Health, HealthState, ServingStatus } from "../../src/rpc/health.js";
import { createHttpListener, type HttpListener } from "../../src/rpc/http-listener.js";
import { HealthCheckRequestSchema } from "../../gen/grpc/health/v1/health_pb.js";
import { MeteringService } from "../../gen/meterd/v1/metering_pb.js";

export const KEY = "sk_test_0123456789abcdef";
export const ALLOWED_ORIGIN = "https://app.example.com";
export const MAX_MESSAGE_BYTES = 64 * 1024;
export const MAX_TIMEOUT_MS = 1500;

export interface Observed {
  /** Plain errors thrown by handlers, as logged by the listeners. */
  logged: unknown[];
  /** Track calls that reached the implementation. */
  trackCalls: number;
  /** The code of each abort that a "hang" call saw, in order. */
  aborts: Code[];
}

function testMetering(observed: Observed): ServiceImpl<typeof MeteringService> {
  return {
    async track(req, ctx) {
      observed.trackCalls++;
      ctx.responseHeader.set("x-key-id", ctx.values.get(principalKey)?.keyId ?? "none");
      ctx.responseTrailer.set("x-trailer", "bye");
      if (Number.isNaN(req.amount)) throw new ConnectError("amount must be a number", Code.InvalidArgument);
      switch (req.customerId) {
        case "boom":
          throw new Error("secret database password in a stack trace");
        case "details":
          throw new ConnectError("bad request", Code.FailedPrecondition, undefined, [
            { desc: HealthCheckRequestSchema, value: { service: "detail-payload" } },
          ]);
        case "slow":
          await sleep(300);
          break;
        case "hang":
          // Runs until the call's signal fires: deadline, cancel or shutdown.
          await new Promise((_, reject) =>
            ctx.signal.addEventListener("abort", () => {
              observed.aborts.push(ConnectError.from(ctx.signal.reason).code);
              reject(ctx.signal.reason);
            }),
          );
          break;
      }
      return { eventId: req.idempotencyKey, thresholdsCrossed: [80] };
    },
    trackBatch() {
      throw new ConnectError("not in this test", Code.Unimplemented);
    },
    async *trackStream(requests) {
      let sequence = 0n;
      for await (const req of requests) {
        sequence++;
        yield {
          sequence,
          results: req.events.map((e) => ({ outcome: { case: "tracked" as const, value: { eventId: e.idempotencyKey } } })),
        };
      }
    },
    setUsage() {
      throw new ConnectError("not in this test", Code.Unimplemented);
    },
    check() {
      return { allowed: true };
    },
    getMetrics() {
      return { metrics: [] };
    },
    queryUsage() {
      return { buckets: [] };
    },
    listEvents(req) {
      // One event that reflects the request, so that a client can tell its fields arrived.
      const from = req.from === undefined ? "" : new Date(Number(req.from.seconds) * 1000).toISOString();
      return { events: [{ id: `evt-${req.pageSize}`, customerId: req.customerId, featureKey: req.featureKey, amount: "1.5", credits: "0", idempotencyKey: from }] };
    },
    async *watchUsage(req) {
      for (let i = 1; i <= 3; i++) {
        await sleep(5);
        yield { metrics: [{ featureKey: req.featureKey, consumed: i }] };
      }
    },
  };
}

export interface Servers {
  grpc: GrpcListener;
  http: HttpListener;
  grpcPort: number;
  httpPort: number;
  health: HealthState;
  observed: Observed;
  close(graceMs?: number): Promise<void>;
}

export async function startServers(): Promise<Servers> {
  const observed: Observed = { logged: [], trackCalls: 0, aborts: [] };
  const logger = pino({ level: "silent" });
  logger.error = ((obj: unknown) => {
    observed.logged.push(obj);
  }) as typeof logger.error;

  const health = new HealthState();
  health.set("", ServingStatus.SERVING);
  health.set(MeteringService.typeName, ServingStatus.SERVING);

  const services = [
    rpcService(MeteringService, testMetering(observed)),
    rpcService(Health, createHealthService(health)),
  ];
  const authenticator = new SecretKeyAuthenticator([KEY, "sk_test_other_key"]);
  const common = {
    services,
    authenticate: (h: Parameters<SecretKeyAuthenticator["authenticate"]>[0]) => authenticator.authenticate(h),
    publicServices: [Health.typeName],
    maxMessageBytes: MAX_MESSAGE_BYTES,
    maxTimeoutMs: MAX_TIMEOUT_MS,
    logger,
  };
  const grpc = createGrpcListener(common);
  const http = createHttpListener({ ...common, corsOrigins: [ALLOWED_ORIGIN] });
  const [grpcPort, httpPort] = await Promise.all([grpc.listen("127.0.0.1", 0), http.listen("127.0.0.1", 0)]);
  return {
    grpc,
    http,
    grpcPort,
    httpPort,
    health,
    observed,
    async close(graceMs = 2000) {
      health.shutdown();
      await Promise.all([grpc.close(graceMs), http.close(graceMs)]);
    },
  };
}
