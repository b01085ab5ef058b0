#ifndef FRUGAL_BUDGET_HPP
#define FRUGAL_BUDGET_HPP

/// @file
/// The budget guard: spend caps that hold under any concurrency.

#include <frugal/budget_store.hpp>
#include <frugal/budget_types.hpp>
#include <frugal/diagnostics.hpp>
#include <frugal/error.hpp>
#include <frugal/money.hpp>
#include <frugal/prices.hpp>

#include <boost/asio/any_completion_handler.hpp>
#include <boost/asio/any_io_executor.hpp>
#include <boost/asio/associated_executor.hpp>
#include <boost/asio/async_result.hpp>
#include <boost/asio/cancellation_signal.hpp>
#include <boost/asio/deferred.hpp>
#include <boost/system/error_code.hpp>
#include <boost/system/result.hpp>

#include <chrono>
#include <cstdint>
#include <functional>
#include <memory>
#include <optional>
#include <span>
#include <string>
#include <string_view>
#include <vector>

namespace frugal {

namespace detail {
class guard_impl;
struct cancel_state;
} // namespace detail

/// Permission to send one request, and the obligation to account for it.
///
/// Obtained from `budget_guard::try_reserve` or `budget_guard::async_reserve`. The request must
/// be sent with `max_tokens()`. Until `mark_sent()` the reservation may be released (destroyed
/// or `release()`d) and gives its headroom back; after it, it can only be settled, with the
/// actual cost or, when the outcome is unknown, with its whole amount. Destroying a sent
/// reservation settles it with its whole amount (outcome unknown).
///
/// A free model's reservation holds nothing (`free()`); settling it still writes the ledger.
///
/// @par Thread safety
/// Distinct objects: safe. Shared objects: unsafe. The guard must outlive the reservation.
class reservation {
public:
    reservation() noexcept = default;
    reservation(reservation&& other) noexcept;
    reservation& operator=(reservation&& other) noexcept;
    ~reservation();

    /// Whether this holds a reservation (paid or free) not yet settled or released.
    bool active() const noexcept { return guard_ != nullptr; }
    /// Whether the model is free: nothing was reserved.
    bool free() const noexcept { return free_; }
    /// The id the store knows the reservation by (0 for free ones).
    std::uint64_t id() const noexcept { return id_; }
    /// The amount held against each budget.
    money amount() const noexcept { return amount_; }
    /// The max_tokens the request must be sent with (clamped when the headroom was short).
    std::uint32_t max_tokens() const noexcept { return max_tokens_; }
    /// Whether the guard lowered max_tokens below what was asked.
    bool clamped() const noexcept { return clamped_; }

    /// Marks the request as written to the provider: from now on it can only be settled.
    void mark_sent() noexcept { sent_ = true; }
    bool sent() const noexcept { return sent_; }

    /// Records the provider's generation id, so that a crash leaves enough to look the bill up.
    void note_generation(const std::string& generation_id);

    /// Metered mode: the completion tokens streamed so far. May cancel every in-flight request
    /// (this one included) when the spend it implies reaches a cap.
    void meter(std::uint64_t completion_tokens);

    /// Replaces the reservation by `record.cost` and writes `record` to the ledger in one
    /// store transaction; `record.record_id` is set to the ledger's id for it (what
    /// `budget_guard::correct` takes). Empty `model_asked`, `generation_id`, `request_id` and
    /// `time_ms` are filled from the reservation. Returns the store's error, if any (the guard
    /// then stops paid traffic).
    boost::system::error_code settle(attempt_record& record);
    boost::system::error_code settle(attempt_record&& record) { return settle(record); }

    /// Settles with the whole amount, the record marked `estimated`: the bill is unknown.
    /// `record.cost` is set to that amount.
    boost::system::error_code settle_unknown(attempt_record& record);
    boost::system::error_code settle_unknown(attempt_record&& record)
    {
        return settle_unknown(record);
    }

    /// Gives the reservation back unused; only before `mark_sent()` (after it, this settles it
    /// with its whole amount).
    void release() noexcept;

    /// A slot that the guard signals (`terminal`) when it must stop the request: a cap reached
    /// in metered mode, an overshoot, or `budget_guard::close()`. Bind the attempt's
    /// operations to it. Only for reservations made with an executor. The signal is posted to
    /// that executor and reaches only an operation pending then: check `cancel_reason()`
    /// between operations (a stream's reads), where it stays set.
    boost::asio::cancellation_slot cancellation_slot() noexcept;

    /// Why the guard cancelled this reservation's request, or success if it did not.
    boost::system::error_code cancel_reason() const noexcept;

    /// Why the guard refused it, in words naming the budget or the price (empty when it was
    /// granted): an inactive reservation from `async_reserve` carries it.
    const std::string& why_denied() const noexcept { return why_; }

private:
    friend class detail::guard_impl;
    friend boost::system::error_code settle(
        reservation&,
        const boost::system::error_code&,
        const chat_response*,
        const diagnostics&,
        attempt_record&);
    static constexpr std::uint32_t no_slot = 0xffffffffu;
    detail::guard_impl* guard_ = nullptr;
    std::uint32_t slot_ = no_slot;
    std::uint64_t id_ = 0;
    money amount_;
    std::uint32_t max_tokens_ = 0;
    bool clamped_ = false;
    bool sent_ = false;
    bool free_ = false;
    std::shared_ptr<detail::cancel_state> cancel_;
    std::string why_;
};

/// The budget guard: reserves before a paid request, settles after it, and keeps every cap.
///
/// Decisions are synchronous, in memory, under one lock; the store is told after it (one call at
/// a time, under a lock of its own), before the decision is acted on: a reservation is
/// recorded before it is handed out, and no decision waits for a disk or a network. The
/// asynchronous `async_reserve` adds a bounded wait for in-flight reservations to settle, and
/// with a store on the network (Redis) the store's confirmation, awaited.
///
/// Committed plus reserved spend never passes a cap, except by a surprise: a settlement above
/// the worst case its model's prices allowed, or a free model that bills. A surprise is booked
/// at what was billed, kept in `anomalies()`, stops every budget it was charged to (no request
/// of any price under them until their next period or `reset`) and makes its model
/// `price_unknown` for the rest of the guard's life.
///
/// @par Thread safety
/// Safe to share across threads and across coroutines on any executors. Copies share one
/// guard.
class budget_guard {
public:
    /// Opens a guard over `store` (a memory store when null), loading the spend it kept.
    /// Fails with `error::bad_budget_config` (a spec with no name, a negative cap, two specs of
    /// one name) or `error::budget_store_failed`; `diag->message`, when `diag` is given, says
    /// which and why (it is cleared first).
    static boost::system::result<budget_guard> open(
        budget_params params,
        price_catalog prices,
        std::shared_ptr<budget_store> store = nullptr,
        diagnostics* diag = nullptr);

    /// Asks to send a request now, without waiting. A free model is granted at once and holds
    /// nothing, unless a budget it falls under was stopped by a surprise. Fails with
    /// `error::price_unknown` (a model, or a feature of `extra_body`, whose cost cannot be
    /// bounded), `error::budget_exhausted` (no budget headroom), `error::budget_closed`,
    /// `error::budget_store_failed` or `error::bad_budget_config` (a malformed key). When
    /// `diag` is given it is cleared, and a failure's `diag->message` names the model, the
    /// feature or the budget.
    ///
    /// When `cancel_on` is given, the reservation's `cancellation_slot()` is signalled through
    /// it when the guard must stop the request.
    ///
    /// With a store on the network (`reserves_async()`), a paid reservation is a round trip
    /// this call blocks the calling thread for; code on an io thread uses `async_reserve`.
    boost::system::result<reservation> try_reserve(
        const reserve_request& req,
        diagnostics* diag = nullptr,
        const boost::asio::any_io_executor& cancel_on = {});

    /// Whether the store confirms each paid reservation over the network (Redis): then
    /// `async_reserve` decides in memory, awaits the store off the guard's lock (reservations
    /// overlap), and `try_reserve` blocks for the round trip.
    bool reserves_async() const noexcept;

    /// Asks to send a request, waiting up to `budget_params::max_wait` for in-flight
    /// reservations to settle when the headroom is short.
    ///
    /// @par Completion signature
    /// `void(boost::system::error_code, reservation)`
    ///
    /// @par Per-operation cancellation
    /// `terminal`, `partial` and `total`: the wait ends with `asio::error::operation_aborted`
    /// and nothing is reserved.
    ///
    /// @par Object lifetimes
    /// `req` is copied. The guard must outlive the operation and the reservation.
    ///
    /// @par Executor
    /// The completion, and the wait's timer, run on the handler's associated executor. The guard
    /// has no executor of its own: a plain callback with none completes on the system executor,
    /// so bind one (`asio::bind_executor`) to complete on an io_context.
    template <class CompletionToken = boost::asio::deferred_t>
    auto async_reserve(const reserve_request& req, CompletionToken&& token = {})
    {
        return boost::asio::async_initiate<
            CompletionToken, void(boost::system::error_code, reservation)>(
            reserve_initiation{this}, token, req);
    }

    /// Lowers a settled record's cost to what the provider proved it billed (a generation
    /// lookup), giving the difference back to its budgets. A larger proven bill raises it, and
    /// is a surprise: it stops the budgets it is charged to (see `anomalies()`).
    boost::system::error_code correct(std::uint64_t record_id, money proven);

    /// Reservations left open by an earlier run that crashed (they count as spent).
    std::vector<reservation_entry> open_reservations() const;

    /// Settles an open reservation of an earlier run with what the provider billed.
    boost::system::error_code settle_open(std::uint64_t reservation_id, attempt_record record);

    /// Replaces the budgets in force by `budgets` while requests go on (a gateway's reload):
    /// - a budget that stays takes its new cap from its next reservation on. A raised cap lifts
    ///   a trip (not a surprise's stop) and may serve requests waiting for headroom. A lowered
    ///   one grants nothing until committed + reserved fits under it: the requests already in
    ///   flight were granted under the cap then in force and settle as usual (in metered mode
    ///   the next token metered past the new cap cancels them);
    /// - a budget that comes (or a template's instance) starts its current period with what it
    ///   spent there before it had a cap: the larger of the store's spend for it and the
    ///   ledger's records made under its key, plus the worst case of each request in flight
    ///   under its key (once per request, however often the budget goes and comes). Until the
    ///   ledger is read it grants nothing (docs/budget.md, "Changing budgets");
    /// - a budget that goes stops limiting at once; its reservations still settle. One that
    ///   comes back with its period is the budget it was.
    ///
    /// Fails with `error::bad_budget_config`, changing nothing, for what `open` refuses and for
    /// a budget in force whose period would change (spend is kept per period; a guard opened
    /// with another period sums it from the ledger), or with `error::budget_store_failed`.
    /// `diag->message` says which and why.
    boost::system::error_code set_budgets(std::vector<budget_spec> budgets, diagnostics* diag = nullptr);

    /// Replaces the price list (the catalog is refreshed). Every router over this guard prices
    /// with it from its next attempt on: the guard's catalog is the router's.
    void update_prices(price_catalog prices);

    /// The price list in force (a shared, immutable snapshot).
    price_catalog prices() const;

    /// The state of every budget instance.
    std::vector<budget_snapshot> snapshot() const;

    /// The state of the budget instance `name` ("tenant:acme"), or none when no request has
    /// been charged to it yet. A server asks this per request; `snapshot()` copies every one.
    std::optional<budget_snapshot> snapshot(std::string_view name) const;

    /// The total ever settled through this guard (and loaded from its store), exactly.
    money committed_total() const;

    /// Settlements that cost more than their worst case (a provider billing above its price
    /// list, or a free model billing): the surprises.
    std::uint64_t price_anomalies() const;

    /// The anomalies of this guard's life, oldest first (the first 1,000 are kept; the ledger
    /// records every one).
    std::vector<spend_anomaly> anomalies() const;

    /// The models a surprise made `price_unknown` for the rest of this guard's life, sorted:
    /// every request for one is refused.
    std::vector<std::string> unpriced_models() const;

    /// Lifts the trip or stop of budget `name` (an instance name, "tenant:acme") before its
    /// period ends. Models made `price_unknown` by a surprise stay so. Fails with
    /// `error::not_found` when no such budget exists, and with `error::budget_store_failed`
    /// for one stopped because what it spent before it came could not be read (drop it and
    /// bring it back with `set_budgets` once the ledger reads).
    boost::system::error_code reset(std::string_view name);

    /// The ledger records from `since_ms` on.
    boost::system::error_code read_ledger(std::int64_t since_ms, std::vector<attempt_record>& out);

    /// Writes `record` to the ledger without charging anything: an attempt the guard denied
    /// (`attempt_outcome::denied`), so reports can count the escalations a cap refused.
    /// `record.cost` is set to zero.
    boost::system::error_code record(attempt_record& record);

    /// A request id no earlier record of the store uses: ids group a cascade's attempts in
    /// the ledger, across runs of a durable store.
    std::uint64_t new_request_id() noexcept;

    /// Keeps a fact a report needs beside the ledger (`budget_store::put_note`). The guard
    /// notes its caps itself, as `budgets` = one `NAME CAP PERIOD` line each; a router notes its
    /// tiers and their prices.
    boost::system::error_code annotate(std::string_view key, std::string_view value);

    /// Every note of the store, ordered by key.
    boost::system::error_code read_notes(std::vector<std::pair<std::string, std::string>>& out);

    /// Keeps the final answer of prompt `id` beside the ledger (`budget_store::put_answer`).
    boost::system::error_code keep_answer(std::string_view id, std::string_view answer);

    /// Every answer the store kept, by prompt id.
    boost::system::error_code read_answers(std::vector<std::pair<std::string, std::string>>& out);

    /// The free tier's quota through the store, when it shares one across a fleet (Redis):
    /// takes a request at `now_ms` and returns 0, or returns how long to wait; nothing when the
    /// store does not share it. For routers; not under the guard's lock.
    std::optional<std::int64_t>
    take_free_request(std::int64_t now_ms, std::uint32_t per_minute, std::uint32_t per_day);

    /// No free request before `until_ms` across the fleet (a 429's reset); false when the store
    /// does not share the quota.
    bool block_free_until(std::int64_t until_ms);

    /// Takes a request under a rate shared across a fleet through the store
    /// (`budget_store::take_rated_request`: `per_minute` a minute, as many at once, refilled
    /// evenly), without blocking the calling thread.
    ///
    /// @par Completion signature
    /// `void(boost::system::error_code, std::int64_t wait_ms)`: `wait_ms` is 0 when a request
    /// was taken, else how long until one is free. `error::not_found` when the store does not
    /// share rates (memory, SQLite) or cannot be reached: count in the process then.
    ///
    /// @par Executor
    /// Completes on the handler's associated executor (the system executor when it has none).
    template <class CompletionToken = boost::asio::deferred_t>
    auto async_take_rated_request(std::string_view limiter, std::uint32_t per_minute, CompletionToken&& token = {})
    {
        return boost::asio::async_initiate<
            CompletionToken, void(boost::system::error_code, std::int64_t)>(
            [this](auto handler, std::string_view name, std::uint32_t n) {
                boost::asio::any_io_executor ex = boost::asio::get_associated_executor(handler);
                take_rated_impl(name, n, ex, std::move(handler));
            },
            token, limiter, per_minute);
    }

    /// Stops all paid traffic: waiting requests are denied, in-flight ones are cancelled, new
    /// ones fail with `error::budget_closed`. Free calls go on.
    void close();

private:
    // No executor_type: the guard has no executor to offer, so the handler's own (or the
    // system executor) is the one the operation uses.
    struct reserve_initiation {
        budget_guard* self;
        template <class Handler>
        void operator()(Handler&& handler, const reserve_request& req) const
        {
            // The wait's timer runs on the handler's executor.
            boost::asio::any_io_executor ex = boost::asio::get_associated_executor(handler);
            self->async_reserve_impl(req, ex, std::forward<Handler>(handler));
        }
    };
    explicit budget_guard(std::shared_ptr<detail::guard_impl> impl) noexcept;
    void async_reserve_impl(
        const reserve_request& req,
        const boost::asio::any_io_executor& ex,
        boost::asio::any_completion_handler<void(boost::system::error_code, reservation)> h);
    void take_rated_impl(
        std::string_view limiter,
        std::uint32_t per_minute,
        const boost::asio::any_io_executor& ex,
        boost::asio::any_completion_handler<void(boost::system::error_code, std::int64_t)> h);
    std::shared_ptr<detail::guard_impl> impl_;
};

/// An upper bound of `req`'s prompt tokens from its text, for `reserve_request::prompt_bytes`:
/// every token covers at least one byte, plus a margin per message for the chat template.
std::uint64_t prompt_bound(const chat_request& req) noexcept;

/// Accounts for a request sent under `res` that ended with `ec` (and `response`, when it was
/// answered), the way a cascade does, so code that calls the client itself books what a router
/// would:
/// - answered: its tokens, and the provider's `usage.cost` when it can be taken as a bill,
///   else the tokens at the guard's prices (`price_catalog::booked_cost`); with neither, the
///   whole reservation, `estimated`;
/// - never sent (`diag.request_sent` false, a failed connect): released, nothing charged;
/// - refused with an HTTP error status: $0 (OpenRouter bills no refused request);
/// - cut, timed out or cancelled after sending: the whole reservation, `estimated` (until a
///   generation lookup proves the bill; `budget_guard::correct`).
///
/// `record` brings what only the caller knows (`tier`, `reason`, `latency_us`, `keys`,
/// `request_id`, `time_ms`; empty ones are filled from the reservation) and is filled with
/// the rest as the ledger wrote it: `outcome`, tokens, `cost`, `estimated`, `anomaly`,
/// `record_id`. Returns the store's error, if any (the guard then stops paid traffic). An
/// inactive `res` only fills `outcome` and the tokens.
boost::system::error_code settle(
    reservation& res,
    const boost::system::error_code& ec,
    const chat_response* response,
    const diagnostics& diag,
    attempt_record& record);

} // namespace frugal

#endif // FRUGAL_BUDGET_HPP
