#!lua
--[[
write_batch_rows: batch rows for one or more entities. Per feature, a row
is written only if its event time is newer than the one stored for that
feature; each row's writes and its key TTL are atomic (the whole call is
one script).

  KEYS[1] .. KEYS[n]  entity hash keys, one per row, e.g. fs:user:u0001
              (on a cluster they must share a hash slot; the store groups
              rows so that they do). A key may repeat: the store sends an
              entity whose features span views as one row per view, in
              the same call
  ARGV[1]     key TTL in seconds for every row: integer 1..315360000
  then, for each row i = 1..n, in the order of KEYS:
    T         event time, epoch milliseconds: 0 or 1..15 digits, no sign,
              no leading zero
    M         2: the row covers every feature of view V (its time is kept
                 once, in field @V)
              1: the row covers part of view V (times kept per feature, in
                 <feature>@t, and the newest of them in @V+)
              0: the features belong to no view (times per feature)
    V         the view's name (M 1 or 2); any non-empty text for M 0
    R         how many feature names to retract: integer 0..5000
    S         how many features to set: integer 0..3000 (R + S >= 1)
    R names   features to delete: a null in the batch job's output
    S pairs   field, value

  A feature's stored event time is the newer of @V and <feature>@t. The
  row's T against it: newer, the feature is written (set, or deleted with
  its time kept as a tombstone); equal or older, nothing about the feature
  changes (a replay, a retry, a late event). A row with nothing newer
  leaves the key untouched, TTL included. Feature names cannot hold '@', so
  no feature is a time field.

  Reply: array of 2n integers, two per row: the features written and the
         features skipped as stale; -1, 0 when that key holds something
         other than a hash (nothing is written to it; the other rows are)
  Errors (raised before any write; nothing is written):
    ERR write_batch_rows: no keys
    ERR write_batch_rows: ttl must be an integer from 1 to 315360000
    ERR write_batch_rows: row <i>: event time must be epoch ms (at most 15 digits)
    ERR write_batch_rows: row <i>: mode must be 0, 1 or 2, with a view name (no '@', '+')
    ERR write_batch_rows: row <i>: counts must be integers (R <= 5000, S <= 3000)
    ERR write_batch_rows: row <i>: nothing to write
    ERR write_batch_rows: row <i>: fewer arguments than its counts say
    ERR write_batch_rows: row <i>: feature names must be non-empty, without '@'
    ERR write_batch_rows: more arguments than the rows' counts say
    ERR write_batch_rows: EXPIRE is refused (renamed, or not allowed for
        this user); nothing written
        (a row without its key TTL would never expire)
  Error after writes (only when EXPIRE fails although the check above let
  it through): ERR write_batch_rows: EXPIRE failed on <key>: <error>. The
  fields that row set (values and times) are deleted again first;
  the rows before it stay written, each with its TTL.

A batch field carries no field TTL (HSET clears one), so every value and
time a row writes lives as long as the key, and every row that writes
refreshes the key TTL. The same call run twice leaves the same state: the
second run finds every time equal and changes nothing.

Cost: a written row runs three commands from Lua (HMGET of @V and @V+,
HSET, EXPIRE), and each crossing between Lua and Redis costs about as much
again as a small command; everything else is kept to table look-ups. When
none of a call's keys exists yet (a first load), EXISTS (of the first key,
then of all) replaces the rows' HMGETs: nothing stored can be newer.
The checks look each distinct time, view, count and feature name up in a
table of those already checked (a loader's rows repeat them): checking
every row with pattern matches was a third of the script's Redis time.
docs/event-time.md ("What a write costs Redis") has the measurements.

Example, a row with two of the features of view user_profile, dated
2026-12-01T16:00:00Z (the SHA1 is printed by `fs-loader scripts --load`):
  redis-cli EVALSHA <sha> 1 fs:user:u0001 86400 1796140800000 1 user_profile 0 2 country_iso US tx_count_7d 14
  1) (integer) 2
  2) (integer) 0
]]

local function fail(msg)
  return redis.error_reply('ERR write_batch_rows: ' .. msg)
end

local n = #KEYS
if n == 0 then
  return fail('no keys')
end
local ttl = ARGV[1]
if ttl == nil or not string.match(ttl, '^[1-9]%d*$') or #ttl > 9
    or tonumber(ttl) > 315360000 then
  return fail('ttl must be an integer from 1 to 315360000')
end

local find, match, tonumber, unpack = string.find, string.match, tonumber, unpack
local ARGV = ARGV

-- Pass 1: check every row's layout before the first write. The rows of a
-- call mostly repeat their time, view, counts and feature names, so each
-- distinct one is checked once (tables of those already checked) and the
-- checks cost table look-ups per row.
local good_view, good_name, r_of, s_of = {}, {}, {}, {}
local last_t = false
-- The names at ARGV[from], ARGV[from + step] .. ARGV[to] (the retracted
-- names, step 1; the pairs' fields, step 2) are non-empty and hold no '@'.
local function names_ok(from, to, step)
  for j = from, to, step do
    local name = ARGV[j]
    if not good_name[name] then
      if name == '' or find(name, '@', 1, true) then
        return false
      end
      good_name[name] = true
    end
  end
  return true
end
local nargs = #ARGV
local pos = 2
for i = 1, n do
  local t, m, v = ARGV[pos], ARGV[pos + 1], ARGV[pos + 2]
  if t ~= last_t then
    if t == nil or #t > 15 or not (t == '0' or match(t, '^[1-9]%d*$')) then
      return fail('row ' .. i .. ': event time must be epoch ms (at most 15 digits)')
    end
    last_t = t
  end
  if (m ~= '2' and m ~= '1' and m ~= '0') or not good_view[v] then
    if (m ~= '2' and m ~= '1' and m ~= '0') or v == nil or v == '' or find(v, '[@+]') then
      return fail('row ' .. i .. ": mode must be 0, 1 or 2, with a view name (no '@', '+')")
    end
    good_view[v] = {'@' .. v, '@' .. v .. '+'} -- its time and marker fields
  end
  local rs, ss = ARGV[pos + 3], ARGV[pos + 4]
  local r, s = r_of[rs], s_of[ss]
  if not r or not s then
    if rs == nil or ss == nil or not match(rs, '^%d+$') or not match(ss, '^%d+$')
        or #rs > 4 or #ss > 4 or tonumber(rs) > 5000 or tonumber(ss) > 3000 then
      return fail('row ' .. i .. ': counts must be integers (R <= 5000, S <= 3000)')
    end
    r, s = tonumber(rs), tonumber(ss)
    r_of[rs], s_of[ss] = r, s
  end
  if r + s == 0 then
    return fail('row ' .. i .. ': nothing to write')
  end
  local first = pos + 5
  local last = first + r + 2 * s - 1
  if last > nargs then
    return fail('row ' .. i .. ': fewer arguments than its counts say')
  end
  if (r > 0 and not names_ok(first, first + r - 1, 1)) or not names_ok(first + r, last, 2) then
    return fail('row ' .. i .. ": feature names must be non-empty, without '@'")
  end
  pos = last + 1
end
if pos ~= nargs + 1 then
  return fail("more arguments than the rows' counts say")
end
-- Command rights do not depend on the key, and a key the user may HSET it
-- may also EXPIRE (both are writes): one check stands for every row.
local ok, allowed = pcall(redis.acl_check_cmd, 'EXPIRE', KEYS[1], ttl)
if not ok or not allowed then
  return fail('EXPIRE is refused (renamed, or not allowed for this user); nothing written')
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

-- Lua's unpack stops at 8000 values: long lists go in slices (even, so a
-- field and its value stay together).
local SLICE = 4000
local function each_slice(cmd, key, list)
  for a = 1, #list, SLICE do
    redis.call(cmd, key, unpack(list, a, math.min(a + SLICE - 1, #list)))
  end
end

-- What the last `write_row` set, for a failed EXPIRE to take back (and
-- nothing it only read or skipped): a field/value list, or (the one-write
-- path, which builds no list) a time field and the ARGV range of its pairs.
local set_fields, set_time, set_from, set_to = nil, nil, 0, -1

-- One row; returns written, skipped (-1, 0: not a hash). `empty`: the key
-- is known not to exist, so there is nothing stored to read.
local function write_row(key, t, tn, m, vt, vm, first, r, s, empty)
  local last = first + r + 2 * s - 1
  local g, x = nil, nil
  if m ~= '0' then
    if not empty then
      local got = redis.pcall('HMGET', key, vt, vm)
      if got.err then
        return -1, 0
      end
      g, x = got[1], got[2]
      if g then g = stored_time(g) end
      if x then x = stored_time(x) end
    end
    if m == '2' then
      if g and tn <= g then
        return 0, r + s
      end
      if not x or tn > x then
        -- Every feature is older than this row: one write, one time.
        if r > 0 and not empty then
          redis.call('HDEL', key, unpack(ARGV, first, first + r - 1))
        end
        -- The time first, so the row's pairs go straight from ARGV.
        redis.call('HSET', key, vt, t, unpack(ARGV, first + r, last))
        set_time, set_from, set_to = vt, first + r, last
        if x then
          -- Own times all older than t: the view's time now dates them all.
          local own = {vm}
          for j = first, first + r - 1 do
            own[#own + 1] = ARGV[j] .. '@t'
          end
          for j = first + r, last, 2 do
            own[#own + 1] = ARGV[j] .. '@t'
          end
          each_slice('HDEL', key, own)
        end
        return r + s, 0
      end
    end
  end
  -- Per feature: read each one's own time (the view's was read above).
  local names, own = {}, {}
  for j = first, first + r - 1 do
    names[#names + 1] = ARGV[j]
  end
  for j = first + r, last, 2 do
    names[#names + 1] = ARGV[j]
  end
  for k = 1, #names do
    own[k] = names[k] .. '@t'
  end
  local got = {}
  for a = 1, empty and 0 or #own, SLICE do
    local part = redis.pcall('HMGET', key, unpack(own, a, math.min(a + SLICE - 1, #own)))
    if part.err then
      return -1, 0
    end
    for k = 1, #part do
      got[#got + 1] = part[k]
    end
  end
  local dels, sets, written = {}, {}, 0
  for k = 1, #names do
    local ft = stored_time(got[k])
    local eff = g
    if ft and (not eff or ft > eff) then
      eff = ft
    end
    if not eff or tn > eff then
      written = written + 1
      if k <= r then
        dels[#dels + 1] = names[k]
      else
        local j = first + r + 2 * (k - r - 1)
        sets[#sets + 1] = ARGV[j]
        sets[#sets + 1] = ARGV[j + 1]
      end
      if m == '2' then
        -- The view's time dates it from now on.
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
    return 0, #names
  end
  if m == '2' then
    sets[#sets + 1] = vt
    sets[#sets + 1] = t
  elseif m == '1' and (not x or tn > x) then
    sets[#sets + 1] = vm
    sets[#sets + 1] = t
  end
  each_slice('HDEL', key, dels)
  each_slice('HSET', key, sets)
  set_fields = sets
  return written, #names - written
end

-- A first load writes keys that do not exist yet: there is no stored time
-- to read, and one EXISTS for the call stands for every row's HMGET (a
-- Lua-to-Redis crossing each, about a tenth of a row's cost). Only when
-- every key of the call is missing; a key that repeats in the call exists
-- after its first row, so later rows on it read as usual (`touched`). The
-- first key alone is asked first, so that an overwrite, whose first key
-- exists, pays one small EXISTS per call. Without the right to EXISTS (an
-- ACL from before this check) every row reads.
local fresh, touched = false, nil
if n > 1 and n <= SLICE then
  local ok_exists, may_exists = pcall(redis.acl_check_cmd, 'EXISTS', KEYS[1])
  fresh = ok_exists and may_exists == true
    and redis.call('EXISTS', KEYS[1]) == 0
    and redis.call('EXISTS', unpack(KEYS)) == 0
  if fresh then
    touched = {}
  end
end

-- Pass 2: write. A key of the wrong type fails at its first read, before
-- anything is written to it; the rows around it go on.
local reply = {}
local tn
last_t = false
pos = 2
for i = 1, n do
  local key = KEYS[i]
  local t, m, v = ARGV[pos], ARGV[pos + 1], ARGV[pos + 2]
  local r, s = r_of[ARGV[pos + 3]], s_of[ARGV[pos + 4]]
  if t ~= last_t then
    tn, last_t = tonumber(t), t
    time_of[t] = tn -- checked above: the same digits, stored, are the same time
  end
  local f = good_view[v]
  local first = pos + 5
  pos = first + r + 2 * s
  set_fields, set_time, set_from, set_to = nil, nil, 0, -1
  local empty = false
  if fresh and not touched[key] then
    empty, touched[key] = true, true
  end
  local written, skipped
  if empty and m == '2' and r == 0 then
    -- A whole view onto a new key, nothing retracted (a first load's
    -- common row): write_row's one-write path without its calls and
    -- branches, which were 2% of such a row's Redis time.
    redis.call('HSET', key, f[1], t, unpack(ARGV, first, pos - 1))
    set_time, set_from, set_to = f[1], first, pos - 1
    written, skipped = s, 0
  else
    written, skipped = write_row(key, t, tn, m, f[1], f[2], first, r, s, empty)
  end
  if written > 0 then
    -- Every written row leaves at least its time in the key, so EXPIRE
    -- always finds the key.
    local res = redis.pcall('EXPIRE', key, ttl)
    if type(res) == 'table' and res.err then
      -- Take back the fields this row set (values and times) rather than
      -- leave them without a TTL; what it skipped stays as it was.
      local undo = {set_time}
      for j = set_from, set_to, 2 do
        undo[#undo + 1] = ARGV[j]
      end
      for k = 1, #(set_fields or {}), 2 do
        undo[#undo + 1] = set_fields[k]
      end
      for a = 1, #undo, SLICE do
        redis.pcall('HDEL', key, unpack(undo, a, math.min(a + SLICE - 1, #undo)))
      end
      return fail('EXPIRE failed on ' .. key .. ': ' .. res.err)
    end
  end
  reply[2 * i - 1] = written
  reply[2 * i] = skipped
end
return reply
