-- Decides a batch of events, of any number of customers, in one atomic step, in order (applyOne comes
-- from apply-core.lua). The events it applies get one outbox entry, the batch (KEYS[1]), a hash:
--   r  the outbox rows of every event of the call, one per line (what the ledger needs, opaque here)
--   p  the applied events, a line each: index, delta, walletDelta, counted, record or wallet key, event id
--   n  how many were applied; m how many of those are done (committed or undone), d their indexes
--   a  this call's answer, for a resent call
-- and is listed in the outbox (KEYS[2]), scored by its apply time.
-- KEYS: the batch, the outbox, then per customer group: wallet, marker, then per event its record (its
-- counter key again when it has no idempotency key) and its counter.
-- ARGV: recordTtl, the rows (lines), then per group its number of events, then per event one string:
-- applyOne's args from eventId to usesCounter, then keyed ("1"/"0"), tab-separated.
-- Returns one string: each event's reply (applyOne's fields, tab-separated) on a line of its own, in order;
-- one string is far cheaper for Redis to send and for the client to read than a thousand nested arrays.
local batchKey = KEYS[1]
-- The same call again: a client resent it after losing the reply. Answer as before, change nothing.
local prior = redis.call("HMGET", batchKey, "a", "t")
if prior[1] then return prior[1] end
-- Resent after its batch was settled: its keyed events are answered by their records, but an event
-- without a key cannot be told from a new one, so the call is refused rather than counted twice.
local settledBefore = prior[2] and true or false

local cache = newCache(batchKey, KEYS[2])
cache.tombstone = settledBefore
local replies = {}
local ttl = ARGV[1]
local k, a = 3, 3
local index = 0
while a <= #ARGV do
  local n = tonumber(ARGV[a])
  a = a + 1
  local walletKey, markerKey = KEYS[k], KEYS[k + 1]
  k = k + 2
  for _ = 1, n do
    index = index + 1
    local eventId, fingerprint, op, amount, expected, limit, walletDelta, mayGoNegative, usesCounter, keyed =
      string.match(ARGV[a], "^([^\t]*)\t([^\t]*)\t([^\t]*)\t([^\t]*)\t([^\t]*)\t([^\t]*)\t([^\t]*)\t([^\t]*)\t([^\t]*)\t([^\t]*)$")
    if not eventId then return redis.error_reply("ERR meterd apply-many: malformed event argument") end
    if settledBefore and keyed ~= "1" then return redis.error_reply("ERR meterd apply-many: batch already settled") end
    local reply = applyOne(cache, keyed == "1" and KEYS[k] or false, KEYS[k + 1], walletKey, markerKey,
      index, eventId, fingerprint, op, amount, expected, limit, walletDelta, mayGoNegative, usesCounter, ttl)
    if reply.err then return reply end
    -- false (no wallet movement) is sent as an empty field; a stored result keeps to its line.
    if reply[5] == false then reply[5] = "" end
    if reply[1] == "DUPLICATE" then reply[2] = string.gsub(string.gsub(reply[2], "\\", "\\\\"), "\n", "\\n") end
    replies[#replies + 1] = table.concat(reply, "\t")
    k = k + 2
    a = a + 1
  end
end
local answer = table.concat(replies, "\n")
flush(cache, ARGV[2], answer)
return answer
