#!lua
--[[
write_streaming: streaming features for one or more entities, each feature
with its own field TTL. Per feature, an update is written only if its event
time is newer than the one stored for that feature; every entity's update
is atomic (the whole call is one script).

  KEYS[1] .. KEYS[n]  entity hash keys, one per update, e.g. fs:user:u0001
              (on a cluster they must share a hash slot; the store groups
              updates so that they do). A key may repeat: the store sends an
              entity whose features span views as one update per view, in
              the same call
  ARGV[1]     field TTL in seconds: integer 1..315360000 (set on every
              field written, values and their times alike)
  ARGV[2]     batch TTL in seconds: integer 1..315360000, set on a key only
              when it has no TTL of its own (a new entity, or one a reset
              deleted while this write was on its way)
  then, for each update i = 1..n, in the order of KEYS:
    T         event time, epoch milliseconds: 0 or 1..15 digits, no sign,
              no leading zero
    M         2: the update covers every feature of view V (its time is
                 kept once, in field @V)
              1: the update covers part of view V (times kept per feature,
                 in <feature>@t, and the newest of them in @V+)
              0: the features belong to no view (times per feature)
    V         the view's name (M 1 or 2); any non-empty text for M 0
    S         how many features: integer 1..3000
    S pairs   field, value

  A feature's stored event time is the newer of @V and <feature>@t. The
  update's T against it: newer, the feature and its time are written with
  the field TTL; equal or older, nothing about the feature changes, TTLs
  included (a replay, a retry, a late event). A time expires with the
  values it dates; @V+ carries no field TTL (it only ever makes a later
  write look at per-feature times) and lives with the key.

  Reply: array of 2n integers, two per update: the features written and
         the features skipped as stale; -1, 0 when that key holds
         something other than a hash (nothing is written to it; the others
         are)
  Errors (the first ten are raised before any write; nothing is written):
    ERR write_streaming: no keys
    ERR write_streaming: field ttl must be an integer from 1 to 315360000
    ERR write_streaming: batch ttl must be an integer from 1 to 315360000
    ERR write_streaming: update <i>: event time must be epoch ms (at most 15 digits)
    ERR write_streaming: update <i>: mode must be 0, 1 or 2, with a view name (no '@', '+')
    ERR write_streaming: update <i>: count must be an integer from 1 to 3000
    ERR write_streaming: update <i>: fewer arguments than its count says
    ERR write_streaming: update <i>: feature names must be non-empty, without '@'
    ERR write_streaming: more arguments than the updates' counts say
    ERR write_streaming: <HEXPIRE|EXPIRE> is refused (missing before
        Redis 7.4 / Valkey 9.0, renamed, or not allowed for this user);
        nothing written (HEXPIRE: only when HSETEX is refused too)
    ERR write_streaming: HMGET failed on <key>: <error>
        (reading the stored times was refused, e.g. by an ACL key pattern:
        nothing was written to it; the updates before it stay written)
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

Example, an update of two of the features of view user_activity, dated
2026-12-01T16:00:00Z (the SHA1 is printed by `fs-loader scripts --load`):
  redis-cli EVALSHA <sha> 1 fs:user:u0001 300 86400 1796140800000 1 user_activity 2 tx_count_5m 3 last_device_id ios-9f02
  1) (integer) 2
  2) (integer) 0

Every key this script leaves behind has a key-level TTL (no immortal keys),
whatever order batch writes, resets and streaming writes arrive in. The same
call run twice leaves the same state: the second run finds every time equal
and changes nothing.

Commands: HSETEX key EX <field ttl> FIELDS k <pairs> (Redis >= 8.0,
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

Cost: a written update runs three commands from Lua (HMGET of @V and @V+,
HSETEX, EXPIRE NX), and each crossing between Lua and Redis costs about as
much again as a small command; everything else is kept to table
look-ups. The checks look each distinct time, view, count and feature name
up in a table of those already checked (the updates of a call repeat
them): checking every update with pattern matches was a sixth of the
script's Redis time. docs/event-time.md ("What a write costs Redis") has
the measurements.
]]

local function fail(msg)
  return redis.error_reply('ERR write_streaming: ' .. msg)
end

local find, match, tonumber, unpack = string.find, string.match, tonumber, unpack
local ARGV = ARGV

-- Bounded so HSETEX/HEXPIRE can never refuse the TTL after a write.
local function valid_ttl(s)
  return s ~= nil and match(s, '^[1-9]%d*$') ~= nil and #s <= 9
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

-- Pass 1: check every update's layout before the first write. The updates
-- of a call mostly repeat their time, view, count and feature names, so
-- each distinct one is checked once (tables of those already checked) and
-- the checks cost table look-ups per update.
local good_view, good_name, s_of = {}, {}, {}
local last_t = false
local nargs = #ARGV
local pos = 3
for i = 1, n do
  local t, m, v = ARGV[pos], ARGV[pos + 1], ARGV[pos + 2]
  if t ~= last_t then
    if t == nil or #t > 15 or not (t == '0' or match(t, '^[1-9]%d*$')) then
      return fail('update ' .. i .. ': event time must be epoch ms (at most 15 digits)')
    end
    last_t = t
  end
  if (m ~= '2' and m ~= '1' and m ~= '0') or not good_view[v] then
    if (m ~= '2' and m ~= '1' and m ~= '0') or v == nil or v == '' or find(v, '[@+]') then
      return fail('update ' .. i .. ": mode must be 0, 1 or 2, with a view name (no '@', '+')")
    end
    good_view[v] = {'@' .. v, '@' .. v .. '+'} -- its time and marker fields
  end
  local ss = ARGV[pos + 3]
  local s = s_of[ss]
  if not s then
    s = tonumber(ss)
    if not s or not (s >= 1 and s <= 3000) or s % 1 ~= 0 then
      return fail('update ' .. i .. ': count must be an integer from 1 to 3000')
    end
    s_of[ss] = s
  end
  local first = pos + 4
  local last = first + 2 * s - 1
  if last > nargs then
    return fail('update ' .. i .. ': fewer arguments than its count says')
  end
  for j = first, last, 2 do
    local name = ARGV[j]
    if not good_name[name] then
      if name == '' or find(name, '@', 1, true) then
        return fail('update ' .. i .. ": feature names must be non-empty, without '@'")
      end
      good_name[name] = true
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
local first_name = ARGV[7]
local hsetex = allowed('HSETEX', KEYS[1], 'EX', field_ttl, 'FIELDS', '1', first_name, 'v')
if not hsetex and not allowed('HEXPIRE', KEYS[1], field_ttl, 'FIELDS', '1', first_name) then
  return fail('HEXPIRE is refused (missing before Redis 7.4 / Valkey 9.0, renamed,'
    .. ' or not allowed for this user); nothing written')
end
if not allowed('EXPIRE', KEYS[1], batch_ttl, 'NX') then
  return fail('EXPIRE is refused (missing before Redis 7.4 / Valkey 9.0, renamed,'
    .. ' or not allowed for this user); nothing written')
end

-- A stored time: a plain decimal, else (another tool's bytes, or no
-- field) false. Parsed once per call: the rows of a call mostly find the
-- same few stored times (a load dates its rows alike).
local time_of = {}
local function stored_time(raw)
  if not raw then
    return false
  end
  local v = time_of[raw]
  if v == nil then
    v = #raw <= 15 and match(raw, '^%d+$') ~= nil and tonumber(raw)
    time_of[raw] = v
  end
  return v
end

local function is_error(res)
  return type(res) == 'table' and res.err ~= nil
end

-- Lua's unpack stops at 8000 values (3000 features and their times are
-- 12000): long lists go in slices, even so pairs stay together.
local SLICE = 4000

local function names_of(pairs_list)
  local names = {}
  for k = 1, #pairs_list, 2 do
    names[#names + 1] = pairs_list[k]
  end
  return names
end

-- Writes `pairs_list` (field, value, ...) with the field TTL; nil, or the
-- error reply to return.
local function write_with_ttl(key, pairs_list)
  for a = 1, #pairs_list, SLICE do
    local b = math.min(a + SLICE - 1, #pairs_list)
    local k = (b - a + 1) / 2
    if hsetex then
      local res = redis.pcall('HSETEX', key, 'EX', field_ttl, 'FIELDS', k, unpack(pairs_list, a, b))
      if is_error(res) then
        return fail('HSETEX failed on ' .. key .. ': ' .. res.err)
      end
      if res ~= 1 then
        return fail('HSETEX did not set every field: ' .. tostring(res))
      end
    else
      redis.call('HSET', key, unpack(pairs_list, a, b))
    end
    if a == 1 then
      -- Pin first, so the key is bounded whatever happens next. NX: only
      -- a key with no TTL gets one.
      local pinned = redis.pcall('EXPIRE', key, batch_ttl, 'NX')
      if is_error(pinned) then
        redis.pcall('HDEL', key, unpack(names_of({unpack(pairs_list, a, b)})))
        return fail('EXPIRE failed on ' .. key .. ': ' .. pinned.err)
      end
    end
    if not hsetex then
      local names = names_of({unpack(pairs_list, a, b)})
      local codes = redis.pcall('HEXPIRE', key, field_ttl, 'FIELDS', #names, unpack(names))
      if is_error(codes) then
        redis.pcall('HDEL', key, unpack(names))
        return fail('HEXPIRE failed on ' .. key .. ': ' .. codes.err)
      end
      for c = 1, #codes do
        if codes[c] ~= 1 then
          return fail('HEXPIRE did not set every field TTL: ' .. table.concat(codes, ','))
        end
      end
    end
  end
  return nil
end

-- `write_with_ttl` for a time field and an update's pairs as they are in
-- ARGV (HSETEX only): no list is built.
local function hsetex_from_argv(key, vt, t, first, last, s)
  local res = redis.pcall('HSETEX', key, 'EX', field_ttl, 'FIELDS', s + 1, vt, t,
    unpack(ARGV, first, last))
  if res ~= 1 then
    if is_error(res) then
      return fail('HSETEX failed on ' .. key .. ': ' .. res.err)
    end
    return fail('HSETEX did not set every field: ' .. tostring(res))
  end
  local pinned = redis.pcall('EXPIRE', key, batch_ttl, 'NX')
  if type(pinned) == 'table' and pinned.err then
    local names = {vt}
    for j = first, last, 2 do
      names[#names + 1] = ARGV[j]
    end
    redis.pcall('HDEL', key, unpack(names))
    return fail('EXPIRE failed on ' .. key .. ': ' .. pinned.err)
  end
  return nil
end

-- One update; returns written, skipped (-1, 0: not a hash), or nil and
-- the error reply to return.
local function write_update(key, t, tn, m, vt, vm, first, s)
  local last = first + 2 * s - 1
  local g, x = nil, nil
  if m ~= '0' then
    local got = redis.pcall('HMGET', key, vt, vm)
    if got.err then
      if not find(got.err, '^WRONGTYPE') then
        return nil, fail('HMGET failed on ' .. key .. ': ' .. got.err)
      end
      return -1, 0
    end
    g, x = got[1], got[2]
    if g then g = stored_time(g) end
    if x then x = stored_time(x) end
  end
  if m == '2' then
    if g and tn <= g then
      return 0, s
    end
    if not x or tn > x then
      -- Every feature is older than this update: one write, one time.
      local err
      if hsetex and s < SLICE / 2 then
        -- The time first, so the pairs go straight from ARGV.
        err = hsetex_from_argv(key, vt, t, first, last, s)
      else
        local args = {unpack(ARGV, first, last)}
        args[#args + 1] = vt
        args[#args + 1] = t
        err = write_with_ttl(key, args)
      end
      if err then
        return nil, err
      end
      if x then
        -- Own times all older than t: the view's time now dates them all.
        local own = {vm}
        for j = first, last, 2 do
          own[#own + 1] = ARGV[j] .. '@t'
        end
        redis.call('HDEL', key, unpack(own))
      end
      return s, 0
    end
  end
  -- Per feature: read each one's own time.
  local own = {}
  for j = first, last, 2 do
    own[#own + 1] = ARGV[j] .. '@t'
  end
  local got = redis.pcall('HMGET', key, unpack(own))
  if got.err then
    if not find(got.err, '^WRONGTYPE') then
      return nil, fail('HMGET failed on ' .. key .. ': ' .. got.err)
    end
    return -1, 0
  end
  local sets, dels, written = {}, {}, 0
  for k = 1, s do
    local ft = stored_time(got[k])
    local eff = g
    if ft and (not eff or ft > eff) then
      eff = ft
    end
    if not eff or tn > eff then
      written = written + 1
      local j = first + 2 * (k - 1)
      sets[#sets + 1] = ARGV[j]
      sets[#sets + 1] = ARGV[j + 1]
      if m == '2' then
        if ft then
          dels[#dels + 1] = own[k]
        end
      else
        sets[#sets + 1] = own[k]
        sets[#sets + 1] = t
      end
    end
  end
  if written == 0 then
    return 0, s
  end
  if m == '2' then
    sets[#sets + 1] = vt
    sets[#sets + 1] = t
  end
  local err = write_with_ttl(key, sets)
  if err then
    return nil, err
  end
  if #dels > 0 then
    redis.call('HDEL', key, unpack(dels))
  end
  if m == '1' and (not x or tn > x) then
    -- Plain HSET: no field TTL, the marker lives with the key.
    redis.call('HSET', key, vm, t)
  end
  return written, s - written
end

-- Pass 2: write.
local reply = {}
local tn
last_t = false
pos = 3
for i = 1, n do
  local t, m, v = ARGV[pos], ARGV[pos + 1], ARGV[pos + 2]
  local s = s_of[ARGV[pos + 3]]
  if t ~= last_t then
    tn, last_t = tonumber(t), t
    time_of[t] = tn -- checked above: the same digits, stored, are the same time
  end
  local f = good_view[v]
  local first = pos + 4
  pos = first + 2 * s
  local written, skipped = write_update(KEYS[i], t, tn, m, f[1], f[2], first, s)
  if written == nil then
    return skipped
  end
  reply[2 * i - 1] = written
  reply[2 * i] = skipped
end
return reply
