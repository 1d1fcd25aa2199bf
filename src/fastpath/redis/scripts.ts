// The one registry of meterd's Lua scripts: each lives in its own .lua file beside this one, is
// registered here with ioredis defineCommand, and is typed below, so that `redis.meterdApply(...)` and
// `redis.pipeline().meterdApply(...)` are checked calls. Every key a script touches is passed in KEYS.
import { readFileSync } from "node:fs";
import type { RedisKey, Result } from "ioredis";

/** "1" or "0": Lua sees only strings. */
export type Flag = "1" | "0";

/** Integers cross the wire as decimal strings (exact near 2^53, where ioredis 6.0.0's decoder is not). */
export type IntString = string;

export type ApplyReply =
  | [code: "APPLIED", before: IntString, after: IntString, delta: IntString, walletAfter: IntString | null]
  | [code: "DENIED_LIMIT", consumed: IntString]
  | [code: "DENIED_CREDITS", consumed: IntString, wallet: IntString]
  | [code: "DUPLICATE", result: string]
  | [code: "PENDING"]
  | [code: "KEY_CONFLICT"]
  | [code: "EXPECTED_MISMATCH", consumed: IntString]
  | [code: "OUT_OF_RANGE", consumed: IntString]
  | [code: "NOT_LOADED", counterMissing: 0 | 1, walletMissing: 0 | 1, customerNotLive: 0 | 1];

export type SettleReply = [code: "SETTLED"] | [code: "NOT_FOUND"];

export type RevertReply = [code: "REVERTED"] | [code: "NOT_FOUND"] | [code: "OTHER_EVENT"] | [code: "COUNTER_MISMATCH"];

export type LoadReply = [code: "LOADED"] | [code: "ALREADY_LOADED"] | [code: "NOT_LIVE"];

declare module "ioredis" {
  interface RedisCommander<Context> {
    /** apply.lua. An empty expected or limit means none. */
    meterdApply(
      recordKey: RedisKey,
      counterKey: RedisKey,
      walletKey: RedisKey,
      outboxKey: RedisKey,
      markerKey: RedisKey,
      eventId: string,
      fingerprint: string,
      op: "add" | "set",
      amount: IntString,
      expected: IntString | "",
      limit: IntString | "",
      walletDelta: IntString,
      walletMayGoNegative: Flag,
      usesCounter: Flag,
      recordTtlSeconds: IntString,
      row: string,
    ): Result<ApplyReply, Context>;
    /** settle.lua */
    meterdSettle(recordKey: RedisKey, outboxKey: RedisKey, result: string, ttlSeconds: IntString): Result<SettleReply, Context>;
    /** revert.lua */
    meterdRevert(recordKey: RedisKey, counterKey: RedisKey, walletKey: RedisKey, outboxKey: RedisKey, eventId: string): Result<RevertReply, Context>;
    /** load.lua */
    meterdLoad(key: RedisKey, markerKey: RedisKey, units: IntString): Result<LoadReply, Context>;
    /** rebuild.lua: "0" when live, else the time (ms) before which nothing may load. */
    meterdRebuild(markerKey: RedisKey, notBeforeMs: IntString): Result<IntString, Context>;
  }
}

/** Command name, number of KEYS, file. */
const SCRIPTS = [
  ["meterdApply", 5, "apply.lua"],
  ["meterdSettle", 2, "settle.lua"],
  ["meterdRevert", 4, "revert.lua"],
  ["meterdLoad", 2, "load.lua"],
  ["meterdRebuild", 1, "rebuild.lua"],
] as const;

/** The scripts with their text, read once per process. */
let loaded: Array<{ name: string; numberOfKeys: number; lua: string }> | undefined;

/** Anything that can register a script: a Redis or a Cluster client. */
export interface ScriptHost {
  defineCommand(name: string, definition: { lua: string; numberOfKeys?: number; readOnly?: boolean }): void;
}

const registered = new WeakSet<ScriptHost>();

/** Registers every meterd script on the client (once per client); pipelines made from it get them too. */
export function defineMeterdCommands(redis: ScriptHost): void {
  if (registered.has(redis)) return;
  loaded ??= SCRIPTS.map(([name, numberOfKeys, file]) => ({
    name,
    numberOfKeys,
    lua: readFileSync(new URL(`./${file}`, import.meta.url), "utf8"),
  }));
  for (const { name, numberOfKeys, lua } of loaded) redis.defineCommand(name, { numberOfKeys, lua });
  registered.add(redis);
}
