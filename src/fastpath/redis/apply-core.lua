-- The decision of one usage event (dedupe, load, delta, range, limit, credits, then the writes): shared by apply.lua and apply-many.lua.
-- Lua numbers are doubles: every integer up to 2^53 is exact, and a sum that leaves that range still
-- compares above MAX, because rounding is monotonic and 2^53 itself is representable.
local MAX = 9007199254740991

-- Integers go back as decimal strings: exact, whatever the client's integer decoder does near 2^53.
local function int(n)
  return string.format("%d", n)
end

-- One script call's view of the keyspace: markers, counters and wallets are read once and written once at
-- the end (flush), and outbox entries are added in one ZADD per outbox, however many events touch them.
local function newCache()
  local now = redis.call("TIME")
  return { values = {}, dirty = {}, order = {}, outboxes = {}, outboxOrder = {},
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

local function flush(cache)
  -- SET of the checked totals (not INCRBY of the deltas) stores exactly the values returned; KEEPTTL keeps
  -- any expiry a counter was given.
  for _, key in ipairs(cache.order) do redis.call("SET", key, cache.values[key], "KEEPTTL") end
  for _, outboxKey in ipairs(cache.outboxOrder) do
    local members = cache.outboxes[outboxKey]
    for i = 1, #members, 1000 do
      redis.call("ZADD", outboxKey, unpack(members, i, math.min(i + 999, #members)))
    end
  end
end

-- keys: record, counter (the wallet key again when the event has no counter), wallet, outbox, marker.
-- args: eventId, fingerprint, op ("add": amount = units; "set": amount = target), amount, expected ("" for
-- any), limit ("" for none), walletDelta, walletMayGoNegative ("1"/"0"), usesCounter ("1"/"0"), recordTtl,
-- row (what the ledger needs to commit the event, kept until settled).
local function applyOne(cache, recordKey, counterKey, walletKey, outboxKey, markerKey,
                        eventId, fingerprint, op, amountArg, expectedArg, limitArg, walletDeltaArg,
                        walletMayGoNegativeArg, usesCounterArg, recordTtl, row)
  local amount = tonumber(amountArg)
  local expected = tonumber(expectedArg)
  local limit = tonumber(limitArg)
  local walletDelta = tonumber(walletDeltaArg)
  local walletMayGoNegative = walletMayGoNegativeArg == "1"
  local usesCounter = usesCounterArg == "1"

  if op ~= "add" and op ~= "set" then
    return redis.error_reply("ERR meterd apply: unknown op " .. tostring(op))
  end

  local record = readRecord(recordKey)
  if record then
    local state, fp, eid, rest = splitRecord(record)
    if fp ~= fingerprint then return {"KEY_CONFLICT"} end
    if state == "S" then
      local _, _, _, result = splitSettled(rest)
      return {"DUPLICATE", result}
    end
    -- The same event again: a client resent this command after losing the reply. Answer as before.
    if eid == eventId then
      local before, after, delta, walletAfter = splitPending(rest)
      return {"APPLIED", before, after, delta, walletAfter ~= "" and walletAfter or false}
    end
    return {"PENDING"}
  end

  -- A customer without the marker is new, or Redis lost its data: nothing of theirs may be trusted or loaded
  -- until the rebuild has waited out the commits that were in flight.
  if cget(cache, markerKey) ~= "live" then return {"NOT_LOADED", 1, 1, 1} end

  local usesWallet = walletDelta ~= 0
  local consumed, wallet = 0, 0
  local counterMissing, walletMissing = 0, 0
  if usesCounter then
    local value = cget(cache, counterKey)
    if value then consumed = tonumber(value) else counterMissing = 1 end
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

  if usesCounter then cset(cache, counterKey, int(after)) end
  if usesWallet then cset(cache, walletKey, int(walletAfter)) end
  local before, afterText, deltaText = int(consumed), int(after), int(delta)
  local walletAfterText = usesWallet and int(walletAfter) or ""
  -- The record expires after recordTtl: a leak guard while pending (settle or revert ends it long before),
  -- then the window in which Redis alone answers a retry.
  redis.call("SET", recordKey, table.concat({"P", fingerprint, eventId, before, afterText, deltaText, walletAfterText,
    int(walletDelta), usesCounter and counterKey or "", row}, "\t"), "EX", recordTtl)
  local members = cache.outboxes[outboxKey]
  if not members then
    members = {}
    cache.outboxes[outboxKey] = members
    cache.outboxOrder[#cache.outboxOrder + 1] = outboxKey
  end
  members[#members + 1] = cache.now
  members[#members + 1] = recordKey
  return {"APPLIED", before, afterText, deltaText, usesWallet and walletAfterText or false}
end
