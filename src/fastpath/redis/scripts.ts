// The one registry of meterd's Lua scripts: each lives in its own .lua file beside this one, is
// registered here with ioredis defineCommand, and is typed below, so that `redis.meterdApplyMany(...)` and
// `redis.pipeline().meterdApplyMany(...)` are checked calls. Every key a script touches is passed in KEYS.
import { readFileSync } from "node:fs";
import type { RedisKey, Result } from "ioredis";

/** "1" or "0": Lua sees only strings. */
export type Flag = "1" | "0";

/** Integers cross the wire as decimal strings (exact near 2^53, where ioredis 6.0.0's decoder is not). */
export type IntString = string;

export type ApplyReply =
  /** batchKey and index are given only when the event was applied by an earlier call (a resend). */
  | [code: "APPLIED", before: IntString, after: IntString, delta: IntString, walletAfter: IntString | null, batchKey?: string, index?: IntString]
  | [code: "DENIED_LIMIT", consumed: IntString]
  | [code: "DENIED_CREDITS", consumed: IntString, wallet: IntString]
  /** A settled key: what its event was answered; walletAfter "" when it has none, counted "1" or "0". */
  | [code: "SETTLED", eventId: string, before: IntString, after: IntString, delta: IntString, walletAfter: IntString, walletDelta: IntString, counted: Flag]
  /** A settled key recorded before meterd 0.2, with its stored result. */
  | [code: "DUPLICATE", result: string]
  | [code: "PENDING"]
  | [code: "KEY_CONFLICT"]
  | [code: "EXPECTED_MISMATCH", consumed: IntString]
  | [code: "OUT_OF_RANGE", consumed: IntString]
  | [code: "NOT_LOADED", counterMissing: 0 | 1, walletMissing: 0 | 1, customerNotLive: 0 | 1];

export type RevertReply = [code: "REVERTED"] | [code: "NOT_FOUND"] | [code: "OTHER_EVENT"];

export type LoadReply = [code: "LOADED"] | [code: "ALREADY_LOADED"] | [code: "NOT_LIVE"];

declare module "ioredis" {
  interface RedisCommander<Context> {
    /**
     * apply-many.lua: events of any customers. numKeys, then the batch and outbox keys and every other key
     * the call touches, once each; then recordTtl, the outbox rows (a line each), and per customer group
     * a header naming its wallet and marker, followed by one string per event (see the script). Answers
     * one string: each event's reply, its fields tab-separated, a line each, in order.
     */
    meterdApplyMany(numKeys: number, ...keysAndArgs: string[]): Result<string, Context>;
    /** settle.lua: numKeys, then the outbox and the batches; then tombstoneTtl and per batch "<count>:" and the different indexes settled, a line each. */
    meterdSettle(numKeys: number, ...keysAndArgs: string[]): Result<Array<0 | 1>, Context>;
    /** read-records.lua: each record as "<P or S>\t<fingerprint>\t<event id>", or null. */
    meterdReadRecords(numKeys: number, ...keys: string[]): Result<Array<string | null>, Context>;
    /** revert.lua */
    meterdRevert(
      batchKey: RedisKey,
      recordKey: RedisKey,
      counterKey: RedisKey,
      walletKey: RedisKey,
      outboxKey: RedisKey,
      index: IntString,
      eventId: string,
      keyed: Flag,
      tombstoneTtlSeconds: IntString,
    ): Result<RevertReply, Context>;
    /** start-fresh.lua: numKeys, then per customer its marker and the keys to set to 0; then per customer how many of those. */
    meterdStartFresh(numKeys: number, ...keysAndArgs: string[]): Result<number, Context>;
    /** load.lua */
    meterdLoad(key: RedisKey, markerKey: RedisKey, units: IntString): Result<LoadReply, Context>;
    /** rebuild.lua: "0" when live, else the time (ms) before which nothing may load. */
    meterdRebuild(markerKey: RedisKey, notBeforeMs: IntString): Result<IntString, Context>;
  }
}

/**
 * Scripts that span customers (slots) say so to Redis 7, so that Redis Cluster runs them on the node that
 * holds all their keys; the line must come first.
 */
const CROSS_SLOT = "#!lua flags=allow-cross-slot-keys";

/**
 * Command name, number of KEYS (undefined: given with each call), file, the shared files prepended to it
 * (record.lua reads idempotency records; apply-core.lua is the decision itself; batch.lua completes
 * batches), and whether it may span slots (a batch lives in the slot of its first customer).
 */
const SCRIPTS = [
  ["meterdApplyMany", undefined, "apply-many.lua", ["record.lua", "apply-core.lua"], true],
  ["meterdSettle", undefined, "settle.lua", ["batch.lua"], true],
  ["meterdReadRecords", undefined, "read-records.lua", ["record.lua"], true],
  ["meterdRevert", 5, "revert.lua", ["record.lua", "batch.lua"], true],
  ["meterdLoad", 2, "load.lua", [], false],
  ["meterdStartFresh", undefined, "start-fresh.lua", [], true],
  ["meterdRebuild", 1, "rebuild.lua", [], false],
] as const;

/** The scripts with their text, read once per process. */
let loaded: Array<{ name: string; numberOfKeys: number | undefined; lua: string }> | undefined;

const read = (file: string) => readFileSync(new URL(`./${file}`, import.meta.url), "utf8");

/** Anything that can register a script: a Redis or a Cluster client. */
export interface ScriptHost {
  defineCommand(name: string, definition: { lua: string; numberOfKeys?: number; readOnly?: boolean }): void;
}

const registered = new WeakSet<ScriptHost>();

/** Registers every meterd script on the client (once per client); pipelines made from it get them too. */
export function defineMeterdCommands(redis: ScriptHost): void {
  if (registered.has(redis)) return;
  loaded ??= SCRIPTS.map(([name, numberOfKeys, file, shared, crossSlot]) => ({
    name,
    numberOfKeys,
    lua: [...(crossSlot ? [CROSS_SLOT] : []), ...shared.map(read), read(file)].join("\n"),
  }));
  for (const { name, numberOfKeys, lua } of loaded) {
    redis.defineCommand(name, numberOfKeys === undefined ? { lua } : { numberOfKeys, lua });
  }
  registered.add(redis);
}
