// The sans-io half of the Redis budget store: the changes a process owes Redis, summed into
// batches of one script call each, the commands encoded as RESP and the reservation script's
// verdicts read. Nothing here touches a socket; the link (redis_link.cpp) writes what this builds.
#include "budget/redis_detail.hpp"

#include <frugal/error.hpp>

#include <boost/asio/post.hpp>

#include <string_view>

namespace frugal::detail::redis {

namespace {

// Changes per script call: enough to amortise the call, small enough to keep Redis responsive.
constexpr std::size_t max_batch = 256;
// How long a change that only lowers the spend waits for others to share its script call:
// spend it gives back is seen by the fleet this much later, and reservations are not queued
// behind a batch on their way.
constexpr std::chrono::microseconds flush_interval{1000};

} // namespace

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

int verdict_of(const redisReply* r)
{
    if (r == nullptr || r->type != REDIS_REPLY_ARRAY || r->elements != 2 ||
        r->element[0]->type != REDIS_REPLY_INTEGER)
        return -1;
    return r->element[0]->integer == 1 ? 1 : 0;
}

bool forgot_script(const redisReply* r)
{
    return r != nullptr && r->type == REDIS_REPLY_ERROR &&
           std::string_view(r->str, r->len).rfind("NOSCRIPT", 0) == 0;
}

error_code verdict_error(int verdict)
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
void redis_store::reservation_outcome_locked(
    std::uint64_t id, const redisReply* r, bool caller_gone)
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

// Queues a change; it is written with the next batch. Under mu_ from the pipe's side.
void redis_store::owe(change c)
{
    const std::lock_guard lock(mu_);
    owe_locked(std::move(c));
}

void redis_store::owe_locked(change c)
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

// Sums the changes at the front of the queue into one call of the apply script, written
// to `out_` and kept in flight (`take` false: none, a call that only sweeps expired leases).
void redis_store::write_batch_locked(const std::string& now, bool take)
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
void redis_store::build_write_locked()
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

} // namespace frugal::detail::redis
