-- Decides one usage event in one atomic step and applies it (applyOne comes from apply-core.lua).
local cache = newCache()
local reply = applyOne(cache, KEYS[1], KEYS[2], KEYS[3], KEYS[4], KEYS[5],
  ARGV[1], ARGV[2], ARGV[3], ARGV[4], ARGV[5], ARGV[6], ARGV[7], ARGV[8], ARGV[9], ARGV[10], ARGV[11])
flush(cache)
return reply
