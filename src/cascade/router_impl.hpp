#ifndef FRUGAL_SRC_CASCADE_ROUTER_IMPL_HPP
#define FRUGAL_SRC_CASCADE_ROUTER_IMPL_HPP

// The router's insides, shared by the files it is split into: the public members and the whole
// cascade (router.cpp), one attempt with its money, the hedge and the free tier's quota
// (attempt.cpp), and the streamed cascade's producer (router_stream.cpp), whose tier streams
// and their hedge are in stream_attempt.hpp. Only what crosses from one of those files to
// another is here; what one file alone uses stays in it.

#include <frugal/error.hpp>
#include <frugal/router.hpp>

#include "cascade/decide.hpp"
#include "cascade/frames.hpp"
#include "cascade/judge.hpp"

#include <boost/asio/any_io_executor.hpp>
#include <boost/asio/as_tuple.hpp>
#include <boost/asio/awaitable.hpp>
#include <boost/asio/cancellation_signal.hpp>
#include <boost/asio/dispatch.hpp>
#include <boost/asio/experimental/channel.hpp>
#include <boost/asio/steady_timer.hpp>
#include <boost/asio/use_awaitable.hpp>

#include <chrono>
#include <cstdint>
#include <memory>
#include <optional>
#include <string>
#include <vector>

namespace frugal {

namespace asio = boost::asio;
using boost::system::error_code;
using std::chrono::steady_clock;

namespace detail {

inline constexpr auto tuple_awaitable = asio::as_tuple(asio::use_awaitable);

inline std::int64_t unix_now_ms()
{
    return std::chrono::duration_cast<std::chrono::milliseconds>(
               std::chrono::system_clock::now().time_since_epoch())
        .count();
}

// Emits into a signal: used to let several sources (the caller, the budget guard, a hedge)
// stop one operation.
// Passes a cancellation on as terminal, whatever its type: the cascade supports terminal
// alone, and one awaited in its caller's coroutine follows that coroutine's filter, which may
// let partial or total through (router.hpp); either ends the request, as it ends the cascade.
// `from_caller` (null for the guard's) remembers that the caller's came.
struct forward_to {
    asio::cancellation_signal* signal;
    bool* from_caller = nullptr;
    void operator()(asio::cancellation_type) const
    {
        if (from_caller != nullptr)
            *from_caller = true;
        signal->emit(asio::cancellation_type::terminal);
    }
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

// One attempt as it runs, without its answer. `rec` is also the attempt's ledger record: the
// guard settles with it.
struct attempt_head {
    cascade_attempt rec;
    bool answered = false;      // a complete response arrived
    bool budget_denied = false; // the guard refused the reservation
    // The cascade's caller stopped it. Kept apart from the caller's cancellation state, which
    // a later cancellation of a type its filter drops sets back to none (Asio 1.81 assigns),
    // while the attempt it stopped still reads as aborted.
    bool caller_cancelled = false;
    // Why the cascade asked this tier (none: the tier the request started at).
    escalation_reason arrived_by = escalation_reason::none;
};

// A whole attempt, its answer inline. A streamed one (`tier_stream`) holds its answer apart,
// made when the stream ends: an open stream does not carry an empty response.
struct attempt_run : attempt_head {
    chat_response response;
};


struct router_impl : std::enable_shared_from_this<router_impl> {
    // Setting up, and the whole cascade (router.cpp).
    router_impl(
        chat_client& c, cascade_policy p, price_catalog prices, std::optional<budget_guard> g);
    void note_policy();
    bool refresh_prices();
    std::uint64_t new_request_id();
    std::uint32_t max_tokens(const std::optional<std::uint32_t>& asked) const;
    std::uint32_t first_tier(const chat_request& req, escalation_reason& why) const;
    // Runs a cascade charged to `options.budget_keys`, giving its outcome, or writing it into
    // `*into` (then giving an empty one). `entry`: awaited by `async_complete`'s caller, which
    // it runs in unless a deadline, another executor or a cancellation already received sends
    // it elsewhere (router.cpp); else a coroutine of its own, whose deadline is its launcher's.
    asio::awaitable<std::tuple<error_code, cascade_result>> complete(
        chat_request req,
        cascade_options options,
        bool entry,
        std::tuple<error_code, cascade_result>* into);

    // One attempt and its money, the hedge, the free tier's quota (attempt.cpp).
    std::int64_t take_free(std::int64_t now_ms);
    // `aborted`: free_gate's wait was cancelled, by the caller (its state may no longer say
    // so: a later cancellation its filter drops sets it back to none in Asio 1.81).
    enum class gate { go, skip, fail, aborted };
    std::optional<gate>
    gate_now(bool last_tier, steady_clock::time_point deadline, std::int64_t& wait);
    asio::awaitable<gate>
    free_gate(bool last_tier, steady_clock::time_point deadline, std::int64_t wait);
    void open_record(
        attempt_head& run,
        std::uint32_t tier,
        const call_info& call,
        escalation_reason arrived_by) const;
    // `response`: the attempt's answer, read only when `run.answered`.
    void account(
        attempt_head& run,
        const chat_response* response,
        reservation& res,
        const diagnostics& diag);
    reserve_request reserve_ask(const chat_request& req, const call_info& call) const;
    void note_rate_limit(std::uint32_t tier, const error_code& ec, const diagnostics& diag);
    // What an attempt that failed with `ec` keeps of the provider's account: its words, and the
    // wait a rate limit asked for. Nothing for a cancelled one.
    static void note_failure(cascade_attempt& rec, const error_code& ec, const diagnostics& diag);
    std::string quota_text() const;
    cascade_attempt skipped_attempt(
        const cascade_step& step, const call_info& call, escalation_reason moved_on) const;
    bool try_reserve(const chat_request& req, const call_info& call, reservation& res);
    asio::awaitable<bool>
    reserve(attempt_head& run, const chat_request& req, const call_info& call, reservation& res);
    chat_request tier_request(const chat_request& base, std::uint32_t tier) const;
    // The caller's model, fallback list and max_tokens, kept aside while a request is a tier's.
    struct tier_fields {
        std::string model;
        std::vector<std::string> models;
        std::optional<std::uint32_t> max_tokens;
        bool model_differs = false; // else `model` is empty: the request's is the caller's
    };
    // Makes `req` tier `tier`'s request in place (no copy of its messages), and back.
    tier_fields enter_tier(chat_request& req, std::uint32_t tier) const;
    static void leave_tier(chat_request& req, tier_fields caller);
    bool begin_attempt(
        chat_request& req,
        std::uint32_t tier,
        const call_info& call,
        escalation_reason arrived_by,
        attempt_head& run,
        reservation& res);
    static bool sends_plainly(reservation& res, bool cancelled);
    call_options plain_options(std::uint32_t tier) const;
    asio::awaitable<void> attempt(
        chat_request& req,
        std::uint32_t tier,
        const call_info& call,
        escalation_reason arrived_by,
        attempt_head& run,
        chat_response& answer);
    asio::awaitable<void> send_attempt(
        chat_request& req,
        std::uint32_t tier,
        const call_info& call,
        attempt_head& run,
        chat_response& answer,
        reservation& res,
        bool reserved);
    void end_attempt(
        attempt_head& run,
        std::uint32_t tier,
        const error_code& ec,
        diagnostics& diag,
        const chat_response& answer,
        reservation& res,
        steady_clock::time_point sent);
    struct hedge;
    struct stop_both;
    void spawn_attempt(
        const std::shared_ptr<hedge>& h,
        int which,
        const chat_request& base,
        std::uint32_t tier,
        const call_info& call,
        escalation_reason arrived_by);
    asio::awaitable<void> wait_for(const std::shared_ptr<hedge>& h, steady_clock::duration d);
    bool acceptable(const chat_request& base, const attempt_run& run) const;
    asio::awaitable<std::vector<attempt_run>> hedged(
        const chat_request& base,
        std::uint32_t tier,
        const call_info& call,
        escalation_reason arrived_by,
        cascade_machine& m);
    // `response`: as for `account`.
    attempt_end end_of(
        const chat_request& base,
        const attempt_head& run,
        const chat_response* response,
        bool caller_cancelled) const;
    quota_wait gated(
        const cascade_step& step,
        const call_info& call,
        std::vector<cascade_attempt>& attempts,
        gate g,
        bool cancelled) const;
    // What both drivers do alike before a step, without a coroutine in the common case: the
    // caller's cancellation (`cancelled`) ends the cascade, and a free tier's quota is taken.
    // `next`: the step to take instead (none when `step` is a send, or an end, to carry out);
    // `wait`: the milliseconds until the quota may have room (0: none to wait for), which
    // `wait_before_send` waits for.
    struct before_step {
        std::int64_t wait = 0;
        std::optional<cascade_step> next;
    };
    // `attempts`: where a skipped tier is recorded.
    before_step before_send_now(
        cascade_machine& m,
        const cascade_step& step,
        steady_clock::time_point deadline,
        const call_info& call,
        std::vector<cascade_attempt>& attempts,
        bool cancelled);
    asio::awaitable<std::optional<cascade_step>> wait_before_send(
        cascade_machine& m,
        const cascade_step& step,
        std::int64_t wait,
        steady_clock::time_point deadline,
        const call_info& call,
        std::vector<cascade_attempt>& attempts);
    std::string free_wait_note() const;

    chat_client* client;
    cascade_policy policy;
    refusal_finder refusals; // the policy's patterns, lower-cased
    // The guard's catalog when there is a guard (refreshed as each cascade starts, so
    // `budget_guard::update_prices` reaches the router), else the router's own.
    price_catalog prices;
    std::optional<budget_guard> guard;
    free_tier_limiter limiter;
    std::vector<bool> free_tier;
    // Each tier's row of `prices` (null: not listed), looked up once per catalog, not per
    // cascade.
    std::vector<const model_price*> tier_price;
    bool free_known = false; // free_tier and tier_price follow `prices`
    std::shared_ptr<const budget_keys> no_keys = std::make_shared<budget_keys>();
    std::uint64_t next_request_id = 1;
};

// The streamed cascade: a producer coroutine reads the tiers' streams and hands events over a
// channel of capacity one, so it reads no further ahead than the consumer.
struct cascade_stream_state {
    using channel = asio::experimental::channel<void(error_code, cascade_event)>;
    explicit cascade_stream_state(const asio::any_io_executor& ex) : events(ex, 1) {}
    channel events; // its executor is the stream's
    asio::any_io_executor executor() { return events.get_executor(); }
    asio::cancellation_signal stop; // stops the producer
    bool finished = false;          // the consumer has had the last event
    bool producer_done = false;     // the producer's coroutine has returned
    // cascade_options::deadline: stops the producer as the caller's cancellation would, but
    // the stream ends with error::timeout and its `done` event.
    std::unique_ptr<asio::steady_timer> deadline; // made only for a stream that has one
    bool deadline_passed = false;

    // Stops the producer, on its executor and only while it runs: co_spawn's cancellation
    // handler keeps a pointer into this state, so a signal emitted after the coroutine ended,
    // or from another thread after this state is gone, would write into freed memory.
    static void stop_producer(const std::shared_ptr<cascade_stream_state>& st)
    {
        asio::dispatch(st->executor(), [st] {
            st->events.close();
            if (!st->producer_done)
                st->stop.emit(asio::cancellation_type::terminal);
        });
    }
};

// The producer (router_stream.cpp), spawned by `router::start_stream`.
asio::awaitable<void> produce(
    std::shared_ptr<router_impl> r,
    std::shared_ptr<cascade_stream_state> st,
    chat_request base,
    stream_mode mode,
    std::shared_ptr<const budget_keys> keys);

} // namespace detail

} // namespace frugal

#endif // FRUGAL_SRC_CASCADE_ROUTER_IMPL_HPP
