// The Redis fast path: the implementation, its key layout, and the registry of its Lua scripts.
export {
  DEFAULT_PREFIX,
  DEFAULT_SETTLED_TTL_SECONDS,
  RedisFastPath,
  type RedisFastPathOptions,
  RedisKeyspace,
} from "./redis-fastpath.js";
export { defineMeterdCommands, type ScriptHost } from "./scripts.js";
