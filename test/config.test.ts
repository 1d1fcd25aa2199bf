// The operational settings: their defaults, their bounds, and the one rule between two of them, each
// refused as a one-line ConfigError naming the variable.
import { describe, expect, it } from "vitest";
import { ConfigError, loadConfig } from "../src/config.js";

describe("operational settings", () => {
  it("have the documented defaults", () => {
    expect(loadConfig({}).tuning).toEqual({
      accessLogSample: 0.01,
      shutdownGraceMs: 10_000,
      sweepAfterMs: 3_000,
      sweepEveryMs: 1_000,
      redisCommandTimeoutMs: 1_000,
      pgPoolSize: 10,
      commitMaxEvents: 5_000,
      concurrentCommits: 2,
      maxBatchEvents: 1_000,
      readinessEveryMs: 5_000,
      readinessTimeoutMs: 2_000,
      settledTtlSeconds: 604_800,
      rebuildGraceMs: 3_000,
    });
  });

  it("take the environment's values", () => {
    const t = loadConfig({ METERD_ACCESS_LOG_SAMPLE: "0.5", METERD_SHUTDOWN_GRACE_MS: "0", METERD_PG_POOL_SIZE: "4", METERD_CONCURRENT_COMMITS: "3" }).tuning;
    expect([t.accessLogSample, t.shutdownGraceMs, t.pgPoolSize, t.concurrentCommits]).toEqual([0.5, 0, 4, 3]);
  });

  it.each([
    [{ METERD_ACCESS_LOG_SAMPLE: "2" }, 'METERD_ACCESS_LOG_SAMPLE must be a number from 0 to 1, got "2"'],
    [{ METERD_ACCESS_LOG_SAMPLE: "half" }, 'METERD_ACCESS_LOG_SAMPLE must be a number from 0 to 1, got "half"'],
    [{ METERD_SWEEP_EVERY_MS: "10" }, 'METERD_SWEEP_EVERY_MS must be an integer from 100 to 3600000, got "10"'],
    [{ METERD_MAX_BATCH_EVENTS: "1001" }, 'METERD_MAX_BATCH_EVENTS must be an integer from 1 to 1000, got "1001"'],
    [{ METERD_COMMIT_MAX_EVENTS: "999" }, 'METERD_COMMIT_MAX_EVENTS must be an integer from 1000 to 100000, got "999"'],
    [{ METERD_PG_POOL_SIZE: "2", METERD_CONCURRENT_COMMITS: "2" }, "METERD_PG_POOL_SIZE (2) must be larger than METERD_CONCURRENT_COMMITS (2)"],
  ])("refuse %j", (env, message) => {
    expect(() => loadConfig(env)).toThrow(new ConfigError(message));
  });
});
