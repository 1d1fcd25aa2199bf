-- Undoes an applied event by its recorded deltas and forgets its key, only if the record is still that event's (readRecord comes from record.lua).
local recordKey = KEYS[1]
local counterKey = KEYS[2]             -- the wallet key again when the event has no counter
local walletKey = KEYS[3]
local outboxKey = KEYS[4]
local eventId = ARGV[1]

local record = readRecord(recordKey)
if not record then return {"NOT_FOUND"} end
local state, _, eid, rest = splitRecord(record)
-- A late revert must not undo another event that has since claimed the key.
if eid ~= eventId then return {"OTHER_EVENT"} end
local delta, walletDelta, recordedCounter = recordDeltas(state, rest)
if recordedCounter ~= "" and recordedCounter ~= counterKey then return {"COUNTER_MISMATCH"} end

-- A counter or wallet that is gone (Redis emptied) stays unloaded: it is rebuilt from the ledger.
if recordedCounter ~= "" and redis.call("EXISTS", counterKey) == 1 then
  redis.call("DECRBY", counterKey, delta)
end
if walletDelta ~= "0" and redis.call("EXISTS", walletKey) == 1 then
  redis.call("DECRBY", walletKey, walletDelta)
end
redis.call("DEL", recordKey)
redis.call("ZREM", outboxKey, recordKey)
return {"REVERTED"}
