// The Lua the Redis budget store runs: every change it makes there is one of these scripts, so
// that a check and its write are atomic across the fleet.
#include "budget/redis_scripts.hpp"

namespace frugal::detail::redis {

// The layout, under a prefix P shared by the fleet. One hash, P:spend:
//   c:WINDOW:BUDGET  settled spend            r:WINDOW:BUDGET  held by open reservations
//   o:RID            "AMOUNT\nFIELD\n..."     g:RID            the generation id of RID
//   a:INSTANCE       the last change of that process applied
// P:leases is a zset RID -> expiry (ms); P:swept:RID is "GEN\nAMOUNT\nFIELD..." for a week.
// Every string operation in a script costs about as much as a Redis command, so the client
// sends the hash fields ready-made and sums each batch's amounts itself (exactly, in int64);
// the scripts do arithmetic only to compare against a cap, and leave the adding to HINCRBY.
const char* const lua_prelude = R"lua(
local function nn(v)
  if not v or string.sub(v, 1, 1) == '-' then return '0' end
  return v
end
local function neg(v)
  if v == '0' then return '0' end
  return '-' .. v
end
-- Whether c + r + a <= cap, exactly: a Lua number holds an integer exactly only up to 2^53,
-- so longer amounts are compared in two parts, their last 9 digits and the rest.
local function limbs(v)
  local n = #v
  if n <= 9 then return 0, tonumber(v) end
  return tonumber(string.sub(v, 1, n - 9)), tonumber(string.sub(v, n - 8))
end
local function fits(c, r, a, cap)
  local l = math.max(#c, #r, #a)
  if l < 16 and #cap < 16 then
    return tonumber(c) + tonumber(r) + tonumber(a) <= tonumber(cap)
  end
  -- No leading zeros: the sum is below 3 * 10^l, so a cap of l + 2 digits or more holds it.
  if #cap >= l + 2 then return true end
  local ch, cl = limbs(c)
  local rh, rl = limbs(r)
  local ah, al = limbs(a)
  local xh, xl = limbs(cap)
  local lo = cl + rl + al
  local hi = ch + rh + ah + math.floor(lo / 1000000000)
  lo = lo % 1000000000
  if hi ~= xh then return hi < xh end
  return lo <= xl
end
-- "AMOUNT\nFIELD\n..." -> amount, {fields}
local function entry(e)
  local amount, fields = nil, {}
  for part in string.gmatch(e, '[^\n]+') do
    if amount == nil then amount = part else fields[#fields + 1] = part end
  end
  return amount, fields
end
-- Reservations whose lease ran out (their process died) become spend, never headroom.
local function sweep(P, key, now)
  local expired = redis.call('ZRANGEBYSCORE', P .. ':leases', '-inf', now, 'LIMIT', 0, 100)
  if #expired == 0 then return end
  local q = {}
  for j, rid in ipairs(expired) do
    q[2 * j - 1] = 'o:' .. rid
    q[2 * j] = 'g:' .. rid
  end
  local v = redis.call('HMGET', key, unpack(q))
  for j, rid in ipairs(expired) do
    local e = v[2 * j - 1]
    if e then
      local amount, fields = entry(e)
      for _, f in ipairs(fields) do
        redis.call('HINCRBY', key, 'r:' .. f, neg(amount))
        redis.call('HINCRBY', key, 'c:' .. f, amount)
      end
      redis.call('SET', P .. ':swept:' .. rid, (v[2 * j] or '') .. '\n' .. e, 'EX', 604800)
    end
  end
  redis.call('HDEL', key, unpack(q))
  redis.call('ZREM', P .. ':leases', unpack(expired))
end
)lua";

// ARGV: prefix, now_ms, lease_ms, rid, amount, n, 'o:RID', its entry, then n pairs
// ('c:FIELD', 'r:FIELD'), then the n caps.
const char* const reserve_lua = R"lua(
local P, now, lease = ARGV[1], tonumber(ARGV[2]), tonumber(ARGV[3])
local rid, amount, n = ARGV[4], ARGV[5], tonumber(ARGV[6])
local key = P .. ':spend'
if n > 0 then
  local v = redis.call('HMGET', key, unpack(ARGV, 9, 8 + 2 * n))
  for k = 1, n do
    if not fits(nn(v[2 * k - 1]), nn(v[2 * k]), amount, ARGV[8 + 2 * n + k]) then
      return {0, ARGV[8 + 2 * k]}
    end
  end
  for k = 1, n do redis.call('HINCRBY', key, ARGV[8 + 2 * k], amount) end
end
redis.call('HSET', key, ARGV[7], ARGV[8])
redis.call('ZADD', P .. ':leases', now + lease, rid)
return {1, ''}
)lua";

// A batch of the changes a process owes Redis (settlements, releases, corrected bills,
// generation ids), summed by the client. A batch is resent whole after a lost reply, and its
// last sequence number against the process's high-water mark says whether it landed already.
// ARGV: prefix, instance, now_ms, first_seq, last_seq, nd, nr, ng, then
//   nd pairs (hash field, delta): the batch's sums, every hold it drops already given back;
//   nr 'o:RID', nr 'g:RID', nr RID, nr entries: the reservations it drops;
//   ng pairs ('g:RID', generation id).
const char* const apply_lua = R"lua(
local P, inst, now = ARGV[1], ARGV[2], tonumber(ARGV[3])
local nd, nr, ng = tonumber(ARGV[6]), tonumber(ARGV[7]), tonumber(ARGV[8])
local key = P .. ':spend'
local last = tonumber(redis.call('HGET', key, 'a:' .. inst) or '0')
if tonumber(ARGV[5]) <= last then return 0 end
sweep(P, key, now)
local base = 9 + 2 * nd
if ng > 0 then redis.call('HSET', key, unpack(ARGV, base + 4 * nr, base + 4 * nr + 2 * ng - 1)) end
if nr > 0 then
  local open = redis.call('HMGET', key, unpack(ARGV, base, base + nr - 1))
  for j = 1, nr do
    if not open[j] then
      -- Not held (any more): its lease ran out, so the sweep counted it as spend, which the
      -- settlement's cost (or a release's nothing) replaces; or Redis never granted it.
      local amount, fields = entry(ARGV[base + 3 * nr + j - 1])
      local rid = ARGV[base + 2 * nr + j - 1]
      local swept = redis.call('GET', P .. ':swept:' .. rid)
      if swept then redis.call('DEL', P .. ':swept:' .. rid) end
      for _, f in ipairs(fields) do
        redis.call('HINCRBY', key, 'r:' .. f, amount)
        if swept then redis.call('HINCRBY', key, 'c:' .. f, neg(amount)) end
      end
    end
  end
  redis.call('HDEL', key, unpack(ARGV, base, base + 2 * nr - 1))
  redis.call('ZREM', P .. ':leases', unpack(ARGV, base + 2 * nr, base + 3 * nr - 1))
end
for k = 0, nd - 1 do redis.call('HINCRBY', key, ARGV[9 + 2 * k], ARGV[10 + 2 * k]) end
redis.call('HSET', key, 'a:' .. inst, ARGV[5])
return 1
)lua";

// Sweeps what has expired, then answers nothing: `read_swept` runs it before it looks.
// ARGV: prefix, now_ms.
const char* const sweep_lua = R"lua(
sweep(ARGV[1], ARGV[1] .. ':spend', tonumber(ARGV[2]))
return 1
)lua";

// A swept reservation proven by the provider's bill: its spend replaced by the bill in each
// window, once. One swept less than a lease ago is left alone (2): its process may be slow
// rather than dead, and a settlement of its own after this one would count twice.
// ARGV: prefix, RID, bill, the least age in seconds.
const char* const settle_swept_lua = R"lua(
local P, rid, bill = ARGV[1], ARGV[2], ARGV[3]
local s = redis.call('GET', P .. ':swept:' .. rid)
if not s then return 0 end
if 604800 - redis.call('TTL', P .. ':swept:' .. rid) < tonumber(ARGV[4]) then return 2 end
local nl = string.find(s, '\n', 1, true)
local amount, fields = entry(string.sub(s, nl + 1))
local key = P .. ':spend'
for _, f in ipairs(fields) do
  redis.call('HINCRBY', key, 'c:' .. f, neg(amount))
  redis.call('HINCRBY', key, 'c:' .. f, bill)
end
redis.call('DEL', P .. ':swept:' .. rid)
return 1
)lua";

// The free tier's quota for the fleet: a sliding minute (a sorted set of the requests'
// times), a UTC day's count, and a block learnt from a 429. Returns 0 when a request is taken,
// else the milliseconds to wait. ARGV: prefix, now_ms, per_minute, per_day, a unique member.
const char* const take_free_lua = R"lua(
local P, now = ARGV[1], tonumber(ARGV[2])
local per_min, per_day = tonumber(ARGV[3]), tonumber(ARGV[4])
local block = tonumber(redis.call('GET', P .. ':free:block') or '0')
if now < block then return block - now end
local day = math.floor(now / 86400000)
local dk = P .. ':free:day:' .. day
if tonumber(redis.call('GET', dk) or '0') >= per_day then return (day + 1) * 86400000 - now end
local mk = P .. ':free:minute'
redis.call('ZREMRANGEBYSCORE', mk, '-inf', now - 60000)
if redis.call('ZCARD', mk) >= per_min then
  local first = redis.call('ZRANGE', mk, 0, 0, 'WITHSCORES')
  return math.max(tonumber(first[2]) + 60000 - now, 1)
end
redis.call('ZADD', mk, now, ARGV[5])
redis.call('PEXPIRE', mk, 120000)
redis.call('INCR', dk)
redis.call('PEXPIRE', dk, 172800000)
return 0
)lua";

// A 429's reset, for the fleet: the block only ever moves later. ARGV: prefix, now_ms, until.
const char* const block_free_lua = R"lua(
local P, now, untl = ARGV[1], tonumber(ARGV[2]), tonumber(ARGV[3])
local block = tonumber(redis.call('GET', P .. ':free:block') or '0')
if untl > block and untl > now then
  redis.call('SET', P .. ':free:block', ARGV[3], 'PX', untl - now)
end
return 1
)lua";

// A rate for the fleet (a generic cell rate: the time the next request is due, `tat`):
// `per_minute` requests a minute, as many at once, refilled evenly. The time is Redis' own, so
// the fleet's clocks need not agree (a script that reads it and then writes must replicate its
// effects: the default since Redis 5, asked for before). In whole microseconds, which a double
// holds exactly: a step that is not a whole number would round, and a burst of `per_minute`
// would lose its last. Returns 0 when a request is taken, else the milliseconds to wait.
// ARGV: prefix, the limiter's name, per_minute.
const char* const take_rated_lua = R"lua(
if redis.replicate_commands then redis.replicate_commands() end
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000000 + tonumber(t[2])
local n = tonumber(ARGV[3])
local step = math.floor(60000000 / n)
local k = ARGV[1] .. ':rate:' .. ARGV[2]
local tat = tonumber(redis.call('GET', k) or '0')
if tat < now then tat = now end
local ahead = tat + step - now
if ahead > step * n then return math.max(math.ceil((ahead - step * n) / 1000), 1) end
redis.call('SET', k, string.format('%.0f', tat + step), 'PX', math.ceil(ahead / 1000) + 1000)
return 0
)lua";

std::vector<std::string> load_command(const char* script)
{
    return {"SCRIPT", "LOAD", std::string(lua_prelude) + script};
}

} // namespace frugal::detail::redis
