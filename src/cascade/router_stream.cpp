// The streamed cascade's producer: it drives the cascade's machine as `complete` does, but
// reads each tier's stream and hands its text to the consumer as it goes.
#include "cascade/router_impl.hpp"

#include <boost/asio/bind_cancellation_slot.hpp>
#include <boost/asio/this_coro.hpp>

#include <span>

namespace frugal::detail {

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
    if (r->refresh_prices())
        r->note_policy();
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
        if (auto next = co_await r->before_send(m, step, free_deadline, out)) {
            step = *next;
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

} // namespace frugal::detail
