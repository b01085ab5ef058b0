// One attempt of a cascade and its money: the free tier's quota, the reservation, the
// request, the settlement and the ledger's record; and the hedge that races two attempts.
#include "cascade/router_impl.hpp"

#include <boost/asio/bind_cancellation_slot.hpp>
#include <boost/asio/co_spawn.hpp>
#include <boost/asio/steady_timer.hpp>
#include <boost/asio/this_coro.hpp>

#include <algorithm>

namespace frugal::detail {

// Takes a free request from the fleet's quota when the budget store shares one (Redis),
// else from this router's own count: 0 when taken, else how long to wait.
std::int64_t router_impl::take_free(std::int64_t now_ms)
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

// The free tier's quota now: go, or skip the tier (the `escalate` opt-in, when a tier is
// left), or fail the request with rate_limited (no room before `deadline`); nothing, with
// `wait` set to the milliseconds until it may have room, when the answer is to wait.
std::optional<router_impl::gate>
router_impl::gate_now(bool last_tier, steady_clock::time_point deadline, std::int64_t& wait)
{
    wait = take_free(unix_now_ms());
    if (wait == 0)
        return gate::go;
    if (policy.free_tier.when_empty == on_free_tier_empty::escalate && !last_tier)
        return gate::skip;
    if (steady_clock::now() + std::chrono::milliseconds(wait) > deadline)
        return gate::fail;
    return std::nullopt;
}

// Waits `wait` ms, the time gate_now said the free tier's quota may have room in, then asks
// it again, until it answers or `deadline` passes (see gate_now).
asio::awaitable<router_impl::gate>
router_impl::free_gate(bool last_tier, steady_clock::time_point deadline, std::int64_t wait)
{
    for (;;) {
        asio::steady_timer t(co_await asio::this_coro::executor);
        t.expires_after(std::chrono::milliseconds(wait));
        auto [tec] = co_await t.async_wait(tuple_awaitable);
        if (tec)
            co_return gate::aborted; // only the caller's cancellation stops this timer
        if (const auto g = gate_now(last_tier, deadline, wait))
            co_return *g;
    }
}

// Fills the record of an attempt at `tier` with what is known before anything is asked: the
// tier and its model, the cascade's request id and budget keys, and why the tier was asked.
void router_impl::open_record(
    attempt_head& run, std::uint32_t tier, const call_info& call, escalation_reason arrived_by) const
{
    run.arrived_by = arrived_by;
    auto& a = run.rec;
    a.tier = tier;
    a.model_asked = policy.tiers[tier];
    a.request_id = call.request_id;
    a.keys = call.keys->joined;
    a.reason = arrived_by == escalation_reason::none ? "" : to_string(arrived_by);
}

// Accounts for an attempt that ended: settles or releases its reservation (through the budget
// layer's `settle`, as any caller of the guard would) with the attempt's own record, which
// `settle` fills with the outcome, the cost and any anomaly as the ledger keeps them.
void router_impl::account(
    attempt_head& run, const chat_response* response, reservation& res, const diagnostics& diag)
{
    const bool answered = run.answered && response != nullptr;
    auto& a = run.rec;
    const bool guarded = res.active();
    // An attempt abandoned mid-stream was sent and has no whole answer: the bill is unknown.
    const error_code ended = answered || a.error ? a.error : error_code(asio::error::operation_aborted);
    // The ledger's outcome is the attempt's when the request never reached the provider or was
    // refused with an error status; else the cascade's stays (a whole answer whose bill is
    // unknown is `ok` to it, `unknown` to the ledger: cascade_attempt).
    const auto outcome = a.outcome;
    (void)settle(res, ended, answered ? response : nullptr, diag, a);
    const bool billed = a.outcome != attempt_outcome::not_sent && a.outcome != attempt_outcome::error;
    if (billed)
        a.outcome = outcome;
    if (guarded || !billed)
        return;
    // No guard: `settle` sorted the attempt out and booked nothing; the router's catalog
    // prices an answer, and a cut one stays unknown.
    if (answered) {
        if (const auto booked = prices.booked_cost(a.model_asked, *response, a.anomaly)) {
            a.cost = *booked;
            return;
        }
        // Refused as the bill, a reported cost is still the least of it.
        if (response->usage && response->usage->cost)
            a.cost = *response->usage->cost;
    }
    a.estimated = true;
}

// What the guard is asked for an attempt's request: its prompt's bound and max_tokens.
reserve_request router_impl::reserve_ask(const chat_request& req, const call_info& call) const
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
void router_impl::note_failure(cascade_attempt& rec, const error_code& ec, const diagnostics& diag)
{
    if (ec && ec != asio::error::operation_aborted)
        rec.detail = diag.to_string();
    if (ec == error::rate_limited)
        rec.retry_after = diag.retry_after;
}

void router_impl::note_rate_limit(std::uint32_t tier, const error_code& ec, const diagnostics& diag)
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
std::string router_impl::quota_text() const
{
    std::string t;
    if (limiter.per_minute() != free_tier_limiter::unknown)
        t = std::to_string(limiter.per_minute()) + " a minute";
    if (limiter.per_day() != free_tier_limiter::unknown)
        t += (t.empty() ? "" : ", ") + std::to_string(limiter.per_day()) + " a day";
    return t.empty() ? "as the server limits it" : t;
}

// The record of a free tier not asked because its quota was used up: skipped (the
// `escalate` opt-in, `moved_on` rate_limited) or given up after the wait. Not in the ledger.
cascade_attempt router_impl::skipped_attempt(
    const cascade_step& step, const call_info& call, escalation_reason moved_on) const
{
    attempt_run run;
    open_record(run, step.tier, call, step.arrived_by);
    auto& a = run.rec;
    a.time_ms = unix_now_ms();
    a.outcome = attempt_outcome::not_sent;
    a.error = error::rate_limited;
    a.moved_on = moved_on;
    a.detail = moved_on == escalation_reason::none
                   ? "the free tier's quota (" + quota_text() + ") did not come back within " +
                         std::to_string(policy.free_tier.max_wait.count()) + " ms"
                   : "the free tier's quota is used up; skipped (when_empty: escalate)";
    if (const auto wait = limiter.held_back(a.time_ms); wait > 0)
        a.retry_after = std::chrono::milliseconds(wait);
    return std::move(run.rec);
}

// Reserves without waiting, which decides most requests; false when the budget is short
// or refuses (then `reserve` waits for settlements, or reports the denial).
bool router_impl::try_reserve(const chat_request& req, const call_info& call, reservation& res)
{
    if (!guard)
        return true;
    if (guard->reserves_async()) {
        // A paid reservation is a round trip to the store: awaited (`reserve`), never blocked
        // on here.
        const auto* p = prices.find(req.model);
        if (p == nullptr || !p->free())
            return false;
    }
    const auto rr = reserve_ask(req, call);
    auto got = guard->try_reserve(rr, nullptr, client->get_executor());
    if (!got)
        return false;
    res = std::move(*got);
    return true;
}

// Reserves for tier `tier`, waiting for settlements when the budget is short, or fills
// `run` with the denial.
asio::awaitable<bool> router_impl::reserve(
    attempt_head& run, const chat_request& req, const call_info& call, reservation& res)
{
    if (!guard)
        co_return true;
    const auto rr = reserve_ask(req, call);
    auto [ec, got] = co_await guard->async_reserve(rr, tuple_awaitable);
    if (ec) {
        run.caller_cancelled = ec == asio::error::operation_aborted; // only the caller's
        run.rec.outcome = attempt_outcome::not_sent;
        run.rec.error = ec;
        run.rec.detail = got.why_denied();
        run.budget_denied = ec == error::budget_exhausted || ec == error::budget_closed;
        if (run.budget_denied) {
            // The ledger keeps the denial, dated when it came; to the cascade the attempt was
            // not sent (cascade_attempt).
            run.rec.time_ms = unix_now_ms();
            run.rec.outcome = attempt_outcome::denied;
            (void)guard->record(run.rec);
            run.rec.outcome = attempt_outcome::not_sent;
        }
        co_return false;
    }
    res = std::move(got);
    co_return true;
}

chat_request router_impl::tier_request(const chat_request& base, std::uint32_t tier) const
{
    chat_request req = base;
    req.model = policy.tiers[tier];
    req.models.clear(); // the cascade, not OpenRouter's fallback list, picks the next model
    req.max_tokens = max_tokens(base.max_tokens);
    return req;
}

router_impl::tier_fields router_impl::enter_tier(chat_request& req, std::uint32_t tier) const
{
    tier_fields caller{{}, std::move(req.models), req.max_tokens, false};
    // A caller naming the tier's model (most name the first tier) keeps its string: no copy.
    if (req.model != policy.tiers[tier]) {
        caller.model = std::move(req.model);
        caller.model_differs = true;
        req.model = policy.tiers[tier];
    }
    req.models.clear(); // the cascade, not OpenRouter's fallback list, picks the next model
    req.max_tokens = max_tokens(caller.max_tokens);
    return caller;
}

void router_impl::leave_tier(chat_request& req, tier_fields caller)
{
    if (caller.model_differs)
        req.model = std::move(caller.model);
    req.models = std::move(caller.models);
    req.max_tokens = caller.max_tokens;
}

// An attempt is opened (its record, and a reservation made at once when the budget can
// decide in memory), sent, and ended (its record filled, its reservation settled). The cascade
// sends the common attempt (`sends_plainly`) in its own frame; `attempt` does all of it in one
// of its own. `req` is the tier's request (`enter_tier`, or a hedge's copy); the budget may
// lower its max_tokens. It and `run` and `answer`, which the caller owns (a run is two dozen
// strings, and an awaitable's result is moved several times on its way out), live in the
// cascade's frame, or in the hedge's state, either of which outlives the attempt.

// True when the reservation was made here; else `send_attempt` awaits it.
bool router_impl::begin_attempt(
    chat_request& req,
    std::uint32_t tier,
    const call_info& call,
    escalation_reason arrived_by,
    attempt_head& run,
    reservation& res)
{
    open_record(run, tier, call, arrived_by);
    run.rec.time_ms = unix_now_ms();
    if (!try_reserve(req, call, res))
        return false;
    if (res.active())
        req.max_tokens = res.max_tokens();
    return true;
}

// Whether an attempt reserved at once is sent as a plain request: nothing but the caller can
// stop it (a free model, or no guard), and nothing has. The client's coroutine is then awaited
// in the caller's, sharing its cancellation.
bool router_impl::sends_plainly(reservation& res, bool cancelled)
{
    return !cancelled && !res.cancel_reason() && !res.cancellation_slot().is_connected();
}

call_options router_impl::plain_options(std::uint32_t tier) const
{
    call_options opts;
    opts.retry_rate_limited = !free_tier[tier];
    return opts;
}

asio::awaitable<void> router_impl::attempt(
    chat_request& req,
    std::uint32_t tier,
    const call_info& call,
    escalation_reason arrived_by,
    attempt_head& run,
    chat_response& answer)
{
    co_await asio::this_coro::throw_if_cancelled(false); // a hedge runs it as a thread
    reservation res;
    const bool reserved = begin_attempt(req, tier, call, arrived_by, run, res);
    co_await send_attempt(req, tier, call, run, answer, res, reserved);
}

asio::awaitable<void> router_impl::send_attempt(
    chat_request& req,
    std::uint32_t tier,
    const call_info& call,
    attempt_head& run,
    chat_response& answer,
    reservation& res,
    bool reserved)
{
    if (!reserved) {
        if (!co_await reserve(run, req, call, res))
            co_return;
        if (res.active())
            req.max_tokens = res.max_tokens();
    }

    // The caller's cancellation and the guard's both stop the request.
    asio::cancellation_signal sig;
    auto cs = co_await asio::this_coro::cancellation_state;
    const auto t0 = steady_clock::now();
    diagnostics diag;
    error_code ec;
    if (cs.cancelled() != asio::cancellation_type::none || res.cancel_reason()) {
        ec = asio::error::operation_aborted;
        run.caller_cancelled = cs.cancelled() != asio::cancellation_type::none;
    } else if (sends_plainly(res, false)) {
        auto opts = plain_options(tier); // not a temporary of the co_await (GCC 12)
        std::tie(ec) = co_await client->chat(req, answer, &diag, std::move(opts));
        run.caller_cancelled = ec == asio::error::operation_aborted; // only the caller's
    } else {
        if (cs.slot().is_connected())
            cs.slot().assign(forward_to{&sig, &run.caller_cancelled});
        auto guard_slot = res.cancellation_slot();
        if (guard_slot.is_connected())
            guard_slot.assign(forward_to{&sig});
        // The generation id goes to the reservation as soon as the response head names
        // it: a crash before the body ends leaves enough to look the bill up.
        call_options opts;
        opts.retry_rate_limited = !free_tier[tier];
        opts.on_generation = [&res](const std::string& id) { res.note_generation(id); };
        auto give_back = [&] {
            if (cs.slot().is_connected())
                cs.slot().clear();
            if (guard_slot.is_connected())
                guard_slot.clear();
        };
        try {
            auto [cec, resp] = co_await client->async_chat(
                req, diag, std::move(opts),
                asio::bind_cancellation_slot(sig.slot(), tuple_awaitable));
            ec = cec;
            answer = std::move(resp);
        } catch (...) {
            give_back(); // a handler left in either slot would reach `sig`, gone with this frame
            throw;
        }
        give_back();
    }
    end_attempt(run, tier, ec, diag, answer, res, t0);
}

void router_impl::end_attempt(
    attempt_head& run,
    std::uint32_t tier,
    const error_code& ec,
    diagnostics& diag,
    const chat_response& answer,
    reservation& res,
    steady_clock::time_point sent)
{
    run.rec.latency_us =
        std::chrono::duration_cast<std::chrono::microseconds>(steady_clock::now() - sent).count();
    run.answered = !ec;
    run.rec.error = ec;
    note_failure(run.rec, ec, diag);
    if (ec == asio::error::operation_aborted)
        run.rec.outcome = attempt_outcome::cancelled;
    else if (ec)
        run.rec.outcome = attempt_outcome::unknown;
    note_rate_limit(tier, ec, diag);
    // The client copied the answer's provider and generation id into `diag` (or found the id
    // in a header): the record takes them from there, two allocations fewer; settling reads
    // no more of `diag` than its status (and the id when the record has none).
    run.rec.model_served = answer.model;
    if (diag.provider == answer.provider)
        run.rec.provider = std::move(diag.provider);
    else
        run.rec.provider = answer.provider;
    if (answer.id.empty() || diag.generation_id == answer.id)
        run.rec.generation_id = std::move(diag.generation_id);
    else
        run.rec.generation_id = answer.id;
    account(run, &answer, res, diag);
}

// Two attempts racing: the first acceptable answer wins and the other is cancelled (and
// settled). `first` has already been started and has not answered within hedge_after.
struct router_impl::hedge {
    explicit hedge(const asio::any_io_executor& ex) : wake(ex) {}
    asio::steady_timer wake;
    attempt_run running_run[2]; // what each attempt fills while it runs
    std::optional<attempt_run> done[2];
    chat_request request[2]; // each attempt's own: the two run at once
    bool running[2] = {false, false};
    asio::cancellation_signal stop[2];
    bool caller = false; // the caller stopped both (not a winner its loser)
};

void router_impl::spawn_attempt(
    const std::shared_ptr<hedge>& h,
    int which,
    const chat_request& base,
    std::uint32_t tier,
    const call_info& call,
    escalation_reason arrived_by)
{
    h->running[which] = true;
    h->request[which] = tier_request(base, tier);
    asio::co_spawn(
        client->get_executor(),
        attempt(
            h->request[which], tier, call, arrived_by, h->running_run[which],
            h->running_run[which].response),
        asio::bind_cancellation_slot(h->stop[which].slot(), [h, which](const std::exception_ptr&) {
            h->running[which] = false;
            h->done[which] = std::move(h->running_run[which]);
            h->wake.cancel();
        }));
}

// The caller's cancellation, whatever its type (as `forward_to`), stops the hedge's attempts
// still running: see cascade_stream_state::stop_producer.
struct router_impl::stop_both {
    hedge* h;
    void operator()(asio::cancellation_type) const
    {
        h->caller = true;
        for (int i = 0; i < 2; ++i)
            if (h->running[i])
                h->stop[i].emit(asio::cancellation_type::terminal);
    }
};

// Waits for an attempt of the hedge to end, or `d`. The caller's cancellation goes to the
// attempts (set again before each wait: an await that completes takes the slot over), not to
// the timer, which an attempt's end wakes.
asio::awaitable<void>
router_impl::wait_for(const std::shared_ptr<hedge>& h, steady_clock::duration d)
{
    auto cs = co_await asio::this_coro::cancellation_state;
    if (cs.cancelled() != asio::cancellation_type::none) // came between waits: passed on now
        stop_both{h.get()}(asio::cancellation_type::terminal);
    if (cs.slot().is_connected())
        cs.slot().assign(stop_both{h.get()});
    h->wake.expires_after(d);
    co_await h->wake.async_wait(
        asio::bind_cancellation_slot(asio::cancellation_slot(), tuple_awaitable));
}

bool router_impl::acceptable(const chat_request& base, const attempt_run& run) const
{
    if (!run.answered)
        return false;
    return judge(policy, refusals, base, run.response) == escalation_reason::none;
}

// Runs tier `tier` hedged with `tier + 1`; gives the runs in the order they were started
// (one or two).
asio::awaitable<std::vector<attempt_run>> router_impl::hedged(
    const chat_request& base,
    std::uint32_t tier,
    const call_info& call,
    escalation_reason arrived_by,
    cascade_machine& m)
{
    auto h = std::make_shared<hedge>(client->get_executor());
    auto cs = co_await asio::this_coro::cancellation_state;
    spawn_attempt(h, 0, base, tier, call, arrived_by);
    co_await wait_for(h, policy.hedge_after);
    bool second = false;
    // Slow: the next tier is started too, unless the caller stopped, or its free quota is
    // used up (a hedge never waits for it, nor sends around it).
    if (!h->done[0] && cs.cancelled() == asio::cancellation_type::none &&
        (!free_tier[tier + 1] || take_free(unix_now_ms()) == 0)) {
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
    // Each attempt ran in a coroutine of its own, where the hedge's stop (the caller's, or a
    // winner's for its loser) was its caller's: only the hedge knows which.
    for (auto& run : out)
        run.caller_cancelled = h->caller;
    co_return out;
}

// How an attempt ended, for the machine. An attempt the guard stopped (its cap hit) is a
// failure the policy judges; only the caller's cancellation ends the cascade.
attempt_end
router_impl::end_of(
    const chat_request& base,
    const attempt_head& run,
    const chat_response* response,
    bool caller_cancelled) const
{
    attempt_end e;
    e.tier = run.rec.tier;
    e.error = run.rec.error;
    e.arrived_by = run.arrived_by;
    if (run.budget_denied)
        e.ended = attempt_end::how::denied;
    else if (run.rec.error == asio::error::operation_aborted && caller_cancelled)
        e.ended = attempt_end::how::cancelled;
    else if (run.answered && response != nullptr) {
        e.ended = attempt_end::how::answered;
        // The last tier's answer is kept whatever it says (nothing is above it), so it is not
        // judged: a model passed through a gateway pays no refusal search, JSON parse or
        // pattern match per answer.
        if (run.rec.tier + 1 < policy.tiers.size())
            e.verdict = judge(policy, refusals, base, *response);
    } else
        e.ended = attempt_end::how::failed;
    return e;
}

// What the gate's answer `g` for `step` means to the machine: a tier skipped or failed is
// recorded, unless the caller stopped waiting (`cancelled`).
quota_wait router_impl::gated(
    const cascade_step& step,
    const call_info& call,
    std::vector<cascade_attempt>& attempts,
    gate g,
    bool cancelled) const
{
    if (g == gate::go)
        return quota_wait::go;
    const bool last = step.tier + 1 == policy.tiers.size();
    if (!cancelled)
        attempts.push_back(skipped_attempt(
            step, call,
            g == gate::skip && !last ? escalation_reason::rate_limited : escalation_reason::none));
    return g == gate::skip ? quota_wait::skip : quota_wait::fail;
}

router_impl::before_step router_impl::before_send_now(
    cascade_machine& m,
    const cascade_step& step,
    steady_clock::time_point deadline,
    const call_info& call,
    std::vector<cascade_attempt>& attempts,
    bool cancelled)
{
    if (step.what != cascade_step::kind::ask_free && step.what != cascade_step::kind::send)
        return {};
    if (cancelled)
        return {.next = m.cancelled()};
    if (step.what == cascade_step::kind::send)
        return {};
    std::int64_t wait = 0;
    const auto g = gate_now(step.tier + 1 == policy.tiers.size(), deadline, wait);
    if (!g)
        return {.wait = wait};
    return {.next = m.gated(gated(step, call, attempts, *g, false))};
}

// The free quota's wait, when before_send_now found one: then as there, the caller's
// cancellation (which ends the wait) ends the cascade.
asio::awaitable<std::optional<cascade_step>> router_impl::wait_before_send(
    cascade_machine& m,
    const cascade_step& step,
    std::int64_t wait,
    steady_clock::time_point deadline,
    const call_info& call,
    std::vector<cascade_attempt>& attempts)
{
    const auto g = co_await free_gate(step.tier + 1 == policy.tiers.size(), deadline, wait);
    auto cs = co_await asio::this_coro::cancellation_state;
    const bool cancelled = g == gate::aborted || cs.cancelled() != asio::cancellation_type::none;
    const auto q = gated(step, call, attempts, g, cancelled);
    if (q != quota_wait::go && cancelled)
        co_return m.cancelled();
    co_return m.gated(q);
}

std::string router_impl::free_wait_note() const
{
    return "; the free tier did not come back within " +
           std::to_string(policy.free_tier.max_wait.count()) + " ms";
}

} // namespace frugal::detail
