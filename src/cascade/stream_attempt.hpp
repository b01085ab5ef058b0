#ifndef FRUGAL_SRC_CASCADE_STREAM_ATTEMPT_HPP
#define FRUGAL_SRC_CASCADE_STREAM_ATTEMPT_HPP

// One tier's stream in a streamed cascade, and the hedge that races two of them to their first
// content (stream_attempt.cpp). The producer (router_stream.cpp) reads the one that won on, in
// its own frame, with the same `tier_stream::next` the race used.

#include "cascade/router_impl.hpp"

#include <boost/asio/steady_timer.hpp>

#include <cstdint>
#include <memory>
#include <optional>
#include <string>

namespace frugal::detail {

// A tier's stream: its reservation, the request, the stream and what was read of it. Every
// operation on the stream is bound to `sig`; the guard's slot for the reservation forwards to
// it for the stream's whole life, and the coroutine that reads (the producer, or a race's
// reader) forwards its own cancellation to it before each read. Slots point at `sig`: a
// tier_stream is never moved or copied.
struct tier_stream {
    attempt_head run;
    // What the stream added up to, made by `finish` (the answer when `run.answered`).
    std::unique_ptr<chat_response> response;
    // The tier's request, from `prepare` until `start` hands it to the client: an open
    // stream does not keep it.
    std::unique_ptr<chat_request> req;
    reservation res;
    chat_stream s;
    asio::cancellation_signal sig;
    asio::cancellation_slot guard_slot; // the reservation's, while it forwards to `sig`
    error_code ec;                      // what ended the stream (or stopped it before it began)
    steady_clock::time_point t0;        // when the stream was asked for, for its latency
    std::uint64_t tokens = 0;           // stream events read: what the guard meters
    bool reserved = false;              // `res` was granted: the attempt is to be accounted
    bool started = false;               // `start` ran: the stream was asked for
    bool noted = false;                 // the generation id went to the reservation
    // The first content, read by a race's reader and not yet handled by the producer.
    std::optional<std::string> first;

    tier_stream() = default;
    tier_stream(const tier_stream&) = delete;
    tier_stream& operator=(const tier_stream&) = delete;
    ~tier_stream();

    // The request for `tier` and the attempt's record, before anything is asked.
    void prepare(
        const router_impl& r,
        const chat_request& base,
        std::uint32_t tier,
        const call_info& call,
        escalation_reason arrived_by);
    // The reservation, without waiting when it can; false (and `run` says why) when refused.
    asio::awaitable<bool> reserve(router_impl& r, const call_info& call);
    // Asks for the stream; `ec` says how that went.
    asio::awaitable<void> start(router_impl& r);
    // Reads up to the next piece of content (deltas without content are metered and passed
    // over): false once the stream has ended, failed, or been stopped.
    asio::awaitable<bool> next(std::string& content);
    // The whole answer arrived.
    bool whole() const noexcept { return started && !ec && s.done(); }
    // Ends the attempt: the stream is given up (its connection closed unless it ended), the
    // attempt's record filled and its reservation settled or released (`router_impl::account`).
    // `abandoned`: given up before its end (an early verdict, the consumer gone, a lost race).
    // Nothing to account when it was never reserved.
    void finish(router_impl& r, bool abandoned);

private:
    void note_generation();
};

// The streams of one `send` step: the tier asked (`a[0]`), and when hedged the next tier
// (`a[1]`). Shared by the producer and the race's readers, so it outlives both.
struct stream_pair {
    stream_pair(std::shared_ptr<router_impl> router, call_info c)
        : r(std::move(router)), call(std::move(c))
    {
    }
    std::shared_ptr<router_impl> r;
    call_info call;
    // The race waits on it; a reader's end cancels it. Made by the race alone: a step that
    // does not hedge, and the stream it keeps open, holds no timer.
    std::unique_ptr<asio::steady_timer> wake;
    // The hedge's second stream is made only when the race starts it: most cascades never
    // hedge, and a tier_stream holds a request, a record and a response.
    tier_stream first;
    std::unique_ptr<tier_stream> second;
    tier_stream& at(int i) { return i == 0 ? first : *second; }
    const tier_stream& at(int i) const { return i == 0 ? first : *second; }
    asio::cancellation_signal stop[2]; // bound to each reader's co_spawn
    bool spawned[2] = {false, false};
    bool running[2] = {false, false}; // a reader's coroutine has not returned
    int order[2] = {0, 0};            // the order in which the readers returned (1, 2)
    int returned = 0;
    // After the race: the stream the producer reads on (the winner, else the one decided
    // last), and whether the other lost the race (stopped, or its content dropped, for it).
    int lead = 0;
    bool lost = false;
};

// Races `h->a[0]` (reserved, not started) against the next tier when it yields no content
// within the policy's `hedge_after`: the first stream to yield content, or to end with an
// acceptable answer, wins, and the other is stopped. Returns once no reader runs; `h->lead`
// and `h->lost` say how it went. The hedge's stream reserves its own budget; when that is
// refused (or the free quota of the next tier is used up) there is no hedge.
asio::awaitable<void>
race_streams(std::shared_ptr<stream_pair> h, const chat_request& base, cascade_machine& m);

} // namespace frugal::detail

#endif // FRUGAL_SRC_CASCADE_STREAM_ATTEMPT_HPP
