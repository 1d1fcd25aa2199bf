// The fast path: the interface, the in-process implementation (the embedded default) and the Redis one.
export type { ApplyRequest, ApplyResult, CounterRef, FastPath, Operation, Readings } from "./fastpath.js";
export { MemoryFastPath } from "./memory.js";
export { RedisFastPath, type RedisFastPathOptions } from "./redis/index.js";
