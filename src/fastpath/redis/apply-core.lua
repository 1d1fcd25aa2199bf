-- The decision of one usage event (dedupe, load, delta, range, limit, credits, then the writes), and the
-- call's outbox entry (see batch.lua): used by apply-many.lua.
-- Lua numbers are doubles: every integer up to 2^53 is exact, and a sum that leaves that range still
-- compares above MAX, because rounding is monotonic and 2^53 itself is representable.
local MAX = 9007199254740991

-- Integers go back as decimal strings: exact, whatever the client's integer decoder does near 2^53.
local function int(n)
  return string.format("%d", n)
end

-- One script call's view of the keyspace: markers, counters and wallets are read once and written once
-- at the end (flush). The events it applies are listed in one outbox entry for the whole call (its batch),
-- named in the outbox, the index of pending batches.
local function newCache(batchKey, outboxKey)
  local now = redis.call("TIME")
  return { values = {}, dirty = {}, order = {}, batchKey = batchKey, outboxKey = outboxKey, applied = {},
    appliedIndexes = {},
    now = now[1] * 1000 + math.floor(now[2] / 1000) }
end

local function cget(cache, key)
  local value = cache.values[key]
  if value == nil then
    value = redis.call("GET", key)
    cache.values[key] = value
  end
  return value
end

local function cset(cache, key, value)
  cache.values[key] = value
  if not cache.dirty[key] then
    cache.dirty[key] = true
    cache.order[#cache.order + 1] = key
  end
end

-- Writes the checked totals, then the batch entry with its rows, if anything was applied. `replies` is
-- the call's answer, kept with the entry so that a resent call (a lost reply) is answered the same.
local function flush(cache, rows, replies)
  -- SET of the checked totals (not INCRBY of the deltas) stores exactly the values returned; KEEPTTL keeps
  -- any expiry a counter was given.
  for _, key in ipairs(cache.order) do redis.call("SET", key, cache.values[key], "KEEPTTL") end
  if #cache.applied == 0 then return end
  -- A tombstone expires: the batch written over it must not.
  if cache.tombstone then redis.call("DEL", cache.batchKey) end
  redis.call("HSET", cache.batchKey, "r", rows, "p", "\n" .. table.concat(cache.applied, "\n") .. "\n", "a", replies,
    "n", #cache.applied)
  redis.call("ZADD", cache.outboxKey, cache.now, cache.batchKey)
end

-- keys: record (false for an event without an idempotency key), counter (the wallet key again when the
-- event has no counter), wallet, marker.
-- args: index (the event's place in the call, from 1, as a string), eventId, fingerprint, op ("add": amount = units;
-- "set": amount = target), amount, expected ("" for any), limit ("" for none), walletDelta,
-- walletMayGoNegative ("1"/"0"), usesCounter ("1"/"0"), recordTtl.
local function applyOne(cache, recordKey, counterKey, walletKey, markerKey,
                        index, eventId, fingerprint, op, amountArg, expectedArg, limitArg, walletDeltaArg,
                        walletMayGoNegativeArg, usesCounterArg, recordTtl)
  local amount = tonumber(amountArg)
  local expected = tonumber(expectedArg)
  local limit = tonumber(limitArg)
  local walletDelta = tonumber(walletDeltaArg)
  local walletMayGoNegative = walletMayGoNegativeArg == "1"
  local usesCounter = usesCounterArg == "1"

  if op ~= "add" and op ~= "set" then
    return redis.error_reply("ERR meterd apply: unknown op " .. tostring(op))
  end

  if recordKey then
    local seen = keyReply(recordKey, fingerprint, eventId, cache)
    if seen then return seen end
  end

  -- A customer without the marker is new, or Redis lost its data: nothing of theirs may be trusted or loaded
  -- until the rebuild has waited out the commits that were in flight.
  if cget(cache, markerKey) ~= "live" then return {"NOT_LOADED", 1, 1, 1} end

  local usesWallet = walletDelta ~= 0
  local consumed, wallet = 0, 0
  local consumedText = "0"
  local counterMissing, walletMissing = 0, 0
  if usesCounter then
    local value = cget(cache, counterKey)
    if value then
      consumed = tonumber(value)
      consumedText = value
    else
      counterMissing = 1
    end
  end
  if usesWallet then
    local value = cget(cache, walletKey)
    if value then wallet = tonumber(value) else walletMissing = 1 end
  end
  if counterMissing == 1 or walletMissing == 1 then
    return {"NOT_LOADED", counterMissing, walletMissing, 0}
  end

  local delta
  if op == "set" then
    if expected ~= nil and expected ~= consumed then return {"EXPECTED_MISMATCH", int(consumed)} end
    delta = amount - consumed
  else
    delta = amount
  end
  local after = consumed + delta
  -- A total is never negative: a correction larger than the usage it corrects is refused.
  if after < 0 or after > MAX then return {"OUT_OF_RANGE", int(consumed)} end
  -- Only growth is capped: a correction or a lower set is always admitted.
  if delta > 0 and limit ~= nil and after > limit then return {"DENIED_LIMIT", int(consumed)} end
  local walletAfter = wallet + walletDelta
  if walletDelta < 0 and walletAfter < 0 and not walletMayGoNegative then
    return {"DENIED_CREDITS", int(consumed), int(wallet)}
  end
  if math.abs(walletAfter) > MAX then return {"OUT_OF_RANGE", int(consumed)} end

  -- Texts are formatted only where they are new: the stored total, an added amount and the wallet delta
  -- are the integer strings they came as. This runs for every event of every batch.
  local afterText = int(after)
  local deltaText = op == "add" and amountArg or int(delta)
  local walletAfterText = usesWallet and int(walletAfter) or ""
  local counterFlag = usesCounter and "1" or "0"
  if usesCounter then cset(cache, counterKey, afterText) end
  if usesWallet then cset(cache, walletKey, walletAfterText) end
  -- The record answers a retry of the key: pending while its batch lists the event, then settled. It
  -- expires after recordTtl, the window in which Redis alone answers a retry (the ledger's key after).
  if recordKey then
    redis.call("SET", recordKey, "B\t" .. fingerprint .. "\t" .. eventId .. "\t" .. cache.batchKey .. "\t" .. index .. "\t" ..
      consumedText .. "\t" .. afterText .. "\t" .. deltaText .. "\t" .. walletAfterText .. "\t" .. walletDeltaArg .. "\t" ..
      counterFlag, "EX", recordTtl)
  end
  cache.appliedIndexes[index] = true
  cache.applied[#cache.applied + 1] = index .. "\t" .. deltaText .. "\t" .. walletDeltaArg .. "\t" .. counterFlag .. "\t" ..
    (recordKey or walletKey) .. "\t" .. eventId
  -- The common answer as its line already (see apply-many.lua); the others are tables.
  return "APPLIED\t" .. consumedText .. "\t" .. afterText .. "\t" .. deltaText .. "\t" .. walletAfterText
end
