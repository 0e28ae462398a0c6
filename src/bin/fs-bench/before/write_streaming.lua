#!lua
-- fs-bench's baseline, never loaded by the store: lua/write_streaming.lua as it was
-- before event time (git d56b1eb), kept verbatim below this comment so the
-- event_time_* rows can send it the same rows, calls and pipelines as the
-- store's script and show what comparing event times costs.
--[[
write_streaming: streaming features for one or more entities, each feature
with its own field TTL; every entity's update is atomic (the whole call is
one script).

  KEYS[1] .. KEYS[n]  entity hash keys, one per update, e.g. fs:user:u0001
              (on a cluster they must share a hash slot; the store groups
              updates so that they do)
  ARGV[1]     field TTL in seconds: integer 1..315360000 (set on every
              field written, by HSETEX or HEXPIRE)
  ARGV[2]     batch TTL in seconds: integer 1..315360000, set on a key only
              when it has no TTL of its own (a new entity, or one a reset
              deleted while this write was on its way)
  then, for each update i = 1..n, in the order of KEYS:
    S         how many features: integer 1..3000
    S pairs   field, value (a repeated name: the last value wins)

  Reply: array of n integers, one per update: 1 when the key TTL was pinned,
         0 when the key already had one, -1 when that key holds something
         other than a hash (nothing is written to it; the others are)
  Errors (the first seven are raised before any write; nothing is written):
    ERR write_streaming: no keys
    ERR write_streaming: field ttl must be an integer from 1 to 315360000
    ERR write_streaming: batch ttl must be an integer from 1 to 315360000
    ERR write_streaming: update <i>: count must be an integer from 1 to 3000
    ERR write_streaming: update <i>: fewer arguments than its count says
    ERR write_streaming: update <i>: empty feature name
    ERR write_streaming: more arguments than the updates' counts say
    ERR write_streaming: <HEXPIRE|EXPIRE> is refused (missing before
        Redis 7.4 / Valkey 9.0, renamed, or not allowed for this user);
        nothing written (HEXPIRE: only when HSETEX is refused too)
    ERR write_streaming: HSETEX failed on <key>: <error>
        (an ACL key pattern refused that key: nothing was written to it;
        the updates before it stay written)
    ERR write_streaming: <HEXPIRE|EXPIRE> failed on <key>: <error>
        (only when the check above let it through: the fields this update
        set are deleted again first; the updates before it stay written)
    ERR write_streaming: HSETEX did not set every field: <reply>
    ERR write_streaming: HEXPIRE did not set every field TTL: <codes>
        (loud by design: a streaming field without a TTL could go stale
        silently; HEXPIRE codes: 1 set, 2 deleted, 0 condition, -2 no field)

Example, one update (the SHA1 is printed by `fs-loader scripts --load`):
  redis-cli EVALSHA <sha> 1 fs:user:u0001 300 86400 2 tx_count_5m 3 last_device_id ios-9f02
  1) (integer) 0

A repeated name within an update is harmless: the last value is kept, with
the field TTL (HSET and HSETEX keep the last value; HEXPIRE answers 1 for
every copy). So no script time goes to looking for one.

Every key this script leaves behind has a key-level TTL (no immortal keys),
whatever order batch writes, resets and streaming writes arrive in. The same
call run twice leaves the same state (the TTLs restart), so a retry is safe.

Commands: HSETEX key EX <field ttl> FIELDS S <pairs> (Redis >= 8.0,
Valkey >= 9.0) writes the fields with their TTLs in one command; where
HSETEX is unknown (Redis 7.4), renamed or denied, HSET then HEXPIRE do the
same in two. Which one is decided once per call, before the first write
(`redis.acl_check_cmd`: a missing or renamed command is unknown, an ACL
refusal is false), so one script serves 7.4, 8 and Valkey 9.

Order: whether the TTL commands may run is checked once, before the first
write, because neither EXPIRE nor HEXPIRE can come before the write (EXPIRE
on a missing key does nothing; HSET clears a field TTL). Per key, EXPIRE NX
runs right after the write, so the key is bounded before HEXPIRE runs;
should either still fail, the update's fields are deleted.

]]

local function fail(msg)
  return redis.error_reply('ERR write_streaming: ' .. msg)
end

-- Bounded so HSETEX/HEXPIRE can never refuse the TTL after a write.
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

-- Pass 1 only checks, and keeps nothing: pass 2 reads the counts again,
-- which costs less than tables carrying them across. tonumber + range +
-- `% 1` is the integer check (cheaper than a pattern; any spelling it
-- accepts, such as '0x10', is the count pass 2 uses). A repeated name is
-- harmless, so it is not looked for: HSET/HSETEX keep the last value and
-- every copy's TTL is the same.
local nargs = #ARGV
local pos = 3
for i = 1, n do
  local s = tonumber(ARGV[pos])
  if not s or not (s >= 1 and s <= 3000) or s % 1 ~= 0 then
    return fail('update ' .. i .. ': count must be an integer from 1 to 3000')
  end
  local first = pos + 1
  local last = first + 2 * s - 1
  if last > nargs then
    return fail('update ' .. i .. ': fewer arguments than its count says')
  end
  for j = first, last, 2 do
    if ARGV[j] == '' then
      return fail('update ' .. i .. ': empty feature name')
    end
  end
  pos = last + 1
end
if pos ~= nargs + 1 then
  return fail("more arguments than the updates' counts say")
end
local function allowed(cmd, ...)
  local ok, yes = pcall(redis.acl_check_cmd, cmd, ...)
  return ok and yes
end
-- Command rights do not depend on the key, and a key the user may HSET it
-- may also expire (all are writes): one check stands for every key.
-- HSETEX (Redis 8, Valkey 9) sets the fields and their TTLs in one
-- command; where it is unknown (Redis 7.4), renamed or denied, HSET then
-- HEXPIRE does the same in two.
local first_name = ARGV[4]
local hsetex = allowed('HSETEX', KEYS[1], 'EX', field_ttl, 'FIELDS', '1', first_name, 'v')
if not hsetex and not allowed('HEXPIRE', KEYS[1], field_ttl, 'FIELDS', '1', first_name) then
  return fail('HEXPIRE is refused (missing before Redis 7.4 / Valkey 9.0, renamed,'
    .. ' or not allowed for this user); nothing written')
end
if not allowed('EXPIRE', KEYS[1], batch_ttl, 'NX') then
  return fail('EXPIRE is refused (missing before Redis 7.4 / Valkey 9.0, renamed,'
    .. ' or not allowed for this user); nothing written')
end

-- The update's names, for HEXPIRE and for taking the update back.
local function names_of(first, last)
  local names = {}
  for j = first, last, 2 do
    names[#names + 1] = ARGV[j]
  end
  return names
end

-- A TTL command that fails after the write: take back the update's fields.
local function undo(key, first, last, cmd, err)
  redis.pcall('HDEL', key, unpack(names_of(first, last)))
  return fail(cmd .. ' failed on ' .. key .. ': ' .. err)
end

-- Pass 2: write.
local reply = {}
pos = 3
for i = 1, n do
  local key, s = KEYS[i], tonumber(ARGV[pos])
  local first = pos + 1
  local last = first + 2 * s - 1
  pos = last + 1
  local res
  if hsetex then
    res = redis.pcall('HSETEX', key, 'EX', field_ttl, 'FIELDS', s, unpack(ARGV, first, last))
  else
    res = redis.pcall('HSET', key, unpack(ARGV, first, last))
  end
  if type(res) == 'table' then
    if hsetex and not string.find(res.err, '^WRONGTYPE') then
      -- HSETEX refused the key (an ACL key pattern): it wrote nothing.
      return fail('HSETEX failed on ' .. key .. ': ' .. res.err)
    end
    reply[i] = -1
  else
    -- Pin first, so the key is bounded whatever happens next. NX: only a
    -- key with no TTL gets one.
    local pinned = redis.pcall('EXPIRE', key, batch_ttl, 'NX')
    if type(pinned) == 'table' then
      return undo(key, first, last, 'EXPIRE', pinned.err)
    end
    reply[i] = pinned
    if hsetex then
      if res ~= 1 then
        return fail('HSETEX did not set every field: ' .. tostring(res))
      end
    else
      local codes = redis.pcall('HEXPIRE', key, field_ttl, 'FIELDS', s, unpack(names_of(first, last)))
      if codes.err then
        return undo(key, first, last, 'HEXPIRE', codes.err)
      end
      for c = 1, #codes do
        if codes[c] ~= 1 then
          return fail('HEXPIRE did not set every field TTL: ' .. table.concat(codes, ','))
        end
      end
    end
  end
end
return reply
