-- Stores the committed result in an event's idempotency record and starts the record's retention TTL.
local recordKey = KEYS[1]
local result = ARGV[1]
local ttlSeconds = ARGV[2]

if redis.call("EXISTS", recordKey) == 0 then return {"NOT_FOUND"} end
redis.call("HSET", recordKey, "result", result)
redis.call("EXPIRE", recordKey, ttlSeconds)
return {"SETTLED"}
