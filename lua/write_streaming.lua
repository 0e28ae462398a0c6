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
  Errors (the first eight are raised before any write; nothing is written):
    ERR write_streaming: no keys
    ERR write_streaming: field ttl must be an integer from 1 to 315360000
    ERR write_streaming: batch ttl must be an integer from 1 to 315360000
    ERR write_streaming: update <i>: count must be an integer from 1 to 3000
    ERR write_streaming: update <i>: fewer arguments than its count says
    ERR write_streaming: update <i>: empty or repeated feature name
    ERR write_streaming: more arguments than the updates' counts say
    ERR write_streaming: <HEXPIRE|EXPIRE> is refused (missing before
        Redis 7.4 / Valkey 9.0, renamed, or not allowed for this user);
        nothing written
    ERR write_streaming: <HEXPIRE|EXPIRE> failed on <key>: <error>
        (only when the check above let it through: the fields this update
        set are deleted again first; the updates before it stay written)
    ERR write_streaming: HEXPIRE did not set every field TTL: <codes>
        (loud by design: a streaming field without a TTL could go stale
        silently; HEXPIRE codes: 1 set, 2 deleted, 0 condition, -2 no field)

Every key this script leaves behind has a key-level TTL (no immortal keys),
whatever order batch writes, resets and streaming writes arrive in. The same
call run twice leaves the same state (the TTLs restart), so a retry is safe.

Order: whether HEXPIRE and EXPIRE may run is checked once
(`redis.acl_check_cmd`: a missing or renamed command is unknown, an ACL
refusal is false) before the first write, because neither can come before
the HSET (EXPIRE on a missing key does nothing; HSET clears a field TTL).
Per key, EXPIRE NX runs right after HSET, so the key is bounded before
HEXPIRE runs; should either still fail, the update's fields are deleted.

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
local function is_refused(cmd, ...)
  local ok, allowed = pcall(redis.acl_check_cmd, cmd, ...)
  return not ok or not allowed
end
-- Command rights do not depend on the key, and a key the user may HSET it
-- may also expire (all three are writes): one check stands for every key.
local refused = (is_refused('HEXPIRE', KEYS[1], field_ttl, 'FIELDS', '1', ARGV[starts[1]]) and 'HEXPIRE')
  or (is_refused('EXPIRE', KEYS[1], batch_ttl, 'NX') and 'EXPIRE')
if refused then
  return fail(refused .. ' is refused (missing before Redis 7.4 / Valkey 9.0, renamed,'
    .. ' or not allowed for this user); nothing written')
end

-- A TTL command that fails after HSET: take back the update's fields.
local function undo(key, first, last, cmd, err)
  local names = {}
  for j = first, last, 2 do
    names[#names + 1] = ARGV[j]
  end
  redis.pcall('HDEL', key, unpack(names))
  return fail(cmd .. ' failed on ' .. key .. ': ' .. err)
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
    -- Pin first, so the key is bounded whatever happens next. NX: only a
    -- key with no TTL gets one.
    local pinned = redis.pcall('EXPIRE', key, batch_ttl, 'NX')
    if type(pinned) == 'table' and pinned.err then
      return undo(key, first, last, 'EXPIRE', pinned.err)
    end
    local names = {}
    for j = first, last, 2 do
      names[#names + 1] = ARGV[j]
    end
    local codes = redis.pcall('HEXPIRE', key, field_ttl, 'FIELDS', s, unpack(names))
    if type(codes) == 'table' and codes.err then
      return undo(key, first, last, 'HEXPIRE', codes.err)
    end
    reply[i] = pinned
    for c = 1, #codes do
      if codes[c] ~= 1 then
        return fail('HEXPIRE did not set every field TTL: ' .. table.concat(codes, ','))
      end
    end
  end
end
return reply
