#ifndef FRUGAL_SRC_BUDGET_BOOK_HPP
#define FRUGAL_SRC_BUDGET_BOOK_HPP

// The budget guard's accounting, sans-io: budget instances and their windows, open
// reservations, and the reserve / meter / settle arithmetic. No locking (the guard holds its
// lock around every call) and no Asio.

#include <frugal/budget_store.hpp>
#include <frugal/budget_types.hpp>
#include <frugal/prices.hpp>

#include <boost/system/error_code.hpp>

#include <cstdint>
#include <deque>
#include <limits>
#include <map>
#include <memory>
#include <set>
#include <span>
#include <string>
#include <string_view>
#include <unordered_map>
#include <vector>

namespace frugal::detail {

// What the guard needs to stop a reservation's request (an Asio signal): opaque here, so the
// book decides without knowing how a request is stopped.
struct cancel_state;

// The index of the period containing `unix_ms` (0 for budgets that never reset).
std::int64_t window_of(budget_period p, std::int64_t unix_ms) noexcept;

// When the period `window` of `p` ends, in Unix milliseconds.
std::int64_t window_end_ms(budget_period p, std::int64_t window) noexcept;

// a × n + b, saturating at the largest amount (a bound that large never fits any cap).
money saturating_fma(money a, std::uint64_t n, money b) noexcept;

// `price_catalog::token_cost` at a row already found (null: not listed).
boost::system::result<money> token_cost(const model_price* p, const usage& u);

struct window_account {
    std::int64_t window = 0;
    money committed;
    money reserved;
};

struct budget_account {
    std::uint32_t index = 0;
    std::string name;
    money cap;
    budget_period period = budget_period::none;
    window_account current;
    std::vector<window_account> older; // earlier windows that still have open reservations
    money overshoot;
    bool tripped = false;        // the cap was reached: paid requests are refused
    bool stopped = false;        // a surprise was charged here: every request is refused
    bool retired = false;        // dropped by `book::reconfigure`: only its reservations remain
    bool seeding = false;        // came, its earlier spend not yet read: requests wait
    bool unread = false;         // stopped because that spend could not be read
    std::string stopped_by;      // the surprise, as the ledger says it
    std::uint32_t in_flight = 0; // open reservations a settlement can come from (not orphans)
    std::int64_t ends_ms = std::numeric_limits<std::int64_t>::min(); // the current period's end

    window_account& at(std::int64_t window)
    {
        return window == current.window ? current : older_at(window);
    }
    window_account& older_at(std::int64_t window);
    void roll(std::int64_t window);
    money headroom() const noexcept;
};

struct charge_ref {
    budget_account* account = nullptr;
    std::int64_t window = 0;
};

// An open reservation. Slots are reused, so their strings and vectors keep their capacity and
// a steady stream of reservations allocates nothing.
struct open_reservation {
    bool in_use = false;
    bool orphan = false; // left open by an earlier run
    bool free = false;   // a free model's: holds nothing, never in a store
    std::uint64_t id = 0;
    std::uint64_t request_id = 0;
    std::int64_t time_ms = 0;
    money amount; // held against each budget
    money live;   // metered mode: max(amount, cost of the tokens streamed so far)
    cost_bound bound;
    std::uint32_t max_tokens = 0;
    std::string model;
    std::string generation_id;
    std::vector<charge_ref> charges;
    std::vector<std::string> keys; // the request's budget keys: what a budget that comes counts
    // Budgets that came while it was in flight, granted without them: each counts it at its
    // worst case once (`book::reconfigure`), however often it goes and comes back meanwhile.
    struct counted_by {
        budget_account* account = nullptr;
        std::int64_t window = 0;
        money amount;
    };
    std::vector<counted_by> counted;
    std::shared_ptr<cancel_state> cancel;
};

// Why a reservation was not granted.
enum class shortfall {
    none,
    wait,   // short of headroom, but in-flight reservations may free some
    denied, // short of headroom with nothing in flight, or a budget is tripped
};

struct decision {
    shortfall result = shortfall::none;
    money amount;
    std::uint32_t max_tokens = 0;
    bool clamped = false;
    const budget_account* limiting = nullptr;
};

// The spend a budget starts with when it comes into force while the guard runs: what the
// ledger and the store say it spent in its current period before it had a cap.
struct budget_seed {
    std::string name;
    money committed;
};

// What `book::reconfigure` did for the budgets that came, for `book::seed` to finish once the
// ledger has been read: which accounts came with what spend of their own, and which records
// the ledger may hold that they count already.
struct arrival_plan {
    struct arrival {
        budget_account* account = nullptr;
        std::int64_t window = 0;
        money own; // its spend of the period when it came (a budget back), before the in-flight
    };
    std::vector<arrival> came;
    // Ids of the reservations in flight when they came (sorted): counted at their worst case
    // or charged to them, so their records are not counted again.
    std::vector<std::uint64_t> in_flight;
    std::uint64_t next_id = 0; // ids from here on were granted after: charged to them
    std::int64_t time_ms = 0;

    // Whether `r` is spend the budgets that came have not counted: settled before they came.
    bool uncounted(const attempt_record& r) const noexcept;
};

// The spec each budget name is under in `specs`: its own, else its kind's template
// ("user:*"). Hashed, so a reload of many tenants costs a lookup per account, not a scan.
// Views into `specs`, which must outlive it.
class spec_index {
public:
    explicit spec_index(const std::vector<budget_spec>& specs);
    const budget_spec* find(std::string_view name) const noexcept;

private:
    std::unordered_map<std::string_view, const budget_spec*> names_;
    std::unordered_map<std::string_view, const budget_spec*> kinds_; // "user:" → "user:*"
};

// The spend each arriving budget had in its current period at `now_ms`: the larger of what
// `committed` (a store's) holds for it there and what the ledger's `records` made under its
// key cost there (every record, for a budget with no kind). `arriving` names specs of `specs`
// (a template by its "kind:*"); a key is under the spec `spec_index` gives, so a name of its own
// wins over its kind's template. Budgets that spent nothing get no seed.
std::vector<budget_seed> seeds_of(
    const std::vector<budget_spec>& specs,
    const std::set<std::string, std::less<>>& arriving,
    std::span<const budget_charge> committed,
    std::span<const attempt_record> records,
    std::int64_t now_ms);

// The arriving budgets (instances by name) that would have counted, in their current period at
// `now_ms`, a record the store dropped (`budget_store::dropped_since`: keys, latest time).
std::vector<std::string> unread_by(
    const std::vector<budget_spec>& specs,
    const std::set<std::string, std::less<>>& arriving,
    std::span<const std::pair<std::string, std::int64_t>> dropped,
    std::int64_t now_ms);

// When the period containing `now_ms` began (the earliest time for a budget that never resets).
std::int64_t period_start_ms(budget_period p, std::int64_t now_ms) noexcept;

class book {
public:
    boost::system::error_code configure(const std::vector<budget_spec>& specs, std::string& detail);

    // Checks `specs` as `configure` would, and as a replacement of the budgets in force: a
    // budget in force whose period would change is refused (its spend is kept per period, and
    // the store knows the periods only by their index).
    boost::system::error_code
    check_reconfigure(const std::vector<budget_spec>& specs, std::string& detail) const;

    // The specs of `specs` not in force now (names, and templates by their "kind:*"): the
    // budgets to seed.
    std::set<std::string, std::less<>> arrivals(const std::vector<budget_spec>& specs) const;

    // Puts `specs` (checked) in force at `now_ms`. A budget that stays takes its new cap (a
    // raised cap lifts a trip, not a stop); one that goes is retired (its open reservations
    // settle into it); one that comes counts the worst case of each request in flight under
    // its key (until `seed` adds what it spent before), and one that comes back with its
    // period is the account it was, its reservations still held. `next_id` is the id the next
    // reservation will get.
    arrival_plan reconfigure(
        const std::vector<budget_spec>& specs,
        const std::set<std::string, std::less<>>& arriving,
        std::int64_t now_ms,
        std::uint64_t next_id);
    // Adds to the budgets that came what `seeds` (from records `plan.uncounted` kept, and the
    // store's spend read before they came) says they spent before, beyond what they count.
    // Until then the budgets that came (and instances of templates that came, made meanwhile)
    // grant nothing: their earlier spend is not counted yet. `unread` (the ledger could not be
    // read): they are stopped instead, saying why.
    void seed(const arrival_plan& plan, std::span<const budget_seed> seeds, std::int64_t now_ms);
    void seed_failed(const std::string& why);
    // Stops budget instance `name` (made if it is a template's) until it is brought back:
    // what it spent before it came is unknown.
    void stop_unread(std::string_view name, const std::string& why);

    // The budget windows a request under `keys` is charged to at `now_ms`, rolling windows.
    boost::system::error_code resolve(
        std::span<const std::string> keys,
        std::int64_t now_ms,
        std::vector<charge_ref>& out,
        std::string* detail);

    // What the guard may grant a request with bound `b`, wanting `want` tokens (of which a
    // metered reservation holds `hold`).
    decision decide(
        std::span<const charge_ref> charges,
        const cost_bound& b,
        std::uint32_t want,
        std::uint32_t hold,
        std::uint32_t min_tokens,
        bool allow_clamp) const noexcept;

    // Slot management.
    std::uint32_t acquire();
    open_reservation& at(std::uint32_t slot) { return slots_[slot]; }
    std::deque<open_reservation>& slots() noexcept { return slots_; }
    const std::deque<open_reservation>& slots() const noexcept { return slots_; }
    void free_slot(std::uint32_t slot);

    // Holds `r.amount` against every charge of `r`.
    void hold(open_reservation& r);
    // Gives back what `r` holds.
    void unhold(open_reservation& r);
    // The most `r` may cost by its model's prices: above it, a settlement is a surprise.
    static money worst(const open_reservation& r) noexcept;
    // Replaces what `r` holds by `actual`; returns the accounts whose cap was reached or
    // passed (to trip).
    void commit(open_reservation& r, money actual, std::vector<budget_account*>& reached);
    // Metered mode: raises what `r` holds to the cost of `tokens` completion tokens.
    void meter(open_reservation& r, std::uint64_t tokens, std::vector<budget_account*>& reached);
    // Moves the committed spend of one window (a correction, or spend loaded from a store).
    void add_committed(budget_account& a, std::int64_t window, money delta);

    budget_account* find_or_make(std::string_view name);
    budget_account* find(std::string_view name) noexcept;
    // The account `name` is, in force or retired (a correction of spend charged before it was
    // dropped), else `find_or_make`'s.
    budget_account* find_kept(std::string_view name);
    std::vector<budget_snapshot> snapshot() const;
    std::optional<budget_snapshot> snapshot(std::string_view name) const;

    budget_mode mode = budget_mode::strict;
    money total_committed;
    std::uint64_t price_anomalies = 0;

private:
    struct spec_entry {
        money cap;
        budget_period period = budget_period::none;
    };
    budget_account& make(std::string_view name, const spec_entry& s);

    std::deque<budget_account> accounts_; // stable addresses
    std::vector<budget_account*> global_;
    struct name_hash {
        using is_transparent = void;
        std::size_t operator()(std::string_view s) const noexcept
        {
            return std::hash<std::string_view>{}(s);
        }
    };
    std::unordered_map<std::string, budget_account*, name_hash, std::equal_to<>> by_name_;
    // Retired accounts by name (a name may have several, one per period it had).
    std::unordered_map<std::string, std::vector<budget_account*>, name_hash, std::equal_to<>>
        retired_;
    std::unordered_map<std::string, spec_entry> templates_; // "user:" → the cap of each user
    std::set<std::string, std::less<>> seeding_kinds_;       // templates that came, being seeded
    std::map<std::string, std::string, std::less<>> unread_kinds_; // came, ledger unread: why
    std::deque<open_reservation> slots_;
    std::vector<std::uint32_t> free_;
};

} // namespace frugal::detail

#endif // FRUGAL_SRC_BUDGET_BOOK_HPP
