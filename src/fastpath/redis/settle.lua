-- Marks committed events done in their batches (markDone comes from batch.lua), any number of batches of
-- any customers on one Redis node. KEYS: the outbox, then the batches. ARGV: tombstoneTtl, then per batch
-- "<how many different indexes>:" and its events' indexes, one per line. Returns, per batch, 1 when it is
-- complete.
local out = {}
for i = 2, #KEYS do
  local distinct, indexes = string.match(ARGV[i], "^(%d+):(.*)$")
  if not distinct then return redis.error_reply("ERR meterd settle: malformed indexes argument") end
  out[i - 1] = markDone(KEYS[i], KEYS[1], indexes, ARGV[1], tonumber(distinct))
end
return out
