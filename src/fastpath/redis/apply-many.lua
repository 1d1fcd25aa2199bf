-- Decides a batch of events, of any number of customers, in one atomic step, in order (applyOne comes from apply-core.lua).
-- Every key is in KEYS. Per customer group: wallet, outbox, marker, then per event its record and its counter.
-- ARGV: recordTtl, then per group its number of events, then per event applyOne's args but recordTtl.
-- The events of one customer share a hash tag; a call may span customers (slots) of one Redis node.
local cache = newCache()
local replies = {}
local ttl = ARGV[1]
local k, a = 1, 2
while a <= #ARGV do
  local n = tonumber(ARGV[a])
  a = a + 1
  local walletKey, outboxKey, markerKey = KEYS[k], KEYS[k + 1], KEYS[k + 2]
  k = k + 3
  for _ = 1, n do
    replies[#replies + 1] = applyOne(cache, KEYS[k], KEYS[k + 1], walletKey, outboxKey, markerKey,
      ARGV[a], ARGV[a + 1], ARGV[a + 2], ARGV[a + 3], ARGV[a + 4], ARGV[a + 5], ARGV[a + 6], ARGV[a + 7],
      ARGV[a + 8], ttl, ARGV[a + 9])
    k = k + 2
    a = a + 10
  end
end
flush(cache)
return replies
