// The Redis fast path: the same behaviour as MemoryFastPath, with the decisions of a call made by one Lua
// script (./apply-many.lua) in one atomic step. All keys of one customer share the Cluster hash tag
// {c:<customer>}, and every key is passed to the scripts through KEYS.
import { randomUUID } from "node:crypto";
import type { ChainableCommander, Redis } from "ioredis";
import type { ApplyRequest, ApplyResult, CounterRef, FastPath, FreshCustomer, OutboxStatus, PendingRef, Readings, SettleItem, StaleEvent } from "../fastpath.js";
import { type ParsedRecord, parseRecord } from "./record.js";
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

/**
 * How long a completed batch is remembered, so that an apply call resent after its batch was settled is
 * refused instead of applied twice. ioredis resends a call only across its reconnects (at most
 * maxRetriesPerRequest of them, a second apart): a minute is far beyond that.
 */
const TOMBSTONE_TTL_SECONDS = "60";

/** The most batches one staleEvents() call reads. */
const SWEEP_BATCHES = 8;

/** The most single applies sent together in one call. */
const MAX_COALESCED = 1000;

/** waitSettled polls the record at this interval, doubling up to the maximum. */
const POLL_FIRST_MS = 5;
const POLL_MAX_MS = 100;

/**
 * The key layout. A segment that comes from a caller is percent-encoded (encodeURIComponent), so it holds
 * no "{", "}" or ":": a customer id cannot end the hash tag early or pose as another customer's key.
 *
 *   <prefix>{c:<customer>}:u:<feature>:<period>   usage counter (integer string)
 *   <prefix>{c:<customer>}:w                      credit wallet (integer string)
 *   <prefix>{c:<customer>}:k:<idempotency key>    idempotency record (one string, see record.lua): what
 *                                                 the event was answered, and its batch
 *   <prefix>{c:<customer>}:b:<call id>            batch: the outbox entry of one apply call, named by a
 *                                                 random id, in its first customer's slot (apply-many.lua)
 *   <prefix>outbox                                the pending batches, scored by apply time (ms): what the
 *                                                 sweeper reads, without scanning the keyspace. One key on a
 *                                                 single Redis; a Redis Cluster needs one per node.
 *   <prefix>{c:<customer>}:m                      marker: "live", or "rebuild:<ms>" while counters may not load
 */
export class RedisKeyspace {
  constructor(readonly prefix: string = DEFAULT_PREFIX) {
    // A tab would break the records, which name their counter key in a tab-separated string.
    if (/[{}\t]/.test(prefix)) throw new RangeError(`Redis key prefix ${JSON.stringify(prefix)} may not contain "{", "}" or a tab`);
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

  outbox(): string {
    return `${this.prefix}outbox`;
  }

  record(customerId: string, dedupeKey: string): string {
    return this.recordIn(this.customer(customerId), dedupeKey);
  }

  /** record() with the customer's part of the key already made (customer()): once per customer of a batch. */
  recordIn(customerPart: string, dedupeKey: string): string {
    return `${customerPart}:k:${encodeURIComponent(dedupeKey)}`;
  }

  batch(customerId: string, callId: string): string {
    return `${this.customer(customerId)}:b:${encodeURIComponent(callId)}`;
  }

  /** The customer of a wallet key of this keyspace; null for any other key. */
  parseWallet(key: string): string | null {
    if (!key.startsWith(`${this.prefix}{c:`) || !key.endsWith("}:w")) return null;
    return decodeURIComponent(key.slice(this.prefix.length + 3, -3));
  }

  /** The customer and dedupe key of a record key of this keyspace; null for any other key. */
  parseRecord(key: string): { customerId: string; dedupeKey: string } | null {
    if (!key.startsWith(`${this.prefix}{c:`)) return null;
    const rest = key.slice(this.prefix.length + 3);
    const close = rest.indexOf("}:k:");
    if (close < 0) return null;
    return { customerId: decodeURIComponent(rest.slice(0, close)), dedupeKey: decodeURIComponent(rest.slice(close + 4)) };
  }

  /** What every key of the customer starts with: the prefix and the hash tag. */
  customer(customerId: string): string {
    return `${this.prefix}{${this.tag(customerId)}}`;
  }
}

export class RedisFastPath implements FastPath {
  readonly keys: RedisKeyspace;
  private readonly redis: Redis;
  private readonly settledTtl: string;
  private applyQueue: Array<{ req: ApplyRequest; resolve(result: ApplyResult): void; reject(error: unknown): void }> = [];

  constructor(options: RedisFastPathOptions) {
    const ttl = options.settledTtlSeconds ?? DEFAULT_SETTLED_TTL_SECONDS;
    if (!Number.isSafeInteger(ttl) || ttl <= 0) throw new RangeError(`settledTtlSeconds must be a positive integer, got ${ttl}`);
    this.redis = options.redis;
    this.keys = new RedisKeyspace(options.prefix ?? DEFAULT_PREFIX);
    this.settledTtl = String(ttl);
    defineMeterdCommands(this.redis);
  }

  /**
   * Single events arriving together (concurrent Tracks) go to Redis as one applyMany call, made once the
   * current I/O callbacks are done: one script call and one batch for many callers, instead of one each.
   */
  apply(req: ApplyRequest): Promise<ApplyResult> {
    return new Promise((resolve, reject) => {
      if (this.applyQueue.length === 0) setImmediate(() => this.flushApplies());
      this.applyQueue.push({ req, resolve, reject });
      if (this.applyQueue.length >= MAX_COALESCED) this.flushApplies();
    });
  }

  private flushApplies(): void {
    const queued = this.applyQueue.splice(0);
    if (queued.length === 0) return;
    this.applyMany(queued.map((q) => q.req)).then(
      (results) => queued.forEach((q, i) => q.resolve(results[i]!)),
      (error: unknown) => queued.forEach((q) => q.reject(error)),
    );
  }

  /**
   * Applies a call's events in one round trip and one script call (apply-many.lua decides every event in
   * order, in one atomic step), grouped by customer so that each customer's marker and wallet keys are
   * passed once. The events applied share one outbox entry, the batch, which holds their rows.
   * Results come back in request order.
   */
  async applyMany(reqs: ApplyRequest[]): Promise<ApplyResult[]> {
    if (reqs.length === 0) return [];
    const groups = groupIndexes(reqs, (req) => req.customerId);
    // A batch is named by the call, never by an event: an event left NOT_LOADED by one call is applied
    // again by the next, and a resent call (the same command again) must find its own batch.
    const batchKey = this.keys.batch(reqs[groups[0]![0]!]!.customerId, randomUUID());
    const keys: string[] = [batchKey, this.keys.outbox()];
    // Each key once; arguments name keys by their 1-based place in KEYS.
    const keyAt = (key: string): number => keys.push(key);
    const counterAt = new Map<string, number>();
    // Events of a batch share their counter refs (see Meter): each key is encoded once per call.
    const counterKeys = new Map<CounterRef, string>();
    const rows: string[] = [];
    const args: string[] = [this.settledTtl, ""];
    const order: number[] = [];
    for (const group of groups) {
      const customerId = reqs[group[0]!]!.customerId;
      const customerPart = this.keys.customer(customerId);
      const walletAt = keyAt(this.keys.wallet(customerId));
      args.push(`${group.length}\t${walletAt}\t${keyAt(this.keys.marker(customerId))}`);
      for (const i of group) {
        const req = reqs[i]!;
        let counter = walletAt;
        if (req.counter) {
          let counterKey = counterKeys.get(req.counter);
          if (counterKey === undefined) counterKeys.set(req.counter, (counterKey = this.keys.counter(req.counter)));
          counter = counterAt.get(counterKey) ?? 0;
          if (counter === 0) counterAt.set(counterKey, (counter = keyAt(counterKey)));
        }
        const record = req.dedupeKey !== req.eventId ? keyAt(this.keys.recordIn(customerPart, req.dedupeKey)) : 0;
        args.push(`${this.eventArgs(req)}\t${record}\t${counter}`);
        if (req.record.includes("\n")) throw new RangeError("an outbox row may not contain a line break");
        rows.push(req.record);
        order.push(i);
      }
    }
    args[1] = rows.join("\n");
    const replies = (await this.redis.meterdApplyMany(keys.length, ...keys, ...args)).split("\n");
    if (replies.length !== reqs.length) throw new Error(`meterdApplyMany answered ${replies.length} events for ${reqs.length}`);
    const results = new Array<ApplyResult>(reqs.length);
    order.forEach((i, at) => (results[i] = decodeApply(lineReply(replies[at]!), batchKey, at + 1)));
    return results;
  }

  /** Marks the events done in their batches, in one script call. */
  async settleMany(items: ReadonlyArray<SettleItem>): Promise<void> {
    // Each batch's indexes once: the script completes a batch at once when they are all it applied.
    const batches = new Map<string, Set<string>>();
    for (const { ref } of items) {
      const at = parseRef(ref);
      if (at === null) continue; // a key recorded before batches: nothing to settle
      const indexes = batches.get(at.batchKey);
      if (indexes) indexes.add(at.index);
      else batches.set(at.batchKey, new Set([at.index]));
    }
    if (batches.size === 0) return;
    const args = [...batches.values()].map((ix) => `${ix.size}:${[...ix].join("\n")}`);
    await this.redis.meterdSettle(batches.size + 1, this.keys.outbox(), ...batches.keys(), TOMBSTONE_TTL_SECONDS, ...args);
  }

  async revert(req: ApplyRequest, applied: { delta: number; ref: PendingRef }): Promise<void> {
    const at = parseRef(applied.ref);
    if (at === null) return;
    // The script undoes the deltas its batch recorded at apply time, which are the authority here.
    const keyed = req.dedupeKey !== req.eventId;
    const counterKey = this.counterKey(req);
    await this.redis.meterdRevert(
      at.batchKey,
      keyed ? this.keys.record(req.customerId, req.dedupeKey) : counterKey,
      counterKey,
      this.keys.wallet(req.customerId),
      this.keys.outbox(),
      at.index,
      req.eventId,
      flag(keyed),
      TOMBSTONE_TTL_SECONDS,
    );
  }

  /**
   * Events of batches applied more than `olderThanMs` ago and still pending. Any replica may sweep:
   * committing an event twice is harmless, the ledger keeps one row.
   */
  async staleEvents(olderThanMs: number, max: number): Promise<StaleEvent[]> {
    const [seconds, micros] = await this.redis.time();
    const cutoff = Number(seconds) * 1000 + Math.floor(Number(micros) / 1000) - olderThanMs;
    // A batch holds up to a thousand events or so: a few batches make a sweep of `max` events, and a
    // backlog (a ledger away for minutes) is read a few batches per sweep, not all at once.
    const batches = await this.redis.zrangebyscore(this.keys.outbox(), "-inf", cutoff, "LIMIT", 0, Math.max(1, Math.min(max, SWEEP_BATCHES)));
    const stale = await this.readBatches(batches);
    // A batch that is gone (completed, or lost with Redis' data) is not an outbox entry any more.
    const gone = batches.filter((batchKey) => !stale.has(batchKey));
    if (gone.length > 0) await this.redis.zrem(this.keys.outbox(), ...gone);
    return [...stale.values()].flat().slice(0, max);
  }

  async outboxStatus(): Promise<OutboxStatus> {
    // Scored by apply time on Redis' clock, so the age is taken on that clock too.
    const [entries, oldest, [seconds, micros]] = await Promise.all([
      this.redis.zcard(this.keys.outbox()),
      this.redis.zrange(this.keys.outbox(), "0", "0", "WITHSCORES"),
      this.redis.time(),
    ]);
    const now = Number(seconds) * 1000 + Math.floor(Number(micros) / 1000);
    const appliedAt = oldest[1] === undefined ? null : Number(oldest[1]);
    return { entries, oldestAgeMs: appliedAt === null ? null : Math.max(0, now - appliedAt) };
  }

  async pendingEvents(customerId: string): Promise<StaleEvent[]> {
    // Pending batches are few (those being committed right now, or stranded by a dead replica), and any
    // of them may hold an event of this customer.
    const batches = await this.redis.zrange(this.keys.outbox(), "0", "-1");
    return [...(await this.readBatches(batches)).values()].flat().filter((event) => event.customerId === customerId);
  }

  /** The pending events of each batch that still has some (completed and missing batches are left out). */
  private async readBatches(batchKeys: string[]): Promise<Map<string, StaleEvent[]>> {
    const out = new Map<string, StaleEvent[]>();
    if (batchKeys.length === 0) return out;
    const reads = this.redis.pipeline();
    for (const batchKey of batchKeys) reads.hmget(batchKey, "r", "p", "d");
    const replies = (await execPipeline(reads)) as Array<[string | null, string | null, string | null]>;
    replies.forEach(([rows, applied, done], b) => {
      if (rows === null || applied === null) return;
      const batchKey = batchKeys[b]!;
      const lines = rows.split("\n");
      const doneSet = new Set(done === null ? [] : done.split("\n"));
      const events: StaleEvent[] = [];
      for (const line of applied.split("\n")) {
        if (line === "") continue;
        const [index = "", delta = "", walletDelta = "", , owner = "", eventId = ""] = line.split("\t");
        if (doneSet.has(index)) continue;
        const keyed = this.keys.parseRecord(owner);
        const customerId = keyed?.customerId ?? this.keys.parseWallet(owner);
        if (customerId === null) continue;
        events.push({
          ref: `${batchKey}#${index}`,
          customerId,
          dedupeKey: keyed?.dedupeKey ?? eventId,
          eventId,
          delta: int(delta),
          walletDelta: int(walletDelta),
          record: lines[Number(index) - 1] ?? "",
        });
      }
      if (events.length > 0) out.set(batchKey, events);
    });
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
      const [record] = await this.readRecords([key]);
      if (record == null || record.state !== "pending") return;
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

  async startFresh(customers: ReadonlyArray<FreshCustomer>): Promise<void> {
    if (customers.length === 0) return;
    const keys: string[] = [];
    const args: string[] = [];
    for (const { customerId, counters, wallet } of customers) {
      keys.push(this.keys.marker(customerId), ...counters.map((c) => this.keys.counter(c)));
      if (wallet) keys.push(this.keys.wallet(customerId));
      args.push(String(counters.length + (wallet ? 1 : 0)));
    }
    await this.redis.meterdStartFresh(keys.length, ...keys, ...args);
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
    // Without a counter, revert.lua gets the wallet key in the counter's place, and does not touch it.
    return req.counter ? this.keys.counter(req.counter) : this.keys.wallet(req.customerId);
  }

  /** An event's arguments for apply-many.lua but its keys, as one tab-separated string. */
  private eventArgs(req: ApplyRequest): string {
    const { op } = req;
    if (req.eventId.includes("\t") || req.fingerprint.includes("\t")) {
      throw new RangeError("eventId and fingerprint may not contain a tab");
    }
    return `${req.eventId}\t${req.fingerprint}\t${op.kind}\t${op.kind === "add" ? intArg("units", op.units) : intArg("target", op.target)}\t${
      op.kind === "set" && op.expected !== null ? intArg("expected", op.expected) : ""
    }\t${req.limit === null ? "" : intArg("limit", req.limit)}\t${intArg("walletDelta", req.walletDelta)}\t${flag(req.walletMayGoNegative)}\t${flag(
      req.counter !== null,
    )}`;
  }

  /** Records in one format whatever wrote them (read-records.lua), in one call. */
  private async readRecords(keys: string[]): Promise<Array<ParsedRecord | null>> {
    if (keys.length === 0) return [];
    const values = await this.redis.meterdReadRecords(keys.length, ...keys);
    return values.map((value) => (value == null ? null : parseRecord(value)));
  }
}

function decodeApply(reply: ApplyReply, batchKey: string, index: number): ApplyResult {
  switch (reply[0]) {
    case "APPLIED": {
      const [, before, after, delta, walletAfter, earlierBatch, earlierIndex] = reply;
      return {
        code: "APPLIED",
        before: int(before),
        after: int(after),
        delta: int(delta),
        walletAfter: walletAfter === null ? null : int(walletAfter),
        // A resent event applied by an earlier call is named by that call's batch.
        ref: earlierBatch === undefined ? `${batchKey}#${index}` : earlierBatch === "" ? "" : `${earlierBatch}#${earlierIndex}`,
      };
    }
    case "DENIED_LIMIT":
    case "EXPECTED_MISMATCH":
    case "OUT_OF_RANGE":
      return { code: reply[0], consumed: int(reply[1]) };
    case "DENIED_CREDITS":
      return { code: "DENIED_CREDITS", consumed: int(reply[1]), wallet: int(reply[2]) };
    case "SETTLED": {
      const [, eventId, before, after, delta, walletAfter, walletDelta, counted] = reply;
      return {
        code: "DUPLICATE",
        original: {
          eventId,
          before: int(before),
          after: int(after),
          delta: int(delta),
          walletAfter: walletAfter === "" ? null : int(walletAfter),
          walletDelta: int(walletDelta),
          counted: counted === "1",
        },
      };
    }
    case "DUPLICATE":
      return { code: "DUPLICATE", original: reply[1] };
    case "PENDING":
    case "KEY_CONFLICT":
      return { code: reply[0] };
    case "NOT_LOADED":
      return { code: "NOT_LOADED", counter: reply[1] === 1, wallet: reply[2] === 1, customer: reply[3] === 1 };
    default:
      throw new Error(`unexpected reply from meterdApplyMany: ${JSON.stringify(reply)}`);
  }
}

/**
 * One event's reply from apply-many.lua's answer: its fields, tab-separated (NOT_LOADED's flags as
 * numbers; an empty walletAfter as null). A DUPLICATE's stored result, its last field, may hold tabs;
 * its backslashes and line breaks come escaped (\\ and \n).
 */
function lineReply(line: string): ApplyReply {
  const tab = line.indexOf("\t");
  const code = tab < 0 ? line : line.slice(0, tab);
  if (code === "DUPLICATE") return ["DUPLICATE", line.slice(tab + 1).replace(/\\(.)/g, (_, c: string) => (c === "n" ? "\n" : c))];
  const fields = line.split("\t");
  if (code === "NOT_LOADED") return ["NOT_LOADED", flagOf(fields[1]), flagOf(fields[2]), flagOf(fields[3])];
  if (code === "APPLIED") {
    const walletAfter = fields[4] === "" || fields[4] === undefined ? null : fields[4];
    return fields.length > 5
      ? ["APPLIED", fields[1]!, fields[2]!, fields[3]!, walletAfter, fields[5]!, fields[6]!]
      : ["APPLIED", fields[1]!, fields[2]!, fields[3]!, walletAfter];
  }
  return fields as ApplyReply;
}

const flagOf = (field: string | undefined): 0 | 1 => (field === "1" ? 1 : 0);

/** The batch and index of a PendingRef made by decodeApply; null for "" (a record from before batches). */
function parseRef(ref: PendingRef): { batchKey: string; index: string } | null {
  const hash = ref.lastIndexOf("#");
  return hash < 0 ? null : { batchKey: ref.slice(0, hash), index: ref.slice(hash + 1) };
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
