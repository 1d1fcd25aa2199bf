-- Undoes one applied event by the deltas its batch recorded, forgets its key, and marks it done in the
-- batch (markDone comes from batch.lua, readRecord and splitRecord from record.lua); only if the batch
-- still holds that event pending.
-- KEYS: batch, record (the counter key again for an event without an idempotency key), counter (the
-- wallet key again when the event has no counter), wallet, outbox. ARGV: index, eventId, keyed ("1"/"0"),
-- tombstoneTtl.
local batchKey, recordKey, counterKey, walletKey, outboxKey = KEYS[1], KEYS[2], KEYS[3], KEYS[4], KEYS[5]
local index, eventId, keyed, tombstoneTtl = ARGV[1], ARGV[2], ARGV[3], ARGV[4]

local f = redis.call("HMGET", batchKey, "p", "d")
if not f[1] then return {"NOT_FOUND"} end
local line = string.match(f[1], "\n" .. index .. "\t([^\n]*)\n")
if not line then return {"NOT_FOUND"} end
if f[2] and string.find(f[2], "\n" .. index .. "\n", 1, true) then return {"NOT_FOUND"} end
local delta, walletDelta, counted, _, eid = string.match(line, "^([^\t]*)\t([^\t]*)\t([^\t]*)\t([^\t]*)\t([^\t]*)$")
-- A late revert must not undo another event.
if eid ~= eventId then return {"OTHER_EVENT"} end

-- A counter or wallet that is gone (Redis emptied) stays unloaded: it is rebuilt from the ledger.
if counted == "1" and redis.call("EXISTS", counterKey) == 1 then redis.call("DECRBY", counterKey, delta) end
if walletDelta ~= "0" and redis.call("EXISTS", walletKey) == 1 then redis.call("DECRBY", walletKey, walletDelta) end
if keyed == "1" then
  local record = readRecord(recordKey)
  if record then
    local _, _, recordEventId = splitRecord(record)
    if recordEventId == eventId then redis.call("DEL", recordKey) end
  end
end
markDone(batchKey, outboxKey, index, tombstoneTtl)
return {"REVERTED"}
