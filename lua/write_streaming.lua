#!lua
--[[
write_streaming: streaming features for one or more entities, each feature
with its own field TTL; every entity's update is atomic (the whole call is
one script).

  KEYS[1] .. KEYS[n]  entity hash keys, one per update, e.g. fs:user:u0001
              (on a cluster they must share a hash slot; the store groups
              updates so that they do)
  ARGV[1]     field TTL in seconds: integer 1..315360000 (HEXPIRE on every
              field written)
  ARGV[2]     batch TTL in seconds: integer 1..315360000, set on a key only
              when it has no TTL of its own (a new entity, or one a reset
              deleted while this write was on its way)
  then, for each update i = 1..n, in the order of KEYS:
    S         how many features: integer 1..3000
    S pairs   field, value (names distinct within the update)

  Reply: array of n integers, one per update: 1 when the key TTL was pinned,
         0 when the key already had one, -1 when that key holds something
         other than a hash (nothing is written to it; the others are)
  Errors (the first seven are raised before any write; nothing is written):
    ERR write_streaming: no keys
    ERR write_streaming: field ttl must be an integer from 1 to 315360000
    ERR write_streaming: batch ttl must be an integer from 1 to 315360000
    ERR write_streaming: update <i>: count must be an integer from 1 to 3000
    ERR write_streaming: update <i>: fewer arguments than its count says
    ERR write_streaming: update <i>: empty or repeated feature name
    ERR write_streaming: more arguments than the updates' counts say
    ERR write_streaming: HEXPIRE did not set every field TTL: <codes>
        (loud by design: a streaming field without a TTL could go stale
        silently; HEXPIRE codes: 1 set, 2 deleted, 0 condition, -2 no field)

Every key this script leaves behind has a key-level TTL (no immortal keys),
whatever order batch writes, resets and streaming writes arrive in. The same
call run twice leaves the same state (the TTLs restart), so a retry is safe.

Example, one update (the SHA1 is printed by `fs-loader scripts --load`):
  redis-cli EVALSHA <sha> 1 fs:user:u0001 300 86400 2 tx_count_5m 3 last_device_id ios-9f02
  1) (integer) 0
]]

local function fail(msg)
  return redis.error_reply('ERR write_streaming: ' .. msg)
end

-- Bounded so HEXPIRE can never refuse the TTL after HSET has written.
local function valid_ttl(s)
  return s ~= nil and string.match(s, '^[1-9]%d*$') ~= nil and #s <= 9
    and tonumber(s) <= 315360000
end

local n = #KEYS
if n == 0 then
  return fail('no keys')
end
if not valid_ttl(ARGV[1]) then
  return fail('field ttl must be an integer from 1 to 315360000')
end
if not valid_ttl(ARGV[2]) then
  return fail('batch ttl must be an integer from 1 to 315360000')
end
local field_ttl, batch_ttl = ARGV[1], ARGV[2]

-- Pass 1: check every update's layout before the first write.
local nargs = #ARGV
local starts, counts = {}, {}
local pos = 3
for i = 1, n do
  local s = ARGV[pos]
  if s == nil or not string.match(s, '^[1-9]%d*$') or #s > 4 or tonumber(s) > 3000 then
    return fail('update ' .. i .. ': count must be an integer from 1 to 3000')
  end
  s = tonumber(s)
  local first = pos + 1
  local last = first + 2 * s - 1
  if last > nargs then
    return fail('update ' .. i .. ': fewer arguments than its count says')
  end
  local seen = {}
  for j = first, last, 2 do
    local name = ARGV[j]
    if name == '' or seen[name] then
      return fail('update ' .. i .. ': empty or repeated feature name')
    end
    seen[name] = true
  end
  starts[i], counts[i] = first, s
  pos = last + 1
end
if pos ~= nargs + 1 then
  return fail("more arguments than the updates' counts say")
end

-- Pass 2: write.
local reply = {}
for i = 1, n do
  local key, first, s = KEYS[i], starts[i], counts[i]
  local last = first + 2 * s - 1
  local res = redis.pcall('HSET', key, unpack(ARGV, first, last))
  if type(res) == 'table' and res.err then
    reply[i] = -1
  else
    local names = {}
    for j = first, last, 2 do
      names[#names + 1] = ARGV[j]
    end
    local codes = redis.call('HEXPIRE', key, field_ttl, 'FIELDS', s, unpack(names))
    -- Pin before the code check, so even a failed call leaves no key
    -- without a TTL. NX: only a key with no TTL gets one.
    reply[i] = redis.call('EXPIRE', key, batch_ttl, 'NX')
    for c = 1, #codes do
      if codes[c] ~= 1 then
        return fail('HEXPIRE did not set every field TTL: ' .. table.concat(codes, ','))
      end
    end
  end
end
return reply
