// A token bucket per customer token, in memory: protects the service from a runaway page. Each
// replica keeps its own buckets, so N replicas admit up to N times the rate; that is enough to stop a
// loop in a browser, which is all it is for.

export interface Rate {
  /** Calls added back to the bucket per second. */
  perSecond: number;
  /** The bucket's size: calls that may come at once after a pause. */
  burst: number;
}

export type Admission = { ok: true } | { ok: false; retryAfterMs: number };

/** Buckets untouched for this long are full again and can be dropped; checked every so many calls. */
const SWEEP_EVERY_CALLS = 1000;

export class TokenBucketLimiter {
  private readonly buckets = new Map<string, { tokens: number; at: number }>();
  private calls = 0;

  constructor(
    readonly rate: Rate,
    private readonly now: () => number = Date.now,
  ) {
    if (!(rate.perSecond > 0) || !(rate.burst >= 1)) throw new Error("a rate needs perSecond > 0 and burst >= 1");
  }

  /** Takes one call from `id`'s bucket, or says how long to wait for the next one. */
  take(id: string): Admission {
    const now = this.now();
    if (++this.calls % SWEEP_EVERY_CALLS === 0) this.sweep(now);
    const bucket = this.buckets.get(id) ?? { tokens: this.rate.burst, at: now };
    bucket.tokens = Math.min(this.rate.burst, bucket.tokens + ((now - bucket.at) * this.rate.perSecond) / 1000);
    bucket.at = now;
    this.buckets.set(id, bucket);
    if (bucket.tokens >= 1) {
      bucket.tokens -= 1;
      return { ok: true };
    }
    return { ok: false, retryAfterMs: Math.ceil(((1 - bucket.tokens) * 1000) / this.rate.perSecond) };
  }

  /** Buckets being tracked (for tests). */
  get size(): number {
    return this.buckets.size;
  }

  private sweep(now: number): void {
    const refillMs = (this.rate.burst * 1000) / this.rate.perSecond;
    for (const [id, bucket] of this.buckets) {
      if (now - bucket.at >= refillMs) this.buckets.delete(id);
    }
  }
}

/** Parses "20/s", "600/m" or "3600/h" into calls per second. */
export function parseRate(text: string): number | null {
  const match = /^\s*(\d+(?:\.\d+)?)\s*\/\s*(s|m|h)\s*$/.exec(text);
  if (match === null) return null;
  const per = { s: 1, m: 60, h: 3600 }[match[2] as "s" | "m" | "h"];
  const value = Number(match[1]) / per;
  return value > 0 ? value : null;
}
