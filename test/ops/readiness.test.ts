// Readiness on its own, with dependencies that answer as the test says: the report, the health
// statuses it keeps in step, a dependency that hangs, the shared check, and the drain.
import { describe, expect, it } from "vitest";
import { type Dependency, Readiness } from "../../src/ops/readiness.js";
import { HealthState, ServingStatus } from "../../src/rpc/health.js";

function dependency(name: string): Dependency & { down: string | null; hang: boolean; calls: number } {
  const d = {
    name,
    down: null as string | null,
    hang: false,
    calls: 0,
    async check() {
      d.calls++;
      if (d.hang) await new Promise(() => {});
      if (d.down !== null) throw Object.assign(new Error(`${d.down}\nsecond line`), { code: "ECONNREFUSED" });
    },
  };
  return d;
}

describe("Readiness", () => {
  it("is ready when every dependency answers, and says which one does not", async () => {
    const redis = dependency("redis");
    const ledger = dependency("postgres");
    const health = new HealthState();
    const readiness = new Readiness([ledger, redis], health, ["meterd.v1.MeteringService"], { maxAgeMs: 0 });
    expect(await readiness.start()).toEqual({ ready: true, status: "ready", checks: { postgres: "ok", redis: "ok" } });
    expect([health.get(""), health.get("meterd.v1.MeteringService")]).toEqual([ServingStatus.SERVING, ServingStatus.SERVING]);

    redis.down = "connect refused";
    expect(await readiness.report()).toEqual({ ready: false, status: "not ready", checks: { postgres: "ok", redis: "ECONNREFUSED: connect refused" } });
    expect([health.get(""), health.get("meterd.v1.MeteringService")]).toEqual([ServingStatus.NOT_SERVING, ServingStatus.NOT_SERVING]);

    redis.down = null;
    expect((await readiness.report()).ready).toBe(true);
    expect(health.get("")).toBe(ServingStatus.SERVING);
    readiness.drain();
  });

  it("counts a dependency that does not answer in time as down", async () => {
    const slow = dependency("redis");
    slow.hang = true;
    const readiness = new Readiness([slow], new HealthState(), [], { timeoutMs: 50 });
    expect(await readiness.report()).toEqual({ ready: false, status: "not ready", checks: { redis: "no answer within 50 ms" } });
  });

  it("answers probes from one check while it is fresh, and shares a check in flight", async () => {
    const redis = dependency("redis");
    const readiness = new Readiness([redis], new HealthState(), [], { maxAgeMs: 60_000 });
    await Promise.all([readiness.report(), readiness.report(), readiness.report()]);
    await readiness.report();
    expect(redis.calls).toBe(1);
  });

  it("turns NOT_SERVING for good on drain, whatever the dependencies say", async () => {
    const redis = dependency("redis");
    const health = new HealthState();
    const readiness = new Readiness([redis], health, ["meterd.v1.MeteringService"], { everyMs: 10, maxAgeMs: 0 });
    await readiness.start();
    readiness.drain();
    expect(await readiness.report()).toMatchObject({ ready: false, status: "draining" });
    await new Promise((resolve) => setTimeout(resolve, 50));
    expect([health.get(""), health.get("meterd.v1.MeteringService")]).toEqual([ServingStatus.NOT_SERVING, ServingStatus.NOT_SERVING]);
  });
});
