-- Stores committed results in events' idempotency records and takes them out of their outboxes; any number of
-- events, of any customers on one Redis node (readRecord comes from record.lua).
-- KEYS: per event its record and its outbox. ARGV: recordTtl, then per event its result.
local ttl = ARGV[1]
local done = {}
local outboxes, order = {}, {}
for i = 1, #KEYS, 2 do
  local recordKey, outboxKey = KEYS[i], KEYS[i + 1]
  local record = readRecord(recordKey)
  if record then
    local state, fp, eid, rest = splitRecord(record)
    local delta, walletDelta, counterKey = recordDeltas(state, rest)
    -- The deltas stay, so that a late revert can still undo the event; the outbox row is dropped.
    redis.call("SET", recordKey, table.concat({"S", fp, eid, delta, walletDelta, counterKey, ARGV[(i + 1) / 2 + 1]}, "\t"),
      "EX", ttl)
    done[#done + 1] = "SETTLED"
  else
    done[#done + 1] = "NOT_FOUND"
  end
  local members = outboxes[outboxKey]
  if not members then
    members = {}
    outboxes[outboxKey] = members
    order[#order + 1] = outboxKey
  end
  members[#members + 1] = recordKey
end
for _, outboxKey in ipairs(order) do
  local members = outboxes[outboxKey]
  for i = 1, #members, 1000 do redis.call("ZREM", outboxKey, unpack(members, i, math.min(i + 999, #members))) end
end
return done
