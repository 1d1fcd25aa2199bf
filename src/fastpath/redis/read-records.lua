-- Reads idempotency records as "<P or S>\t<fingerprint>\t<event id>", pending or settled, whatever wrote
-- them (readRecord, splitRecord, splitBatched and batchPending come from record.lua).
-- KEYS: the records. Returns one value per key: that string, or false when there is none.
local out = {}
for i = 1, #KEYS do
  local record = readRecord(KEYS[i])
  if record then
    local state, fp, eid, rest = splitRecord(record)
    if state == "B" then
      local batchKey, index = splitBatched(rest)
      state = batchPending(batchKey, index, false) and "P" or "S"
    end
    out[i] = table.concat({state, fp, eid}, "\t")
  else
    out[i] = false
  end
end
return out
