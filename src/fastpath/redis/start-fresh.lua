-- Customers the ledger has never seen, in one call: each marked live, with its counters and wallet set
-- to 0 unless already loaded (a replica that counted the customer meanwhile loaded them first).
-- KEYS: per customer its marker, then the keys to set. ARGV: per customer how many keys follow its marker.
-- Returns how many keys were set.
local set = 0
local k = 1
for i = 1, #ARGV do
  redis.call("SET", KEYS[k], "live")
  for j = 1, tonumber(ARGV[i]) do
    if redis.call("SET", KEYS[k + j], "0", "NX") then set = set + 1 end
  end
  k = k + 1 + tonumber(ARGV[i])
end
return set
