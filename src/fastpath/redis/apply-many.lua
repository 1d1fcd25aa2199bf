-- Decides a batch of events, of any number of customers, in one atomic step, in order (applyOne comes
-- from apply-core.lua). The events it applies get one outbox entry, the batch (KEYS[1]), a hash:
--   r  the outbox rows of every event of the call, one per line (what the ledger needs, opaque here)
--   p  the applied events, a line each: index, delta, walletDelta, counted, record or wallet key, event id
--   d  the indexes of those done (committed or undone), a line each; the batch is complete when all are
--   a  this call's answer, for a resent call
--   n  how many events it applied (a settle that names them all completes the batch without reading p)
-- and is listed in the outbox (KEYS[2]), scored by its apply time.
-- KEYS: the batch, the outbox, then every other key the call touches, once each; the arguments name
-- them by their index in KEYS (a counter shared by many events is sent once).
-- ARGV: recordTtl, the rows (lines), then per customer group "<events>\t<wallet>\t<marker>" and per event
-- one string: applyOne's args from eventId to usesCounter, then its record ("0" without an idempotency
-- key) and its counter (its wallet when it has none), tab-separated.
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
local a = 3
local index = 0
while a <= #ARGV do
  local n, walletAt, markerAt = string.match(ARGV[a], "^(%d+)\t(%d+)\t(%d+)$")
  if not n then return redis.error_reply("ERR meterd apply-many: malformed group argument") end
  a = a + 1
  local walletKey, markerKey = KEYS[tonumber(walletAt)], KEYS[tonumber(markerAt)]
  for _ = 1, tonumber(n) do
    index = index + 1
    local eventId, fingerprint, op, amount, expected, limit, walletDelta, mayGoNegative, usesCounter, recordAt, counterAt =
      string.match(ARGV[a], "^([^\t]*)\t([^\t]*)\t([^\t]*)\t([^\t]*)\t([^\t]*)\t([^\t]*)\t([^\t]*)\t([^\t]*)\t([^\t]*)\t(%d+)\t(%d+)$")
    if not eventId then return redis.error_reply("ERR meterd apply-many: malformed event argument") end
    if settledBefore and recordAt == "0" then return redis.error_reply("ERR meterd apply-many: batch already settled") end
    local reply = applyOne(cache, recordAt ~= "0" and KEYS[tonumber(recordAt)], KEYS[tonumber(counterAt)], walletKey, markerKey,
      tostring(index), eventId, fingerprint, op, amount, expected, limit, walletDelta, mayGoNegative, usesCounter, ttl)
    if type(reply) == "string" then
      replies[#replies + 1] = reply
    else
      if reply.err then return reply end
      -- false (no wallet movement) is sent as an empty field; a stored result keeps to its line.
      if reply[5] == false then reply[5] = "" end
      if reply[1] == "DUPLICATE" then reply[2] = string.gsub(string.gsub(reply[2], "\\", "\\\\"), "\n", "\\n") end
      replies[#replies + 1] = table.concat(reply, "\t")
    end
    a = a + 1
  end
end
local answer = table.concat(replies, "\n")
flush(cache, ARGV[2], answer)
return answer
