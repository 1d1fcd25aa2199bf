-- Stores the committed result in an event's idempotency record and starts the record's retention TTL.
local recordKey = KEYS[1]
local outboxKey = KEYS[2]
local result = ARGV[1]
local ttlSeconds = ARGV[2]

if redis.call("EXISTS", recordKey) == 0 then
  redis.call("ZREM", outboxKey, recordKey)
  return {"NOT_FOUND"}
end
redis.call("HSET", recordKey, "result", result)
-- Committed: the outbox entry and its row are done with.
redis.call("HDEL", recordKey, "row", "applied")
redis.call("ZREM", outboxKey, recordKey)
redis.call("EXPIRE", recordKey, ttlSeconds)
return {"SETTLED"}
