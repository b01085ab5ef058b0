#include <frugal/router.hpp>

#include <frugal/error.hpp>

#include "cascade/decide.hpp"
#include "cascade/judge.hpp"

#include <boost/asio/append.hpp>
#include <boost/asio/as_tuple.hpp>
#include <boost/asio/bind_cancellation_slot.hpp>
#include <boost/asio/co_spawn.hpp>
#include <boost/asio/detached.hpp>
#include <boost/asio/dispatch.hpp>
#include <boost/asio/experimental/channel.hpp>
#include <boost/asio/post.hpp>
#include <boost/asio/steady_timer.hpp>
#include <boost/asio/this_coro.hpp>
#include <boost/asio/use_awaitable.hpp>

#include <cctype>
#include <chrono>
#include <span>

namespace frugal {

namespace asio = boost::asio;
using boost::system::error_code;
using std::chrono::steady_clock;

namespace detail {

namespace {

constexpr auto tuple_awaitable = asio::as_tuple(asio::use_awaitable);

std::int64_t unix_now_ms()
{
    return std::chrono::duration_cast<std::chrono::milliseconds>(
               std::chrono::system_clock::now().time_since_epoch())
        .count();
}

// OpenRouter's documented free-tier limits hold only for OpenRouter; another endpoint's are
// learnt from what it says.
bool talks_to_openrouter(const chat_client& c)
{
    // The host of "https://host[:port]/path" (the client has checked the URL's form).
    std::string_view url = c.params().base_url;
    if (const auto scheme = url.find("://"); scheme != std::string_view::npos)
        url.remove_prefix(scheme + 3);
    url = url.substr(0, url.find_first_of("/:?#"));
    std::string host(url);
    for (auto& ch : host)
        ch = static_cast<char>(std::tolower(static_cast<unsigned char>(ch)));
    constexpr std::string_view domain = "openrouter.ai";
    return host == domain ||
           (host.size() > domain.size() && host.ends_with(domain) &&
            host[host.size() - domain.size() - 1] == '.');
}

// Emits into a signal: used to let several sources (the caller, the budget guard, a hedge)
// stop one operation.
struct forward_to {
    asio::cancellation_signal* signal;
    void operator()(asio::cancellation_type t) const { signal->emit(t); }
};

// The budget keys a cascade runs under, shared by its attempts.
struct budget_keys {
    std::vector<std::string> keys;
    std::string joined; // as the ledger writes them
    explicit budget_keys(std::vector<std::string> k = {}) : keys(std::move(k))
    {
        for (const auto& key : keys) {
            if (!joined.empty())
                joined += ' ';
            joined += key;
        }
    }
};

// What every attempt of one cascade shares.
struct call_info {
    std::uint64_t request_id = 0;
    std::shared_ptr<const budget_keys> keys;
};

// One attempt as it ran.
struct attempt_run {
    cascade_attempt rec;
    chat_response response;
    bool answered = false;      // a complete response arrived
    bool budget_denied = false; // the guard refused the reservation
    // Why the cascade asked this tier (none: the tier the request started at).
    escalation_reason arrived_by = escalation_reason::none;
};

} // namespace

// An `async_complete` in progress: its handler and the result being built.
struct complete_op {
    using handler_type = asio::any_completion_handler<void(error_code, cascade_result)>;
    // Constructed, not assigned: Asio 1.81's any_completion_handler has no move assignment,
    // and assigning one to another wraps it in itself.
    complete_op(handler_type h, std::shared_ptr<const budget_keys> k)
        : handler(std::move(h)), keys(std::move(k))
    {
    }
    handler_type handler;
    std::shared_ptr<const budget_keys> keys; // null: the router's
    error_code ec;
    cascade_result result;
};

struct router_impl : std::enable_shared_from_this<router_impl> {
    router_impl(
        chat_client& c, cascade_policy p, price_catalog prices, std::optional<budget_guard> g)
        : client(&c), policy(std::move(p)), prices(std::move(prices)), guard(std::move(g)),
          limiter(policy.free_tier, talks_to_openrouter(c))
    {
        for (auto& pat : policy.refusal_patterns) // matched against lower-cased text
            for (auto& c : pat)
                c = static_cast<char>(std::tolower(static_cast<unsigned char>(c)));
        for (const auto& t : policy.tiers) {
            const auto* price = this->prices.find(t);
            free_tier.push_back(
                price != nullptr ? price->free()
                                 : t.size() > 5 && t.compare(t.size() - 5, 5, ":free") == 0);
        }
        note_policy();
    }

    // Reports compare the traffic with the top tier alone: the ledger keeps the tiers and
    // their prices beside the records. A note that cannot be written costs the report its
    // comparison, not the caller a request.
    void note_policy()
    {
        if (!guard)
            return;
        std::string tiers;
        for (const auto& t : policy.tiers) {
            if (!tiers.empty())
                tiers += ' ';
            tiers += t;
            if (const auto* p = prices.find(t))
                (void)guard->annotate(
                    "price:" + t, p->prompt.to_string() + ' ' + p->completion.to_string() + ' ' +
                                      p->request.to_string());
        }
        (void)guard->annotate("tiers", tiers);
    }

    std::uint64_t new_request_id() { return guard ? guard->new_request_id() : next_request_id++; }

    chat_client* client;
    cascade_policy policy;
    price_catalog prices;
    std::optional<budget_guard> guard;
    free_tier_limiter limiter;
    std::vector<bool> free_tier;
    std::shared_ptr<const budget_keys> default_keys = std::make_shared<budget_keys>();
    std::uint64_t next_request_id = 1;

    std::uint32_t max_tokens(const chat_request& req) const
    {
        return req.max_tokens.value_or(policy.max_tokens);
    }

    // The tier a request starts at: a user rule, or past tiers whose context cannot hold it.
    std::uint32_t first_tier(const chat_request& req, escalation_reason& why) const
    {
        std::uint32_t t = 0;
        if (policy.route) {
            t = std::min<std::uint32_t>(
                policy.route(req), static_cast<std::uint32_t>(policy.tiers.size() - 1));
            if (t > 0)
                why = escalation_reason::rule;
        }
        // A typical tokenizer's four bytes a token: an estimate, not the budget's bound.
        const std::uint64_t estimate = prompt_bound(req) / 4 + max_tokens(req);
        while (t + 1 < policy.tiers.size()) {
            const auto* p = prices.find(policy.tiers[t]);
            if (p == nullptr || !p->context_length || estimate <= *p->context_length)
                break;
            ++t;
            why = escalation_reason::context;
        }
        return t;
    }

    // Takes a free request from the fleet's quota when the budget store shares one (Redis),
    // else from this router's own count: 0 when taken, else how long to wait.
    std::int64_t take_free(std::int64_t now_ms)
    {
        // What this router learnt (a 429's reset, a day spent) holds even when the fleet's
        // count has room.
        if (const auto held = limiter.held_back(now_ms); held != 0)
            return held;
        if (guard) {
            if (const auto wait =
                    guard->take_free_request(now_ms, limiter.per_minute(), limiter.per_day()))
                return *wait;
        }
        return limiter.acquire(now_ms);
    }

    enum class gate { go, skip, fail };

    // Waits for the free tier's quota until `deadline`; or says to skip the tier (the
    // `escalate` opt-in, when a tier is left) or to fail the request with rate_limited.
    asio::awaitable<gate> free_gate(bool last_tier, steady_clock::time_point deadline)
    {
        for (;;) {
            const auto wait = take_free(unix_now_ms());
            if (wait == 0)
                co_return gate::go;
            if (policy.free_tier.when_empty == on_free_tier_empty::escalate && !last_tier)
                co_return gate::skip;
            if (steady_clock::now() + std::chrono::milliseconds(wait) > deadline)
                co_return gate::fail;
            asio::steady_timer t(co_await asio::this_coro::executor);
            t.expires_after(std::chrono::milliseconds(wait));
            auto [tec] = co_await t.async_wait(tuple_awaitable);
            if (tec)
                co_return gate::fail; // cancelled: the caller's cancellation is seen next
        }
    }

    // The record of an attempt, in a scratch object whose strings keep their capacity (the
    // router runs on one thread, and the store copies what it keeps).
    attempt_record& ledger_record(const attempt_run& run, const call_info& call, std::int64_t t0)
    {
        const auto& a = run.rec;
        attempt_record& r = scratch_record;
        r.time_ms = t0;
        r.request_id = call.request_id;
        r.generation_id = a.generation_id;
        r.tier = a.tier;
        r.model_asked = a.model_asked;
        r.model_served = a.model_served;
        r.provider = run.response.provider;
        r.prompt_tokens = a.prompt_tokens;
        r.completion_tokens = a.completion_tokens;
        r.cost = a.cost;
        r.outcome = a.outcome;
        r.latency_us = a.latency.count();
        r.keys = call.keys->joined;
        r.reason = run.arrived_by == escalation_reason::none ? "" : to_string(run.arrived_by);
        r.anomaly = a.anomaly;
        r.estimated = false;
        r.record_id = 0;
        return r;
    }
    attempt_record scratch_record;

    // Accounts for an attempt that ended: settles or releases its reservation and fills the
    // attempt's cost.
    void account(
        attempt_run& run,
        reservation& res,
        const diagnostics& diag,
        const call_info& call,
        std::int64_t t0)
    {
        auto& a = run.rec;
        const bool paid = res.active() && !res.free();
        bool unknown = false;
        if (run.answered) {
            const auto& u = run.response.usage;
            if (u) {
                a.prompt_tokens = u->prompt_tokens;
                a.completion_tokens = u->completion_tokens;
            }
            if (const auto booked = booked_cost(a, run.response))
                a.cost = *booked;
            else
                unknown = true; // no usage and no price: charged its reservation
        } else if (!diag.request_sent) {
            a.outcome = attempt_outcome::not_sent; // nothing reached the provider: free
        } else if (diag.http_status >= 400) {
            a.outcome = attempt_outcome::error; // OpenRouter does not bill a refused request
        } else {
            unknown = true; // cut, timed out or cancelled after sending: the bill is unknown
        }
        if (!res.active()) {
            a.cost_estimated = unknown;
            return;
        }
        if (a.outcome == attempt_outcome::not_sent) {
            res.release();
            return;
        }
        res.mark_sent();
        auto& rec = ledger_record(run, call, t0);
        if (unknown) {
            (void)res.settle_unknown(rec);
            a.cost_estimated = paid;
        } else {
            (void)res.settle(rec);
        }
        // The guard may have raised the cost (an anomaly is booked at no less than the
        // reservation) or found a surprise.
        a.cost = rec.cost;
        a.anomaly = rec.anomaly;
    }

    // The cost of an answered attempt: the provider's report when frugal can take it as a
    // bill, else its tokens at catalog prices, flagging what it could not take. The served
    // model is the provider's word: tokens are priced at the dearer of it and the model asked,
    // so naming a cheaper (or free) model never lowers the books. Nothing when neither is
    // priced (the reservation is then charged whole).
    std::optional<money> booked_cost(cascade_attempt& a, const chat_response& response) const
    {
        const auto& u = response.usage;
        const auto& served = response.model.empty() ? a.model_asked : response.model;
        const auto* asked_price = prices.find(a.model_asked);
        const bool asked_free = asked_price != nullptr && asked_price->free();
        if (u && u->cost) {
            // A paid model reporting exactly $0 for tokens it served, without BYOK, reports
            // no bill frugal can take.
            const bool zero_for_paid = *u->cost == money() && !asked_free &&
                                       !u->is_byok.value_or(false) &&
                                       u->prompt_tokens + u->completion_tokens > 0;
            if (!zero_for_paid)
                return *u->cost;
            a.anomaly = "usage.cost was 0 for a paid model without BYOK";
        } else if (u && !u->cost_rejected.empty()) {
            a.anomaly = "usage.cost was " + u->cost_rejected;
        }
        if (!u) // no tokens to price: free only when the model asked is
            return asked_free ? std::optional<money>(money()) : std::nullopt;
        const auto by_asked = prices.token_cost(a.model_asked, *u);
        const auto by_served = prices.token_cost(served, *u);
        if (by_asked && by_served)
            return std::max(*by_asked, *by_served);
        if (by_asked)
            return *by_asked;
        if (by_served && !asked_free)
            return *by_served;
        return std::nullopt;
    }

    // What the guard is asked for an attempt's request: its prompt's bound and max_tokens.
    reserve_request reserve_ask(const chat_request& req, const call_info& call) const
    {
        reserve_request rr;
        rr.model = req.model;
        rr.prompt_bytes = prompt_bound(req);
        rr.max_tokens = req.max_tokens.value_or(0);
        rr.keys = call.keys->keys;
        rr.request_id = call.request_id;
        rr.extra_body = req.extra_body;
        return rr;
    }

    // A 429 from a free model teaches the limiter the server's limits and reset (and the
    // fleet's, through a shared store).
    void note_rate_limit(std::uint32_t tier, const error_code& ec, const diagnostics& diag)
    {
        if (!free_tier[tier])
            return;
        // Each request the client retried on its own went to the free tier too.
        if (diag.attempts > 1)
            limiter.count_extra(static_cast<std::uint32_t>(diag.attempts - 1), unix_now_ms());
        if (ec != error::rate_limited)
            return;
        const auto until = limiter.learn(diag, unix_now_ms());
        if (guard)
            (void)guard->block_free_until(until);
    }

    // "20 a minute, 50 a day", with only the limits known.
    std::string quota_text() const
    {
        std::string t;
        if (limiter.per_minute() != free_tier_limiter::unknown)
            t = std::to_string(limiter.per_minute()) + " a minute";
        if (limiter.per_day() != free_tier_limiter::unknown)
            t += (t.empty() ? "" : ", ") + std::to_string(limiter.per_day()) + " a day";
        return t.empty() ? "as the server limits it" : t;
    }

    // The record of a free tier not asked because its quota was used up: skipped (the
    // `escalate` opt-in, `reason` rate_limited) or given up after the wait.
    cascade_attempt skipped_attempt(std::uint32_t tier, escalation_reason reason) const
    {
        cascade_attempt a;
        a.tier = tier;
        a.model_asked = policy.tiers[tier];
        a.outcome = attempt_outcome::not_sent;
        a.error = error::rate_limited;
        a.reason = reason;
        a.detail = reason == escalation_reason::none
                       ? "the free tier's quota (" + quota_text() + ") did not come back within " +
                             std::to_string(policy.free_tier.max_wait.count()) + " ms"
                       : "the free tier's quota is used up; skipped (when_empty: escalate)";
        return a;
    }

    // Reserves without waiting, which decides most requests; false when the budget is short
    // or refuses (then `reserve` waits for settlements, or reports the denial).
    bool try_reserve(const chat_request& req, const call_info& call, reservation& res)
    {
        if (!guard)
            return true;
        const auto rr = reserve_ask(req, call);
        error_code ec;
        res = guard->try_reserve(rr, ec, nullptr, client->get_executor());
        return res.active();
    }

    // Reserves for tier `tier`, waiting for settlements when the budget is short, or fills
    // `run` with the denial.
    asio::awaitable<bool>
    reserve(attempt_run& run, const chat_request& req, const call_info& call, reservation& res)
    {
        if (!guard)
            co_return true;
        const auto rr = reserve_ask(req, call);
        auto [ec, got] = co_await guard->async_reserve(rr, tuple_awaitable);
        if (ec) {
            run.rec.outcome = attempt_outcome::not_sent;
            run.rec.error = ec;
            run.rec.detail = got.why_denied();
            run.budget_denied = ec == error::budget_exhausted || ec == error::budget_closed;
            if (run.budget_denied) {
                auto& rec = ledger_record(run, call, unix_now_ms());
                rec.outcome = attempt_outcome::denied;
                (void)guard->record(rec);
            }
            co_return false;
        }
        res = std::move(got);
        co_return true;
    }

    chat_request tier_request(const chat_request& base, std::uint32_t tier) const
    {
        chat_request req = base;
        req.model = policy.tiers[tier];
        req.models.clear(); // the cascade, not OpenRouter's fallback list, picks the next model
        req.max_tokens = max_tokens(base);
        return req;
    }

    // One whole attempt: reserve, send, account.
    // `base` lives in the cascade's frame, which outlives every attempt (a hedge waits for both).
    asio::awaitable<attempt_run> attempt(
        const chat_request& base,
        std::uint32_t tier,
        const call_info& call,
        escalation_reason arrived_by)
    {
        co_await asio::this_coro::throw_if_cancelled(false); // a hedge runs it as a thread
        attempt_run run;
        run.arrived_by = arrived_by;
        run.rec.tier = tier;
        run.rec.model_asked = policy.tiers[tier];
        auto req = tier_request(base, tier);
        const auto t0_ms = unix_now_ms();
        reservation res;
        if (!try_reserve(req, call, res) && !co_await reserve(run, req, call, res))
            co_return run;
        if (res.active())
            req.max_tokens = res.max_tokens();

        // The caller's cancellation and the guard's both stop the request.
        asio::cancellation_signal sig;
        auto cs = co_await asio::this_coro::cancellation_state;
        const auto t0 = steady_clock::now();
        diagnostics diag;
        error_code ec;
        if (cs.cancelled() != asio::cancellation_type::none || res.cancel_reason()) {
            ec = asio::error::operation_aborted;
        } else if (!res.cancellation_slot().is_connected()) {
            // Nothing but the caller can stop this attempt (a free model, or no guard): the
            // client's coroutine is awaited in this one, sharing its cancellation.
            call_options opts;
            opts.retry_rate_limited = !free_tier[tier];
            auto [cec, resp] = co_await client->chat(req, &diag, std::move(opts));
            ec = cec;
            run.response = std::move(resp);
        } else {
            if (cs.slot().is_connected())
                cs.slot().assign(forward_to{&sig});
            auto guard_slot = res.cancellation_slot();
            if (guard_slot.is_connected())
                guard_slot.assign(forward_to{&sig});
            // The generation id goes to the reservation as soon as the response head names
            // it: a crash before the body ends leaves enough to look the bill up.
            call_options opts;
            opts.retry_rate_limited = !free_tier[tier];
            opts.on_generation = [&res](const std::string& id) { res.note_generation(id); };
            auto [cec, resp] = co_await client->async_chat(
                req, diag, std::move(opts),
                asio::bind_cancellation_slot(sig.slot(), tuple_awaitable));
            if (cs.slot().is_connected())
                cs.slot().clear();
            if (guard_slot.is_connected())
                guard_slot.clear();
            ec = cec;
            run.response = std::move(resp);
        }
        run.rec.latency =
            std::chrono::duration_cast<std::chrono::microseconds>(steady_clock::now() - t0);
        run.answered = !ec;
        run.rec.error = ec;
        if (ec && ec != asio::error::operation_aborted)
            run.rec.detail = diag.to_string();
        run.rec.model_served = run.response.model;
        run.rec.generation_id = run.response.id.empty() ? diag.generation_id : run.response.id;
        if (ec == asio::error::operation_aborted)
            run.rec.outcome = attempt_outcome::cancelled;
        else if (ec)
            run.rec.outcome = attempt_outcome::unknown;
        note_rate_limit(tier, ec, diag);
        account(run, res, diag, call, t0_ms);
        co_return run;
    }

    // Two attempts racing: the first acceptable answer wins and the other is cancelled (and
    // settled). `first` has already been started and has not answered within hedge_after.
    struct hedge {
        explicit hedge(const asio::any_io_executor& ex) : wake(ex) {}
        asio::steady_timer wake;
        std::optional<attempt_run> done[2];
        bool running[2] = {false, false};
        asio::cancellation_signal stop[2];
    };

    void spawn_attempt(
        const std::shared_ptr<hedge>& h,
        int which,
        const chat_request& base,
        std::uint32_t tier,
        const call_info& call,
        escalation_reason arrived_by)
    {
        h->running[which] = true;
        asio::co_spawn(
            client->get_executor(), attempt(base, tier, call, arrived_by),
            asio::bind_cancellation_slot(
                h->stop[which].slot(), [h, which](const std::exception_ptr&, attempt_run r) {
                    h->running[which] = false;
                    h->done[which] = std::move(r);
                    h->wake.cancel();
                }));
    }

    asio::awaitable<void> wait_for(const std::shared_ptr<hedge>& h, steady_clock::duration d)
    {
        h->wake.expires_after(d);
        co_await h->wake.async_wait(tuple_awaitable);
    }

    bool acceptable(const chat_request& base, const attempt_run& run) const
    {
        if (!run.answered)
            return false;
        return judge(policy, base, run.response) == escalation_reason::none;
    }

    // Runs tier `tier` hedged with `tier + 1`; gives the runs in the order they were started
    // (one or two).
    asio::awaitable<std::vector<attempt_run>> hedged(
        const chat_request& base,
        std::uint32_t tier,
        const call_info& call,
        escalation_reason arrived_by,
        cascade_machine& m)
    {
        auto h = std::make_shared<hedge>(client->get_executor());
        auto cs = co_await asio::this_coro::cancellation_state;
        struct stop_both {
            hedge* h;
            void operator()(asio::cancellation_type t) const
            {
                // Only attempts still running: see cascade_stream_state::stop_producer.
                for (int i = 0; i < 2; ++i)
                    if (h->running[i])
                        h->stop[i].emit(t);
            }
        };
        if (cs.slot().is_connected())
            cs.slot().assign(stop_both{h.get()});
        spawn_attempt(h, 0, base, tier, call, arrived_by);
        co_await wait_for(h, policy.hedge_after);
        bool second = false;
        if (!h->done[0]) {
            second = true;
            spawn_attempt(h, 1, base, tier + 1, call, m.hedged());
        }
        bool cancelled_other = false;
        for (;;) {
            const bool d0 = h->done[0].has_value();
            const bool d1 = !second || h->done[1].has_value();
            if (d0 && d1)
                break;
            if (!cancelled_other) {
                // The first acceptable answer wins; the other attempt is cancelled.
                if (d0 && acceptable(base, *h->done[0]) && second) {
                    h->stop[1].emit(asio::cancellation_type::terminal);
                    cancelled_other = true;
                } else if (second && h->done[1] && acceptable(base, *h->done[1])) {
                    h->stop[0].emit(asio::cancellation_type::terminal);
                    cancelled_other = true;
                }
            }
            co_await wait_for(h, std::chrono::hours(24));
        }
        if (cs.slot().is_connected())
            cs.slot().clear();
        std::vector<attempt_run> out;
        out.push_back(std::move(*h->done[0]));
        if (second)
            out.push_back(std::move(*h->done[1]));
        co_return out;
    }

    // How an attempt ended, for the machine. An attempt the guard stopped (its cap hit) is a
    // failure the policy judges; only the caller's cancellation ends the cascade.
    attempt_end end_of(const chat_request& base, const attempt_run& run, bool caller_cancelled) const
    {
        attempt_end e;
        e.tier = run.rec.tier;
        e.error = run.rec.error;
        e.arrived_by = run.arrived_by;
        if (run.budget_denied)
            e.ended = attempt_end::how::denied;
        else if (run.rec.error == asio::error::operation_aborted && caller_cancelled)
            e.ended = attempt_end::how::cancelled;
        else if (run.answered) {
            e.ended = attempt_end::how::answered;
            e.verdict = judge(policy, base, run.response);
        } else
            e.ended = attempt_end::how::failed;
        return e;
    }

    // The free tier's wait, for the machine: the skipped or given-up tier is recorded.
    asio::awaitable<quota_wait> ask_free(
        const cascade_step& step, steady_clock::time_point deadline, cascade_result& out)
    {
        const bool last = step.tier + 1 == policy.tiers.size();
        const auto g = co_await free_gate(last, deadline);
        if (g == gate::go)
            co_return quota_wait::go;
        auto cs = co_await asio::this_coro::cancellation_state;
        if (cs.cancelled() == asio::cancellation_type::none) // else the caller stopped waiting
            out.attempts.push_back(skipped_attempt(
            step.tier,
            g == gate::skip && !last ? escalation_reason::rate_limited : escalation_reason::none));
        co_return g == gate::skip ? quota_wait::skip : quota_wait::fail;
    }

    std::string free_wait_note() const
    {
        return "; the free tier did not come back within " +
               std::to_string(policy.free_tier.max_wait.count()) + " ms";
    }

    // Runs a cascade into `op`: the result is built where the handler will take it from, so
    // it is moved once at completion rather than through every layer of the handler chain.
    asio::awaitable<void> complete(chat_request req, std::shared_ptr<complete_op> op)
    {
        // Cancellation is checked where it matters; an await must not throw for it.
        co_await asio::this_coro::throw_if_cancelled(false);
        cascade_result& out = op->result;
        const call_info call{new_request_id(), op->keys ? op->keys : default_keys};
        escalation_reason pre = escalation_reason::none;
        const std::uint32_t first = first_tier(req, pre);
        cascade_machine m(policy, free_tier, first, pre);
        std::optional<chat_response> fallback; // the answer of m.fallback()
        auto cs = co_await asio::this_coro::cancellation_state;
        auto cancelled = [&] { return cs.cancelled() != asio::cancellation_type::none; };
        const auto free_deadline = steady_clock::now() + policy.free_tier.max_wait;
        auto step = m.start();
        for (;;) {
            if (step.what == cascade_step::kind::ask_free || step.what == cascade_step::kind::send) {
                if (cancelled()) {
                    attempt_end e;
                    e.tier = step.tier;
                    e.ended = attempt_end::how::cancelled;
                    step = m.ended(std::span<attempt_end>(&e, 1), false);
                    continue;
                }
            }
            if (step.what == cascade_step::kind::ask_free) {
                const auto g = co_await ask_free(step, free_deadline, out);
                if (g != quota_wait::go && cancelled())
                    continue; // reported at the top
                step = m.gated(g);
                continue;
            }
            if (step.what == cascade_step::kind::send) {
                std::vector<attempt_run> runs; // two when hedged; one is the common case
                attempt_run single;
                if (step.hedge)
                    runs = co_await hedged(req, step.tier, call, step.arrived_by, m);
                else
                    single = co_await attempt(req, step.tier, call, step.arrived_by);
                const std::span<attempt_run> done = runs.empty()
                                                        ? std::span<attempt_run>(&single, 1)
                                                        : std::span<attempt_run>(runs);
                // The winner is judged last: an acceptable answer beats one cancelled for it.
                if (done.size() == 2 && acceptable(req, done[0]) && !acceptable(req, done[1]))
                    std::swap(done[0], done[1]);
                attempt_end ends[2];
                for (std::size_t i = 0; i < done.size(); ++i)
                    ends[i] = end_of(req, done[i], cancelled());
                step = m.ended(
                    std::span<attempt_end>(ends, done.size()),
                    steady_clock::now() < free_deadline);
                for (std::size_t i = 0; i < done.size(); ++i) {
                    auto& run = done[i];
                    run.rec.reason = ends[i].recorded;
                    out.total_cost += run.rec.cost;
                    out.attempts.push_back(run.rec);
                    if (!run.answered)
                        continue;
                    if (step.what == cascade_step::kind::accept && run.rec.tier == step.tier)
                        out.response = std::move(run.response);
                    else if (m.fallback() == run.rec.tier)
                        fallback = std::move(run.response);
                }
                if (step.free_wait_over)
                    out.attempts.back().detail += free_wait_note();
                continue;
            }
            // accept, keep or fail: the cascade ended.
            if (step.what != cascade_step::kind::accept && fallback)
                out.response = std::move(*fallback); // kept, or left for a look when failed
            m.fill(out, step);
            op->ec = step.what == cascade_step::kind::fail ? step.error : error_code();
            co_return;
        }
    }
};

// The streamed cascade: a producer coroutine reads the tiers' streams and hands events over a
// channel of capacity one, so it reads no further ahead than the consumer.
struct cascade_stream_state {
    using channel = asio::experimental::channel<void(error_code, cascade_event)>;
    explicit cascade_stream_state(const asio::any_io_executor& ex) : executor(ex), events(ex, 1) {}
    asio::any_io_executor executor;
    channel events;
    asio::cancellation_signal stop; // stops the producer
    bool finished = false;          // the consumer has had the last event
    bool producer_done = false;     // the producer's coroutine has returned

    // Stops the producer, on its executor and only while it runs: co_spawn's cancellation
    // handler keeps a pointer into this state, so a signal emitted after the coroutine ended,
    // or from another thread after this state is gone, would write into freed memory.
    static void stop_producer(const std::shared_ptr<cascade_stream_state>& st)
    {
        asio::dispatch(st->executor, [st] {
            st->events.close();
            if (!st->producer_done)
                st->stop.emit(asio::cancellation_type::terminal);
        });
    }
};

namespace {

asio::awaitable<void> produce(
    std::shared_ptr<router_impl> r,
    std::shared_ptr<cascade_stream_state> st,
    chat_request base,
    stream_mode mode,
    std::shared_ptr<const budget_keys> keys)
{
    // Cancellation is checked where it matters; an await must not throw for it.
    co_await asio::this_coro::throw_if_cancelled(false);
    auto send = [&](error_code ec, cascade_event ev) -> asio::awaitable<bool> {
        auto [sec] = co_await st->events.async_send(ec, std::move(ev), tuple_awaitable);
        co_return !sec;
    };
    auto result = std::make_shared<cascade_result>();
    auto& out = *result;
    const call_info call{r->new_request_id(), keys ? std::move(keys) : r->default_keys};
    escalation_reason pre = escalation_reason::none;
    const std::uint32_t first = r->first_tier(base, pre);
    cascade_machine m(r->policy, r->free_tier, first, pre);
    const auto free_deadline = steady_clock::now() + r->policy.free_tier.max_wait;
    const auto n = static_cast<std::uint32_t>(r->policy.tiers.size());
    const bool json_wanted = wants_json(base);
    std::optional<chat_response> fallback; // the answer of m.fallback()
    bool fallback_shown = false; // its text is on the consumer's screen, not retracted
    escalation_reason pending = escalation_reason::none; // an `escalating` not yet announced
    auto cs = co_await asio::this_coro::cancellation_state;
    auto cancelled = [&] { return cs.cancelled() != asio::cancellation_type::none; };
    auto step = m.start();

    for (;;) {
        if (step.what == cascade_step::kind::ask_free || step.what == cascade_step::kind::send) {
            if (cancelled()) {
                attempt_end e;
                e.tier = step.tier;
                e.ended = attempt_end::how::cancelled;
                step = m.ended(std::span<attempt_end>(&e, 1), false);
                continue;
            }
        }
        if (step.what == cascade_step::kind::ask_free) {
            const auto g = co_await r->ask_free(step, free_deadline, out);
            if (g != quota_wait::go && cancelled())
                continue; // reported at the top
            step = m.gated(g);
            continue;
        }
        if (step.what != cascade_step::kind::send)
            break;

        const std::uint32_t t = step.tier;
        const bool last = t + 1 == n;
        attempt_run run;
        run.arrived_by = step.arrived_by;
        run.rec.tier = t;
        run.rec.model_asked = r->policy.tiers[t];
        auto req = r->tier_request(base, t);
        const auto t0_ms = unix_now_ms();
        reservation res;
        if (!r->try_reserve(req, call, res) && !co_await r->reserve(run, req, call, res)) {
            auto e = r->end_of(base, run, cancelled());
            step = m.ended(std::span<attempt_end>(&e, 1), steady_clock::now() < free_deadline);
            run.rec.reason = e.recorded;
            out.attempts.push_back(run.rec);
            continue;
        }
        if (res.active())
            req.max_tokens = res.max_tokens();
        // The escalation is announced once it is sure to happen (its reservation granted), so
        // a denied one leaves the cheap answer on screen.
        if (pending != escalation_reason::none) {
            cascade_event ev;
            ev.type = cascade_event::kind::escalating;
            ev.tier = t;
            ev.reason = pending;
            pending = escalation_reason::none;
            fallback_shown = false;
            if (!co_await send({}, std::move(ev)))
                co_return;
        }

        asio::cancellation_signal sig;
        if (cs.slot().is_connected())
            cs.slot().assign(forward_to{&sig});
        auto guard_slot = res.cancellation_slot();
        if (guard_slot.is_connected())
            guard_slot.assign(forward_to{&sig});
        const auto t0 = steady_clock::now();
        chat_stream s;
        call_options opts;
        opts.retry_rate_limited = !r->free_tier[t];
        auto [ec] = co_await r->client->async_start_stream(
            std::move(req), s, opts, asio::bind_cancellation_slot(sig.slot(), tuple_awaitable));
        // The generation id goes to the reservation as soon as it is known (the response
        // head, else the first chunk): a crash mid-stream leaves enough to look the bill up.
        bool noted = false;
        auto note_generation = [&] {
            if (noted || !res.active() || res.free())
                return;
            const auto& id =
                s.response().id.empty() ? s.diagnostics().generation_id : s.response().id;
            if (!id.empty()) {
                res.note_generation(id);
                noted = true;
            }
        };
        if (!ec)
            note_generation();
        std::string text;
        std::vector<std::string> held; // buffer mode: deltas not shown yet
        bool shown = false;
        escalation_reason early = escalation_reason::none;
        std::uint64_t tokens = 0;
        bool consumer_gone = false;
        const bool live = mode == stream_mode::stream || last;
        while (!ec && !s.done()) {
            auto [rec, d] = co_await s.async_read_delta(
                asio::bind_cancellation_slot(sig.slot(), tuple_awaitable));
            ec = rec;
            if (ec)
                break;
            note_generation();
            tokens += d.events;
            if (res.active()) {
                res.meter(tokens);
                if (res.cancel_reason()) {
                    ec = asio::error::operation_aborted; // the guard stopped it between reads
                    break;
                }
            }
            if (d.content.empty())
                continue;
            text += d.content;
            if (!last) {
                early = judge_early(r->policy, json_wanted, text);
                if (early != escalation_reason::none)
                    break; // abandon the stream: destroying it closes the connection
            }
            if (live) {
                cascade_event ev;
                ev.tier = t;
                ev.text = std::move(d.content);
                shown = true;
                if (!co_await send({}, std::move(ev))) {
                    consumer_gone = true;
                    break;
                }
            } else {
                held.push_back(std::move(d.content));
            }
        }
        if (cs.slot().is_connected())
            cs.slot().clear();
        if (guard_slot.is_connected())
            guard_slot.clear();
        run.rec.latency =
            std::chrono::duration_cast<std::chrono::microseconds>(steady_clock::now() - t0);
        const bool ended = !ec && s.done() && early == escalation_reason::none && !consumer_gone;
        run.answered = ended;
        run.response = s.response();
        run.rec.error = ec;
        run.rec.model_served = run.response.model;
        run.rec.generation_id =
            run.response.id.empty() ? s.diagnostics().generation_id : run.response.id;
        if (!ended) {
            run.rec.outcome = ec && ec != asio::error::operation_aborted
                                  ? attempt_outcome::unknown
                                  : attempt_outcome::cancelled;
        }
        diagnostics diag = s.diagnostics();
        if (!ended && !ec)
            diag.request_sent = true; // abandoned mid-stream: it was sent
        if (ec && ec != asio::error::operation_aborted)
            run.rec.detail = diag.to_string();
        s = chat_stream();            // abandons the connection now, before accounting
        r->note_rate_limit(t, ec, diag);
        r->account(run, res, diag, call, t0_ms);
        out.total_cost += run.rec.cost;

        attempt_end e = r->end_of(base, run, cancelled() || consumer_gone);
        if (consumer_gone)
            e.ended = attempt_end::how::cancelled;
        else if (early != escalation_reason::none) {
            e.ended = attempt_end::how::abandoned;
            e.verdict = early;
        }
        e.shown = shown;
        step = m.ended(std::span<attempt_end>(&e, 1), steady_clock::now() < free_deadline);
        run.rec.reason = e.recorded;
        out.attempts.push_back(run.rec);
        if (step.free_wait_over)
            out.attempts.back().detail += r->free_wait_note();
        if (step.what == cascade_step::kind::accept) {
            for (auto& piece : held) { // accepted: buffered text is shown now
                cascade_event ev;
                ev.tier = t;
                ev.text = std::move(piece);
                if (!co_await send({}, std::move(ev)))
                    co_return;
            }
            out.response = std::move(run.response);
            break;
        }
        if (ended) {
            fallback = std::move(run.response);
            fallback_shown = shown;
        }
        if (shown && e.recorded != escalation_reason::none)
            pending = e.recorded; // its text must be taken back if a higher tier answers
    }

    if (step.what == cascade_step::kind::keep && fallback) {
        // The budget kept the lower tier's answer: shown now unless it already is.
        if (!fallback_shown && !fallback->content.empty()) {
            cascade_event ev;
            ev.tier = step.tier;
            ev.text = fallback->content;
            if (!co_await send({}, std::move(ev)))
                co_return;
        }
        out.response = std::move(*fallback);
    }
    m.fill(out, step);
    st->finished = true;
    // A named event: GCC 12 copies a braced temporary into a coroutine's parameter bitwise,
    // leaving its string pointing into this frame.
    cascade_event finished;
    finished.type = cascade_event::kind::done;
    finished.tier = step.what == cascade_step::kind::fail ? 0 : step.tier;
    finished.result = result; // the attempts and what each cost, for a failure too
    (void)co_await send(
        step.what == cascade_step::kind::fail ? step.error : error_code(), std::move(finished));
}

} // namespace

} // namespace detail

// router

router::router(
    chat_client& client,
    cascade_policy policy,
    price_catalog prices,
    std::optional<budget_guard> guard)
    : impl_(std::make_shared<detail::router_impl>(
          client, std::move(policy), std::move(prices), std::move(guard)))
{
}

router::~router() = default;
router::router(router&&) noexcept = default;
router& router::operator=(router&&) noexcept = default;

const cascade_policy& router::policy() const noexcept
{
    return impl_->policy;
}

void router::set_budget_keys(std::vector<std::string> keys)
{
    impl_->default_keys = std::make_shared<detail::budget_keys>(std::move(keys));
}

void router::learn(const key_info& key)
{
    impl_->limiter.learn(key);
}

namespace {

std::shared_ptr<const detail::budget_keys> keys_of(std::vector<std::string> keys)
{
    if (keys.empty())
        return nullptr; // the router's own
    return std::make_shared<detail::budget_keys>(std::move(keys));
}

} // namespace

void router::async_complete_impl(
    chat_request req,
    std::vector<std::string> keys,
    asio::any_completion_handler<void(error_code, cascade_result)> handler)
{
    auto slot = asio::get_associated_cancellation_slot(handler);
    auto ex = impl_->client->get_executor();
    auto op = std::make_shared<detail::complete_op>(std::move(handler), keys_of(std::move(keys)));
    asio::co_spawn(
        ex, impl_->complete(std::move(req), op),
        asio::bind_cancellation_slot(slot, [ex, op](const std::exception_ptr& ep) {
            if (ep) {
                op->ec = asio::error::no_memory; // only bad_alloc and bugs throw in here
                op->result = {};
            }
            // Completes on the handler's executor, moving the result once.
            const auto hex = asio::get_associated_executor(op->handler, ex);
            asio::dispatch(hex, [op] { std::move(op->handler)(op->ec, std::move(op->result)); });
        }));
}

void router::start_stream(
    chat_request request, stream_mode mode, cascade_stream& out, std::vector<std::string> keys)
{
    auto ex = impl_->client->get_executor();
    auto st = std::make_shared<detail::cascade_stream_state>(ex);
    out.state_ = st;
    asio::co_spawn(
        ex, detail::produce(impl_, st, std::move(request), mode, keys_of(std::move(keys))),
        asio::bind_cancellation_slot(
            st->stop.slot(), [st](const std::exception_ptr&) { st->producer_done = true; }));
}

// cascade_stream

cascade_stream::cascade_stream() = default;
cascade_stream::~cascade_stream()
{
    if (state_)
        detail::cascade_stream_state::stop_producer(state_); // at its next send or read
}
cascade_stream::cascade_stream(cascade_stream&&) noexcept = default;
cascade_stream& cascade_stream::operator=(cascade_stream&& o) noexcept
{
    if (this != &o) {
        this->~cascade_stream();
        new (this) cascade_stream(std::move(o));
    }
    return *this;
}

asio::any_io_executor cascade_stream::executor() const
{
    return state_ ? state_->executor : asio::any_io_executor();
}

void cascade_stream::async_next_impl(
    const asio::any_io_executor& ex,
    asio::any_completion_handler<void(error_code, cascade_event)> h)
{
    if (!state_ || (state_->finished && !state_->events.ready())) {
        asio::post(
            ex,
            asio::append(std::move(h), error_code(error::stream_not_readable), cascade_event{}));
        return;
    }
    auto st = state_;
    auto slot = asio::get_associated_cancellation_slot(h);
    // A cancelled read stops the whole cascade: the attempt in flight is abandoned.
    st->events.async_receive(asio::bind_cancellation_slot(
        slot, [st, h = std::move(h)](error_code ec, cascade_event ev) mutable {
            if (ec == asio::experimental::error::channel_cancelled ||
                ec == asio::error::operation_aborted) {
                detail::cascade_stream_state::stop_producer(st);
                st->finished = true;
                ec = asio::error::operation_aborted;
            } else if (ec == asio::experimental::error::channel_closed) {
                ec = error::stream_not_readable;
            }
            if (ec || ev.type == cascade_event::kind::done)
                st->finished = true;
            std::move(h)(ec, std::move(ev));
        }));
}

} // namespace frugal
