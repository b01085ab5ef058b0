// The budget store a fleet shares: spend and open reservations in Redis, every change one Lua
// script so a check and its write are atomic across processes; the ledger stays local.
// Here, the budget_store interface; redis_detail.hpp says where the machinery behind it is.
#include "budget/redis_detail.hpp"
#include "budget/redis_scripts.hpp"

#include <frugal/error.hpp>

#include <algorithm>
#include <charconv>
#include <cstdio>
#include <random>

namespace frugal::detail::redis {

namespace {

std::string field_of(std::int64_t window, std::string_view budget)
{
    std::string f = std::to_string(window);
    f += ':';
    f += budget;
    return f;
}

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

// The changes queued while Redis is unreachable stop growing here: past it, reservations are
// refused even when failing open, so memory stays bounded however long the outage.
constexpr std::size_t max_owed = 1u << 20;

} // namespace

redis_store::redis_store(redis_store_params p, std::shared_ptr<budget_store> ledger)
    : params_(std::move(p)), ledger_(std::move(ledger)), instance_(new_instance()),
      socket_(ioc_), resolver_(ioc_), connect_timer_(ioc_), retry_timer_(ioc_), watchdog_(ioc_),
      flush_timer_(ioc_), work_(ioc_.get_executor())
{
    near_start();
}

redis_store::~redis_store()
{
    near_close_all();
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
error_code redis_store::open(std::string& detail)
{
    if (!parse_url(params_.url, host_, port_, db_)) {
        detail = "expected redis://HOST:PORT/DB, not " + params_.url;
        return error::bad_budget_config;
    }
    thread_ = std::thread([this] { ioc_.run(); });
    return {};
}

error_code redis_store::load(budget_store_state& out)
{
    if (auto ec = ledger_->load(out))
        return ec;
    // The fleet's committed spend replaces the local file's; open reservations belong to
    // the processes that made them (a dead one's expire into spend).
    out.committed.clear();
    out.open.clear();
    // Ids go on from the local ledger's (Redis knows them as INSTANCE.ID): a ledger record
    // names its reservation by them, across runs.
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

// The EVALSHA of a reservation, its entry noted as held (a reply or a loss settles it).
std::shared_ptr<redis_store::waiter> redis_store::reservation_waiter(const reservation_view& v)
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
    return w;
}

error_code redis_store::reserve(const reservation_view& v)
{
    auto w = reservation_waiter(v);
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

// On the caller's io_context's own link when it may pass what the pipe holds (redis_near.cpp),
// else on the pipelined connection, in order with the changes before it: the reply (or the
// connection's loss, which the watchdog declares after the timeout) completes it.
void redis_store::async_reserve(
    const reservation_view& v,
    const asio::any_io_executor& caller,
    std::function<void(error_code)> done)
{
    auto w = reservation_waiter(v);
    w->on_done = std::move(done);
    if (near_send(caller, w))
        return;
    if (!ask_async(w)) {
        std::function<void(error_code)> f;
        error_code ec;
        {
            const std::lock_guard lock(mu_);
            held_.erase(v.id); // never sent: Redis holds nothing
            f = std::move(w->on_done);
            ec = unreachable_locked();
        }
        if (f)
            f(ec);
    }
}

error_code redis_store::note_generation(std::uint64_t id, const std::string& generation_id)
{
    change c;
    c.kind = 'g';
    c.id = id;
    c.gen = generation_id;
    owe(std::move(c));
    return {};
}

error_code redis_store::settle(
    std::uint64_t reservation_id,
    std::span<const budget_charge_view> charges,
    attempt_record& record)
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

error_code redis_store::release(std::uint64_t id)
{
    change c;
    c.kind = 'r';
    c.id = id;
    owe(std::move(c));
    return {};
}

error_code redis_store::correct(std::uint64_t record_id, money proven, correction& out)
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

error_code redis_store::sync(std::chrono::milliseconds timeout)
{
    if (auto ec = ledger_->sync(timeout))
        return ec;
    return drain(std::chrono::steady_clock::now() + timeout)
               ? error_code()
               : error_code(error::budget_store_failed);
}

error_code redis_store::read_ledger(std::int64_t since_ms, std::vector<attempt_record>& out)
{
    return ledger_->read_ledger(since_ms, out);
}

error_code redis_store::take_free_request(
    std::int64_t now_ms,
    std::uint32_t per_minute,
    std::uint32_t per_day,
    std::int64_t& wait_ms)
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

error_code redis_store::block_free_until(std::int64_t until_ms)
{
    auto w = std::make_shared<waiter>();
    w->args = {
        "EVAL",         block_free_lua, "0", params_.prefix, std::to_string(unix_ms()),
        std::to_string(until_ms)};
    return ask(w, false) ? error_code() : error_code(error::not_found);
}

std::shared_ptr<redis_store::waiter>
redis_store::rated_waiter(std::string_view limiter, std::uint32_t per_minute) const
{
    auto w = std::make_shared<waiter>();
    w->args = {"EVAL", take_rated_lua, "0", params_.prefix, std::string(limiter),
               std::to_string(per_minute)};
    // The wait, in `verdict`: a reply that is no integer leaves it at -1.
    w->on_reply = [wp = w.get()](const redisReply* r) {
        if (r->type == REDIS_REPLY_INTEGER && r->integer >= 0 && r->integer <= 60'000)
            wp->verdict = static_cast<int>(r->integer);
    };
    return w;
}

error_code redis_store::take_rated_request(
    std::string_view limiter, std::uint32_t per_minute, std::int64_t& wait_ms)
{
    wait_ms = 0;
    if (per_minute == 0)
        return {};
    auto w = rated_waiter(limiter, per_minute);
    // Redis unreachable: the rate cannot be shared; the caller counts on its own.
    if (!ask(w, false) || w->verdict < 0)
        return error::not_found;
    wait_ms = w->verdict;
    return {};
}

void redis_store::async_take_rated_request(
    std::string_view limiter,
    std::uint32_t per_minute,
    std::function<void(error_code, std::int64_t)> done)
{
    if (per_minute == 0) {
        done({}, 0);
        return;
    }
    auto w = rated_waiter(limiter, per_minute);
    w->on_done = [wp = w.get(), done](error_code) {
        // Called by finish_waiter, which holds the waiter: `wp` is alive.
        if (wp->answered && wp->verdict >= 0)
            done({}, wp->verdict);
        else
            done(error::not_found, 0);
    };
    if (!ask_async(w))
        done(error::not_found, 0); // Redis unreachable: the caller counts on its own
}

error_code redis_store::read_swept(std::vector<swept_reservation>& out)
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

error_code redis_store::settle_swept(const swept_reservation& sw, attempt_record& record)
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

error_code redis_store::put_note(std::string_view key, std::string_view value)
{
    return ledger_->put_note(key, value);
}

error_code redis_store::put_answer(std::string_view id, std::string_view answer)
{
    return ledger_->put_answer(id, answer);
}

error_code redis_store::read_answers(std::vector<std::pair<std::string, std::string>>& out)
{
    return ledger_->read_answers(out);
}

error_code redis_store::read_notes(std::vector<std::pair<std::string, std::string>>& out)
{
    return ledger_->read_notes(out);
}

// A reservation Redis cannot check: refused, or under fail_open granted on the local books
// (its settlement then lands in Redis with the other changes; with no reservation there,
// it is a plain charge). Past `max_owed` queued changes it is refused either way.
error_code redis_store::unreachable()
{
    const std::lock_guard lock(mu_);
    return unreachable_locked();
}

error_code redis_store::unreachable_locked() const
{
    return params_.fail_open && owed_ < max_owed ? error_code()
                                                 : error_code(error::budget_store_failed);
}

// Reservations go on a connection of their own, written and read by the reserving thread
// itself: an escalation then waits one round trip, with no hop through the pipe's thread
// and no batch ahead of it. Nothing when that cannot be done now (the pipe is not ready, a
// change that may raise the spend has not landed yet, another thread holds the link, or
// it cannot be opened): the pipe carries the reservation instead, in order.
std::optional<error_code>
redis_store::reserve_direct(std::uint64_t id, std::vector<std::string>& args)
{
    asio::ip::tcp::endpoint ep;
    std::uint64_t pipe = 0;
    {
        const std::lock_guard lock(mu_);
        if (!may_pass_pipe_locked())
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
    const bool forgot = forgot_script(r.get());
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

} // namespace frugal::detail::redis

namespace frugal {

boost::system::result<std::shared_ptr<budget_store>> open_redis_store(
    const redis_store_params& params, std::shared_ptr<budget_store> ledger, diagnostics* diag)
{
    if (diag != nullptr)
        diag->clear();
    if (!ledger)
        ledger = make_memory_store();
    auto s = std::make_shared<detail::redis::redis_store>(params, std::move(ledger));
    std::string why;
    if (const auto ec = s->open(why)) {
        if (diag != nullptr)
            diag->message = std::move(why);
        return ec;
    }
    return std::shared_ptr<budget_store>(std::move(s));
}

} // namespace frugal
