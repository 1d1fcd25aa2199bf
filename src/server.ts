// Builds meterd: the application, both listeners over the same handlers, health, and shutdown.
// Building does not start anything on its own port until listen; tests build the same server on port 0.
import type { Logger } from "pino";
import { AuthService } from "../gen/meterd/v1/auth_pb.js";
import { CatalogService } from "../gen/meterd/v1/catalog_pb.js";
import { MeteringService } from "../gen/meterd/v1/metering_pb.js";
import { type App, openApp } from "./app.js";
import { Authenticator } from "./auth/authenticator.js";
import { CustomerTokens, deriveSigningKeys } from "./auth/customer-tokens.js";
import { loadOrCreateDevKey } from "./auth/dev-key.js";
import { TokenBucketLimiter } from "./auth/rate-limit.js";
import { SecretKeyAuthenticator } from "./auth/secret-keys.js";
import type { Config } from "./config.js";
import { createAuthService } from "./rpc/auth-service.js";
import { createCatalogService } from "./rpc/catalog-service.js";
import { CUSTOMER_TOKEN_PROCEDURES } from "./rpc/customer-scope.js";
import { createGrpcListener } from "./rpc/grpc/listener.js";
import { rpcService } from "./rpc/service.js";
import { createHealthService, Health, HealthState } from "./rpc/health.js";
import { createHttpListener } from "./rpc/http-listener.js";
import { createMeteringService } from "./rpc/metering-service.js";
import { createReflectionServices, REFLECTION_SERVICES } from "./rpc/reflection.js";
import { usagePageRoute } from "./rpc/usage-page.js";
import { metricsRoute } from "./ops/metrics-route.js";
import { PrometheusMetrics } from "./ops/prometheus.js";
import { probesRoute } from "./ops/probes-route.js";
import { Readiness } from "./ops/readiness.js";
import { accessLog } from "./ops/access-log.js";
import { bothCallMetrics } from "./rpc/call-metrics.js";

export interface Server {
  app: App;
  grpcPort: number;
  httpPort: number;
  /** The development key, when no secret key was configured. */
  devKey: { key: string; created: boolean } | null;
  /** Mints and verifies customer tokens (what AuthService/CreateCustomerToken uses). */
  tokens: CustomerTokens;
  /** Stops accepting, finishes in-flight calls (up to graceMs), flushes the ledger, releases everything. */
  close(graceMs?: number): Promise<void>;
}

const PUBLIC_SERVICES = [Health.typeName, ...REFLECTION_SERVICES];

export async function startServer(config: Config, logger: Logger): Promise<Server> {
  const devKey = config.secretKeys.length === 0 ? await loadOrCreateDevKey(config.dataDir) : null;
  const secretKeys = devKey ? [devKey.key] : config.secretKeys;
  // Without METERD_TOKEN_KEYS, tokens are signed with keys derived from the secret keys, so that
  // every replica that shares the secret keys verifies the same tokens.
  const tokens = new CustomerTokens(
    config.tokenKeys.length > 0
      ? config.tokenKeys.map((k) => ({ id: k.id, secret: Buffer.from(k.secret, "utf8") }))
      : deriveSigningKeys(secretKeys),
  );
  const auth = new Authenticator({
    secretKeys: new SecretKeyAuthenticator(secretKeys),
    tokens,
    limiter: config.tokenRate === null ? null : new TokenBucketLimiter(config.tokenRate),
    customerProcedures: CUSTOMER_TOKEN_PROCEDURES,
  });
  const authenticate = auth.authenticate.bind(auth);

  // Prometheus metrics on a registry of this server's own (GET /metrics on the Connect port).
  const prometheus = new PrometheusMetrics();
  const app = await openApp(config, logger, { onCommit: prometheus.observeCommit });
  prometheus.watch({ stats: app.meter.stats, fastPath: app.fastPath, watching: () => app.metrics.watching });
  const health = new HealthState();
  const services = [
    rpcService(MeteringService, createMeteringService(app.meter, app.metrics, logger, config.tuning.maxBatchEvents)),
    rpcService(CatalogService, createCatalogService(app)),
    rpcService(AuthService, createAuthService({ tokens, catalog: app.catalog })),
    rpcService(Health, createHealthService(health)),
  ];
  services.push(...createReflectionServices(services.map((s) => s.service)));
  const common = {
    services,
    authenticate,
    publicServices: PUBLIC_SERVICES,
    maxMessageBytes: config.maxMessageBytes,
    maxTimeoutMs: config.maxTimeoutMs,
    logger,
    // The access log only when its lines would be written: a call then costs nothing more.
    callMetrics: logger.isLevelEnabled("info") ? bothCallMetrics(prometheus.rpc, accessLog(logger, config.tuning.accessLogSample)) : prometheus.rpc,
  };
  const grpc = createGrpcListener(common);
  const readiness = new Readiness(app.dependencies, health, [MeteringService.typeName, CatalogService.typeName, AuthService.typeName], {
    everyMs: config.tuning.readinessEveryMs,
    timeoutMs: config.tuning.readinessTimeoutMs,
  });
  const probes = probesRoute(readiness, logger);
  const usagePage = usagePageRoute(logger);
  const metrics = metricsRoute(prometheus, logger);
  const http = createHttpListener({
    ...common,
    corsOrigins: config.corsOrigins,
    extraRoutes: (req, res) => probes(req, res) || metrics(req, res) || usagePage(req, res),
  });
  let grpcPort: number;
  let httpPort: number;
  try {
    grpcPort = await grpc.listen(config.host, config.grpcPort);
    httpPort = await http.listen(config.host, config.httpPort);
  } catch (error) {
    await Promise.allSettled([grpc.close(0), http.close(0)]);
    await app.close();
    throw error;
  }
  // SERVING once every dependency answers, and from then on as readiness finds them.
  const first = await readiness.start();
  if (!first.ready) logger.warn({ checks: first.checks }, "serving, but not ready: a dependency does not answer");

  let closing: Promise<void> | null = null;
  return {
    app,
    grpcPort,
    httpPort,
    devKey,
    tokens,
    close(graceMs = 10_000) {
      closing ??= (async () => {
        readiness.drain();
        await Promise.all([grpc.close(graceMs), http.close(graceMs)]);
        await app.close();
      })();
      return closing;
    },
  };
}
