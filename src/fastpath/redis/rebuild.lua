-- Starts or joins a customer's rebuild: returns 0 when the customer is live, else the time before which nothing may load.
local markerKey = KEYS[1]
local notBefore = ARGV[1]

redis.call("SET", markerKey, "rebuild:" .. notBefore, "NX")
local marker = redis.call("GET", markerKey)
if marker == "live" then return "0" end
return string.sub(marker, 9)
