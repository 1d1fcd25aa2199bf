-- Decides a batch of events, of any number of customers, in one atomic step, in order (applyOne comes from apply-core.lua).
-- Every key is in KEYS. Per customer group: wallet, outbox, marker, then per event its record and its counter.
-- ARGV: recordTtl, then per group its number of events, then per event one string: applyOne's args but
-- recordTtl, tab-separated, the row last (one string per event keeps the client's encoding work small).
-- The events of one customer share a hash tag; a call may span customers (slots) of one Redis node.
-- Returns one string: each event's reply (applyOne's fields, tab-separated) on a line of its own, in order;
-- one string is far cheaper for Redis to send and for the client to read than a thousand nested arrays.
local cache = newCache()
local replies = {}
local ttl = ARGV[1]
local k, a = 1, 2
while a <= #ARGV do
  local n = tonumber(ARGV[a])
  a = a + 1
  local walletKey, outboxKey, markerKey = KEYS[k], KEYS[k + 1], KEYS[k + 2]
  k = k + 3
  for _ = 1, n do
    local eventId, fingerprint, op, amount, expected, limit, walletDelta, mayGoNegative, usesCounter, row =
      string.match(ARGV[a], "^([^\t]*)\t([^\t]*)\t([^\t]*)\t([^\t]*)\t([^\t]*)\t([^\t]*)\t([^\t]*)\t([^\t]*)\t([^\t]*)\t(.*)$")
    if not eventId then return redis.error_reply("ERR meterd apply-many: malformed event argument") end
    local reply = applyOne(cache, KEYS[k], KEYS[k + 1], walletKey, outboxKey, markerKey,
      eventId, fingerprint, op, amount, expected, limit, walletDelta, mayGoNegative, usesCounter, ttl, row)
    if reply.err then return reply end
    -- false (no wallet movement) is sent as an empty field; a stored result keeps to its line.
    if reply[5] == false then reply[5] = "" end
    if reply[1] == "DUPLICATE" then reply[2] = string.gsub(string.gsub(reply[2], "\\", "\\\\"), "\n", "\\n") end
    replies[#replies + 1] = table.concat(reply, "\t")
    k = k + 2
    a = a + 1
  end
end
flush(cache)
return table.concat(replies, "\n")
