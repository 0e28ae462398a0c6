#!lua
--[[
write_streaming: one entity's streaming features, each with its own field
TTL, written atomically.

  KEYS[1]  entity hash key, e.g. fs:user:u0001
  ARGV[1]  field TTL in seconds: integer 1..315360000 (HEXPIRE on every field set)
  ARGV[2]  batch TTL in seconds: integer 1..315360000, pinned on the key only
           when the key has no TTL of its own (a new entity, or one whose
           batch row was deleted by a reset that this write raced)
  ARGV[3 ..]  field, value pairs (at least one; names distinct, non-empty)

  Reply: array {fields_set, key_ttl_pinned (1 or 0)}
  Errors (nothing is written when one of the first six is raised):
    ERR write_streaming: wrong number of keys
    ERR write_streaming: field ttl must be an integer from 1 to 315360000
    ERR write_streaming: batch ttl must be an integer from 1 to 315360000
    ERR write_streaming: field/value arguments must come in pairs
    ERR write_streaming: no fields
    ERR write_streaming: empty or repeated feature name
    WRONGTYPE (from HSET) when the key exists and is not a hash
    ERR write_streaming: HEXPIRE did not set every field TTL: <codes>
        (loud by design: a streaming field without a TTL could go stale
        silently; HEXPIRE codes: 1 set, 2 deleted, 0 condition, -2 no field)

Every key this script leaves behind has a key-level TTL: no immortal keys,
whatever order batch writes, resets and streaming writes arrive in. Running
the same call twice leaves the same state (the TTLs restart), so a retry is
safe.

Example (after `fs-loader scripts --load` has printed the SHA1):
  redis-cli EVALSHA <sha> 1 fs:user:u0001 300 86400 tx_count_5m 3 last_device_id ios-9f02
  1) (integer) 2
  2) (integer) 0
]]

if #KEYS ~= 1 then
  return redis.error_reply('ERR write_streaming: wrong number of keys')
end
local key = KEYS[1]
-- Bounded so HEXPIRE can never refuse the TTL after HSET has written.
local function valid_ttl(s)
  return s ~= nil and string.match(s, '^[1-9]%d*$') ~= nil and #s <= 9
    and tonumber(s) <= 315360000
end
if not valid_ttl(ARGV[1]) then
  return redis.error_reply('ERR write_streaming: field ttl must be an integer from 1 to 315360000')
end
if not valid_ttl(ARGV[2]) then
  return redis.error_reply('ERR write_streaming: batch ttl must be an integer from 1 to 315360000')
end
local nargs = #ARGV - 2
if nargs % 2 ~= 0 then
  return redis.error_reply('ERR write_streaming: field/value arguments must come in pairs')
end
if nargs == 0 then
  return redis.error_reply('ERR write_streaming: no fields')
end
local names = {}
local seen = {}
for i = 3, #ARGV, 2 do
  local name = ARGV[i]
  if name == '' or seen[name] then
    return redis.error_reply('ERR write_streaming: empty or repeated feature name')
  end
  seen[name] = true
  names[#names + 1] = name
end

redis.call('HSET', key, unpack(ARGV, 3, #ARGV))
local codes = redis.call('HEXPIRE', key, ARGV[1], 'FIELDS', #names, unpack(names))
local pinned = 0
if redis.call('TTL', key) == -1 then
  redis.call('EXPIRE', key, ARGV[2])
  pinned = 1
end
for i = 1, #codes do
  if codes[i] ~= 1 then
    return redis.error_reply('ERR write_streaming: HEXPIRE did not set every field TTL: ' ..
      table.concat(codes, ','))
  end
end
return {#names, pinned}
