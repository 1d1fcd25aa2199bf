-- Decides several events of ONE customer in one atomic step, in order (applyOne comes from apply-core.lua).
-- KEYS: wallet, outbox, marker, then per event its record and its counter. ARGV: per event applyOne's 11 args.
local replies = {}
local n = #KEYS - 3
for i = 0, n / 2 - 1 do
  local a = i * 11
  replies[i + 1] = applyOne(KEYS[4 + 2 * i], KEYS[5 + 2 * i], KEYS[1], KEYS[2], KEYS[3],
    ARGV[a + 1], ARGV[a + 2], ARGV[a + 3], ARGV[a + 4], ARGV[a + 5], ARGV[a + 6], ARGV[a + 7], ARGV[a + 8],
    ARGV[a + 9], ARGV[a + 10], ARGV[a + 11])
end
return replies
