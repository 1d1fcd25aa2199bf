-- Sets a counter or a wallet from the ledger's sum, unless it is already loaded.
local key = KEYS[1]
local units = ARGV[1]

if redis.call("SET", key, units, "NX") then return {"LOADED"} end
return {"ALREADY_LOADED"}
