// The Redis fast path: the same behaviour as MemoryFastPath, with each decision made by one Lua script
// (./apply.lua) in one atomic step. All keys of one customer share the Cluster hash tag {c:<customer>},
// so every script call touches one slot, and every key is passed to the scripts through KEYS.
import type { ChainableCommander, Redis } from "ioredis";
import type { ApplyRequest, ApplyResult, CounterRef, FastPath, Readings, StaleEvent } from "../fastpath.js";
import { type ApplyReply, defineMeterdCommands, type Flag } from "./scripts.js";

export interface RedisFastPathOptions {
  /** The client to use; the caller owns it and closes it. */
  redis: Redis;
  /** Prepended to every key (default "meterd:"); it may not contain "{" or "}". */
  prefix?: string;
  /** How long a settled idempotency record answers replays (default 7 days). */
  settledTtlSeconds?: number;
}

export const DEFAULT_PREFIX = "meterd:";
export const DEFAULT_SETTLED_TTL_SECONDS = 7 * 24 * 3600;

/** waitSettled polls the record at this interval, doubling up to the maximum. */
const POLL_FIRST_MS = 5;
const POLL_MAX_MS = 100;

/**
 * The key layout. A segment that comes from a caller is percent-encoded (encodeURIComponent), so it holds
 * no "{", "}" or ":": a customer id cannot end the hash tag early or pose as another customer's key.
 *
 *   <prefix>{c:<customer>}:u:<feature>:<period>   usage counter (integer string)
 *   <prefix>{c:<customer>}:w                      credit wallet (integer string)
 *   <prefix>{c:<customer>}:k:<dedupe key>         idempotency record (hash: fp, eid, delta, wdelta, ckey,
 *                                                 applied and row until settled, then result)
 *   <prefix>{c:<customer>}:o                      outbox: pending record keys, scored by apply time (ms)
 *   <prefix>{c:<customer>}:m                      marker: "live", or "rebuild:<ms>" while counters may not load
 */
export class RedisKeyspace {
  constructor(readonly prefix: string = DEFAULT_PREFIX) {
    if (/[{}]/.test(prefix)) throw new RangeError(`Redis key prefix ${JSON.stringify(prefix)} may not contain "{" or "}"`);
  }

  /** The hash tag's content: Redis Cluster hashes only this part of each key of the customer. */
  tag(customerId: string): string {
    return `c:${encodeURIComponent(customerId)}`;
  }

  counter(ref: CounterRef): string {
    return `${this.counterPrefix(ref.customerId)}${encodeURIComponent(ref.featureKey)}:${encodeURIComponent(ref.periodKey)}`;
  }

  /** What every counter key of the customer starts with. */
  counterPrefix(customerId: string): string {
    return `${this.customer(customerId)}:u:`;
  }

  wallet(customerId: string): string {
    return `${this.customer(customerId)}:w`;
  }

  marker(customerId: string): string {
    return `${this.customer(customerId)}:m`;
  }

  outbox(customerId: string): string {
    return `${this.customer(customerId)}:o`;
  }

  /** A SCAN pattern matching every customer's outbox under this prefix. */
  outboxPattern(): string {
    return `${escapeGlob(this.prefix)}{c:*}:o`;
  }

  record(customerId: string, dedupeKey: string): string {
    return `${this.customer(customerId)}:k:${encodeURIComponent(dedupeKey)}`;
  }

  private customer(customerId: string): string {
    return `${this.prefix}{${this.tag(customerId)}}`;
  }
}

export class RedisFastPath implements FastPath {
  readonly keys: RedisKeyspace;
  private readonly redis: Redis;
  private readonly settledTtl: string;

  constructor(options: RedisFastPathOptions) {
    const ttl = options.settledTtlSeconds ?? DEFAULT_SETTLED_TTL_SECONDS;
    if (!Number.isSafeInteger(ttl) || ttl <= 0) throw new RangeError(`settledTtlSeconds must be a positive integer, got ${ttl}`);
    this.redis = options.redis;
    this.keys = new RedisKeyspace(options.prefix ?? DEFAULT_PREFIX);
    this.settledTtl = String(ttl);
    defineMeterdCommands(this.redis);
  }

  async apply(req: ApplyRequest): Promise<ApplyResult> {
    const args = this.applyArgs(req);
    return decodeApply(await this.redis.meterdApply(...args));
  }

  /**
   * Applies a batch in one round trip: one script call per customer (apply-many.lua decides that
   * customer's events in order, in one atomic step), all calls in one pipeline. Results come back in
   * request order.
   */
  async applyMany(reqs: ApplyRequest[]): Promise<ApplyResult[]> {
    if (reqs.length === 0) return [];
    const groups = groupIndexes(reqs, (req) => req.customerId);
    const pipeline = this.redis.pipeline();
    for (const group of groups) {
      const first = reqs[group[0]!]!;
      const keys = [this.keys.wallet(first.customerId), this.keys.outbox(first.customerId), this.keys.marker(first.customerId)];
      const args: string[] = [];
      for (const i of group) {
        const [recordKey, counterKey, , , , ...rest] = this.applyArgs(reqs[i]!);
        keys.push(recordKey as string, counterKey as string);
        args.push(...(rest as string[]));
      }
      pipeline.meterdApplyMany(keys.length, ...keys, ...args);
    }
    const replies = (await execPipeline(pipeline)) as ApplyReply[][];
    const results = new Array<ApplyResult>(reqs.length);
    groups.forEach((group, g) => {
      group.forEach((i, at) => {
        results[i] = decodeApply(replies[g]![at]!);
      });
    });
    return results;
  }

  async settleMany(items: ReadonlyArray<{ customerId: string; dedupeKey: string; result: string }>): Promise<void> {
    if (items.length === 0) return;
    const pipeline = this.redis.pipeline();
    for (const { customerId, dedupeKey, result } of items) {
      pipeline.meterdSettle(this.keys.record(customerId, dedupeKey), this.keys.outbox(customerId), result, this.settledTtl);
    }
    await execPipeline(pipeline);
  }

  async settle(customerId: string, dedupeKey: string, result: string): Promise<void> {
    await this.redis.meterdSettle(this.keys.record(customerId, dedupeKey), this.keys.outbox(customerId), result, this.settledTtl);
  }

  async revert(req: ApplyRequest, _applied: { delta: number }): Promise<void> {
    // The script undoes the deltas it recorded at apply time, which are the authority here.
    const [code] = await this.redis.meterdRevert(
      this.keys.record(req.customerId, req.dedupeKey),
      this.counterKey(req),
      this.keys.wallet(req.customerId),
      this.keys.outbox(req.customerId),
      req.eventId,
    );
    if (code === "COUNTER_MISMATCH") {
      throw new Error(`revert of ${req.eventId}: the request names another counter than the one it applied to`);
    }
  }

  /**
   * Scans every customer's outbox for records applied more than `olderThanMs` ago and still pending. Any
   * replica may sweep: committing an event twice is harmless, the ledger keeps one row.
   */
  async staleEvents(olderThanMs: number, max: number): Promise<StaleEvent[]> {
    const [seconds, micros] = await this.redis.time();
    const cutoff = Number(seconds) * 1000 + Math.floor(Number(micros) / 1000) - olderThanMs;
    const stale: StaleEvent[] = [];
    let cursor = "0";
    do {
      const [next, outboxes] = await this.redis.scan(cursor, "MATCH", this.keys.outboxPattern(), "COUNT", 1000);
      cursor = next;
      if (outboxes.length === 0) continue;
      // Three round trips a page of outboxes, whatever their number: the sweeper runs every second.
      const ranges = this.redis.pipeline();
      for (const outbox of outboxes) ranges.zrangebyscore(outbox, "-inf", cutoff, "LIMIT", 0, max);
      const found = ((await execPipeline(ranges)) as string[][]).flatMap((keys, i) => keys.map((key) => [outboxes[i]!, key] as const));
      if (found.length === 0) continue;
      const reads = this.redis.pipeline();
      for (const [, recordKey] of found) reads.hmget(recordKey, "eid", "delta", "wdelta", "row", "result");
      const records = (await execPipeline(reads)) as Array<Array<string | null>>;
      const gone = this.redis.pipeline();
      records.forEach(([eventId, delta, walletDelta, row, result], i) => {
        const [outbox, recordKey] = found[i]!;
        if (eventId == null || row == null || result != null || delta == null || walletDelta == null) {
          gone.zrem(outbox, recordKey); // settled or gone: not an outbox entry any more
          return;
        }
        if (stale.length >= max) return;
        const parsed = JSON.parse(row) as { customerId: string; dedupeKey: string };
        stale.push({ customerId: parsed.customerId, dedupeKey: parsed.dedupeKey, eventId, delta: int(delta), walletDelta: int(walletDelta), record: row });
      });
      if (gone.length > 0) await execPipeline(gone);
      if (stale.length >= max) return stale;
    } while (cursor !== "0");
    return stale;
  }

  async pendingEvents(customerId: string): Promise<StaleEvent[]> {
    const recordKeys = await this.redis.zrange(this.keys.outbox(customerId), "0", "-1");
    const out: StaleEvent[] = [];
    for (const recordKey of recordKeys) {
      const [eventId, delta, walletDelta, row, result] = await this.redis.hmget(recordKey, "eid", "delta", "wdelta", "row", "result");
      if (eventId == null || row == null || result != null || delta == null || walletDelta == null) continue;
      const parsed = JSON.parse(row) as { dedupeKey: string };
      out.push({ customerId, dedupeKey: parsed.dedupeKey, eventId, delta: int(delta), walletDelta: int(walletDelta), record: row });
    }
    return out;
  }

  async listCounters(customerId: string): Promise<Array<{ counter: CounterRef; units: number }>> {
    const prefix = this.keys.counterPrefix(customerId);
    const keys: string[] = [];
    let cursor = "0";
    do {
      const [next, found] = await this.redis.scan(cursor, "MATCH", `${escapeGlob(prefix)}*`, "COUNT", 1000);
      cursor = next;
      keys.push(...found);
    } while (cursor !== "0");
    if (keys.length === 0) return [];
    const values = await this.redis.mget(...keys);
    return keys.flatMap((key, i) => {
      const value = values[i];
      if (value == null) return [];
      const [featureKey = "", periodKey = ""] = key.slice(prefix.length).split(":").map(decodeURIComponent);
      return [{ counter: { customerId, featureKey, periodKey }, units: int(value) }];
    });
  }

  async resetCustomer(customerId: string): Promise<void> {
    const counters = await this.listCounters(customerId);
    const keys = [this.keys.marker(customerId), this.keys.wallet(customerId), ...counters.map((c) => this.keys.counter(c.counter))];
    await this.redis.del(...keys);
  }

  async waitSettled(customerId: string, dedupeKey: string, timeoutMs: number): Promise<void> {
    const key = this.keys.record(customerId, dedupeKey);
    const deadline = Date.now() + timeoutMs;
    let delay = POLL_FIRST_MS;
    for (;;) {
      const [fingerprint, result] = await this.redis.hmget(key, "fp", "result");
      if (fingerprint === null || result !== null) return;
      const left = deadline - Date.now();
      if (left <= 0) return;
      await sleep(Math.min(delay, left));
      delay = Math.min(delay * 2, POLL_MAX_MS);
    }
  }

  async beginRebuild(customerId: string, notBeforeMs: number): Promise<number> {
    return Number(await this.redis.meterdRebuild(this.keys.marker(customerId), safeIntArg("notBeforeMs", Math.ceil(notBeforeMs))));
  }

  async markLive(customerId: string): Promise<void> {
    await this.redis.set(this.keys.marker(customerId), "live");
  }

  async isLive(customerId: string): Promise<boolean> {
    return (await this.redis.get(this.keys.marker(customerId))) === "live";
  }

  async loadCounter(counter: CounterRef, units: number): Promise<void> {
    await this.redis.meterdLoad(this.keys.counter(counter), this.keys.marker(counter.customerId), safeIntArg("units", units));
  }

  async loadWallet(customerId: string, units: number): Promise<void> {
    await this.redis.meterdLoad(this.keys.wallet(customerId), this.keys.marker(customerId), safeIntArg("units", units));
  }

  async read(counters: CounterRef[], walletOf: string | null): Promise<Readings> {
    // One MGET per customer, since a Cluster MGET must stay in one slot; pipelined when there are several.
    const keys = counters.map((c) => this.keys.counter(c));
    const customers = counters.map((c) => c.customerId);
    if (walletOf !== null) {
      keys.push(this.keys.wallet(walletOf));
      customers.push(walletOf);
    }
    if (keys.length === 0) return { counters: [], wallet: null };
    const groups = groupIndexes(customers, (customerId) => customerId).map((group) => ({
      group,
      keys: group.map((i) => keys[i] as string),
    }));
    let replies: Array<Array<string | null>>;
    const [single] = groups;
    if (groups.length === 1 && single) {
      replies = [await this.redis.mget(single.keys)];
    } else {
      const pipeline = this.redis.pipeline();
      for (const { keys: ofOne } of groups) pipeline.mget(ofOne);
      replies = (await execPipeline(pipeline)) as Array<Array<string | null>>;
    }
    const numbers = new Array<number | null>(keys.length).fill(null);
    groups.forEach(({ group }, g) =>
      group.forEach((i, at) => {
        const value = replies[g]?.[at];
        numbers[i] = value === null || value === undefined ? null : Number(value);
      }),
    );
    return {
      counters: numbers.slice(0, counters.length),
      wallet: walletOf === null ? null : (numbers[counters.length] ?? null),
    };
  }

  /** The client belongs to whoever gave it: nothing to close here. */
  async close(): Promise<void> {}

  private counterKey(req: ApplyRequest): string {
    // Without a counter, KEYS[2] repeats a key of the same slot; the script does not touch it.
    return req.counter ? this.keys.counter(req.counter) : this.keys.wallet(req.customerId);
  }

  private applyArgs(req: ApplyRequest): ApplyArgs {
    const { op } = req;
    return [
      this.keys.record(req.customerId, req.dedupeKey),
      this.counterKey(req),
      this.keys.wallet(req.customerId),
      this.keys.outbox(req.customerId),
      this.keys.marker(req.customerId),
      req.eventId,
      req.fingerprint,
      op.kind,
      op.kind === "add" ? intArg("units", op.units) : intArg("target", op.target),
      op.kind === "set" && op.expected !== null ? intArg("expected", op.expected) : "",
      req.limit === null ? "" : intArg("limit", req.limit),
      intArg("walletDelta", req.walletDelta),
      flag(req.walletMayGoNegative),
      flag(req.counter !== null),
      this.settledTtl,
      req.record,
    ];
  }
}

type ApplyArgs = Parameters<Redis["meterdApply"]>;

function decodeApply(reply: ApplyReply): ApplyResult {
  switch (reply[0]) {
    case "APPLIED": {
      const [, before, after, delta, walletAfter] = reply;
      return { code: "APPLIED", before: int(before), after: int(after), delta: int(delta), walletAfter: walletAfter === null ? null : int(walletAfter) };
    }
    case "DENIED_LIMIT":
    case "EXPECTED_MISMATCH":
    case "OUT_OF_RANGE":
      return { code: reply[0], consumed: int(reply[1]) };
    case "DENIED_CREDITS":
      return { code: "DENIED_CREDITS", consumed: int(reply[1]), wallet: int(reply[2]) };
    case "DUPLICATE":
      return { code: "DUPLICATE", result: reply[1] };
    case "PENDING":
    case "KEY_CONFLICT":
      return { code: reply[0] };
    case "NOT_LOADED":
      return { code: "NOT_LOADED", counter: reply[1] === 1, wallet: reply[2] === 1, customer: reply[3] === 1 };
    default:
      throw new Error(`unexpected reply from meterdApply: ${JSON.stringify(reply)}`);
  }
}

/** Runs a pipeline and returns its replies, failing on the first command that failed. */
async function execPipeline(pipeline: ChainableCommander): Promise<unknown[]> {
  const settled = await pipeline.exec();
  if (settled === null) throw new Error("Redis pipeline was discarded");
  return settled.map(([err, reply]) => {
    if (err) throw err;
    return reply;
  });
}

/** The indexes of `items`, grouped by `by`: groups in order of first appearance, indexes in order. */
function groupIndexes<T>(items: T[], by: (item: T) => string): number[][] {
  const groups = new Map<string, number[]>();
  items.forEach((item, i) => {
    const id = by(item);
    const group = groups.get(id);
    if (group) group.push(i);
    else groups.set(id, [i]);
  });
  return [...groups.values()];
}

/**
 * Units are integers by contract; anything else is a caller's bug, refused before it reaches Lua. An
 * integer past the safe range is passed on: the script answers OUT_OF_RANGE, as MemoryFastPath does.
 */
function intArg(name: string, value: number): string {
  if (!Number.isInteger(value)) throw new RangeError(`${name} must be an integer number of units, got ${value}`);
  return String(value);
}

/** A loaded total comes from the ledger, whose totals stay within the exact range. */
function safeIntArg(name: string, value: number): string {
  if (!Number.isSafeInteger(value)) throw new RangeError(`${name} must be a safe integer number of units, got ${value}`);
  return String(value);
}

function int(text: string): number {
  const value = Number(text);
  if (!Number.isInteger(value)) throw new Error(`expected an integer from Redis, got ${JSON.stringify(text)}`);
  return value;
}

const flag = (value: boolean): Flag => (value ? "1" : "0");

const sleep = (ms: number) => new Promise<void>((resolve) => setTimeout(resolve, ms));

/** Escapes the glob characters of SCAN's MATCH. */
function escapeGlob(text: string): string {
  return text.replace(/[*?[\]\\]/g, "\\$&");
}
