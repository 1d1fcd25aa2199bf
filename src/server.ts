// Builds meterd: the application, both listeners over the same handlers, health, and shutdown.
// Building does not start anything on its own port until listen; tests build the same server on port 0.
import type { Logger } from "pino";
import { CatalogService } from "../gen/meterd/v1/catalog_pb.js";
import { MeteringService } from "../gen/meterd/v1/metering_pb.js";
import { type App, openApp } from "./app.js";
import { loadOrCreateDevKey } from "./auth/dev-key.js";
import { SecretKeyAuthenticator } from "./auth/secret-keys.js";
import type { Config } from "./config.js";
import { createCatalogService } from "./rpc/catalog-service.js";
import { createGrpcListener, rpcService } from "./rpc/grpc-listener.js";
import { createHealthService, Health, HealthState, ServingStatus } from "./rpc/health.js";
import { createHttpListener } from "./rpc/http-listener.js";
import { createMeteringService } from "./rpc/metering-service.js";

export interface Server {
  app: App;
  grpcPort: number;
  httpPort: number;
  /** The development key, when no secret key was configured. */
  devKey: { key: string; created: boolean } | null;
  /** Stops accepting, finishes in-flight calls (up to graceMs), flushes the ledger, releases everything. */
  close(graceMs?: number): Promise<void>;
}

const PUBLIC_SERVICES = [Health.typeName];

export async function startServer(config: Config, logger: Logger): Promise<Server> {
  const devKey = config.secretKeys.length === 0 ? await loadOrCreateDevKey(config.dataDir) : null;
  const auth = new SecretKeyAuthenticator(devKey ? [devKey.key] : config.secretKeys);
  const authenticate = auth.authenticate.bind(auth);

  const app = await openApp(config, logger);
  const health = new HealthState();
  const services = [
    rpcService(MeteringService, createMeteringService(app.meter, app.metrics, logger)),
    rpcService(CatalogService, createCatalogService(app)),
    rpcService(Health, createHealthService(health)),
  ];
  const common = {
    services,
    authenticate,
    publicServices: PUBLIC_SERVICES,
    maxMessageBytes: config.maxMessageBytes,
    maxTimeoutMs: config.maxTimeoutMs,
    logger,
  };
  const grpc = createGrpcListener(common);
  const http = createHttpListener({ ...common, corsOrigins: config.corsOrigins });
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
  for (const name of ["", MeteringService.typeName, CatalogService.typeName]) health.set(name, ServingStatus.SERVING);

  let closing: Promise<void> | null = null;
  return {
    app,
    grpcPort,
    httpPort,
    devKey,
    close(graceMs = 10_000) {
      closing ??= (async () => {
        health.shutdown();
        await Promise.all([grpc.close(graceMs), http.close(graceMs)]);
        await app.close();
      })();
      return closing;
    },
  };
}
