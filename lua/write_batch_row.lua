#!lua
--[[
write_batch_row: one entity's batch features, written atomically with the
entity's key-level TTL.

  KEYS[1]  entity hash key, e.g. fs:user:u0001
  ARGV[1]  key TTL in seconds: integer 1..315360000 (ten years; the batch cycle's TTL)
  ARGV[2]  D: how many feature names to retract (non-negative integer)
  ARGV[3 .. 2+D]      feature names to delete (HDEL), e.g. a null in the input
  ARGV[3+D ..]        field, value pairs to set (HSET)

  Reply: array {fields_set, fields_deleted}
  Errors (nothing is written when one is raised):
    ERR write_batch_row: wrong number of keys
    ERR write_batch_row: ttl must be an integer from 1 to 315360000
    ERR write_batch_row: retract count must be a non-negative integer
    ERR write_batch_row: retract count exceeds the arguments
    ERR write_batch_row: field/value arguments must come in pairs
    ERR write_batch_row: nothing to write
    ERR write_batch_row: empty feature name
    WRONGTYPE (from HSET) when the key exists and is not a hash

Batch fields carry no field TTL: HSET on a field clears any field TTL it had,
so a feature moved from the streaming side to the batch side stops expiring on
its own and lives as long as the key. The key TTL is set on every call (not
only when missing): the batch cycle is what refreshes it. Running the same
call twice leaves the same state, so a retry after a timeout is safe.

Example (after `fs-loader scripts --load` has printed the SHA1):
  redis-cli EVALSHA <sha> 1 fs:user:u0001 86400 0 country_iso US tx_count_7d 14
  1) (integer) 2
  2) (integer) 0
]]

if #KEYS ~= 1 then
  return redis.error_reply('ERR write_batch_row: wrong number of keys')
end
local key = KEYS[1]
local ttl = ARGV[1]
if ttl == nil or not string.match(ttl, '^[1-9]%d*$') or #ttl > 9 or tonumber(ttl) > 315360000 then
  return redis.error_reply('ERR write_batch_row: ttl must be an integer from 1 to 315360000')
end
local ndel = ARGV[2]
if ndel == nil or not string.match(ndel, '^%d+$') or #ndel > 9 then
  return redis.error_reply('ERR write_batch_row: retract count must be a non-negative integer')
end
ndel = tonumber(ndel)
local first_pair = 3 + ndel
if first_pair - 1 > #ARGV then
  return redis.error_reply('ERR write_batch_row: retract count exceeds the arguments')
end
local npairs_args = #ARGV - first_pair + 1
if npairs_args % 2 ~= 0 then
  return redis.error_reply('ERR write_batch_row: field/value arguments must come in pairs')
end
if npairs_args == 0 and ndel == 0 then
  return redis.error_reply('ERR write_batch_row: nothing to write')
end
for i = 3, 2 + ndel do
  if ARGV[i] == '' then
    return redis.error_reply('ERR write_batch_row: empty feature name')
  end
end
for i = first_pair, #ARGV, 2 do
  if ARGV[i] == '' then
    return redis.error_reply('ERR write_batch_row: empty feature name')
  end
end

local deleted = 0
if ndel > 0 then
  deleted = redis.call('HDEL', key, unpack(ARGV, 3, 2 + ndel))
end
if npairs_args > 0 then
  redis.call('HSET', key, unpack(ARGV, first_pair, #ARGV))
end
-- A retraction of every field leaves no key; EXPIRE on it is then a no-op.
redis.call('EXPIRE', key, ttl)
return {npairs_args / 2, deleted}
