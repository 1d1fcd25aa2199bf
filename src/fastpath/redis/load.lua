-- Sets a counter or a wallet from the ledger's sum, unless it is already loaded or its customer is not live.
local key = KEYS[1]
local markerKey = KEYS[2]
local units = ARGV[1]

if redis.call("GET", markerKey) ~= "live" then return {"NOT_LIVE"} end
if redis.call("SET", key, units, "NX") then return {"LOADED"} end
return {"ALREADY_LOADED"}
