// One tier's stream of a streamed cascade (reserve, start, read, account), and the streamed
// hedge: two tiers' streams raced to their first content.
#include "cascade/stream_attempt.hpp"

#include <boost/asio/bind_cancellation_slot.hpp>
#include <boost/asio/co_spawn.hpp>
#include <boost/asio/this_coro.hpp>

#include <chrono>

namespace frugal::detail {

namespace {

bool stopped(const asio::cancellation_state& cs)
{
    return cs.cancelled() != asio::cancellation_type::none;
}

} // namespace

tier_stream::~tier_stream()
{
    // The guard may signal the reservation after this stream is gone.
    if (guard_slot.is_connected())
        guard_slot.clear();
}

void tier_stream::prepare(
    const router_impl& r,
    const chat_request& base,
    std::uint32_t tier,
    const call_info& call,
    escalation_reason arrived_by)
{
    r.open_record(run, tier, call, arrived_by);
    req = std::make_unique<chat_request>(r.tier_request(base, tier));
}

asio::awaitable<bool> tier_stream::reserve(router_impl& r, const call_info& call)
{
    run.rec.time_ms = unix_now_ms(); // the attempt begins with its reservation
    if (!r.try_reserve(*req, call, res)) {
        // A stop that came before the wait would not end it: seen here.
        auto cs = co_await asio::this_coro::cancellation_state;
        if (stopped(cs)) {
            run.rec.outcome = attempt_outcome::not_sent;
            run.rec.error = asio::error::operation_aborted;
            co_return false;
        }
        // The wait for the budget takes the coroutine's own cancellation (its slot is free).
        if (!co_await r.reserve(run, *req, call, res))
            co_return false;
    }
    reserved = true;
    if (res.active())
        req->max_tokens = res.max_tokens();
    co_return true;
}

// The generation id goes to the reservation as soon as it is known (the response head, else
// the first chunk): a crash mid-stream leaves enough to look the bill up.
void tier_stream::note_generation()
{
    if (noted || !res.active() || res.free())
        return;
    const auto& id = s.response().id.empty() ? s.diagnostics().generation_id : s.response().id;
    if (!id.empty()) {
        res.note_generation(id);
        noted = true;
    }
}

asio::awaitable<void> tier_stream::start(router_impl& r)
{
    auto cs = co_await asio::this_coro::cancellation_state;
    t0 = steady_clock::now();
    started = true;
    guard_slot = res.cancellation_slot();
    if (guard_slot.is_connected())
        guard_slot.assign(forward_to{&sig});
    if (stopped(cs) || res.cancel_reason()) {
        ec = asio::error::operation_aborted; // stopped before it was asked for: nothing sent
        co_return;
    }
    // Every await that completes clears the coroutine's slot: the forward is set before each.
    if (cs.slot().is_connected())
        cs.slot().assign(forward_to{&sig});
    call_options opts;
    opts.retry_rate_limited = !r.free_tier[run.rec.tier];
    auto [sec] = co_await r.client->async_start_stream(
        std::move(*req), s, opts, asio::bind_cancellation_slot(sig.slot(), tuple_awaitable));
    req.reset();
    ec = sec;
    if (!ec)
        note_generation();
}

asio::awaitable<bool> tier_stream::next(std::string& content)
{
    auto cs = co_await asio::this_coro::cancellation_state;
    while (started && !ec && !s.done()) {
        // A signal between reads (the caller's, the guard's) reached no operation: seen here.
        if (stopped(cs) || res.cancel_reason()) {
            ec = asio::error::operation_aborted;
            break;
        }
        if (cs.slot().is_connected())
            cs.slot().assign(forward_to{&sig});
        auto [rec, d] =
            co_await s.async_read_delta(asio::bind_cancellation_slot(sig.slot(), tuple_awaitable));
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
        if (!d.content.empty()) {
            content = std::move(d.content);
            co_return true;
        }
    }
    co_return false;
}

void tier_stream::finish(router_impl& r, bool abandoned)
{
    if (guard_slot.is_connected())
        guard_slot.clear();
    if (!reserved)
        return; // refused, or stopped while waiting for the budget: `run` says so already
    const bool ended = whole() && !abandoned;
    if (started)
        run.rec.latency_us =
            std::chrono::duration_cast<std::chrono::microseconds>(steady_clock::now() - t0).count();
    run.answered = ended;
    response = std::make_unique<chat_response>(s.response());
    run.rec.error = ec;
    run.rec.model_served = response->model;
    run.rec.provider = response->provider;
    run.rec.generation_id = response->id.empty() ? s.diagnostics().generation_id : response->id;
    if (!ended) {
        run.rec.outcome = ec && ec != asio::error::operation_aborted ? attempt_outcome::unknown
                                                                     : attempt_outcome::cancelled;
    }
    diagnostics diag = s.diagnostics();
    if (started && !ended && !ec)
        diag.request_sent = true; // abandoned mid-stream: it was sent
    router_impl::note_failure(run.rec, ec, diag);
    s = chat_stream(); // abandons the connection now, before accounting
    r.note_rate_limit(run.rec.tier, ec, diag);
    r.account(run, response.get(), res, diag);
}

namespace {

// Reads stream `which` of `h` up to its first content, or its end, reserving it first unless
// the producer did. The frame holds `h`, so the streams outlive it.
asio::awaitable<void> to_first_content(std::shared_ptr<stream_pair> h, int which)
{
    co_await asio::this_coro::throw_if_cancelled(false); // run as a thread: errors, not throws
    auto& a = h->at(which);
    if (!a.reserved && !co_await a.reserve(*h->r, h->call))
        co_return;
    co_await a.start(*h->r);
    std::string content;
    if (co_await a.next(content))
        a.first = std::move(content);
}

void spawn_reader(const std::shared_ptr<stream_pair>& h, int which)
{
    h->spawned[which] = true;
    h->running[which] = true;
    asio::co_spawn(
        h->r->client->get_executor(), to_first_content(h, which),
        asio::bind_cancellation_slot(
            h->stop[which].slot(), [h, which](const std::exception_ptr& ep) {
                auto& rec = h->at(which).run.rec;
                if (ep && !h->at(which).reserved) { // stopped (or out of memory) before it began
                    rec.outcome = attempt_outcome::not_sent;
                    rec.error = asio::error::operation_aborted;
                }
                h->running[which] = false;
                h->order[which] = ++h->returned;
                if (h->wake)
                    h->wake->cancel();
            }));
}

// The caller's cancellation, forwarded to the readers still running (co_spawn's handler
// must not be signalled once its coroutine has returned: see
// cascade_stream_state::stop_producer).
struct stop_running {
    stream_pair* h;
    void operator()(asio::cancellation_type t) const
    {
        for (int i = 0; i < 2; ++i)
            if (h->running[i])
                h->stop[i].emit(t);
    }
};

// Waits up to `d`, or until a reader returns. The caller's cancellation goes to the readers
// (set again before each wait: a completed await clears the slot), not to this wait, which a
// stopped reader's return ends.
asio::awaitable<void>
wait_for_reader(const std::shared_ptr<stream_pair>& h, steady_clock::duration d)
{
    auto cs = co_await asio::this_coro::cancellation_state;
    if (stopped(cs)) // a stop that came between waits reached no reader: passed on now
        stop_running{h.get()}(asio::cancellation_type::terminal);
    if (cs.slot().is_connected())
        cs.slot().assign(stop_running{h.get()});
    if (!h->wake)
        h->wake = std::make_unique<asio::steady_timer>(h->r->client->get_executor());
    h->wake->expires_after(d);
    co_await h->wake->async_wait(
        asio::bind_cancellation_slot(asio::cancellation_slot(), tuple_awaitable));
}

// The reader that won: the first to return with content, or with a whole answer the judge
// accepts (an acceptable answer that happens to have no content); -1 while none has.
int winner(const stream_pair& h, const chat_request& base)
{
    int w = -1;
    for (int i = 0; i < 2; ++i) {
        if (!h.spawned[i] || h.running[i])
            continue;
        const auto& a = h.at(i);
        const bool won =
            a.first.has_value() ||
            (a.whole() && judge(h.r->policy, h.r->refusals, base, a.s.response()) == escalation_reason::none);
        if (won && (w < 0 || h.order[i] < h.order[w]))
            w = i;
    }
    return w;
}

} // namespace

asio::awaitable<void>
race_streams(std::shared_ptr<stream_pair> h, const chat_request& base, cascade_machine& m)
{
    auto& r = *h->r;
    const std::uint32_t next_tier = h->at(0).run.rec.tier + 1;
    spawn_reader(h, 0);
    co_await wait_for_reader(h, r.policy.hedge_after);
    // Slow to its first content: the next tier is started too, unless its free quota is used
    // up (a hedge never waits for it). Its reservation is its reader's first step.
    auto cs = co_await asio::this_coro::cancellation_state;
    if (h->running[0] && !stopped(cs) &&
        (!r.free_tier[next_tier] || r.take_free(unix_now_ms()) == 0)) {
        h->second = std::make_unique<tier_stream>();
        h->second->prepare(r, base, next_tier, h->call, m.hedged());
        spawn_reader(h, 1);
    }
    for (;;) {
        if (const int w = winner(*h, base); w >= 0) {
            h->lead = w;
            const int o = 1 - w;
            if (h->spawned[o] && h->running[o]) {
                h->lost = true;
                h->stop[o].emit(asio::cancellation_type::terminal);
                while (h->running[o]) {
                    co_await wait_for_reader(h, std::chrono::hours(24));
                }
            } else if (h->spawned[o] && h->at(o).first) {
                h->lost = true; // content too, a moment later: dropped unseen
            }
            break;
        }
        if (!h->running[0] && !h->running[1]) {
            // Neither yielded content: the hedge, when its reservation was granted, is
            // decided last, as it was started.
            h->lead = h->spawned[1] && h->at(1).reserved ? 1 : 0;
            break;
        }
        co_await wait_for_reader(h, std::chrono::hours(24));
    }
    if (cs.slot().is_connected())
        cs.slot().clear(); // stop_running points into `h`
}

} // namespace frugal::detail
