#include "budget/book.hpp"

#include <frugal/error.hpp>

#include <algorithm>
#include <map>
#include <set>
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

const char* to_string(budget_period p) noexcept
{
    switch (p) {
    case budget_period::none: return "none";
    case budget_period::daily: return "daily";
    case budget_period::weekly: return "weekly";
    case budget_period::monthly: return "monthly";
    }
    return "none";
}

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

namespace {

// The kind of a budget name, up to and with its first colon ("user:" of "user:42"), or empty.
std::string_view kind_of(std::string_view name) noexcept
{
    const auto colon = name.find(':');
    return colon == std::string_view::npos ? std::string_view() : name.substr(0, colon + 1);
}

// "kind:*": every budget key of that kind has a budget of its own, made when first charged.
bool is_template(std::string_view name) noexcept
{
    const auto colon = name.find(':');
    return colon != std::string_view::npos && name.substr(colon + 1) == "*";
}

// The rules every set of budgets keeps, whether a guard opens with it or takes it later.
error_code validate(const std::vector<budget_spec>& specs, std::string& detail)
{
    std::set<std::string_view> names;
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
        if (!names.insert(s.name).second) {
            detail = "budget '" + s.name + "' is given twice";
            return error::bad_budget_config;
        }
    }
    return {};
}

} // namespace

std::int64_t period_start_ms(budget_period p, std::int64_t now_ms) noexcept
{
    if (p == budget_period::none)
        return std::numeric_limits<std::int64_t>::min();
    return window_end_ms(p, window_of(p, now_ms) - 1);
}

namespace {

// The arriving budgets a record counts in: each arriving budget without a kind, and each of
// its keys' own (a name of its own, else its kind's template), in their period current at
// `now_ms`. What seeds_of sums and unread_by stops.
class arriving_budgets {
public:
    arriving_budgets(
        const std::vector<budget_spec>& specs, const std::set<std::string, std::less<>>& arriving)
        : arriving_(arriving), index_(specs)
    {
        for (const auto& s : specs)
            if (s.name.find(':') == std::string::npos && arriving.contains(s.name))
                global_.push_back(&s);
    }

    // The arriving spec `key` is under, or none.
    const budget_spec* spec_of(std::string_view key) const
    {
        const auto* s = index_.find(key);
        return s != nullptr && arriving_.contains(s->name) ? s : nullptr;
    }

    // Calls `f(name)` once for each budget a record made under `keys` at `time_ms` counts in.
    template <class F>
    void of_record(std::string_view keys, std::int64_t time_ms, std::int64_t now_ms, F&& f)
    {
        for (const auto* g : global_)
            if (window_of(g->period, time_ms) == window_of(g->period, now_ms))
                f(std::string_view(g->name));
        // `keys` is space separated; a key is charged once however often it is named, and a
        // word with no colon is no key (budgets without one count every record, above).
        seen_.clear();
        while (!keys.empty()) {
            const auto space = keys.find(' ');
            const auto key = keys.substr(0, space);
            keys = space == std::string_view::npos ? std::string_view() : keys.substr(space + 1);
            if (key.find(':') == std::string_view::npos || !seen_.insert(key).second)
                continue;
            const auto* s = spec_of(key);
            if (s != nullptr && window_of(s->period, time_ms) == window_of(s->period, now_ms))
                f(key);
        }
    }

private:
    const std::set<std::string, std::less<>>& arriving_;
    const spec_index index_;
    std::vector<const budget_spec*> global_;
    std::set<std::string_view> seen_;
};

} // namespace

std::vector<budget_seed> seeds_of(
    const std::vector<budget_spec>& specs,
    const std::set<std::string, std::less<>>& arriving,
    std::span<const budget_charge> committed,
    std::span<const attempt_record> records,
    std::int64_t now_ms)
{
    // name → {from the store, from the ledger}
    std::map<std::string, std::pair<money, money>, std::less<>> sums;
    arriving_budgets budgets(specs, arriving);
    for (const auto& c : committed) {
        const auto* s = budgets.spec_of(c.budget);
        if (s != nullptr && c.window == window_of(s->period, now_ms))
            sums[c.budget].first += c.amount;
    }
    for (const auto& r : records) {
        if (r.cost <= money())
            continue;
        budgets.of_record(r.keys, r.time_ms, now_ms, [&](std::string_view name) {
            auto it = sums.find(name);
            if (it == sums.end())
                it = sums.emplace(std::string(name), std::pair<money, money>{}).first;
            it->second.second += r.cost;
        });
    }
    std::vector<budget_seed> out;
    for (const auto& [name, v] : sums)
        out.push_back({name, std::max(v.first, v.second)});
    return out;
}

std::vector<std::string> unread_by(
    const std::vector<budget_spec>& specs,
    const std::set<std::string, std::less<>>& arriving,
    std::span<const std::pair<std::string, std::int64_t>> dropped,
    std::int64_t now_ms)
{
    if (dropped.empty())
        return {};
    std::set<std::string, std::less<>> out;
    arriving_budgets budgets(specs, arriving);
    for (const auto& [keys, latest] : dropped)
        budgets.of_record(keys, latest, now_ms, [&](std::string_view name) {
            out.emplace(name);
        });
    return {out.begin(), out.end()};
}

spec_index::spec_index(const std::vector<budget_spec>& specs)
{
    for (const auto& s : specs) {
        if (is_template(s.name))
            kinds_.emplace(std::string_view(s.name).substr(0, s.name.size() - 1), &s);
        else
            names_.emplace(s.name, &s);
    }
}

const budget_spec* spec_index::find(std::string_view name) const noexcept
{
    if (const auto it = names_.find(name); it != names_.end())
        return it->second;
    const auto kind = kind_of(name);
    if (kind.empty())
        return nullptr;
    const auto it = kinds_.find(kind);
    return it == kinds_.end() ? nullptr : it->second;
}

error_code book::configure(const std::vector<budget_spec>& specs, std::string& detail)
{
    if (auto ec = validate(specs, detail))
        return ec;
    for (const auto& s : specs) {
        if (is_template(s.name)) {
            templates_.emplace(s.name.substr(0, s.name.size() - 1), spec_entry{s.cap, s.period});
            continue;
        }
        auto& a = make(s.name, spec_entry{s.cap, s.period});
        if (s.name.find(':') == std::string::npos)
            global_.push_back(&a);
    }
    return {};
}

error_code book::check_reconfigure(const std::vector<budget_spec>& specs, std::string& detail) const
{
    if (auto ec = validate(specs, detail))
        return ec;
    const spec_index index(specs);
    for (const auto& a : accounts_) {
        if (a.retired)
            continue;
        const auto* s = index.find(a.name);
        if (s != nullptr && s->period != a.period) {
            detail = "budget '" + a.name + "' would change its period from " +
                     to_string(a.period) + " to " + to_string(s->period) +
                     " (spend is kept per period: a period changes when the guard opens)";
            return error::bad_budget_config;
        }
    }
    for (const auto& a : accounts_) {
        if (!a.retired || by_name_.contains(a.name))
            continue;
        const auto* s = index.find(a.name);
        const bool holds = a.current.reserved != money() || !a.older.empty();
        if (s != nullptr && s->period != a.period && holds) {
            detail = "budget '" + a.name + "' would come back with another period (" +
                     to_string(s->period) + ", not " + to_string(a.period) +
                     ") while requests granted under it are in flight";
            return error::bad_budget_config;
        }
    }
    for (const auto& [kind, t] : templates_) {
        const auto* s = index.find(kind + "*");
        if (s != nullptr && s->name == kind + "*" && s->period != t.period) {
            detail = "budget '" + kind + "*' would change its period from " +
                     to_string(t.period) + " to " + to_string(s->period) +
                     " (spend is kept per period: a period changes when the guard opens)";
            return error::bad_budget_config;
        }
    }
    return {};
}

std::set<std::string, std::less<>> book::arrivals(const std::vector<budget_spec>& specs) const
{
    std::set<std::string, std::less<>> out;
    for (const auto& s : specs) {
        const bool in_force = is_template(s.name)
                                  ? templates_.contains(s.name.substr(0, s.name.size() - 1))
                                  : by_name_.contains(s.name);
        if (!in_force)
            out.insert(s.name);
    }
    return out;
}

bool arrival_plan::uncounted(const attempt_record& r) const noexcept
{
    if (r.reservation_id == 0)
        return true; // nothing held (a free call, a denial): charged to no budget that came
    if (r.reservation_id >= next_id)
        return false; // granted after: charged to them
    return !std::binary_search(in_flight.begin(), in_flight.end(), r.reservation_id);
}

arrival_plan book::reconfigure(
    const std::vector<budget_spec>& specs,
    const std::set<std::string, std::less<>>& arriving,
    std::int64_t now_ms,
    std::uint64_t next_id)
{
    const spec_index index(specs);
    templates_.clear();
    for (const auto& s : specs)
        if (is_template(s.name))
            templates_.emplace(s.name.substr(0, s.name.size() - 1), spec_entry{s.cap, s.period});
    global_.clear();
    for (auto& a : accounts_) {
        if (a.retired)
            continue;
        const auto* s = index.find(a.name);
        if (s == nullptr) {
            a.retired = true;
            by_name_.erase(a.name);
            retired_[a.name].push_back(&a);
            continue;
        }
        if (s->cap > a.cap && !a.stopped)
            a.tripped = false; // the cap reached was the old one
        a.cap = s->cap;
        if (a.name.find(':') == std::string::npos)
            global_.push_back(&a);
    }
    arrival_plan plan;
    plan.next_id = next_id;
    plan.time_ms = now_ms;
    std::unordered_map<std::string_view, budget_account*> came; // by name
    std::vector<budget_account*> came_global;
    for (const auto& name : arriving)
        if (is_template(name))
            seeding_kinds_.insert(name.substr(0, name.size() - 1));
    auto arrive = [&](budget_account& a) {
        a.roll(window_of(a.period, now_ms));
        if (a.unread) {
            // Brought back to be read again: the stop was for want of that reading.
            a.stopped = false;
            a.stopped_by.clear();
            a.unread = false;
        }
        a.seeding = true;
        plan.came.push_back({&a, a.current.window, a.current.committed});
        if (a.name.find(':') == std::string::npos)
            came_global.push_back(&a);
        else
            came.emplace(a.name, &a);
    };
    for (const auto& s : specs) {
        if (is_template(s.name) || by_name_.contains(s.name))
            continue;
        auto& a = make(s.name, spec_entry{s.cap, s.period});
        arrive(a);
        if (a.name.find(':') == std::string::npos)
            global_.push_back(&a);
    }
    // A template that comes back brings back its instances (of its period) now, with the spend
    // they kept, so what they spent since they went is added to it, not all of it again.
    std::vector<std::string> back;
    for (const auto& [name, kept] : retired_) {
        const auto* s = index.find(name);
        if (s != nullptr && is_template(s->name) && arriving.contains(s->name) &&
            std::any_of(kept.begin(), kept.end(), [&](const budget_account* k) {
                return k->period == s->period;
            }))
            back.push_back(name);
    }
    for (const auto& name : back)
        if (auto* a = find_or_make(name))
            arrive(*a);
    for (auto it = unread_kinds_.begin(); it != unread_kinds_.end();)
        it = templates_.contains(it->first) && !arriving.contains(it->first + "*")
                 ? std::next(it)
                 : unread_kinds_.erase(it);
    // Requests in flight under a budget that came were granted without it: each counts at its
    // worst case, as spent, for the rest of the period (the ledger's record of it, when it
    // comes, is not counted again). A new template's instance whose only spend is in flight
    // is made here.
    for (const auto& r : slots_) {
        if (!r.in_use || r.free || r.orphan)
            continue;
        plan.in_flight.push_back(r.id);
        for (const auto& key : r.keys) {
            const auto* s = index.find(key);
            if (s == nullptr || !arriving.contains(s->name) || by_name_.contains(key))
                continue;
            if (auto* a = find_or_make(key))
                arrive(*a);
        }
    }
    std::sort(plan.in_flight.begin(), plan.in_flight.end());
    std::unordered_map<const budget_account*, arrival_plan::arrival*> arrived;
    for (auto& c : plan.came)
        arrived.emplace(c.account, &c);
    for (auto& r : slots_) {
        if (!r.in_use || r.free || r.orphan)
            continue;
        // A budget back that counted this request when it came before counts it still; its
        // own spend, which the ledger's may replace, is what it holds without that.
        for (const auto& c : r.counted) {
            const auto it = arrived.find(c.account);
            if (it != arrived.end() && it->second->window == c.window)
                it->second->own -= c.amount;
        }
        auto count = [&](budget_account* a) {
            const bool charged = std::any_of(
                r.charges.begin(), r.charges.end(), [a](const charge_ref& c) { return c.account == a; });
            const bool counted = std::any_of(
                r.counted.begin(), r.counted.end(), [a](const auto& c) { return c.account == a; });
            if (charged || counted)
                return;
            const auto amount = worst(r);
            a->current.committed += amount;
            r.counted.push_back({a, a->current.window, amount});
        };
        for (auto* a : came_global)
            count(a);
        for (std::size_t k = 0; k < r.keys.size(); ++k) {
            const auto it = came.find(r.keys[k]);
            const bool repeated =
                std::find(r.keys.begin(), r.keys.begin() + static_cast<std::ptrdiff_t>(k), r.keys[k]) !=
                r.keys.begin() + static_cast<std::ptrdiff_t>(k);
            if (it != came.end() && !repeated)
                count(it->second);
        }
    }
    return plan;
}

void book::seed(const arrival_plan& plan, std::span<const budget_seed> seeds, std::int64_t now_ms)
{
    std::unordered_map<std::string_view, const arrival_plan::arrival*> came;
    for (const auto& c : plan.came)
        came.emplace(c.account->name, &c);
    for (const auto& z : seeds) {
        const auto found = came.find(z.name);
        if (found != came.end() && !found->second->account->retired) {
            const auto* it = found->second;
            // It counts its own spend of the period already (a budget back), and what was in
            // flight when it came.
            if (it->account->current.window == it->window && z.committed > it->own)
                it->account->current.committed += z.committed - it->own;
            continue;
        }
        // A new template's instance that spent before its template came: made now, or made
        // since by a request (whose spend it counts, and the records of which were left out).
        // An account that was in force already (a name of its own, now its template's
        // instance) counts its spend: it is not seeded again.
        auto* a = find_or_make(z.name);
        if (a == nullptr || !a->seeding)
            continue;
        const auto window = window_of(a->period, now_ms);
        if (window < a->current.window)
            continue;
        a->roll(window);
        if (window == window_of(a->period, plan.time_ms))
            a->current.committed += z.committed;
    }
    for (auto& a : accounts_)
        a.seeding = false;
    seeding_kinds_.clear();
}

void book::stop_unread(std::string_view name, const std::string& why)
{
    auto* a = find_or_make(name);
    if (a == nullptr)
        return;
    if (!a->stopped)
        a->stopped_by = why;
    a->stopped = true;
    a->unread = true;
}

void book::seed_failed(const std::string& why)
{
    for (auto& a : accounts_) {
        if (!a.seeding)
            continue;
        a.seeding = false;
        if (!a.stopped) {
            a.stopped_by = why;
            a.unread = true;
        }
        a.stopped = true;
    }
    // Instances of those templates made later are stopped for the same reason.
    for (const auto& kind : seeding_kinds_)
        unread_kinds_.insert_or_assign(kind, why);
    seeding_kinds_.clear();
}

budget_account& book::make(std::string_view name, const spec_entry& s)
{
    // A budget that comes back with its period is the account it was: its spend of the period
    // and the reservations granted under it still count, and a surprise's stop stays.
    if (const auto it = retired_.find(name); it != retired_.end()) {
        auto& kept = it->second;
        for (auto k = kept.begin(); k != kept.end(); ++k) {
            auto& old = **k;
            if (old.period != s.period)
                continue;
            old.retired = false;
            old.seeding = seeding_kinds_.contains(kind_of(name));
            if (s.cap > old.cap && !old.stopped)
                old.tripped = false; // the cap reached was the old one
            old.cap = s.cap;
            by_name_.emplace(old.name, &old);
            kept.erase(k);
            if (kept.empty())
                retired_.erase(it);
            return old;
        }
    }
    auto& a = accounts_.emplace_back();
    if (!seeding_kinds_.empty() || !unread_kinds_.empty()) {
        const auto kind = kind_of(name);
        a.seeding = seeding_kinds_.contains(kind); // a kind is never empty
        if (const auto u = unread_kinds_.find(kind); u != unread_kinds_.end()) {
            a.stopped = true;
            a.stopped_by = u->second;
            a.unread = true;
        }
    }
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

budget_account* book::find_kept(std::string_view name)
{
    if (auto* a = find(name))
        return a;
    if (const auto it = retired_.find(name); it != retired_.end() && !it->second.empty())
        return it->second.back();
    return find_or_make(name);
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
        if (c.account->seeding) {
            // Its earlier spend is being read (budget_guard::set_budgets): a short wait.
            d.result = shortfall::wait;
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
    r.counted.clear();
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
        if (&w != &a.current || a.retired)
            continue; // a period that has ended, or a budget dropped: no cap guards it
        const i128 used =
            static_cast<i128>(w.committed.units()) + w.reserved.units() - r.live.units();
        // In strict mode only a settlement above what it held passes a cap: a cap lowered
        // under the reservations in flight is not passed by their settling within them.
        const bool above_hold = mode == budget_mode::metered || actual > r.live;
        if (used > a.cap.units() && above_hold) {
            a.overshoot = std::max(a.overshoot, clamp_units(used - a.cap.units()));
            reached.push_back(&a);
        } else if (mode == budget_mode::metered && used == a.cap.units()) {
            reached.push_back(&a);
        }
    }
    // Budgets that came while it was in flight count it at its worst case; a bill above that
    // (a surprise) is counted whole there too.
    for (const auto& c : r.counted) {
        auto& a = *c.account;
        if (actual <= c.amount || c.window != a.current.window)
            continue;
        a.current.committed += actual - c.amount;
        const i128 used = static_cast<i128>(a.current.committed.units()) + a.current.reserved.units();
        if (!a.retired && used > a.cap.units()) {
            a.overshoot = std::max(a.overshoot, clamp_units(used - a.cap.units()));
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
        if (&w == &c.account->current && !c.account->retired &&
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
        if (!a.retired)
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
