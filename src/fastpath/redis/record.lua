-- An idempotency record, read in one format whatever wrote it: shared by every script that reads records.
-- A record is one string, "<state>\t<fingerprint>\t<event id>\t<rest>":
--   pending (applied, not yet committed): state "P", rest = before, after, delta, walletAfter ("" when the
--     event has no wallet movement), walletDelta, counter key ("" for none), then the outbox row, tab-separated;
--   settled (committed): state "S", rest = delta, walletDelta, counter key, then the stored result.
-- Records written as hashes by meterd 0.1 (fields fp, eid, result, applied, delta, wdelta, ckey, row) are read
-- as the same string, so an upgrade keeps their answers; the next write of the key replaces the hash.

-- Returns the record string, or false when there is none.
local function readRecord(key)
  local value = redis.pcall("GET", key)
  if type(value) ~= "table" or not value.err then return value end
  local h = redis.call("HMGET", key, "fp", "eid", "result", "applied", "delta", "wdelta", "ckey", "row")
  if not h[1] then return false end
  if h[3] then
    return table.concat({"S", h[1], h[2] or "", h[5] or "0", h[6] or "0", h[7] or "", h[3]}, "\t")
  end
  local applied = h[4] and cjson.decode(h[4]) or {}
  local walletAfter = applied[5]
  if type(walletAfter) ~= "string" then walletAfter = "" end
  return table.concat({"P", h[1], h[2] or "", applied[2] or "0", applied[3] or "0", h[5] or "0", walletAfter,
    h[6] or "0", h[7] or "", h[8] or ""}, "\t")
end

-- Splits a record: state, fingerprint, event id, and the rest (unsplit).
local function splitRecord(value)
  return string.match(value, "^(%a)\t([^\t]*)\t([^\t]*)\t(.*)$")
end

-- Splits the rest of a settled record: delta, walletDelta, counter key, result.
local function splitSettled(rest)
  return string.match(rest, "^([^\t]*)\t([^\t]*)\t([^\t]*)\t(.*)$")
end

-- Splits the rest of a pending record: before, after, delta, walletAfter, walletDelta, counter key, row.
local function splitPending(rest)
  return string.match(rest, "^([^\t]*)\t([^\t]*)\t([^\t]*)\t([^\t]*)\t([^\t]*)\t([^\t]*)\t(.*)$")
end

-- The deltas a record keeps, pending or settled: delta, walletDelta, counter key ("" for none).
local function recordDeltas(state, rest)
  if state == "S" then
    local delta, walletDelta, counterKey = splitSettled(rest)
    return delta, walletDelta, counterKey
  end
  local _, _, delta, _, walletDelta, counterKey = splitPending(rest)
  return delta, walletDelta, counterKey
end
