-- Reads idempotency records in the one string format, whatever wrote them (readRecord comes from record.lua).
-- KEYS: the records. Returns one value per key: the record, or false when there is none.
local out = {}
for i = 1, #KEYS do out[i] = readRecord(KEYS[i]) end
return out
