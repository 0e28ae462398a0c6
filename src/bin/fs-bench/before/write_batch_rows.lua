#!lua
-- fs-bench's baseline, never loaded by the store: lua/write_batch_rows.lua as it was
-- before event time (git d56b1eb), kept verbatim below this comment so the
-- event_time_* rows can send it the same rows, calls and pipelines as the
-- store's script and show what comparing event times costs.
--[[
write_batch_rows: batch rows for one or more entities; each row's fields are
written and its key TTL set atomically (the whole call is one script).

  KEYS[1] .. KEYS[n]  entity hash keys, one per row, e.g. fs:user:u0001
              (on a cluster they must share a hash slot; the store groups
              rows so that they do)
  ARGV[1]     key TTL in seconds for every row: integer 1..315360000
  then, for each row i = 1..n, in the order of KEYS:
    R         how many feature names to retract: integer 0..5000
    S         how many features to set: integer 0..3000 (R + S >= 1)
    R names   features to delete (HDEL): a null in the batch job's output
    S pairs   field, value (HSET)

  Reply: array of n integers, one per row: the number of features set, or
         -1 when that key holds something other than a hash (nothing is
         written to it; the other rows are)
  Errors (raised before any write; nothing is written):
    ERR write_batch_rows: no keys
    ERR write_batch_rows: ttl must be an integer from 1 to 315360000
    ERR write_batch_rows: row <i>: counts must be integers (R <= 5000, S <= 3000)
    ERR write_batch_rows: row <i>: nothing to write
    ERR write_batch_rows: row <i>: fewer arguments than its counts say
    ERR write_batch_rows: row <i>: empty feature name
    ERR write_batch_rows: more arguments than the rows' counts say
    ERR write_batch_rows: EXPIRE is refused (renamed, or not allowed for
        this user); nothing written
        (a row without its key TTL would never expire)
  Error after writes (only when EXPIRE fails although the check above let
  it through): ERR write_batch_rows: EXPIRE failed on <key>: <error>. The
  fields that row set are deleted again first, so no key is left without
  a TTL by this call; the rows before it stay written, each with its TTL.

A batch field carries no field TTL: HSET clears a field TTL it had, so a
feature moved from the streaming side to the batch side lives as long as the
key. Every row refreshes its key TTL: the batch cycle is what keeps an entity
alive. The same call run twice leaves the same state, so a retry is safe.

Order: whether EXPIRE may run is checked once
(`redis.acl_check_cmd`: a renamed command is unknown, an ACL refusal is
false) before the first write, because EXPIRE on a missing key does nothing
and so cannot itself come before the HSET that creates the key. It costs no
keyspace access.

Example, one row (the SHA1 is printed by `fs-loader scripts --load`):
  redis-cli EVALSHA <sha> 1 fs:user:u0001 86400 0 2 country_iso US tx_count_7d 14
  1) (integer) 2
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

-- Pass 1: check every row's layout before the first write.
local nargs = #ARGV
local starts, retracts, sets = {}, {}, {}
local pos = 2
for i = 1, n do
  local r, s = ARGV[pos], ARGV[pos + 1]
  if r == nil or s == nil or not string.match(r, '^%d+$') or not string.match(s, '^%d+$')
      or #r > 4 or #s > 4 or tonumber(r) > 5000 or tonumber(s) > 3000 then
    return fail('row ' .. i .. ': counts must be integers (R <= 5000, S <= 3000)')
  end
  r, s = tonumber(r), tonumber(s)
  if r + s == 0 then
    return fail('row ' .. i .. ': nothing to write')
  end
  local first = pos + 2
  local last = first + r + 2 * s - 1
  if last > nargs then
    return fail('row ' .. i .. ': fewer arguments than its counts say')
  end
  for j = first, first + r - 1 do
    if ARGV[j] == '' then
      return fail('row ' .. i .. ': empty feature name')
    end
  end
  for j = first + r, last, 2 do
    if ARGV[j] == '' then
      return fail('row ' .. i .. ': empty feature name')
    end
  end
  starts[i], retracts[i], sets[i] = first, r, s
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

-- Pass 2: write. pcall keeps a key of the wrong type from failing the rows
-- around it; HDEL and HSET refuse such a key before changing anything.
local reply = {}
for i = 1, n do
  local key, first, r, s = KEYS[i], starts[i], retracts[i], sets[i]
  local ok = true
  if r > 0 then
    local res = redis.pcall('HDEL', key, unpack(ARGV, first, first + r - 1))
    ok = type(res) ~= 'table' or res.err == nil
  end
  if ok and s > 0 then
    local res = redis.pcall('HSET', key, unpack(ARGV, first + r, first + r + 2 * s - 1))
    ok = type(res) ~= 'table' or res.err == nil
  end
  if ok then
    -- A retraction of every field leaves no key; EXPIRE is then a no-op.
    local res = redis.pcall('EXPIRE', key, ttl)
    if type(res) == 'table' and res.err then
      -- Take back what this row set rather than leave it without a TTL.
      if s > 0 then
        local names = {}
        for j = first + r, first + r + 2 * s - 1, 2 do
          names[#names + 1] = ARGV[j]
        end
        redis.pcall('HDEL', key, unpack(names))
      end
      return fail('EXPIRE failed on ' .. key .. ': ' .. res.err)
    end
    reply[i] = s
  else
    reply[i] = -1
  end
end
return reply
