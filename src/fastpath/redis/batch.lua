-- Marks events of a batch (see apply-many.lua) done: committed, or undone. `indexes` are the events'
-- places in the batch, one per line; those not applied in it, or already done, are skipped. Once every
-- applied event is done, the batch leaves the outbox and shrinks to a tombstone that lives `tombstoneTtl`
-- seconds: long enough for a resent apply call to find it rather than apply again.
-- `distinct`, when given, is how many different indexes `indexes` names, all of events applied in the
-- batch (settle.lua's callers name only those): when that is every event the batch applied ("n") and none
-- was done before, the batch is complete without reading its lines.
-- Returns 1 when the batch is complete, else 0.
local function complete(batchKey, outboxKey, tombstoneTtl)
  redis.call("DEL", batchKey)
  redis.call("HSET", batchKey, "t", "1")
  redis.call("EXPIRE", batchKey, tombstoneTtl)
  redis.call("ZREM", outboxKey, batchKey)
end

local function markDone(batchKey, outboxKey, indexes, tombstoneTtl, distinct)
  if distinct then
    local g = redis.call("HMGET", batchKey, "n", "d")
    if g[1] and not g[2] and tonumber(g[1]) == distinct then
      complete(batchKey, outboxKey, tombstoneTtl)
      return 1
    end
  end
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
    complete(batchKey, outboxKey, tombstoneTtl)
    return 1
  end
  if #added > 0 then redis.call("HSET", batchKey, "d", d .. table.concat(added, "\n") .. "\n") end
  return 0
end
