// `meterd serve --workers N`: one process per core on one host, with node:cluster.
//
// The primary serves nothing itself: it forks N workers, and each worker runs the same server
// (startServer) on the same two ports. Under node:cluster a worker's listen() asks the primary for the
// listening socket, so grpc-js's bindAsync and the Connect listener's net.Server in every worker share
// one socket per port (port 0 too: every worker gets the port the first one got). The primary accepts
// each connection and hands it to the next worker in turn (Node's round robin on Linux;
// NODE_CLUSTER_SCHED_POLICY=none leaves the choice to the kernel); a connection, and every call on it,
// stays with the worker that got it.
//
// Workers are replicas of one another: they share the counters, the limits and the ledger through
// Redis and Postgres exactly as replicas on separate hosts do, so worker mode needs REDIS_URL and
// DATABASE_URL (the embedded storage lives in one process).
//
// Start: the first worker alone (it migrates the ledger and makes the development key if there is
// none), then the others together; the banner is printed once every worker listens. Stop: SIGTERM or
// SIGINT is forwarded to every worker, each drains as a single process does, and the primary exits 0
// once all of them have exited 0. A worker that dies on its own is not restarted: the primary logs
// it, stops the others the same way and exits 1, so that the supervisor (systemd, Kubernetes) sees the
// failure and restarts meterd as a whole; what the dead worker had applied but not committed is
// committed by the outbox sweeper of the next start, or of any other replica.
import cluster, { type Worker } from "node:cluster";
import os from "node:os";
import type { Logger } from "pino";
import { type Config, ConfigError } from "./config.js";

/** Set by the primary in its workers' environment: a worker reports to it instead of printing the banner. */
const WORKER_ENV = "METERD_CLUSTER_WORKER";
const READY = "meterd:ready";
const MAX_WORKERS = 1024;

/** What a worker tells the primary once both its listeners are up (and what the banner shows). */
export interface Ready {
  storage: string;
  grpcPort: number;
  httpPort: number;
  devKey: { key: string; created: boolean } | null;
}

/** `--workers` (or METERD_WORKERS): a whole number from 1, or "auto" for one per core; 1 when unset. */
export function parseWorkers(raw: string | undefined, source: string): number {
  if (raw === undefined || raw.trim() === "") return 1;
  const value = raw.trim();
  if (value === "auto") return os.availableParallelism();
  const n = Number(value);
  if (!/^\d+$/.test(value) || n < 1 || n > MAX_WORKERS) {
    throw new ConfigError(`${source} must be a whole number from 1 to ${MAX_WORKERS}, or "auto" (one per core), got "${raw}"`);
  }
  return n;
}

/** True in a process forked by runPrimary. */
export function isWorker(): boolean {
  return cluster.isWorker && process.env[WORKER_ENV] === "1";
}

/** The worker's number (1 to N), for its log lines. */
export function workerId(): number {
  return cluster.worker?.id ?? 0;
}

/** Tells the primary that this worker serves. */
export function reportReady(ready: Ready): void {
  process.send?.({ type: READY, ...ready });
}

/** Worker mode shares the fast path and the ledger between processes: the embedded storage cannot. */
export function requireSharedStorage(config: Config, workers: number): void {
  if (config.redisUrl === null || config.databaseUrl === null) {
    throw new ConfigError(
      `--workers ${workers} needs REDIS_URL and DATABASE_URL: workers share the counters and the ledger, and the embedded storage cannot be shared between processes`,
    );
  }
}

function describeExit(code: number | null, signal: string | null): string {
  return signal !== null ? `killed by ${signal}` : `exit code ${code}`;
}

/**
 * Runs the primary: forks `workers` workers, prints `banner(ready)` plus the workers' line once all
 * listen, and resolves with the exit code once every worker has exited (0 only if all stopped cleanly
 * after a signal).
 */
export function runPrimary(options: { workers: number; logger: Logger; banner: (ready: Ready) => string }): Promise<number> {
  const { workers: count, logger } = options;
  const running = new Map<number, Worker>();
  const ready = new Map<number, Ready>();
  let forked = 0;
  let announced = false;
  let stopping: NodeJS.Signals | null = null;
  let exitCode = 0;

  return new Promise<number>((resolve) => {
    const fork = (n: number): void => {
      for (let i = 0; i < n; i++) {
        const worker = cluster.fork({ [WORKER_ENV]: "1" });
        running.set(worker.id, worker);
        forked++;
      }
    };

    const stopAll = (signal: NodeJS.Signals): void => {
      stopping ??= signal;
      for (const worker of running.values()) worker.process.kill(signal);
    };

    const fail = (message: string): void => {
      exitCode = 1;
      if (stopping !== null) {
        logger.error(message);
        return;
      }
      // Before the banner this is a failed start: one line on stderr, as for any other start-up error.
      if (announced) logger.error(`${message}; stopping the other workers`);
      else process.stderr.write(`meterd: ${message}\n`);
      stopAll("SIGTERM");
    };

    cluster.on("message", (worker, message: unknown) => {
      if (typeof message !== "object" || message === null || (message as { type?: unknown }).type !== READY) return;
      const { type: _, ...info } = message as Ready & { type: string };
      ready.set(worker.id, info);
      if (stopping !== null) return;
      const first = ready.values().next().value!;
      if (info.grpcPort !== first.grpcPort || info.httpPort !== first.httpPort) {
        fail(`worker ${worker.id} listens on ports ${info.grpcPort} and ${info.httpPort}, not ${first.grpcPort} and ${first.httpPort}`);
        return;
      }
      if (forked < count) {
        fork(count - forked);
      } else if (ready.size === count && !announced) {
        announced = true;
        const pids = [...running.values()].map((w) => w.process.pid).join(", ");
        process.stderr.write(`${options.banner(first)}  workers  ${count} (pids ${pids})\n`);
      }
    });

    cluster.on("exit", (worker, code, signal) => {
      running.delete(worker.id);
      const wasReady = ready.has(worker.id);
      // A worker still starting has no signal handler yet: the forwarded signal ends it, and that is clean.
      const clean = stopping !== null && (code === 0 || (!wasReady && signal === stopping));
      if (!clean) {
        const how = describeExit(code, signal);
        const pid = worker.process.pid;
        if (stopping !== null) fail(`worker ${worker.id} (pid ${pid}) stopped with ${how}`);
        else if (wasReady) fail(`worker ${worker.id} (pid ${pid}) exited unexpectedly (${how})`);
        else fail(`worker ${worker.id} (pid ${pid}) exited before it was ready (${how})`);
      }
      if (running.size === 0) {
        process.off("SIGTERM", onSigterm);
        process.off("SIGINT", onSigint);
        resolve(exitCode);
      }
    });

    const onSignal = (signal: NodeJS.Signals): void => {
      if (stopping !== null) return;
      logger.info({ signal, workers: running.size }, "shutting down: stopping the workers, each drains its calls and flushes the ledger");
      stopAll(signal);
    };
    const onSigterm = (): void => onSignal("SIGTERM");
    const onSigint = (): void => onSignal("SIGINT");
    process.on("SIGTERM", onSigterm);
    process.on("SIGINT", onSigint);

    fork(1);
  });
}
