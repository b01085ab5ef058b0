#include "budget/book.hpp"

#include <frugal/error.hpp>

#include <algorithm>
#include <limits>

namespace frugal::detail {

using boost::system::error_code;

namespace {

__extension__ using i128 = __int128; // GCC and Clang; -Wpedantic is told so

constexpr std::int64_t ms_per_day = 86'400'000;

std::int64_t floor_div(std::int64_t a, std::int64_t b) noexcept
{
    return a / b - ((a % b != 0) && ((a < 0) != (b < 0)) ? 1 : 0);
}

money clamp_units(i128 v) noexcept
{
    constexpr auto hi = static_cast<i128>(std::numeric_limits<money::rep>::max());
    constexpr auto lo = static_cast<i128>(std::numeric_limits<money::rep>::min());
    return money::from_units(static_cast<money::rep>(std::clamp(v, lo, hi)));
}

} // namespace

std::int64_t window_of(budget_period p, std::int64_t unix_ms) noexcept
{
    const std::int64_t days = floor_div(unix_ms, ms_per_day);
    switch (p) {
    case budget_period::none: return 0;
    case budget_period::daily: return days;
    // 1970-01-01 was a Thursday; weeks start on Monday, three days earlier.
    case budget_period::weekly: return floor_div(days + 3, 7);
    case budget_period::monthly: {
        // Howard Hinnant's civil_from_days: the proleptic Gregorian year and month.
        const std::int64_t z = days + 719468;
        const std::int64_t era = floor_div(z, 146097);
        const std::int64_t doe = z - era * 146097;
        const std::int64_t yoe = (doe - doe / 1460 + doe / 36524 - doe / 146096) / 365;
        const std::int64_t doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
        const std::int64_t mp = (5 * doy + 2) / 153;
        const std::int64_t month = mp < 10 ? mp + 3 : mp - 9; // 1..12
        const std::int64_t year = yoe + era * 400 + (month <= 2 ? 1 : 0);
        return year * 12 + (month - 1);
    }
    }
    return 0;
}

namespace {

// Howard Hinnant's days_from_civil: days since 1970-01-01 of a proleptic Gregorian date.
std::int64_t days_from_civil(std::int64_t y, std::int64_t m, std::int64_t d) noexcept
{
    y -= m <= 2 ? 1 : 0;
    const std::int64_t era = floor_div(y, 400);
    const std::int64_t yoe = y - era * 400;
    const std::int64_t doy = (153 * (m > 2 ? m - 3 : m + 9) + 2) / 5 + d - 1;
    const std::int64_t doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    return era * 146097 + doe - 719468;
}

} // namespace

std::int64_t window_end_ms(budget_period p, std::int64_t window) noexcept
{
    switch (p) {
    case budget_period::none: return std::numeric_limits<std::int64_t>::max();
    case budget_period::daily: return (window + 1) * ms_per_day;
    case budget_period::weekly: return ((window + 1) * 7 - 3) * ms_per_day;
    case budget_period::monthly: {
        const std::int64_t next = window + 1;
        const std::int64_t year = floor_div(next, 12);
        return days_from_civil(year, next - year * 12 + 1, 1) * ms_per_day;
    }
    }
    return std::numeric_limits<std::int64_t>::max();
}

} // namespace frugal::detail

namespace frugal {

std::int64_t period_window(budget_period p, std::int64_t unix_ms) noexcept
{
    return detail::window_of(p, unix_ms);
}

std::int64_t period_window_end_ms(budget_period p, std::int64_t window) noexcept
{
    return detail::window_end_ms(p, window);
}

} // namespace frugal

namespace frugal::detail {

money saturating_fma(money a, std::uint64_t n, money b) noexcept
{
    const i128 v = static_cast<i128>(a.units()) * static_cast<i128>(n) + b.units();
    return clamp_units(v);
}

window_account& budget_account::older_at(std::int64_t window)
{
    for (auto& w : older)
        if (w.window == window)
            return w;
    return older.emplace_back(window_account{window, {}, {}});
}

void budget_account::roll(std::int64_t window)
{
    if (window <= current.window)
        return; // a clock that steps back does not reopen a closed period
    if (current.reserved != money())
        older.push_back(current); // its reservations still settle into the period they began in
    current = {window, {}, {}};
    ends_ms = window_end_ms(period, window);
    tripped = false;
    stopped = false;
    stopped_by.clear();
    overshoot = {};
}

money budget_account::headroom() const noexcept
{
    const i128 h =
        static_cast<i128>(cap.units()) - current.committed.units() - current.reserved.units();
    return clamp_units(std::max<i128>(h, 0));
}

error_code book::configure(const std::vector<budget_spec>& specs, std::string& detail)
{
    for (const auto& s : specs) {
        if (s.name.empty()) {
            detail = "a budget has no name";
            return error::bad_budget_config;
        }
        if (s.cap < money()) {
            detail = "budget '" + s.name + "' has a negative cap (" + s.cap.to_string() + ")";
            return error::bad_budget_config;
        }
        const auto colon = s.name.find(':');
        if (colon != std::string::npos && (colon == 0 || colon + 1 == s.name.size())) {
            detail = "budget '" + s.name + "' must be a name, `kind:value` or `kind:*`";
            return error::bad_budget_config;
        }
        if (colon != std::string::npos && s.name.substr(colon + 1) == "*") {
            if (!templates_.emplace(s.name.substr(0, colon + 1), spec_entry{s.cap, s.period})
                     .second) {
                detail = "budget '" + s.name + "' is given twice";
                return error::bad_budget_config;
            }
            continue;
        }
        if (by_name_.contains(s.name)) {
            detail = "budget '" + s.name + "' is given twice";
            return error::bad_budget_config;
        }
        auto& a = make(s.name, spec_entry{s.cap, s.period});
        if (colon == std::string::npos)
            global_.push_back(&a);
    }
    return {};
}

budget_account& book::make(std::string_view name, const spec_entry& s)
{
    auto& a = accounts_.emplace_back();
    a.index = static_cast<std::uint32_t>(accounts_.size() - 1);
    a.name = std::string(name);
    a.cap = s.cap;
    a.period = s.period;
    a.current.window = std::numeric_limits<std::int64_t>::min();
    by_name_.emplace(a.name, &a);
    return a;
}

budget_account* book::find(std::string_view name) noexcept
{
    const auto it = by_name_.find(name);
    return it == by_name_.end() ? nullptr : it->second;
}

budget_account* book::find_or_make(std::string_view name)
{
    if (auto it = by_name_.find(name); it != by_name_.end())
        return it->second;
    const auto colon = name.find(':');
    if (colon == std::string_view::npos)
        return nullptr;
    const auto t = templates_.find(std::string(name.substr(0, colon + 1)));
    if (t == templates_.end())
        return nullptr;
    return &make(name, t->second);
}

error_code book::resolve(
    std::span<const std::string> keys,
    std::int64_t now_ms,
    std::vector<charge_ref>& out,
    std::string* detail)
{
    out.clear();
    for (auto* a : global_)
        out.push_back({a, 0});
    for (const auto& k : keys) {
        if (k.find(':') == std::string::npos) {
            if (detail != nullptr)
                *detail = "budget key '" + k + "' is not of the form kind:value";
            return error::bad_budget_config;
        }
        // A key no budget names is not limited beyond the global caps.
        if (auto* a = find_or_make(k)) {
            const bool seen = std::any_of(
                out.begin(), out.end(), [a](const charge_ref& c) { return c.account == a; });
            if (!seen)
                out.push_back({a, 0});
        }
    }
    for (auto& c : out) {
        // Rolling needs the calendar only when the current period has ended.
        if (now_ms >= c.account->ends_ms)
            c.account->roll(window_of(c.account->period, now_ms));
        c.window = c.account->current.window;
    }
    return {};
}

decision book::decide(
    std::span<const charge_ref> charges,
    const cost_bound& b,
    std::uint32_t want,
    std::uint32_t hold,
    std::uint32_t min_tokens,
    bool allow_clamp) const noexcept
{
    decision d;
    money head = money::from_units(std::numeric_limits<money::rep>::max());
    bool can_wait = true;
    for (const auto& c : charges) {
        const auto h = c.account->headroom();
        if (c.account->tripped || c.account->stopped) {
            d.result = shortfall::denied;
            d.limiting = c.account;
            return d;
        }
        if (h < head) {
            head = h;
            d.limiting = c.account;
        }
    }
    const auto need = saturating_fma(b.per_completion_token, hold, b.fixed);
    if (need <= head) {
        d.amount = need;
        d.max_tokens = want;
        return d;
    }
    if (allow_clamp && b.fixed <= head) {
        std::uint64_t n = want;
        if (b.per_completion_token > money())
            n = static_cast<std::uint64_t>(
                (head - b.fixed).units() / b.per_completion_token.units());
        if (n >= min_tokens) {
            d.max_tokens = static_cast<std::uint32_t>(std::min<std::uint64_t>(n, want));
            d.amount = saturating_fma(b.per_completion_token, d.max_tokens, b.fixed);
            d.clamped = true;
            return d;
        }
    }
    // Waiting helps only if some budget that is short has a reservation that will settle.
    for (const auto& c : charges)
        if (c.account->headroom() < need && c.account->in_flight == 0)
            can_wait = false;
    d.result = can_wait ? shortfall::wait : shortfall::denied;
    return d;
}

std::uint32_t book::acquire()
{
    if (!free_.empty()) {
        const auto s = free_.back();
        free_.pop_back();
        return s;
    }
    slots_.emplace_back();
    return static_cast<std::uint32_t>(slots_.size() - 1);
}

void book::free_slot(std::uint32_t slot)
{
    auto& r = slots_[slot];
    r.in_use = false;
    r.orphan = false;
    r.free = false;
    r.cancel.reset();
    r.generation_id.clear();
    free_.push_back(slot);
}

void book::hold(open_reservation& r)
{
    r.live = r.amount;
    for (auto& c : r.charges) {
        auto& w = c.account->at(c.window);
        w.reserved += r.amount;
        if (!r.orphan && !r.free)
            ++c.account->in_flight;
    }
}

void book::unhold(open_reservation& r)
{
    for (auto& c : r.charges) {
        auto& w = c.account->at(c.window);
        w.reserved -= r.live;
        if (!r.orphan && !r.free)
            --c.account->in_flight;
        if (&w != &c.account->current && w.reserved == money()) {
            std::erase_if(c.account->older, [&](const window_account& o) {
                return o.window == c.window && o.reserved == money();
            });
        }
    }
}

money book::worst(const open_reservation& r) noexcept
{
    return saturating_fma(r.bound.per_completion_token, r.max_tokens, r.bound.fixed);
}

void book::commit(open_reservation& r, money actual, std::vector<budget_account*>& reached)
{
    if (actual > worst(r))
        ++price_anomalies; // billed above the worst case of its own price list
    for (auto& c : r.charges) {
        auto& a = *c.account;
        auto& w = a.at(c.window);
        w.committed += actual;
        if (&w != &a.current)
            continue; // a period that has ended: its cap no longer guards anything
        const i128 used =
            static_cast<i128>(w.committed.units()) + w.reserved.units() - r.live.units();
        if (used > a.cap.units()) {
            a.overshoot = std::max(a.overshoot, clamp_units(used - a.cap.units()));
            reached.push_back(&a);
        } else if (mode == budget_mode::metered && used == a.cap.units()) {
            reached.push_back(&a);
        }
    }
    total_committed += actual;
    unhold(r);
}

void book::meter(open_reservation& r, std::uint64_t tokens, std::vector<budget_account*>& reached)
{
    const auto cost =
        std::max(r.amount, saturating_fma(r.bound.per_completion_token, tokens, r.bound.fixed));
    if (cost <= r.live)
        return;
    const auto delta = cost - r.live;
    r.live = cost;
    for (auto& c : r.charges) {
        auto& w = c.account->at(c.window);
        w.reserved += delta;
        if (&w == &c.account->current &&
            static_cast<i128>(w.committed.units()) + w.reserved.units() >= c.account->cap.units())
            reached.push_back(c.account);
    }
}

void book::add_committed(budget_account& a, std::int64_t window, money delta)
{
    a.roll(window);
    if (window == a.current.window)
        a.current.committed += delta; // an ended period's cap no longer guards anything
}

namespace {

budget_snapshot snapshot_of(const budget_account& a)
{
    budget_snapshot s;
    s.name = a.name;
    s.cap = a.cap;
    s.period = a.period;
    s.window = a.current.window == std::numeric_limits<std::int64_t>::min() ? 0 : a.current.window;
    s.committed = a.current.committed;
    s.reserved = a.current.reserved;
    s.overshoot = a.overshoot;
    s.tripped = a.tripped;
    s.stopped = a.stopped;
    return s;
}

} // namespace

std::vector<budget_snapshot> book::snapshot() const
{
    std::vector<budget_snapshot> out;
    out.reserve(accounts_.size());
    for (const auto& a : accounts_)
        out.push_back(snapshot_of(a));
    return out;
}

std::optional<budget_snapshot> book::snapshot(std::string_view name) const
{
    const auto it = by_name_.find(name);
    if (it == by_name_.end())
        return std::nullopt;
    return snapshot_of(*it->second);
}

} // namespace frugal::detail
