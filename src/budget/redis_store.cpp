// The budget store a fleet shares: spend and open reservations in Redis, every change one Lua
// script so a check and its write are atomic across processes; the ledger stays local.
#include <frugal/budget_store.hpp>

#include <frugal/error.hpp>

#include <boost/asio/connect.hpp>
#include <boost/asio/executor_work_guard.hpp>
#include <boost/asio/io_context.hpp>
#include <boost/asio/ip/tcp.hpp>
#include <boost/asio/post.hpp>
#include <boost/asio/steady_timer.hpp>
#include <boost/asio/write.hpp>

#include <hiredis/hiredis.h>

#include <algorithm>
#include <array>
#include <atomic>
#include <cerrno>
#include <charconv>
#include <chrono>
#include <condition_variable>
#include <cstdio>
#include <cstring>
#include <deque>
#include <functional>
#include <mutex>
#include <optional>
#include <random>
#include <string>
#include <thread>
#include <unordered_map>
#include <vector>

#include <poll.h>
#include <sys/socket.h>

namespace frugal {

namespace {

using boost::system::error_code;
namespace asio = boost::asio;

// The layout, under a prefix P shared by the fleet. One hash, P:spend:
//   c:WINDOW:BUDGET  settled spend            r:WINDOW:BUDGET  held by open reservations
//   o:RID            "AMOUNT\nFIELD\n..."     g:RID            the generation id of RID
//   a:INSTANCE       the last change of that process applied
// P:leases is a zset RID -> expiry (ms); P:swept:RID is "GEN\nAMOUNT\nFIELD..." for a week.
// Every string operation in a script costs about as much as a Redis command, so the client
// sends the hash fields ready-made and sums each batch's amounts itself (exactly, in int64);
// the scripts do arithmetic only to compare against a cap, and leave the adding to HINCRBY.
constexpr const char* lua_prelude = R"lua(
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
  if #c < 16 and #r < 16 and #a < 16 and #cap < 16 then
    return tonumber(c) + tonumber(r) + tonumber(a) <= tonumber(cap)
  end
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
constexpr const char* reserve_lua = R"lua(
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
constexpr const char* apply_lua = R"lua(
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
constexpr const char* sweep_lua = R"lua(
sweep(ARGV[1], ARGV[1] .. ':spend', tonumber(ARGV[2]))
return 1
)lua";

// A swept reservation proven by the provider's bill: its spend replaced by the bill in each
// window, once. One swept less than a lease ago is left alone (2): its process may be slow
// rather than dead, and a settlement of its own after this one would count twice.
// ARGV: prefix, RID, bill, the least age in seconds.
constexpr const char* settle_swept_lua = R"lua(
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
constexpr const char* take_free_lua = R"lua(
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
constexpr const char* block_free_lua = R"lua(
local P, now, untl = ARGV[1], tonumber(ARGV[2]), tonumber(ARGV[3])
local block = tonumber(redis.call('GET', P .. ':free:block') or '0')
if untl > block and untl > now then
  redis.call('SET', P .. ':free:block', ARGV[3], 'PX', untl - now)
end
return 1
)lua";

std::int64_t unix_ms()
{
    return std::chrono::duration_cast<std::chrono::milliseconds>(
               std::chrono::system_clock::now().time_since_epoch())
        .count();
}

std::string field_of(std::int64_t window, std::string_view budget)
{
    std::string f = std::to_string(window);
    f += ':';
    f += budget;
    return f;
}

struct reply_deleter {
    void operator()(redisReply* r) const { freeReplyObject(r); }
};
using reply_ptr = std::unique_ptr<redisReply, reply_deleter>;

struct reader_deleter {
    void operator()(redisReader* r) const { redisReaderFree(r); }
};

bool parse_url(const std::string& url, std::string& host, int& port, int& db)
{
    constexpr std::string_view scheme = "redis://";
    if (url.rfind(scheme, 0) != 0)
        return false;
    std::string rest = url.substr(scheme.size());
    db = 0;
    if (const auto slash = rest.find('/'); slash != std::string::npos) {
        const auto d = rest.substr(slash + 1);
        rest.resize(slash);
        if (!d.empty()) {
            if (d.find_first_not_of("0123456789") != std::string::npos || d.size() > 4)
                return false;
            db = std::stoi(d);
        }
    }
    const auto colon = rest.rfind(':');
    host = colon == std::string::npos ? rest : rest.substr(0, colon);
    port = 6379;
    if (colon != std::string::npos) {
        const auto p = rest.substr(colon + 1);
        if (p.empty() || p.size() > 5 || p.find_first_not_of("0123456789") != std::string::npos)
            return false;
        port = std::stoi(p);
    }
    return !host.empty() && port > 0 && port < 65536;
}

// A process's name in Redis: reservation ids are INSTANCE.ID, and the high-water mark of the
// changes it applied is kept under it. Random, so that no registration round trip is needed.
std::string new_instance()
{
    std::random_device rd;
    const std::uint64_t v =
        (static_cast<std::uint64_t>(rd()) << 32) ^ rd() ^ static_cast<std::uint64_t>(unix_ms());
    char buf[17];
    std::snprintf(buf, sizeof buf, "%016llx", static_cast<unsigned long long>(v));
    return buf;
}

// Appends `args` to `out` as one RESP command (hiredis formats it).
void append_command(std::string& out, const std::vector<std::string>& args)
{
    std::vector<const char*> argv;
    std::vector<std::size_t> lens;
    argv.reserve(args.size());
    lens.reserve(args.size());
    for (const auto& a : args) {
        argv.push_back(a.data());
        lens.push_back(a.size());
    }
    char* cmd = nullptr;
    const int n =
        redisFormatCommandArgv(&cmd, static_cast<int>(argv.size()), argv.data(), lens.data());
    if (n > 0)
        out.append(cmd, static_cast<std::size_t>(n));
    redisFreeCommand(cmd);
}

// The changes queued while Redis is unreachable stop growing here: past it, reservations are
// refused even when failing open, so memory stays bounded however long the outage.
constexpr std::size_t max_owed = 1u << 20;
// Changes per script call: enough to amortise the call, small enough to keep Redis responsive.
constexpr std::size_t max_batch = 256;
// How long a change that only lowers the spend waits for others to share its script call:
// spend it gives back is seen by the fleet this much later, and reservations are not queued
// behind a batch on their way.
constexpr std::chrono::microseconds flush_interval{1000};
constexpr std::chrono::seconds sweep_interval{1};

class redis_store final : public budget_store {
public:
    redis_store(redis_store_params p, std::shared_ptr<budget_store> ledger)
        : params_(std::move(p)), ledger_(std::move(ledger)), instance_(new_instance()),
          socket_(ioc_), resolver_(ioc_), connect_timer_(ioc_), retry_timer_(ioc_), watchdog_(ioc_),
          flush_timer_(ioc_), work_(ioc_.get_executor())
    {
    }

    ~redis_store() override
    {
        // What this process still owes Redis gets its chance to land; what cannot stays
        // covered by its reservation until the lease turns it into spend.
        drain(
            std::chrono::steady_clock::now() +
            std::max(params_.timeout * 2, std::chrono::milliseconds(100)));
        work_.reset();
        ioc_.stop();
        if (thread_.joinable())
            thread_.join();
    }

    // Only a bad URL fails: Redis may be down when a process starts, and then only paid
    // requests wait for it (each is refused until it is back; free calls go on).
    error_code open(std::string& detail)
    {
        if (!parse_url(params_.url, host_, port_, db_)) {
            detail = "expected redis://HOST:PORT/DB, not " + params_.url;
            return error::bad_budget_config;
        }
        thread_ = std::thread([this] { ioc_.run(); });
        return {};
    }

    error_code load(budget_store_state& out) override
    {
        if (auto ec = ledger_->load(out))
            return ec;
        // The fleet's committed spend replaces the local file's; open reservations belong to
        // the processes that made them (a dead one's expire into spend).
        out.committed.clear();
        out.open.clear();
        out.next_id = 1; // ids are this process's; Redis knows them as INSTANCE.ID
        bool malformed = false;
        auto w = std::make_shared<waiter>();
        w->on_reply = [&out, &malformed](const redisReply* r) {
            if (r->type != REDIS_REPLY_ARRAY)
                return;
            for (std::size_t i = 0; i + 1 < r->elements; i += 2) {
                std::string_view field(r->element[i]->str, r->element[i]->len);
                const std::string_view value(r->element[i + 1]->str, r->element[i + 1]->len);
                if (field.substr(0, 2) != "c:")
                    continue; // holds, open reservations, marks
                field.remove_prefix(2);
                const auto colon = field.find(':');
                budget_charge c;
                std::int64_t units = 0;
                if (colon == std::string_view::npos ||
                    std::from_chars(field.data(), field.data() + colon, c.window).ec !=
                        std::errc() ||
                    std::from_chars(value.data(), value.data() + value.size(), units).ec !=
                        std::errc()) {
                    malformed = true; // not this store's data
                    return;
                }
                c.budget = std::string(field.substr(colon + 1));
                c.amount = money::from_units(units);
                out.committed.push_back(std::move(c));
            }
        };
        w->args = {"HGETALL", params_.prefix + ":spend"};
        (void)ask(w, true); // unreachable: every reservation asks Redis anyway
        return malformed ? error_code(error::budget_store_failed) : error_code();
    }

    error_code reserve(const reservation_view& v) override
    {
        const money amount = v.charges.empty() ? money() : v.charges.front().amount;
        auto w = std::make_shared<waiter>();
        w->script = &reserve_sha_;
        const std::string id = rid(v.id);
        const std::string units = std::to_string(amount.units());
        held h;
        h.amount = amount.units();
        h.entry = units;
        for (const auto& c : v.charges) {
            h.fields.push_back(field_of(c.window, c.budget));
            h.entry += '\n';
            h.entry += h.fields.back();
        }
        w->args = {
            "EVALSHA",
            "",
            "0",
            params_.prefix,
            std::to_string(unix_ms()),
            std::to_string(params_.lease.count()),
            id,
            units,
            std::to_string(v.charges.size()),
            "o:" + id,
            h.entry};
        for (const auto& f : h.fields) {
            w->args.push_back("c:" + f);
            w->args.push_back("r:" + f);
        }
        for (const auto& c : v.charges)
            w->args.push_back(std::to_string(c.cap.units()));
        w->release_id = v.id;
        w->on_reply = [wp = w.get()](const redisReply* r) { wp->verdict = verdict_of(r); };
        {
            const std::lock_guard lock(mu_);
            held_[v.id] = std::move(h);
        }
        if (auto direct = reserve_direct(v.id, w->args))
            return *direct;
        const bool answered = ask(w, false);
        if (!answered) {
            // Never sent: Redis holds nothing. Sent: finish_waiter settles what it holds.
            const std::lock_guard lock(mu_);
            if (!w->sent)
                held_.erase(v.id);
        }
        if (!answered)
            return unreachable();
        return verdict_error(w->verdict);
    }

    error_code note_generation(std::uint64_t id, const std::string& generation_id) override
    {
        change c;
        c.kind = 'g';
        c.id = id;
        c.gen = generation_id;
        owe(std::move(c));
        return {};
    }

    error_code settle(
        std::uint64_t reservation_id,
        std::span<const budget_charge_view> charges,
        attempt_record& record) override
    {
        // The reservation holds its whole amount in Redis (or, once its lease ran out, counts
        // as spent) until this lands, so the fleet's cap stays covered meanwhile: the change is
        // queued, not waited for, and sent with the others in one script call.
        if (reservation_id != 0 || !charges.empty()) {
            change c;
            c.kind = 's';
            c.id = reservation_id;
            for (const auto& ch : charges)
                c.moves.emplace_back(field_of(ch.window, ch.budget), record.cost.units());
            owe(std::move(c));
        }
        return ledger_->settle(0, charges, record);
    }

    error_code release(std::uint64_t id) override
    {
        change c;
        c.kind = 'r';
        c.id = id;
        owe(std::move(c));
        return {};
    }

    error_code correct(std::uint64_t record_id, money proven, correction& out) override
    {
        if (auto ec = ledger_->correct(record_id, proven, out))
            return ec;
        if (out.moved.empty())
            return {};
        change c;
        c.kind = 'm';
        for (const auto& m : out.moved)
            c.moves.emplace_back(field_of(m.window, m.budget), m.amount.units());
        owe(std::move(c));
        return {};
    }

    error_code sync(std::chrono::milliseconds timeout) override
    {
        if (auto ec = ledger_->sync(timeout))
            return ec;
        return drain(std::chrono::steady_clock::now() + timeout)
                   ? error_code()
                   : error_code(error::budget_store_failed);
    }

    error_code read_ledger(std::int64_t since_ms, std::vector<attempt_record>& out) override
    {
        return ledger_->read_ledger(since_ms, out);
    }

    error_code take_free_request(
        std::int64_t now_ms,
        std::uint32_t per_minute,
        std::uint32_t per_day,
        std::int64_t& wait_ms) override
    {
        wait_ms = 0;
        auto w = std::make_shared<waiter>();
        w->args = {
            "EVAL",
            take_free_lua,
            "0",
            params_.prefix,
            std::to_string(now_ms),
            std::to_string(per_minute),
            std::to_string(per_day),
            instance_ + "." + std::to_string(free_seq_.fetch_add(1))};
        std::int64_t wait = -1;
        w->on_reply = [&wait](const redisReply* r) {
            if (r->type == REDIS_REPLY_INTEGER)
                wait = r->integer;
        };
        // Redis unreachable: the quota cannot be shared; the caller counts on its own.
        if (!ask(w, false) || wait < 0)
            return error::not_found;
        wait_ms = wait;
        return {};
    }

    error_code block_free_until(std::int64_t until_ms) override
    {
        auto w = std::make_shared<waiter>();
        w->args = {
            "EVAL",         block_free_lua, "0", params_.prefix, std::to_string(unix_ms()),
            std::to_string(until_ms)};
        return ask(w, false) ? error_code() : error_code(error::not_found);
    }

    error_code read_swept(std::vector<swept_reservation>& out) override
    {
        out.clear();
        // What expired since the last sweep is swept first (a dead fleet sweeps nothing).
        auto sweep = std::make_shared<waiter>();
        sweep->args = {
            "EVAL", std::string(lua_prelude) + sweep_lua, "0", params_.prefix,
            std::to_string(unix_ms())};
        if (!ask(sweep, true))
            return error::budget_store_failed; // unreachable
        std::vector<std::string> keys;
        std::string cursor = "0";
        do {
            auto scan = std::make_shared<waiter>();
            scan->args = {"SCAN", cursor, "MATCH", params_.prefix + ":swept:*", "COUNT", "1000"};
            scan->on_reply = [&](const redisReply* r) {
                if (r->type != REDIS_REPLY_ARRAY || r->elements != 2)
                    return;
                cursor.assign(r->element[0]->str, r->element[0]->len);
                const auto* list = r->element[1];
                for (std::size_t i = 0; i < list->elements; ++i)
                    keys.emplace_back(list->element[i]->str, list->element[i]->len);
            };
            const std::string before = cursor;
            if (!ask(scan, true))
                return error::budget_store_failed; // unreachable
            if (cursor == before && cursor != "0")
                return error::budget_store_failed; // a reply that does not move on
        } while (cursor != "0");
        const std::string prefix = params_.prefix + ":swept:";
        for (const auto& k : keys) {
            std::string value;
            bool found = false;
            auto get = std::make_shared<waiter>();
            get->args = {"GET", k};
            get->on_reply = [&](const redisReply* r) {
                if (r->type == REDIS_REPLY_STRING) {
                    value.assign(r->str, r->len);
                    found = true;
                }
            };
            if (!ask(get, true))
                return error::budget_store_failed; // unreachable
            if (!found)
                continue; // settled meanwhile
            // "GEN\nAMOUNT\nWINDOW:BUDGET..."
            swept_reservation sw;
            sw.key = k.substr(prefix.size());
            std::vector<std::string_view> parts;
            std::string_view rest = value;
            while (true) {
                const auto nl = rest.find('\n');
                parts.push_back(rest.substr(0, nl));
                if (nl == std::string_view::npos)
                    break;
                rest.remove_prefix(nl + 1);
            }
            std::int64_t amount = 0;
            if (parts.size() < 2 ||
                std::from_chars(parts[1].data(), parts[1].data() + parts[1].size(), amount).ec !=
                    std::errc())
                continue; // not this store's data: left for what wrote it
            sw.generation_id = std::string(parts[0]);
            for (std::size_t i = 2; i < parts.size(); ++i) {
                const auto colon = parts[i].find(':');
                budget_charge c;
                if (colon == std::string_view::npos ||
                    std::from_chars(parts[i].data(), parts[i].data() + colon, c.window).ec !=
                        std::errc()) {
                    sw.charges.clear();
                    break;
                }
                c.budget = std::string(parts[i].substr(colon + 1));
                c.amount = money::from_units(amount);
                sw.charges.push_back(std::move(c));
            }
            if (!sw.charges.empty())
                out.push_back(std::move(sw));
        }
        return {};
    }

    error_code settle_swept(const swept_reservation& sw, attempt_record& record) override
    {
        if (record.cost < money())
            return error::budget_store_failed;
        auto w = std::make_shared<waiter>();
        w->args = {
            "EVAL",
            std::string(lua_prelude) + settle_swept_lua,
            "0",
            params_.prefix,
            sw.key,
            std::to_string(record.cost.units()),
            std::to_string((params_.lease.count() + 999) / 1000)};
        int settled = -1;
        w->on_reply = [&settled](const redisReply* r) {
            if (r->type == REDIS_REPLY_INTEGER)
                settled = static_cast<int>(r->integer);
        };
        if (!ask(w, true))
            return error::budget_store_failed; // unreachable
        if (settled == 0 || settled == 2)
            return error::not_found; // settled already, or too young to be sure its process died
        if (settled != 1)
            return error::budget_store_failed;
        std::vector<budget_charge_view> views;
        for (const auto& c : sw.charges)
            views.push_back({c.budget, c.window, record.cost, money(), 0});
        return ledger_->settle(0, views, record);
    }
    error_code put_note(std::string_view key, std::string_view value) override
    {
        return ledger_->put_note(key, value);
    }
    error_code put_answer(std::string_view id, std::string_view answer) override
    {
        return ledger_->put_answer(id, answer);
    }
    error_code read_answers(std::vector<std::pair<std::string, std::string>>& out) override
    {
        return ledger_->read_answers(out);
    }
    error_code read_notes(std::vector<std::pair<std::string, std::string>>& out) override
    {
        return ledger_->read_notes(out);
    }

private:
    // A command a caller waits for (a reservation, a read).
    struct waiter {
        std::vector<std::string> args;
        const std::string* script = nullptr; // EVALSHA of this script: args[1] is its sha
        std::function<void(const redisReply*)> on_reply; // on Redis's thread, under mu_
        std::uint64_t release_id = 0; // a reservation: what to drop if it may be applied unseen
        int verdict = -1;
        bool done = false, answered = false, sent = false, abandoned = false;
        std::condition_variable cv;
    };
    // A change this process owes Redis. Changes are summed into batches; a batch is kept, as
    // the command it was written as, until Redis acknowledges it, and resent whole after a
    // lost connection (its sequence number makes the resend count once).
    struct change {
        char kind = 's';      // settle, release, move (a corrected bill), generation id
        std::uint64_t id = 0; // the reservation: a settlement's (0: none), a release's
        std::vector<std::pair<std::string, std::int64_t>> moves; // committed spend per field
        std::string gen;
        bool raises = false; // may raise the fleet's spend (see owe_locked)
    };
    // What a reservation holds in Redis, as this process made it.
    struct held {
        std::int64_t amount = 0;
        std::vector<std::string> fields; // WINDOW:BUDGET
        std::string entry;               // AMOUNT\nFIELD...
    };
    struct queued {
        change c;
        std::shared_ptr<waiter> w; // set: a waited command
        std::string batch;         // set: a batch to resend as it was written
        std::size_t count = 0;     // the changes in `batch`
        std::size_t raising = 0;   // of those, the ones that may raise the spend
    };
    struct in_flight {
        enum { handshake, changes, waited } kind = changes;
        std::string batch; // the command, for a resend
        std::size_t count = 0;
        std::shared_ptr<waiter> w;
        std::string* sha = nullptr; // a script being loaded: where its sha goes
        std::size_t raising = 0;    // changes in `batch` that may raise the spend
    };
    enum class link { down, connecting, handshake, ready };

    std::string rid(std::uint64_t id) const { return instance_ + "." + std::to_string(id); }
    std::atomic<std::uint64_t> free_seq_{0}; // members of the free tier's minute, unique

    // What a new connection sends first (SELECT only for a database other than 0).
    std::vector<std::string> select_command() const { return {"SELECT", std::to_string(db_)}; }
    static std::vector<std::string> load_command(const char* script)
    {
        return {"SCRIPT", "LOAD", std::string(lua_prelude) + script};
    }

    // A reservation Redis cannot check: refused, or under fail_open granted on the local books
    // (its settlement then lands in Redis with the other changes; with no reservation there,
    // it is a plain charge). Past `max_owed` queued changes it is refused either way.
    error_code unreachable()
    {
        const std::lock_guard lock(mu_);
        return params_.fail_open && owed_ < max_owed ? error_code()
                                                     : error_code(error::budget_store_failed);
    }

    // Reservations go on a connection of their own, written and read by the reserving thread
    // itself: an escalation then waits one round trip, with no hop through the pipe's thread
    // and no batch ahead of it. Nothing when that cannot be done now (the pipe is not ready, a
    // change that may raise the spend has not landed yet, another thread holds the link, or
    // it cannot be opened): the pipe carries the reservation instead, in order.
    std::optional<error_code> reserve_direct(std::uint64_t id, std::vector<std::string>& args)
    {
        asio::ip::tcp::endpoint ep;
        std::uint64_t pipe = 0;
        {
            const std::lock_guard lock(mu_);
            if (link_ != link::ready || unacked_raising_ > 0)
                return std::nullopt;
            ep = endpoint_;
            pipe = conn_id_;
        }
        const std::unique_lock direct(direct_mu_, std::try_to_lock);
        if (!direct.owns_lock())
            return std::nullopt;
        // The pipe reconnected since this link was opened (Redis restarted, say): so does it,
        // rather than find out by losing a reservation on a dead socket.
        if (direct_pipe_ != pipe)
            direct_close();
        const auto now = std::chrono::steady_clock::now();
        if (!direct_reader_ && (now < direct_retry_ || !direct_open(ep))) {
            direct_retry_ = std::max(direct_retry_, now + std::chrono::seconds(1));
            return std::nullopt;
        }
        direct_pipe_ = pipe;
        args[1] = direct_sha_;
        bool sent = false;
        const reply_ptr r = direct_call(args, sent);
        const bool forgot = r && r->type == REDIS_REPLY_ERROR &&
                            std::string_view(r->str, r->len).rfind("NOSCRIPT", 0) == 0;
        if (!r || forgot)
            direct_close();
        if ((!r && !sent) || forgot)
            return std::nullopt; // nothing was applied: the pipe tries
        {
            // Sent: unanswered, the connection it went on is closed, so no late reply is
            // mistaken for another's.
            const std::lock_guard lock(mu_);
            reservation_outcome_locked(id, r.get(), false);
        }
        if (!r || r->type == REDIS_REPLY_ERROR)
            return unreachable();
        return verdict_error(verdict_of(r.get()));
    }

    // 1: the reservation script granted it; 0: it refused it (no headroom); -1: anything else.
    static int verdict_of(const redisReply* r)
    {
        if (r == nullptr || r->type != REDIS_REPLY_ARRAY || r->elements != 2 ||
            r->element[0]->type != REDIS_REPLY_INTEGER)
            return -1;
        return r->element[0]->integer == 1 ? 1 : 0;
    }

    static error_code verdict_error(int verdict)
    {
        if (verdict < 0)
            return error::budget_store_failed;
        if (verdict == 0)
            return error::budget_exhausted; // another process took the headroom
        return {};
    }

    // What a sent reservation command leaves behind, `r` its reply (null: none came). Not
    // granted (a refusal, an error): its hold is forgotten. Perhaps held in Redis unseen (no
    // reply, or a grant its caller no longer waits for, `caller_gone`): a release queued after
    // it drops it there. Under mu_.
    void reservation_outcome_locked(std::uint64_t id, const redisReply* r, bool caller_gone)
    {
        if (r != nullptr && verdict_of(r) != 1) {
            held_.erase(id);
        } else if (r == nullptr || caller_gone) {
            change c;
            c.kind = 'r';
            c.id = id;
            owe_locked(std::move(c));
        }
    }

    // Connects the reservations' link to `ep` within the timeout, selects the database and
    // loads the reservation script. Under direct_mu_.
    bool direct_open(const asio::ip::tcp::endpoint& ep)
    {
        direct_close();
        error_code ec;
        direct_socket_.open(ep.protocol(), ec);
        if (ec)
            return false;
        direct_socket_.set_option(asio::ip::tcp::no_delay(true), ec);
        direct_socket_.non_blocking(true, ec);
        const int fd = direct_socket_.native_handle();
        const auto deadline = std::chrono::steady_clock::now() + params_.timeout;
        if (::connect(fd, ep.data(), static_cast<socklen_t>(ep.size())) != 0) {
            int err = 0;
            socklen_t len = sizeof err;
            if (errno != EINPROGRESS || !wait_fd(fd, POLLOUT, deadline) ||
                ::getsockopt(fd, SOL_SOCKET, SO_ERROR, &err, &len) != 0 || err != 0) {
                direct_close();
                return false;
            }
        }
        direct_reader_.reset(redisReaderCreate());
        bool sent = false;
        if (db_ != 0) {
            const reply_ptr r = direct_call(select_command(), sent);
            if (!r || r->type == REDIS_REPLY_ERROR) {
                direct_close();
                return false;
            }
        }
        const reply_ptr r = direct_call(load_command(reserve_lua), sent);
        if (!r || r->type != REDIS_REPLY_STRING || r->len != 40) {
            direct_close();
            return false;
        }
        direct_sha_.assign(r->str, r->len);
        return true;
    }

    void direct_close()
    {
        error_code ignored;
        direct_socket_.close(ignored);
        direct_reader_.reset();
    }

    // One command on the reservations' link and its reply, within the timeout; null on a
    // failure (`sent`: the whole command had been written).
    reply_ptr direct_call(const std::vector<std::string>& args, bool& sent)
    {
        const auto deadline = std::chrono::steady_clock::now() + params_.timeout;
        const int fd = direct_socket_.native_handle();
        std::string cmd;
        append_command(cmd, args);
        sent = false;
        for (std::size_t off = 0; off < cmd.size();) {
            const auto n =
                ::send(fd, cmd.data() + off, cmd.size() - off, MSG_DONTWAIT | MSG_NOSIGNAL);
            if (n > 0)
                off += static_cast<std::size_t>(n);
            else if (
                n == 0 || (errno != EAGAIN && errno != EINTR) || !wait_fd(fd, POLLOUT, deadline))
                return nullptr;
        }
        sent = true;
        for (;;) {
            void* raw = nullptr;
            if (redisReaderGetReply(direct_reader_.get(), &raw) != REDIS_OK)
                return nullptr;
            if (raw != nullptr)
                return reply_ptr(static_cast<redisReply*>(raw));
            if (!wait_fd(fd, POLLIN, deadline))
                return nullptr;
            const auto n = ::recv(fd, rbuf_direct_.data(), rbuf_direct_.size(), MSG_DONTWAIT);
            if (n > 0) {
                if (redisReaderFeed(
                        direct_reader_.get(), rbuf_direct_.data(), static_cast<std::size_t>(n)) !=
                    REDIS_OK)
                    return nullptr;
            } else if (n == 0 || (errno != EAGAIN && errno != EINTR)) {
                return nullptr;
            }
        }
    }

    // Waits until `fd` is ready for `events` or `deadline` passes.
    static bool wait_fd(int fd, short events, std::chrono::steady_clock::time_point deadline)
    {
        for (;;) {
            const auto left = std::chrono::ceil<std::chrono::milliseconds>(
                deadline - std::chrono::steady_clock::now());
            if (left.count() <= 0)
                return false;
            pollfd p{fd, events, 0};
            const int n = ::poll(&p, 1, static_cast<int>(left.count()));
            if (n > 0)
                return (p.revents & (events | POLLHUP | POLLERR)) != 0;
            if (n < 0 && errno != EINTR)
                return false;
        }
    }

    // Queues a change; it is written with the next batch. Under mu_ from the pipe's side.
    void owe(change c)
    {
        const std::lock_guard lock(mu_);
        owe_locked(std::move(c));
    }
    void owe_locked(change c)
    {
        // A change that may raise the fleet's spend (a bill above its reservation, an
        // unreserved charge, a corrected bill) goes out at once and before any later
        // reservation; the others (most) only lower it, so they wait up to `flush_interval` to
        // share a call, and reservations may pass them meanwhile.
        bool raises = false;
        for (const auto& [field, v] : c.moves)
            raises = raises || v > 0;
        if (raises && c.kind == 's' && c.id != 0)
            if (const auto it = held_.find(c.id); it != held_.end())
                raises = !c.moves.empty() && c.moves.front().second > it->second.amount;
        c.raises = raises;
        queue_.push_back({std::move(c), nullptr, {}, 0, 0});
        ++owed_;
        ++queued_changes_;
        if (raises) {
            ++raising_;
            ++unacked_raising_;
        }
        if (raises || queued_changes_ >= max_batch) {
            flush_due_ = true;
            kick_locked();
        } else if (!flush_armed_) {
            flush_armed_ = true;
            asio::post(ioc_, [this] {
                flush_timer_.expires_after(flush_interval);
                flush_timer_.async_wait([this](error_code ec) {
                    if (ec)
                        return;
                    {
                        const std::lock_guard lock(mu_);
                        flush_armed_ = false;
                        flush_due_ = true;
                    }
                    pump();
                });
            });
        }
    }

    // Sends `w` and waits up to the timeout for its answer. False when Redis is unreachable
    // or slow; a reservation that may have been applied meanwhile is dropped again by a change
    // queued after it. `wait_connect`: also wait for a connection in backoff (opening).
    bool ask(const std::shared_ptr<waiter>& w, bool wait_connect)
    {
        std::unique_lock lock(mu_);
        const auto now = std::chrono::steady_clock::now();
        if (link_ == link::down && now < next_connect_ && !wait_connect)
            return false; // refused at once while the backoff runs
        if (link_ == link::down && wait_connect)
            next_connect_ = now;
        // A connection still being made gets its own timeout on top of the command's.
        const auto wait = link_ == link::ready ? params_.timeout : params_.timeout * 2;
        queue_.push_back({{}, w});
        if (link_ == link::ready && !writing_)
            send_now_locked(); // one thread hop fewer on the escalation's path
        else
            kick_locked();
        if (!w->cv.wait_for(lock, wait, [&] { return w->done; })) {
            w->abandoned = true; // unsent: skipped; sent: its reply or loss drops it again
            return false;
        }
        return w->answered;
    }

    // Called with mu_ held when a waited command is over; `r` null: lost or refused unseen.
    void finish_waiter(const std::shared_ptr<waiter>& w, const redisReply* r)
    {
        if (r != nullptr && r->type != REDIS_REPLY_ERROR && w->on_reply && !w->abandoned)
            w->on_reply(r);
        if (w->release_id != 0 && w->sent)
            reservation_outcome_locked(w->release_id, r, w->abandoned);
        if (r != nullptr && r->type == REDIS_REPLY_ERROR)
            last_error_.assign(r->str, r->len);
        w->answered = r != nullptr && r->type != REDIS_REPLY_ERROR;
        w->done = true;
        w->cv.notify_one();
    }

    // Writes what is queued from the calling thread, without waking the pipe's: the socket is
    // non-blocking, and what the kernel does not take at once is left to the pipe's thread.
    void send_now_locked()
    {
        build_write_locked();
        if (out_.empty())
            return;
        const auto n = ::send(fd_, out_.data(), out_.size(), MSG_DONTWAIT | MSG_NOSIGNAL);
        if (n == static_cast<ssize_t>(out_.size()))
            return;
        out_.erase(0, n > 0 ? static_cast<std::size_t>(n) : 0);
        writing_ = true;
        const bool broken = n < 0 && errno != EAGAIN && errno != EWOULDBLOCK;
        const std::string why = broken ? std::strerror(errno) : std::string();
        const std::uint64_t id = conn_id_;
        asio::post(ioc_, [this, id, broken, why] {
            if (id != conn_id_)
                return;
            if (broken) {
                lose(why);
                return;
            }
            std::unique_lock l(mu_);
            start_write(l);
        });
    }

    // Makes sure the pipe's thread looks at the queue. Under mu_.
    void kick_locked()
    {
        if (kicked_)
            return;
        kicked_ = true;
        asio::post(ioc_, [this] { pump(); });
    }

    // On the pipe's thread: connects when needed, writes what is queued.
    void pump()
    {
        std::unique_lock lock(mu_);
        kicked_ = false;
        if (link_ == link::down) {
            if (queue_.empty())
                return;
            const auto now = std::chrono::steady_clock::now();
            if (now < next_connect_) {
                fail_waiters_locked(); // nobody waits through a backoff
                schedule_retry_locked();
                return;
            }
            link_ = link::connecting;
            lock.unlock();
            start_connect();
            return;
        }
        if (link_ == link::ready && !writing_)
            write_locked(lock);
    }

    // Fails every waited command not yet sent: nothing will carry it before the backoff ends.
    void fail_waiters_locked()
    {
        for (auto it = queue_.begin(); it != queue_.end();) {
            if (it->w) {
                auto w = std::move(it->w);
                it = queue_.erase(it);
                finish_waiter(w, nullptr);
            } else {
                ++it;
            }
        }
    }

    void schedule_retry_locked()
    {
        if (owed_ == 0 || retry_armed_)
            return;
        retry_armed_ = true;
        retry_timer_.expires_at(next_connect_);
        retry_timer_.async_wait([this](error_code ec) {
            {
                const std::lock_guard lock(mu_);
                retry_armed_ = false;
            }
            if (!ec)
                pump();
        });
    }

    void start_connect()
    {
        const std::uint64_t id = ++conn_id_;
        connect_timer_.expires_after(params_.timeout);
        connect_timer_.async_wait([this, id](error_code ec) {
            if (!ec && id == conn_id_)
                lose("no connection within " + std::to_string(params_.timeout.count()) + " ms");
        });
        resolver_.async_resolve(
            host_, std::to_string(port_),
            [this, id](error_code ec, const asio::ip::tcp::resolver::results_type& eps) {
                if (id != conn_id_)
                    return;
                if (ec) {
                    lose(ec.message());
                    return;
                }
                asio::async_connect(
                    socket_, eps, [this, id](error_code ec2, const asio::ip::tcp::endpoint& ep) {
                        if (id != conn_id_)
                            return;
                        if (ec2) {
                            lose(ec2.message());
                            return;
                        }
                        connect_timer_.cancel();
                        {
                            const std::lock_guard lock(mu_);
                            endpoint_ = ep;
                        }
                        on_connected();
                    });
            });
    }

    // A new connection: select the database and load the scripts before anything else.
    void on_connected()
    {
        error_code ignored;
        socket_.set_option(asio::ip::tcp::no_delay(true), ignored);
        reader_.reset(redisReaderCreate());
        std::unique_lock lock(mu_);
        link_ = link::handshake;
        out_.clear();
        auto add = [this](const std::vector<std::string>& args, std::string* sha) {
            append_command(out_, args);
            inflight_.push_back({in_flight::handshake, {}, 0, nullptr, sha});
        };
        if (db_ != 0)
            add(select_command(), nullptr);
        add(load_command(reserve_lua), &reserve_sha_);
        add(load_command(apply_lua), &apply_sha_);
        handshake_left_ = inflight_.size();
        progress_ = std::chrono::steady_clock::now();
        start_write(lock);
        arm_watchdog();
        read();
    }

    // Moves what is queued into one write: runs of changes become one script call each.
    void write_locked(std::unique_lock<std::mutex>& lock)
    {
        build_write_locked();
        if (!out_.empty())
            start_write(lock);
    }

    // Sums the changes at the front of the queue into one call of the apply script, written
    // to `out_` and kept in flight (`take` false: none, a call that only sweeps expired leases).
    void write_batch_locked(const std::string& now, bool take)
    {
        in_flight f;
        f.kind = in_flight::changes;
        std::vector<std::pair<std::string, std::int64_t>> sums;
        std::vector<std::string> opened, gens, rids, entries, gen_pairs;
        auto add = [&sums](std::string field, std::int64_t v) {
            for (auto& [k, x] : sums)
                if (k == field) {
                    x += v;
                    return;
                }
            sums.emplace_back(std::move(field), v);
        };
        auto drop = [&](std::uint64_t id) {
            const auto it = held_.find(id);
            if (it == held_.end())
                return; // never held in Redis
            for (const auto& field : it->second.fields)
                add("r:" + field, -it->second.amount);
            const std::string r = rid(id);
            opened.push_back("o:" + r);
            gens.push_back("g:" + r);
            rids.push_back(r);
            entries.push_back(std::move(it->second.entry));
            held_.erase(it);
        };
        while (take && !queue_.empty() && !queue_.front().w && queue_.front().batch.empty() &&
               f.count < max_batch) {
            auto& c = queue_.front().c;
            for (auto& [field, v] : c.moves)
                add("c:" + field, v);
            if (c.kind == 's' || c.kind == 'r') {
                if (c.id != 0)
                    drop(c.id);
            } else if (c.kind == 'g' && held_.count(c.id) != 0) {
                gen_pairs.push_back("g:" + rid(c.id));
                gen_pairs.push_back(std::move(c.gen));
            }
            f.raising += c.raises ? 1 : 0;
            queue_.pop_front();
            ++f.count;
        }
        std::erase_if(sums, [](const auto& p) { return p.second == 0; });
        const std::string seq = std::to_string(++seq_);
        std::vector<std::string> args{
            "EVALSHA",
            apply_sha_,
            "0",
            params_.prefix,
            instance_,
            now,
            seq,
            seq,
            std::to_string(sums.size()),
            std::to_string(rids.size()),
            std::to_string(gen_pairs.size() / 2)};
        for (auto& [field, v] : sums) {
            args.push_back(std::move(field));
            args.push_back(std::to_string(v));
        }
        for (auto* part : {&opened, &gens, &rids, &entries, &gen_pairs})
            for (auto& a : *part)
                args.push_back(std::move(a));
        append_command(f.batch, args);
        out_ += f.batch;
        inflight_.push_back(std::move(f));
    }

    // Moves into `out_` every waited command queued and, when they are due, the changes owed
    // (otherwise they stay queued: none of them raises the fleet's spend, see owe_locked).
    void build_write_locked()
    {
        out_.clear();
        const bool idle = inflight_.empty();
        const bool changes = flush_due_ || raising_ > 0 || resend_ > 0;
        const std::string now = std::to_string(unix_ms());
        std::deque<queued> kept;
        if (sweep_due_) {
            sweep_due_ = false;
            write_batch_locked(now, false);
        }
        while (!queue_.empty()) {
            if (!changes && !queue_.front().w) {
                kept.push_back(std::move(queue_.front()));
                queue_.pop_front();
                continue;
            }
            if (queue_.front().w) {
                auto w = std::move(queue_.front().w);
                queue_.pop_front();
                if (w->abandoned)
                    continue;
                if (w->script != nullptr)
                    w->args[1] = *w->script;
                append_command(out_, w->args);
                w->sent = true;
                inflight_.push_back({in_flight::waited, {}, 0, std::move(w), nullptr});
                continue;
            }
            if (!queue_.front().batch.empty()) {
                out_ += queue_.front().batch;
                inflight_.push_back(
                    {in_flight::changes, std::move(queue_.front().batch), queue_.front().count,
                     nullptr, nullptr, queue_.front().raising});
                queue_.pop_front();
                continue;
            }
            write_batch_locked(now, true);
        }
        queue_ = std::move(kept);
        if (changes) {
            flush_due_ = false;
            raising_ = resend_ = queued_changes_ = 0;
        }
        if (idle && !out_.empty())
            progress_ = std::chrono::steady_clock::now();
    }

    void start_write(std::unique_lock<std::mutex>& lock)
    {
        writing_ = true;
        const std::uint64_t id = conn_id_;
        lock.unlock();
        asio::async_write(socket_, asio::buffer(out_), [this, id](error_code ec, std::size_t) {
            if (id != conn_id_)
                return;
            if (ec) {
                lose(ec.message());
                return;
            }
            std::unique_lock l(mu_);
            writing_ = false;
            if (link_ == link::ready && (!queue_.empty() || sweep_due_))
                write_locked(l);
        });
    }

    void read()
    {
        const std::uint64_t id = conn_id_;
        socket_.async_read_some(asio::buffer(rbuf_), [this, id](error_code ec, std::size_t n) {
            if (id != conn_id_)
                return;
            if (ec) {
                lose(ec == asio::error::eof ? "Redis closed the connection" : ec.message());
                return;
            }
            if (redisReaderFeed(reader_.get(), rbuf_.data(), n) != REDIS_OK) {
                lose("unreadable reply from Redis");
                return;
            }
            std::unique_lock lock(mu_);
            for (;;) {
                void* raw = nullptr;
                if (redisReaderGetReply(reader_.get(), &raw) != REDIS_OK) {
                    lock.unlock();
                    lose("unreadable reply from Redis");
                    return;
                }
                if (raw == nullptr)
                    break;
                reply_ptr r(static_cast<redisReply*>(raw));
                if (inflight_.empty()) {
                    lock.unlock();
                    lose("a reply from Redis that nothing asked for");
                    return;
                }
                progress_ = std::chrono::steady_clock::now();
                auto f = std::move(inflight_.front());
                inflight_.pop_front();
                if (!on_reply(f, r.get(), lock))
                    return; // the connection was dropped
            }
            if (link_ == link::ready && !writing_ && (!queue_.empty() || sweep_due_))
                write_locked(lock);
            else
                lock.unlock();
            read();
        });
    }

    // One reply, for `f`. False when it made the connection unusable (mu_ released then).
    bool on_reply(in_flight& f, const redisReply* r, std::unique_lock<std::mutex>& lock)
    {
        const bool err = r->type == REDIS_REPLY_ERROR;
        switch (f.kind) {
        case in_flight::handshake:
            if (err || (f.sha != nullptr && (r->type != REDIS_REPLY_STRING || r->len != 40))) {
                std::string why = err ? std::string(r->str, r->len) : "no script sha";
                lock.unlock();
                lose("Redis refused to prepare: " + why);
                return false;
            }
            if (f.sha != nullptr)
                f.sha->assign(r->str, r->len);
            if (--handshake_left_ == 0) {
                link_ = link::ready;
                sweep_due_ = true; // a dead process's leases turn into spend without waiting
                last_sweep_ = std::chrono::steady_clock::now();
                flush_due_ = true; // what was owed while the link was down
                fd_ = socket_.native_handle();
                backoff_ = std::chrono::milliseconds(0);
                last_error_.clear();
            }
            return true;
        case in_flight::changes:
            if (err) {
                // A script Redis forgot (SCRIPT FLUSH) or a refusal (out of memory, a replica):
                // the batch is applied whole or not at all, so it goes back and is resent
                // after a reconnection.
                std::string why(r->str, r->len);
                inflight_.push_front(std::move(f));
                lock.unlock();
                lose("Redis refused the spend: " + why);
                return false;
            }
            owed_ -= f.count;
            unacked_raising_ -= f.raising;
            if (owed_ == 0)
                drained_.notify_all();
            return true;
        case in_flight::waited: finish_waiter(f.w, r); return true;
        }
        return true;
    }

    // Redis is slow: a command unanswered past the timeout drops the connection.
    void arm_watchdog()
    {
        const std::uint64_t id = conn_id_;
        watchdog_.expires_after(std::max(params_.timeout / 4, std::chrono::milliseconds(10)));
        watchdog_.async_wait([this, id](error_code ec) {
            if (ec || id != conn_id_)
                return;
            bool stalled = false;
            {
                const std::lock_guard lock(mu_);
                const auto now = std::chrono::steady_clock::now();
                stalled = !inflight_.empty() && now - progress_ > params_.timeout;
                // Every process sweeps now and then, so that leases run out into spend even
                // while nothing is settled anywhere.
                if (!stalled && now - last_sweep_ >= sweep_interval) {
                    last_sweep_ = now;
                    sweep_due_ = true;
                    kick_locked();
                }
            }
            if (stalled) {
                lose(
                    "Redis did not answer within " + std::to_string(params_.timeout.count()) +
                    " ms");
                return;
            }
            arm_watchdog();
        });
    }

    // The connection is gone (on the pipe's thread): changes in flight go back to the front of
    // the queue in order, waited commands fail, and a reconnection is scheduled.
    void lose(const std::string& why)
    {
        ++conn_id_; // every handler of the old connection is stale now
        const std::lock_guard lock(mu_);
        last_error_ = "Redis at " + host_ + ":" + std::to_string(port_) + ": " + why;
        fd_ = -1; // closed under mu_: a caller sending at once never sees a stale descriptor
        error_code ignored;
        socket_.close(ignored);
        connect_timer_.cancel();
        watchdog_.cancel();
        link_ = link::down;
        writing_ = false;
        backoff_ = std::min(
            std::max(backoff_ * 2, std::chrono::milliseconds(100)),
            std::chrono::milliseconds(5000));
        next_connect_ = std::chrono::steady_clock::now() + backoff_;
        std::vector<std::shared_ptr<waiter>> lost;
        while (!inflight_.empty()) {
            auto f = std::move(inflight_.back());
            inflight_.pop_back();
            if (f.kind == in_flight::changes) {
                queue_.push_front({{}, nullptr, std::move(f.batch), f.count, f.raising});
                ++resend_;
            } else if (f.kind == in_flight::waited)
                lost.push_back(std::move(f.w));
        }
        for (auto it = lost.rbegin(); it != lost.rend(); ++it)
            finish_waiter(*it, nullptr);
        fail_waiters_locked();
        schedule_retry_locked();
    }

    // Waits until Redis has acknowledged every change owed, or `deadline`. Retries a
    // connection in backoff at once.
    bool drain(std::chrono::steady_clock::time_point deadline)
    {
        std::unique_lock lock(mu_);
        if (owed_ == 0)
            return true;
        next_connect_ = std::chrono::steady_clock::now();
        flush_due_ = true;
        kick_locked();
        return drained_.wait_until(lock, deadline, [&] { return owed_ == 0; });
    }

    redis_store_params params_;
    std::shared_ptr<budget_store> ledger_;
    std::string instance_;
    std::string host_;
    int port_ = 6379;
    int db_ = 0;

    asio::io_context ioc_{1};
    asio::ip::tcp::socket socket_;
    asio::ip::tcp::resolver resolver_;
    asio::steady_timer connect_timer_, retry_timer_, watchdog_, flush_timer_;
    asio::executor_work_guard<asio::io_context::executor_type> work_;
    std::thread thread_;
    std::unique_ptr<redisReader, reader_deleter> reader_;
    std::array<char, 64 * 1024> rbuf_{};
    std::string out_;                       // the write in progress; only its writer touches it
    std::atomic<std::uint64_t> conn_id_{0}; // changed on the pipe's thread only

    // The reservations' own link (reserve_direct); only the thread holding direct_mu_ uses it.
    std::mutex direct_mu_;
    // An io_context nobody runs: the link is used synchronously, and a socket of the pipe's
    // io_context would wake the pipe's thread with every reply it reads.
    asio::io_context direct_ioc_{1};
    asio::ip::tcp::socket direct_socket_{direct_ioc_};
    std::unique_ptr<redisReader, reader_deleter> direct_reader_;
    std::string direct_sha_;
    std::chrono::steady_clock::time_point direct_retry_{};
    std::uint64_t direct_pipe_ = 0; // the pipe's connection when this link was opened
    std::array<char, 4096> rbuf_direct_{};

    std::mutex mu_; // everything below
    std::deque<queued> queue_;
    std::deque<in_flight> inflight_;
    std::unordered_map<std::uint64_t, held> held_; // the reservations Redis holds for this process
    std::size_t owed_ = 0;                         // changes queued or in flight
    std::uint64_t seq_ = 0;
    std::size_t handshake_left_ = 0;
    link link_ = link::down;
    int fd_ = -1; // the socket's descriptor while the link is ready
    bool kicked_ = false, writing_ = false, retry_armed_ = false;
    bool flush_due_ = false, flush_armed_ = false, sweep_due_ = false;
    std::chrono::steady_clock::time_point last_sweep_{};
    std::size_t queued_changes_ = 0;   // changes not yet in a batch
    std::size_t raising_ = 0;          // of those, the ones that may raise the spend
    std::size_t unacked_raising_ = 0;  // changes that may raise it, until Redis acknowledges them
    asio::ip::tcp::endpoint endpoint_; // where the pipelined connection reached Redis
    std::size_t resend_ = 0;           // batches to resend after a lost connection
    std::chrono::steady_clock::time_point next_connect_{}, progress_{};
    std::chrono::milliseconds backoff_{0};
    std::condition_variable drained_;
    std::string reserve_sha_, apply_sha_;
    // Why Redis last failed. Kept for the day the store interface carries a reason to the
    // guard's refusal; nothing reads it yet.
    std::string last_error_;
};

} // namespace

std::shared_ptr<budget_store> open_redis_store(
    const redis_store_params& params,
    std::shared_ptr<budget_store> ledger,
    boost::system::error_code& ec,
    std::string& detail)
{
    if (!ledger)
        ledger = make_memory_store();
    auto s = std::make_shared<redis_store>(params, std::move(ledger));
    ec = s->open(detail);
    if (ec)
        return nullptr;
    return s;
}

} // namespace frugal
