-- Marks committed events done in their batches (markDone comes from batch.lua), any number of batches of
-- any customers on one Redis node. KEYS: the outbox, then the batches. ARGV: tombstoneTtl, then per batch
-- its events' indexes, one per line. Returns, per batch, 1 when it is complete.
local out = {}
for i = 2, #KEYS do out[i - 1] = markDone(KEYS[i], KEYS[1], ARGV[i], ARGV[1]) end
return out
