-- An idempotency record, read in one format whatever wrote it: shared by every script that reads records.
-- A record is one tab-separated string, "<state>\t<fingerprint>\t<event id>\t<rest>":
--   "B" (meterd 0.2): rest = batch key, index in the batch, before, after, delta, walletAfter ("" when the
--     event has no wallet movement), walletDelta, counted ("1" when the event has a counter). The event is
--     pending while its batch (see apply-core.lua) lists it and has not marked it done, settled after.
--   "P" (pending) and "S" (settled), written before 0.2: rest = before, after, delta, walletAfter,
--     walletDelta, counter key, outbox row; or delta, walletDelta, counter key, stored result.
-- Hashes written by meterd 0.1 (fields fp, eid, result, applied, delta, wdelta, ckey, row) are read as the
-- same string, so an upgrade keeps their answers; the next write of the key replaces the hash.

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

-- Splits the rest of a "B" record: batch key, index, before, after, delta, walletAfter, walletDelta, counted.
local function splitBatched(rest)
  return string.match(rest, "^([^\t]*)\t([^\t]*)\t([^\t]*)\t([^\t]*)\t([^\t]*)\t([^\t]*)\t([^\t]*)\t([^\t]*)$")
end

-- Splits the rest of a settled "S" record: delta, walletDelta, counter key, result.
local function splitSettled(rest)
  return string.match(rest, "^([^\t]*)\t([^\t]*)\t([^\t]*)\t(.*)$")
end

-- Splits the rest of a pending "P" record: before, after, delta, walletAfter, walletDelta, counter key, row.
local function splitPending(rest)
  return string.match(rest, "^([^\t]*)\t([^\t]*)\t([^\t]*)\t([^\t]*)\t([^\t]*)\t([^\t]*)\t(.*)$")
end

-- Whether the event at `index` of a batch is still pending: listed in the batch ("p") and not done ("d").
-- `cache` is the apply call's (see apply-core.lua), or false: the events it applied are pending, though
-- their batch is written only at its end.
local function batchPending(batchKey, index, cache)
  if cache and batchKey == cache.batchKey and cache.appliedIndexes[index] then return true end
  local fields = redis.call("HMGET", batchKey, "p", "d")
  if not fields[1] or not string.find(fields[1], "\n" .. index .. "\t", 1, true) then return false end
  return not (fields[2] and string.find(fields[2], "\n" .. index .. "\n", 1, true))
end

-- What an event with this key is answered, from its record; nil when the key is new. A pending key is
-- PENDING, or, for the very same event (a resent command), APPLIED as before; a settled one is SETTLED
-- with its numbers (DUPLICATE with the stored result for records written before 0.2).
local function keyReply(recordKey, fingerprint, eventId, cache)
  local record = readRecord(recordKey)
  if not record then return nil end
  local state, fp, eid, rest = splitRecord(record)
  if fp ~= fingerprint then return {"KEY_CONFLICT"} end
  if state == "B" then
    local batchKey, index, before, after, delta, walletAfter, walletDelta, counted = splitBatched(rest)
    if batchPending(batchKey, index, cache) then
      if eid == eventId then
        return {"APPLIED", before, after, delta, walletAfter ~= "" and walletAfter or false, batchKey, index}
      end
      return {"PENDING"}
    end
    return {"SETTLED", eid, before, after, delta, walletAfter, walletDelta, counted}
  end
  if state == "S" then
    local _, _, _, result = splitSettled(rest)
    return {"DUPLICATE", result}
  end
  if eid == eventId then
    local before, after, delta, walletAfter = splitPending(rest)
    return {"APPLIED", before, after, delta, walletAfter ~= "" and walletAfter or false, "", ""}
  end
  return {"PENDING"}
end
