-- The decision of one usage event (dedupe, load, delta, range, limit, credits, then the writes): shared by apply.lua and apply-many.lua.
-- Lua numbers are doubles: every integer up to 2^53 is exact, and a sum that leaves that range still
-- compares above MAX, because rounding is monotonic and 2^53 itself is representable.
local MAX = 9007199254740991

-- Integers go back as decimal strings: exact, whatever the client's integer decoder does near 2^53.
local function int(n)
  return string.format("%d", n)
end

-- keys: record (hash), counter (the wallet key again when the event has no counter), wallet, outbox, marker.
-- args: eventId, fingerprint, op ("add": amount = units; "set": amount = target), amount, expected ("" for
-- any), limit ("" for none), walletDelta, walletMayGoNegative ("1"/"0"), usesCounter ("1"/"0"), recordTtl,
-- row (what the ledger needs to commit the event, kept until settled).
local function applyOne(recordKey, counterKey, walletKey, outboxKey, markerKey,
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

  local record = redis.call("HMGET", recordKey, "fp", "result", "eid", "applied")
  if record[1] then
    if record[1] ~= fingerprint then return {"KEY_CONFLICT"} end
    if record[2] then return {"DUPLICATE", record[2]} end
    -- The same event again: a client resent this command after losing the reply. Answer as before.
    if record[3] == eventId and record[4] then return cjson.decode(record[4]) end
    return {"PENDING"}
  end

  -- A customer without the marker is new, or Redis lost its data: nothing of theirs may be trusted or loaded
  -- until the rebuild has waited out the commits that were in flight.
  if redis.call("GET", markerKey) ~= "live" then return {"NOT_LOADED", 1, 1, 1} end

  local usesWallet = walletDelta ~= 0
  local consumed, wallet = 0, 0
  local counterMissing, walletMissing = 0, 0
  if usesCounter then
    local value = redis.call("GET", counterKey)
    if value then consumed = tonumber(value) else counterMissing = 1 end
  end
  if usesWallet then
    local value = redis.call("GET", walletKey)
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

  -- SET of the checked totals (not INCRBY of the delta) stores exactly the values returned; KEEPTTL keeps
  -- any expiry the counter was given.
  if usesCounter then redis.call("SET", counterKey, int(after), "KEEPTTL") end
  if usesWallet then redis.call("SET", walletKey, int(walletAfter), "KEEPTTL") end
  local reply = {"APPLIED", int(consumed), int(after), int(delta), usesWallet and int(walletAfter) or false}
  redis.call("HSET", recordKey,
    "fp", fingerprint, "eid", eventId, "delta", int(delta), "wdelta", int(walletDelta),
    "ckey", usesCounter and counterKey or "", "applied", cjson.encode(reply), "row", row)
  local now = redis.call("TIME")
  redis.call("ZADD", outboxKey, now[1] * 1000 + math.floor(now[2] / 1000), recordKey)
  -- A leak guard only: settle() or revert() ends a pending record long before this.
  redis.call("EXPIRE", recordKey, recordTtl)
  return reply
end
