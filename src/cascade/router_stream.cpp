// The streamed cascade's producer: it drives the cascade's machine as `complete` does, but
// reads each tier's stream (two racing to their first content when hedged: stream_attempt.cpp)
// and hands its text to the consumer as it goes.
#include "cascade/router_impl.hpp"
#include "cascade/stream_attempt.hpp"

#include <boost/asio/this_coro.hpp>

#include <span>

namespace frugal::detail {

namespace {

cascade_event event_of(
    cascade_event::kind type, std::uint32_t tier, escalation_reason reason = escalation_reason::none)
{
    cascade_event ev;
    ev.type = type;
    ev.tier = tier;
    ev.reason = reason;
    return ev;
}

// How the stream read on ended, as the producer saw it.
struct read_end {
    escalation_reason early; // judged unacceptable before its end
    bool consumer_gone;      // the consumer stopped taking events
    bool shown;              // some of its text went to the consumer
    bool cancelled;          // the caller cancelled the cascade
};

// The machine hears of the hedge's stream once its reservation was granted (a refused one
// means no hedge: it is only recorded), and of the stream read on last; their records join
// the result, and `step` becomes the machine's next. Returns the escalation recorded for the
// stream read on. A plain function, so that its locals are not in the producer's frame, which
// every open stream keeps.
escalation_reason end_step(
    router_impl& r,
    cascade_machine& m,
    const chat_request& base,
    const stream_pair& h,
    tier_stream& w,
    tier_stream* other,
    read_end how,
    bool free_time_left,
    cascade_step& step,
    std::vector<cascade_attempt>& attempts,
    money& total_cost)
{
    attempt_end ends[2];
    tier_stream* told[2] = {nullptr, nullptr};
    std::size_t k = 0;
    if (other != nullptr && other->reserved) {
        if (h.lost) {
            ends[k].tier = other->run.rec.tier;
            ends[k].ended = attempt_end::how::lost;
            ends[k].error = other->run.rec.error;
            ends[k].arrived_by = other->run.arrived_by;
        } else {
            ends[k] = r.end_of(base, other->run, other->response.get(), how.cancelled);
        }
        told[k++] = other;
    }
    attempt_end& e = ends[k];
    e = r.end_of(base, w.run, w.response.get(), how.cancelled || how.consumer_gone);
    if (how.consumer_gone)
        e.ended = attempt_end::how::cancelled;
    else if (how.early != escalation_reason::none) {
        e.ended = attempt_end::how::abandoned;
        e.verdict = how.early;
    }
    e.shown = how.shown;
    told[k++] = &w;
    step = m.ended(std::span<attempt_end>(ends, k), free_time_left);
    if (other != nullptr && !other->reserved)
        attempts.push_back(other->run.rec); // a hedge refused (or stopped) before its start
    for (std::size_t i = 0; i < k; ++i) {
        told[i]->run.rec.moved_on = ends[i].recorded;
        total_cost += told[i]->run.rec.cost;
        attempts.push_back(told[i]->run.rec);
    }
    if (step.free_wait_over)
        attempts.back().detail += r.free_wait_note();
    return e.recorded;
}

// A step whose reservation was refused: recorded, and the machine told.
void refused_step(
    router_impl& r,
    cascade_machine& m,
    const chat_request& base,
    attempt_head& run,
    bool cancelled,
    bool free_time_left,
    cascade_step& step,
    std::vector<cascade_attempt>& attempts)
{
    auto e = r.end_of(base, run, nullptr, cancelled); // refused: no answer
    step = m.ended(std::span<attempt_end>(&e, 1), free_time_left);
    run.rec.moved_on = e.recorded;
    attempts.push_back(run.rec);
}

// Once the last tier has shown content, nothing asks the prompt again: no tier is above it,
// and a free tier's 429 is asked again only before anything was shown. Without predicates
// (which are given the whole request), judging its answer reads only the response format.
// What else the request held, its messages above all, is freed: an open stream of a long
// prompt no longer keeps it. A plain function: its locals stay out of the producer's frame.
void keep_only_what_judging_reads(chat_request& base)
{
    chat_request kept;
    kept.response_format = base.response_format;
    std::swap(base, kept); // swapped, not assigned: the old request's room goes with `kept`
}

// A stream's answer, given up to the result (empty if it had none: never read through null).
// The model that served a tier's text, as its upstream named it: the stream's until `finish`
// copies its response.
const std::string& served_model(const tier_stream& t)
{
    return t.response ? t.response->model : t.s.response().model;
}

chat_response take_response(tier_stream& t)
{
    return t.response ? std::move(*t.response) : chat_response();
}

// The answer the machine would fall back to, kept from the streams just told of.
void keep_fallback(
    const cascade_machine& m,
    tier_stream& w,
    tier_stream* other,
    bool shown,
    std::unique_ptr<chat_response>& fallback,
    bool& fallback_shown)
{
    for (tier_stream* told : {other, &w}) {
        if (told == nullptr || (told == other && !other->reserved))
            continue;
        const auto& run = told->run;
        if (run.answered && told->response && m.fallback() == run.rec.tier) {
            fallback = std::move(told->response);
            fallback_shown = told == &w && shown;
        }
    }
}

} // namespace

asio::awaitable<void> produce(
    std::shared_ptr<router_impl> r,
    std::shared_ptr<cascade_stream_state> st,
    chat_request base,
    stream_mode mode,
    std::shared_ptr<const budget_keys> keys)
{
    // Cancellation is checked where it matters; an await must not throw for it.
    co_await asio::this_coro::throw_if_cancelled(false);
    // One event in this frame, filled before each send and moved out by it, and one error code,
    // which only the last event carries: an open stream's producer frame holds one of each,
    // not one per place that sends.
    cascade_event ev;
    error_code ended;
    auto send = [&]() -> asio::awaitable<bool> {
        const error_code ec = ended;
        if (!st->deadline) {
            auto [sec] = co_await st->events.async_send(ec, std::move(ev), tuple_awaitable);
            co_return !sec;
        }
        for (;;) {
            // A copy: a send the deadline's stop cancels is made again.
            auto [sec] = co_await st->events.async_send(ec, ev, tuple_awaitable);
            if (!sec) {
                cascade_event sent; // the text is not kept while the next delta is awaited
                std::swap(ev, sent);
                co_return true;
            }
            // The deadline stops the attempt, not the hand-over: the consumer is still there
            // (once it leaves, the channel is closed and the next send fails for good).
            if (sec != asio::error::operation_aborted || !st->deadline_passed)
                co_return false;
        }
    };
    // The attempts and their cost; the result is made at the end, with the answer: an open
    // stream does not hold it.
    std::vector<cascade_attempt> attempts;
    money total_cost;
    std::shared_ptr<cascade_result> result;
    auto answer = [&](chat_response&& response) {
        result = std::make_shared<cascade_result>();
        result->response = std::move(response);
    };
    const call_info call{r->new_request_id(), keys ? std::move(keys) : r->no_keys};
    if (r->refresh_prices())
        r->note_policy();
    escalation_reason pre = escalation_reason::none;
    const std::uint32_t first = r->first_tier(base, pre);
    cascade_machine m(r->policy, r->free_tier, first, pre);
    const auto free_deadline = steady_clock::now() + r->policy.free_tier.max_wait;
    const auto n = static_cast<std::uint32_t>(r->policy.tiers.size());
    const bool json_wanted = wants_json(base);
    std::unique_ptr<chat_response> fallback; // the answer of m.fallback(), once there is one
    bool fallback_shown = false; // its text is on the consumer's screen, not retracted
    escalation_reason pending = escalation_reason::none; // an `escalating` not yet announced
    auto cs = co_await asio::this_coro::cancellation_state;
    auto cancelled = [&] { return cs.cancelled() != asio::cancellation_type::none; };
    auto step = m.start();

    for (;;) {
        auto before = r->before_send_now(m, step, free_deadline, call, attempts, cancelled());
        if (before.wait != 0)
            before.next =
                co_await r->wait_before_send(m, step, before.wait, free_deadline, call, attempts);
        if (before.next) {
            step = *before.next;
            continue;
        }
        if (step.what != cascade_step::kind::send)
            break;

        const std::uint32_t t = step.tier;
        // The step's streams: shared with a hedge's readers, so allocated; one per step is
        // nothing beside a request.
        auto h = std::make_shared<stream_pair>(r, call);
        tier_stream& first_try = h->at(0);
        first_try.prepare(*r, base, t, call, step.arrived_by);
        if (!co_await first_try.reserve(*r, call)) {
            refused_step(
                *r, m, base, first_try.run, cancelled(), steady_clock::now() < free_deadline,
                step, attempts);
            continue;
        }
        // The escalation is announced once it is sure to happen (its reservation granted), so
        // a denied one leaves the cheap answer on screen.
        if (pending != escalation_reason::none) {
            ev = event_of(cascade_event::kind::escalating, t, pending);
            pending = escalation_reason::none;
            fallback_shown = false;
            if (!co_await send())
                co_return;
        }

        if (step.hedge) {
            co_await race_streams(h, base, m); // the winner's first content waits in `first`
        } else {
            co_await first_try.start(*r);
        }
        tier_stream& w = h->at(h->lead);
        // A hedge's other stream, settled (or released) now rather than after the winner's.
        tier_stream* other = h->spawned[1] ? &h->at(1 - h->lead) : nullptr;
        if (other != nullptr)
            other->finish(*r, h->lost);

        const std::uint32_t wt = w.run.rec.tier;
        const bool last = wt + 1 == n;
        std::string text;
        std::vector<std::string> held; // buffer mode: deltas not shown yet
        bool shown = false;
        escalation_reason early = escalation_reason::none;
        bool consumer_gone = false;
        const bool live = mode == stream_mode::stream || last;
        for (;;) {
            std::string piece;
            if (w.first) {
                piece = std::move(*w.first);
                w.first.reset();
            } else if (!co_await w.next(piece)) {
                break;
            }
            if (!last) { // the last tier is not judged: its text is not gathered
                text += piece;
                early = judge_early(r->policy, r->refusals, json_wanted, text);
                if (early != escalation_reason::none)
                    break; // abandon the stream: finishing it closes the connection
            }
            if (live) {
                ev = event_of(cascade_event::kind::delta, wt);
                ev.text = std::move(piece);
                if (!shown)
                    ev.model = served_model(w);
                if (!shown && last && r->policy.predicates.empty())
                    keep_only_what_judging_reads(base);
                shown = true;
                if (!co_await send()) {
                    consumer_gone = true;
                    break;
                }
            } else {
                held.push_back(std::move(piece));
            }
        }
        w.finish(*r, early != escalation_reason::none || consumer_gone);

        const escalation_reason recorded = end_step(
            *r, m, base, *h, w, other, {early, consumer_gone, shown, cancelled()},
            steady_clock::now() < free_deadline, step, attempts, total_cost);
        if (step.what == cascade_step::kind::accept) {
            if (step.tier == wt || other == nullptr) {
                for (auto& piece : held) { // accepted: buffered text is shown now
                    ev = event_of(cascade_event::kind::delta, wt);
                    ev.text = std::move(piece);
                    if (&piece == &held.front())
                        ev.model = served_model(w);
                    if (!co_await send())
                        co_return;
                }
                answer(take_response(w));
                break;
            }
            // The hedge's other stream: a whole answer without content (any content would have
            // won it the race, or lost it), accepted as the top tier's. What the stream read on
            // showed is taken back.
            if (shown) {
                ev = event_of(cascade_event::kind::escalating, step.tier, recorded);
                if (!co_await send())
                    co_return;
            }
            answer(take_response(*other));
            break;
        }
        keep_fallback(m, w, other, shown, fallback, fallback_shown);
        if (shown && recorded != escalation_reason::none)
            pending = recorded; // its text must be taken back if a higher tier answers
    }

    if (step.what == cascade_step::kind::keep && fallback) {
        // The budget kept the lower tier's answer: shown now unless it already is, after
        // taking back a later tier's text that is on screen.
        if (!fallback_shown && pending != escalation_reason::none) {
            ev = event_of(cascade_event::kind::escalating, step.tier, pending);
            if (!co_await send())
                co_return;
        }
        if (!fallback_shown && !fallback->content.empty()) {
            ev = event_of(cascade_event::kind::delta, step.tier);
            ev.text = fallback->content;
            ev.model = fallback->model;
            ev.budget_denied = true;
            if (!co_await send())
                co_return;
        }
        answer(std::move(*fallback));
    }
    if (!result)
        result = std::make_shared<cascade_result>();
    result->attempts = std::move(attempts);
    result->total_cost = total_cost;
    m.fill(*result, step);
    st->finished = true;
    ev = event_of(cascade_event::kind::done, step.what == cascade_step::kind::fail ? 0 : step.tier);
    ev.result = result; // the attempts and what each cost, for a failure too
    ended = step.what == cascade_step::kind::fail ? step.error : error_code();
    if (st->deadline_passed && ended == asio::error::operation_aborted)
        ended = error::timeout; // cascade_options::deadline, not the caller
    (void)co_await send();
}

} // namespace frugal::detail
