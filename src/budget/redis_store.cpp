// The budget store a fleet shares: spend and open reservations in Redis, every change one Lua
// script so a check and its write are atomic across processes; the ledger stays local.
#include <frugal/budget_store.hpp>

#include <frugal/error.hpp>

#include <hiredis/hiredis.h>

#include <algorithm>
#include <charconv>
#include <chrono>
#include <cstring>
#include <deque>
#include <string>
#include <thread>
#include <vector>

namespace frugal {

namespace {

using boost::system::error_code;

// Amounts are picodollars, beyond the 2^53 a Lua number holds exactly: Redis keeps them as
// integers (HINCRBY) and the scripts compare them as decimal strings.
constexpr const char* lua_prelude = R"lua(
local function nn(v)
  if not v or string.sub(v, 1, 1) == '-' then return '0' end
  return v
end
local function add(a, b)
  local r, carry, i, j = {}, 0, #a, #b
  while i > 0 or j > 0 or carry > 0 do
    local s = carry
    if i > 0 then s = s + string.byte(a, i) - 48 end
    if j > 0 then s = s + string.byte(b, j) - 48 end
    r[#r + 1] = string.char(48 + s % 10)
    carry = math.floor(s / 10)
    i = i - 1
    j = j - 1
  end
  local out = string.gsub(string.reverse(table.concat(r)), '^0+', '')
  if out == '' then return '0' end
  return out
end
local function le(a, b)
  if #a ~= #b then return #a < #b end
  return a <= b
end
local function neg(v) if v == '0' then return '0' end return '-' .. v end
-- Reservations whose lease ran out (their process died) become spend, never headroom.
local function sweep(P, now)
  local expired = redis.call('ZRANGEBYSCORE', P .. ':leases', '-inf', now, 'LIMIT', 0, 100)
  for _, rid in ipairs(expired) do
    local amount = redis.call('HGET', P .. ':res:' .. rid, 'amount')
    local charges = redis.call('HGET', P .. ':res:' .. rid, 'charges')
    if amount and charges then
      for field in string.gmatch(charges, '[^\n]+') do
        redis.call('HINCRBY', P .. ':reserved', field, neg(amount))
        redis.call('HINCRBY', P .. ':committed', field, amount)
      end
      redis.call('SET', P .. ':swept:' .. rid, amount .. '\n' .. charges, 'EX', 604800)
    end
    redis.call('DEL', P .. ':res:' .. rid)
    redis.call('ZREM', P .. ':leases', rid)
  end
end
-- Drops reservation rid: its hold when it is still open, else (its lease ran out) the whole
-- amount a sweep committed for it, which a settlement's cost or a release replaces.
local function drop(P, rid)
  local amount = redis.call('HGET', P .. ':res:' .. rid, 'amount')
  if amount then
    local charges = redis.call('HGET', P .. ':res:' .. rid, 'charges')
    for field in string.gmatch(charges, '[^\n]+') do
      redis.call('HINCRBY', P .. ':reserved', field, neg(amount))
    end
    redis.call('DEL', P .. ':res:' .. rid)
    redis.call('ZREM', P .. ':leases', rid)
    return nil
  end
  local swept = redis.call('GET', P .. ':swept:' .. rid)
  if swept then
    redis.call('DEL', P .. ':swept:' .. rid)
    local swept_amount = string.match(swept, '^[^\n]+')
    for field in string.gmatch(string.sub(swept, #swept_amount + 2), '[^\n]+') do
      redis.call('HINCRBY', P .. ':committed', field, neg(swept_amount))
    end
  end
end
)lua";

// ARGV: prefix, now_ms, lease_ms, rid, amount, n, then n pairs (field, cap).
constexpr const char* reserve_lua = R"lua(
local P, now, lease, rid, amount, n = ARGV[1], tonumber(ARGV[2]), tonumber(ARGV[3]), ARGV[4], ARGV[5], tonumber(ARGV[6])
sweep(P, now)
for k = 0, n - 1 do
  local field, cap = ARGV[7 + 2 * k], ARGV[8 + 2 * k]
  local c = nn(redis.call('HGET', P .. ':committed', field))
  local r = nn(redis.call('HGET', P .. ':reserved', field))
  if not le(add(add(c, r), amount), cap) then return {0, field} end
end
local fields = {}
for k = 0, n - 1 do
  local field = ARGV[7 + 2 * k]
  redis.call('HINCRBY', P .. ':reserved', field, amount)
  fields[#fields + 1] = field
end
redis.call('HSET', P .. ':res:' .. rid, 'amount', amount, 'charges', table.concat(fields, '\n'))
redis.call('ZADD', P .. ':leases', now + lease, rid)
return {1, ''}
)lua";

// ARGV: prefix, now_ms, rid ('' for none), cost, n, then n fields.
constexpr const char* settle_lua = R"lua(
local P, now, rid, cost, n = ARGV[1], tonumber(ARGV[2]), ARGV[3], ARGV[4], tonumber(ARGV[5])
sweep(P, now)
if rid ~= '' then drop(P, rid) end
for k = 0, n - 1 do
  redis.call('HINCRBY', P .. ':committed', ARGV[6 + k], cost)
end
return 1
)lua";

// ARGV: prefix, now_ms, rid.
constexpr const char* release_lua = R"lua(
local P, now, rid = ARGV[1], tonumber(ARGV[2]), ARGV[3]
sweep(P, now)
drop(P, rid)
return 1
)lua";

// ARGV: prefix, n, then n pairs (field, signed delta).
constexpr const char* move_lua = R"lua(
local P, n = ARGV[1], tonumber(ARGV[2])
for k = 0, n - 1 do
  redis.call('HINCRBY', P .. ':committed', ARGV[3 + 2 * k], ARGV[4 + 2 * k])
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

class redis_store final : public budget_store {
public:
    redis_store(redis_store_params p, std::shared_ptr<budget_store> ledger)
        : params_(std::move(p)), ledger_(std::move(ledger))
    {
    }

    ~redis_store() override
    {
        // One last try for what Redis missed; what still cannot land stays covered by its
        // reservation until the lease turns it into spend.
        (void)flush_pending();
        if (ctx_ != nullptr)
            redisFree(ctx_);
    }

    // Only a bad URL fails: Redis may be down when a process starts, and then only paid
    // requests wait for it (each is refused until it is back; free calls go on).
    error_code open(std::string& detail)
    {
        if (!parse_url(params_.url, host_, port_, db_)) {
            detail = "expected redis://HOST:PORT/DB, not " + params_.url;
            return error::bad_budget_config;
        }
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
        reply_ptr r = command({"HGETALL", params_.prefix + ":committed"});
        if (!r || r->type != REDIS_REPLY_ARRAY)
            return {}; // unreachable: every reservation asks Redis anyway
        for (std::size_t i = 0; i + 1 < r->elements; i += 2) {
            const std::string_view field(r->element[i]->str, r->element[i]->len);
            const std::string_view value(r->element[i + 1]->str, r->element[i + 1]->len);
            const auto colon = field.find(':');
            budget_charge c;
            std::int64_t units = 0;
            if (colon == std::string_view::npos ||
                std::from_chars(field.data(), field.data() + colon, c.window).ec != std::errc() ||
                std::from_chars(value.data(), value.data() + value.size(), units).ec != std::errc())
                return error::budget_store_failed; // not this store's data
            c.budget = std::string(field.substr(colon + 1));
            c.amount = money::from_units(units);
            out.committed.push_back(std::move(c));
        }
        out.next_id = 1; // ids are this process's; Redis knows them as INSTANCE.ID
        return {};
    }

    error_code reserve(const reservation_view& v) override
    {
        // Settlements Redis missed go first: until they land, the fleet's books are behind.
        if (!flush_pending())
            return unreachable();
        const money amount = v.charges.empty() ? money() : v.charges.front().amount;
        std::vector<std::string> args{
            "EVALSHA",
            reserve_sha_,
            "0",
            params_.prefix,
            std::to_string(unix_ms()),
            std::to_string(params_.lease.count()),
            rid(v.id),
            std::to_string(amount.units()),
            std::to_string(v.charges.size())};
        for (const auto& c : v.charges) {
            args.push_back(field_of(c.window, c.budget));
            args.push_back(std::to_string(c.cap.units()));
        }
        reply_ptr r = script(reserve_lua, reserve_sha_, args);
        if (!r)
            return unreachable();
        if (r->type != REDIS_REPLY_ARRAY || r->elements != 2 ||
            r->element[0]->type != REDIS_REPLY_INTEGER)
            return error::budget_store_failed;
        if (r->element[0]->integer == 0)
            return error::budget_exhausted; // another process took the headroom
        return {};
    }

    error_code note_generation(std::uint64_t id, const std::string& generation_id) override
    {
        reply_ptr r =
            command({"HSET", params_.prefix + ":res:" + rid(id), "generation", generation_id});
        return r ? error_code() : error_code(error::budget_store_failed);
    }

    error_code settle(
        std::uint64_t reservation_id,
        std::span<const budget_charge_view> charges,
        attempt_record& record) override
    {
        // The spend first: it is what the cap is kept on, and the fleet must see it.
        std::vector<std::string> args{
            "EVALSHA",
            settle_sha_,
            "0",
            params_.prefix,
            std::to_string(unix_ms()),
            reservation_id == 0 ? std::string() : rid(reservation_id),
            std::to_string(record.cost.units()),
            std::to_string(charges.size())};
        for (const auto& c : charges)
            args.push_back(field_of(c.window, c.budget));
        // Redis unreachable: the spend is recorded locally now and in Redis when it is back;
        // meanwhile the reservation still holds its whole amount there (or, once its lease
        // ran out, is counted as spent), so the fleet's cap stays covered.
        apply_or_keep(settle_lua, settle_sha_, std::move(args));
        return ledger_->settle(0, charges, record);
    }

    error_code release(std::uint64_t id) override
    {
        std::vector<std::string> args{
            "EVALSHA", release_sha_, "0", params_.prefix, std::to_string(unix_ms()), rid(id)};
        apply_or_keep(release_lua, release_sha_, std::move(args));
        return {};
    }

    error_code
    correct(std::uint64_t record_id, money proven, std::vector<budget_charge>& moved) override
    {
        if (auto ec = ledger_->correct(record_id, proven, moved))
            return ec;
        std::vector<std::string> args{
            "EVALSHA", move_sha_, "0", params_.prefix, std::to_string(moved.size())};
        for (const auto& m : moved) {
            args.push_back(field_of(m.window, m.budget));
            args.push_back(std::to_string(m.amount.units()));
        }
        apply_or_keep(move_lua, move_sha_, std::move(args));
        return {};
    }

    error_code read_ledger(std::int64_t since_ms, std::vector<attempt_record>& out) override
    {
        return ledger_->read_ledger(since_ms, out);
    }
    error_code put_note(std::string_view key, std::string_view value) override
    {
        return ledger_->put_note(key, value);
    }
    error_code read_notes(std::vector<std::pair<std::string, std::string>>& out) override
    {
        return ledger_->read_notes(out);
    }

private:
    static bool parse_url(const std::string& url, std::string& host, int& port, int& db)
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

    bool connect(std::string& detail)
    {
        if (ctx_ != nullptr) {
            redisFree(ctx_);
            ctx_ = nullptr;
        }
        const auto t = params_.timeout;
        const timeval tv{
            static_cast<time_t>(t.count() / 1000),
            static_cast<suseconds_t>((t.count() % 1000) * 1000)};
        ctx_ = redisConnectWithTimeout(host_.c_str(), port_, tv);
        if (ctx_ == nullptr || ctx_->err != 0) {
            last_error_ = ctx_ != nullptr ? ctx_->errstr : "out of memory";
            detail =
                "cannot reach Redis at " + host_ + ":" + std::to_string(port_) + ": " + last_error_;
            return false;
        }
        redisSetTimeout(ctx_, tv);
        if (db_ != 0) {
            reply_ptr r(static_cast<redisReply*>(redisCommand(ctx_, "SELECT %d", db_)));
            if (!r || r->type == REDIS_REPLY_ERROR) {
                last_error_ = "Redis refused SELECT " + std::to_string(db_);
                detail = last_error_;
                redisFree(ctx_);
                ctx_ = nullptr;
                return false;
            }
        }
        if (instance_.empty()) {
            // Reservation ids are this process's; in Redis they are INSTANCE.ID.
            reply_ptr r(static_cast<redisReply*>(
                redisCommand(ctx_, "INCR %s", (params_.prefix + ":instances").c_str())));
            if (!r || r->type != REDIS_REPLY_INTEGER) {
                last_error_ = "Redis did not register this process";
                detail = last_error_;
                redisFree(ctx_);
                ctx_ = nullptr;
                return false;
            }
            instance_ = std::to_string(r->integer);
        }
        return true;
    }

    // One command; on a broken connection, one reconnection (after a backoff) and one retry
    // of a command that had not been sent.
    reply_ptr command(const std::vector<std::string>& args)
    {
        for (int attempt = 0; attempt < 2; ++attempt) {
            if (ctx_ == nullptr || ctx_->err != 0) {
                const auto now = std::chrono::steady_clock::now();
                if (now < next_connect_)
                    return nullptr;
                std::string detail;
                if (!connect(detail)) {
                    backoff_ = std::min(
                        std::max(backoff_ * 2, std::chrono::milliseconds(100)),
                        std::chrono::milliseconds(5000));
                    next_connect_ = now + backoff_;
                    return nullptr;
                }
                backoff_ = std::chrono::milliseconds(0);
            }
            std::vector<const char*> argv;
            std::vector<std::size_t> lens;
            for (const auto& a : args) {
                argv.push_back(a.data());
                lens.push_back(a.size());
            }
            reply_ptr r(static_cast<redisReply*>(
                redisCommandArgv(ctx_, static_cast<int>(argv.size()), argv.data(), lens.data())));
            if (r) {
                if (r->type == REDIS_REPLY_ERROR)
                    last_error_.assign(r->str, r->len);
                return r;
            }
            last_error_ = ctx_->errstr;
            // A reply lost after the command was written may have been applied: not retried.
            return nullptr;
        }
        return nullptr;
    }

    // EVALSHA, loading the script (with the prelude) on NOSCRIPT.
    reply_ptr script(const char* body, std::string& sha, std::vector<std::string> args)
    {
        if (sha.empty() && !load_script(body, sha))
            return nullptr;
        args[1] = sha;
        reply_ptr r = command(args);
        if (r && r->type == REDIS_REPLY_ERROR && std::strncmp(r->str, "NOSCRIPT", 8) == 0) {
            if (!load_script(body, sha))
                return nullptr;
            args[1] = sha;
            r = command(args);
        }
        if (r && r->type == REDIS_REPLY_ERROR)
            return nullptr;
        return r;
    }

    bool load_script(const char* body, std::string& sha)
    {
        reply_ptr r = command({"SCRIPT", "LOAD", std::string(lua_prelude) + body});
        if (!r || r->type != REDIS_REPLY_STRING)
            return false;
        sha.assign(r->str, r->len);
        return true;
    }

    std::string rid(std::uint64_t id) const { return instance_ + "." + std::to_string(id); }

    // A reservation Redis cannot check: refused, or under fail_open granted on the local books
    // (its settlement then lands in Redis with the others Redis missed; with no reservation
    // there, it is a plain charge).
    error_code unreachable() const
    {
        return params_.fail_open ? error_code() : error_code(error::budget_store_failed);
    }

    bool run(const char* body, std::string& sha, const std::vector<std::string>& args)
    {
        reply_ptr r = script(body, sha, args);
        return r && r->type == REDIS_REPLY_INTEGER;
    }

    // Replays, in order, what Redis missed while it was unreachable; false while it still is.
    // A command whose reply was lost may have been applied: replayed, its spend is counted
    // twice in Redis, an error on the side of the cap.
    bool flush_pending()
    {
        while (!pending_.empty()) {
            auto& op = pending_.front();
            if (!run(op.body, *op.sha, op.args))
                return false;
            pending_.pop_front();
        }
        return true;
    }

    // A change the spend needs: applied now, after what Redis missed before it, or kept to be
    // replayed in order.
    void apply_or_keep(const char* body, std::string& sha, std::vector<std::string> args)
    {
        if (!flush_pending() || !run(body, sha, args))
            pending_.push_back({body, &sha, std::move(args)});
    }

    struct pending_op {
        const char* body;
        std::string* sha;
        std::vector<std::string> args;
    };
    std::deque<pending_op> pending_;

    redis_store_params params_;
    std::shared_ptr<budget_store> ledger_;
    redisContext* ctx_ = nullptr;
    std::string host_;
    int port_ = 6379;
    int db_ = 0;
    std::string instance_;
    std::string last_error_;
    std::string reserve_sha_, settle_sha_, release_sha_, move_sha_;
    std::chrono::steady_clock::time_point next_connect_{};
    std::chrono::milliseconds backoff_{0};
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
