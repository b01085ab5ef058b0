#ifndef FRUGAL_BUDGET_TYPES_HPP
#define FRUGAL_BUDGET_TYPES_HPP

/// @file
/// The budget's plain types: caps, periods, what a request asks and what a budget's state is.
/// Apart from budget.hpp so that code which only decides or reports (the guard's sans-io book,
/// a report) needs no Asio.

#include <frugal/money.hpp>

#include <chrono>
#include <cstdint>
#include <functional>
#include <span>
#include <string>
#include <string_view>
#include <vector>

namespace frugal {

/// When a budget starts again from zero. Periods are calendar periods in UTC: a day starts at
/// 00:00, a week on Monday 00:00, a month on its first day 00:00.
enum class budget_period { none, daily, weekly, monthly };

/// A named spend cap.
///
/// A name without a colon ("global", "monthly") is a cap on every request. A name `kind:value`
/// ("tenant:acme") caps the requests made under that key. A name `kind:*` ("user:*") gives
/// every distinct key of that kind its own cap of the same amount.
struct budget_spec {
    std::string name;
    money cap;
    budget_period period = budget_period::none;
    bool operator==(const budget_spec&) const = default;
};

/// The name of `p` as notes and reports write it ("none", "daily", "weekly", "monthly").
const char* to_string(budget_period p) noexcept;

/// What the guard promises.
enum class budget_mode {
    /// Every request reserves its worst case before it is sent, so for every budget
    /// committed + reserved ≤ cap at every instant.
    strict,
    /// Requests reserve their expected cost and meter their tokens as they stream; when
    /// committed + metered reaches a cap every in-flight request under it is cancelled. Spend
    /// may pass the cap by what the streams in flight produce before their cancellation lands
    /// (docs/budget.md gives the bound and its measurement). More traffic fits under a cap.
    metered,
};

/// Options of a `budget_guard`.
struct budget_params {
    std::vector<budget_spec> budgets;
    budget_mode mode = budget_mode::strict;
    /// The smallest max_tokens a clamped request may be given; below it, it waits or is denied.
    std::uint32_t min_max_tokens = 64;
    /// How long `async_reserve` waits for in-flight reservations to settle before denying.
    std::chrono::milliseconds max_wait{2000};
    /// Metered mode: the completion tokens a request reserves (at most its max_tokens).
    std::uint32_t expected_completion_tokens = 256;
    /// The clock that places spend in periods; tests set it.
    std::function<std::chrono::system_clock::time_point()> clock;
};

/// What a request asks of the guard.
struct reserve_request {
    std::string_view model;
    /// The size of the request body as it will be sent: the bound on its prompt tokens.
    std::uint64_t prompt_bytes = 0;
    /// The max_tokens the request wants; 0 means the model's maximum completion.
    std::uint32_t max_tokens = 0;
    /// Whether the guard may lower max_tokens to fit the headroom.
    bool allow_clamp = true;
    /// The keys the request is made under ("tenant:acme", "user:42").
    std::span<const std::string> keys;
    std::uint64_t request_id = 0;
    /// The request's `extra_body`: what it turns on may cost more than its tokens
    /// (`inspect_extra_body`); fees the catalog cannot bound are refused under a cap.
    std::string_view extra_body;
};

/// The state of one budget instance.
struct budget_snapshot {
    std::string name;
    money cap;
    budget_period period = budget_period::none;
    std::int64_t window = 0;
    money committed; ///< settled spend in the current window
    money reserved;  ///< open reservations in the current window (metered: their live cost)
    money overshoot; ///< spend beyond the cap (a provider billing above its price list)
    /// The cap was reached: paid requests are refused until the next period or `reset`.
    bool tripped = false;
    /// A provider billed above its own prices under this budget (a surprise): every request,
    /// free ones included, is refused until the next period or `reset`.
    bool stopped = false;
};

/// A bill a provider's prices did not allow, or a cost it reported that frugal could not
/// take as a bill. Kept by the guard, written into the ledger record (`attempt_record::anomaly`),
/// and shown by the CLI, which exits with status 3.
struct spend_anomaly {
    std::int64_t time_ms = 0;
    std::string model; ///< the model asked
    money booked;      ///< what the guard charged for it
    money allowed;     ///< the worst case its prices allowed (its reservation)
    /// Whether the provider billed above `allowed` (a "free" model that bills included): the
    /// budgets below are stopped and the model is `price_unknown` for the rest of the process.
    bool surprise = false;
    std::string what;                 ///< as `attempt_record::anomaly` says it
    std::vector<std::string> budgets; ///< the budgets it was charged to
};

/// The index of the period of `p` holding `unix_ms` (0 for budgets that never reset): the
/// `window` of a `budget_snapshot`, a `budget_charge` and the ledger's spend.
std::int64_t period_window(budget_period p, std::int64_t unix_ms) noexcept;

/// When the period `window` of `p` ends, in Unix milliseconds.
std::int64_t period_window_end_ms(budget_period p, std::int64_t window) noexcept;

} // namespace frugal

#endif // FRUGAL_BUDGET_TYPES_HPP
