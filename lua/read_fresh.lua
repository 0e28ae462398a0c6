#!lua flags=no-writes
--[[
read_fresh: feature values with their freshness, in one round trip. Read
only, so it may run on a replica.

  KEYS[1]  entity hash key, e.g. fs:user:u0001
  ARGV[1 ..]  feature names to read; with none, every field of the hash
           (the inspect view: avoid it on the request path). Any number:
           the reads go in slices of 1000 names, so an entity of 10,000
           fields is served whole.

  Reply: array {key_ttl, names, values, field_ttls, now_ms}
    key_ttl     integer: seconds left on the key; -1 no TTL; -2 no such key
    names       array of the feature names the next two arrays describe
    values      array, one per name: the value, or nil when the field is missing
    field_ttls  array, one per name: seconds left; -1 no field TTL (a batch
                field, covered by the key TTL); -2 missing field
    now_ms      integer: Redis's clock (TIME) in epoch milliseconds, so a
                reader ages event times (the fields @<view> and
                <feature>@t, which it may ask for like any field) against
                Redis's clock, never its own
  Errors:
    ERR read_fresh: wrong number of keys
    ERR read_fresh: empty feature name
    WRONGTYPE when the key exists and is not a hash

Example (after `fs-loader scripts --load` has printed the SHA1):
  redis-cli EVALSHA <sha> 1 fs:user:u0001 country_iso tx_count_5m
  1) (integer) 86321
  2) 1) "country_iso"
     2) "tx_count_5m"
  3) 1) "US"
     2) "3"
  4) 1) (integer) -1
     2) (integer) 287
  5) (integer) 1796140812345
]]

if #KEYS ~= 1 then
  return redis.error_reply('ERR read_fresh: wrong number of keys')
end
local key = KEYS[1]
local clock = redis.call('TIME')
local now_ms = tonumber(clock[1]) * 1000 + math.floor(tonumber(clock[2]) / 1000)
local SLICE = 1000
local key_ttl = redis.call('TTL', key)
local names
if #ARGV == 0 then
  if key_ttl == -2 then
    return {key_ttl, {}, {}, {}, now_ms}
  end
  names = redis.call('HKEYS', key)
  if #names == 0 then
    return {key_ttl, {}, {}, {}, now_ms}
  end
else
  for i = 1, #ARGV do
    if ARGV[i] == '' then
      return redis.error_reply('ERR read_fresh: empty feature name')
    end
  end
  names = ARGV
end
-- HMGET and HTTL in slices: Lua's unpack() fails past a few thousand
-- values ("too many results to unpack"), and an entity may hold more fields
-- than that (the loader accepts 3000 per row, any number of rows).
local values, ttls = {}, {}
for first = 1, #names, SLICE do
  local last = math.min(first + SLICE - 1, #names)
  local v = redis.call('HMGET', key, unpack(names, first, last))
  local t = redis.call('HTTL', key, 'FIELDS', last - first + 1, unpack(names, first, last))
  for i = 1, #v do
    values[#values + 1] = v[i]
    ttls[#ttls + 1] = t[i]
  end
end
return {key_ttl, names, values, ttls, now_ms}
