-- Marks events of a batch (see apply-many.lua) done: committed, or undone. `indexes` are the events'
-- places in the batch, one per line; those not applied in it, or already done, are skipped. Once every
-- applied event is done, the batch leaves the outbox and shrinks to a tombstone that lives `tombstoneTtl`
-- seconds: long enough for a resent apply call to find it rather than apply again.
-- Returns 1 when the batch is complete, else 0.
local function markDone(batchKey, outboxKey, indexes, tombstoneTtl)
  local f = redis.call("HMGET", batchKey, "p", "d")
  if not f[1] then return 0 end
  local d = f[2] or "\n"
  local applied, done, left = {}, {}, 0
  for index in string.gmatch(d, "(%d+)\n") do done[index] = true end
  for index in string.gmatch(f[1], "\n(%d+)\t") do
    applied[index] = true
    if not done[index] then left = left + 1 end
  end
  local added = {}
  for index in string.gmatch(indexes, "%d+") do
    if applied[index] and not done[index] then
      done[index] = true
      added[#added + 1] = index
      left = left - 1
    end
  end
  if left == 0 then
    redis.call("DEL", batchKey)
    redis.call("HSET", batchKey, "t", "1")
    redis.call("EXPIRE", batchKey, tombstoneTtl)
    redis.call("ZREM", outboxKey, batchKey)
    return 1
  end
  if #added > 0 then redis.call("HSET", batchKey, "d", d .. table.concat(added, "\n") .. "\n") end
  return 0
end
