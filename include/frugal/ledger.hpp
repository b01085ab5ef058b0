#ifndef FRUGAL_LEDGER_HPP
#define FRUGAL_LEDGER_HPP

/// @file
/// The usage ledger: what a router and a guard wrote (one record per attempt, the notes, the
/// store's spend), the report built from it, and its reconciliation with the provider's own
/// generation records.
///
/// Reports are values: `build_report` computes the tables (per model, per tier, per cap, the
/// anomalies, the escalations, the flagship-only comparison); presenting them as text, JSON,
/// CSV or HTML is the caller's (the `frugal report` command does it).

#include <frugal/budget_store.hpp>
#include <frugal/diagnostics.hpp>
#include <frugal/ledger_notes.hpp>
#include <frugal/money.hpp>
#include <frugal/types.hpp>

#include <boost/system/error_code.hpp>
#include <boost/system/result.hpp>

#include <chrono>
#include <cstdint>
#include <span>
#include <string>
#include <utility>
#include <vector>

namespace frugal {

// ---- the ledger and its report ----

/// Everything a report reads from a ledger.
struct ledger_data {
    std::vector<attempt_record> records; ///< oldest first
    ledger_notes notes;
    budget_store_state state; ///< committed spend per budget window, open reservations
};

/// Reads the SQLite ledger at `path`, its records from `since_ms` (Unix milliseconds) on.
///
/// The file is opened read-only and no lock is taken: a process owning it may be running, and
/// the reading sees its last committed transaction.
///
/// @returns the ledger, or `error::budget_store_failed` (the file cannot be opened or read)
/// with `diag->message` saying why.
boost::system::result<ledger_data>
load_ledger(const std::string& path, std::int64_t since_ms = 0, diagnostics* diag = nullptr);

/// Usage of one model or one tier.
struct usage_row {
    std::string name;       ///< the model (per tier: the model asked)
    std::uint32_t tier = 0; ///< in the per-tier table
    std::uint64_t requests = 0;
    std::uint64_t prompt_tokens = 0;
    std::uint64_t completion_tokens = 0;
    money cost;
    /// The noted price of the model asked is zero, or (unnoted) its id ends in `:free`.
    bool free_model = false;
    bool operator==(const usage_row&) const = default;
};

/// Spend against one cap in its current window.
struct cap_row {
    std::string budget; ///< the budget instance ("global", "user:42": one row per key of `user:*`)
    std::string period; ///< "none", "daily", "weekly", "monthly"
    std::string window; ///< "all time", "2026-11-26", "week of 2026-11-23", "2026-11"
    money spent;        ///< committed in the current window, plus what open reservations hold
    money cap;
    bool operator==(const cap_row&) const = default;
};

/// One generation whose record and bill differ (or were made to agree).
struct bill_difference {
    std::uint64_t record_id = 0; ///< 0 for an open reservation
    std::string generation_id;
    std::string model;
    money recorded; ///< what frugal's ledger says (an open reservation: what it holds)
    money billed;   ///< what the provider's /generation says
    bool operator==(const bill_difference&) const = default;
};

/// A generation record whose bill frugal could not take (and so did not write).
struct rejected_bill {
    std::uint64_t record_id = 0; ///< 0 for an open reservation
    std::string generation_id;
    std::string reason; ///< "total_cost was negative (-0.5)"
    money recorded;     ///< what the ledger keeps
    bool operator==(const rejected_bill&) const = default;
};

/// What a reconciliation found and did.
struct reconcile_result {
    bool ran = false;
    std::string base_url;    ///< where the generations were looked up
    std::size_t checked = 0; ///< generations whose bill the provider reported
    std::size_t matched = 0;
    std::vector<bill_difference> differences; ///< settled records the provider billed otherwise
    std::vector<bill_difference> corrected;   ///< estimated records the lookup proved
    std::vector<bill_difference> settled;     ///< open (or swept) reservations the lookup proved
    std::vector<std::string> unverified;      ///< generation ids the provider did not answer for
    /// Generations whose `total_cost` the provider reported as no bill frugal can take
    /// (negative, not a number, above $1,000): the books are left as they are, and it is an
    /// anomaly.
    std::vector<rejected_bill> rejected;
    std::size_t without_id = 0; ///< billed records that carry no generation id
    std::size_t open_left = 0;  ///< open reservations no lookup could prove (still spent)
    bool operator==(const reconcile_result&) const = default;
};

/// A record whose cost is not simply what the provider reported (`attempt_record::anomaly`).
struct anomaly_row {
    std::int64_t time_ms = 0;
    std::uint64_t record_id = 0;
    std::string model; ///< the model asked
    money cost;        ///< what the ledger booked
    std::string what;
    bool operator==(const anomaly_row&) const = default;
};

/// The usage report of a ledger.
struct ledger_report {
    std::int64_t first_ms = 0;
    std::int64_t last_ms = 0;
    std::size_t records = 0;
    std::size_t tasks = 0;           ///< distinct requests (a cascade's attempts share one)
    std::size_t escalated_tasks = 0; ///< requests answered by a tier they were sent up to
    std::size_t denied = 0;          ///< escalations the budget refused
    std::size_t refused = 0;         ///< requests the budget refused at their first tier
    money total;
    std::size_t estimated = 0; ///< records charged their whole reservation, bill unknown
    money estimated_cost;
    std::vector<usage_row> models;                            ///< by served model, costliest first
    std::vector<usage_row> tiers; ///< by tier index, then model asked (one row for each)
    std::vector<std::pair<std::string, std::size_t>> reasons; ///< escalation reasons, by count
    std::vector<cap_row> caps;                                ///< in the order of the caps note
    std::vector<anomaly_row> anomalies;                       ///< in ledger order
    std::size_t open_reservations = 0;
    money open_amount;
    std::string flagship; ///< the policy's top tier, when the ledger notes it
    bool flagship_priced = false;
    money flagship_only;                ///< the same requests on the flagship alone
    /// What the requests of that comparison cost, and how many they are: every request but
    /// those that asked a model outside the noted tiers (a gateway's pass-through).
    money compared_total;
    std::size_t compared_tasks = 0;
    std::size_t flagship_estimated = 0; ///< requests whose flagship cost is from their tokens
    std::vector<std::pair<std::int64_t, money>> timeline; ///< cumulative spend, by time
    reconcile_result reconcile;                           ///< left empty by `build_report`
};

/// The report of `data`; caps show their window holding `now_ms` (Unix milliseconds).
///
/// Records that were not sent or were denied cost nothing and count in no usage row. A request
/// is the records sharing a request id (id 0, a record written through the guard alone, is a
/// request of its own). The flagship-only figure prices each request on the last noted tier:
/// what the flagship's own attempts cost, else the accepted answer's tokens at its noted
/// prices. A request that asked a model not among the noted tiers (a gateway's pass-through)
/// is left out of that comparison.
ledger_report build_report(const ledger_data& data, std::int64_t now_ms);

// ---- reconciliation with the provider ----

/// One generation the books name, to be looked up on the provider.
struct bill_check {
    /// What the generation would prove.
    enum class entry : std::uint8_t {
        record,            ///< a billed ledger record (`ledger_data::records[index]`)
        open_reservation,  ///< a reservation left open (`budget_store_state::open[index]`)
        swept_reservation, ///< one a shared store swept into spend (`swept[index]`)
    };
    entry what = entry::record;
    std::size_t index = 0;
    std::string generation_id;
    std::int64_t ended_ms = 0; ///< when the generation ended, near enough (0: not known)
    bool operator==(const bill_check&) const = default;
};

/// The generations to look up.
struct reconcile_plan {
    std::vector<bill_check> checks; ///< records first, then open reservations, then swept ones
    std::size_t without_id = 0;     ///< billed records without a generation id
    std::size_t open_left = 0;      ///< open or swept reservations without one (stay spent)
    bool operator==(const reconcile_plan&) const = default;
};

/// Which generations of `data` (billed records, open reservations) and of `swept` to look up.
reconcile_plan
plan_reconcile(const ledger_data& data, std::span<const swept_reservation> swept = {});

/// What one lookup proves.
enum class bill_verdict : std::uint8_t {
    unverified, ///< the provider did not answer, or reported no bill
    rejected,   ///< it reported a bill frugal cannot take: the books are left as they are
    matched,    ///< the record's cost is the bill
    differs,    ///< the record says more than the bill: listed, left as it is
    correct,    ///< the record is corrected to the bill (it was estimated, or billed above it)
    settle,     ///< the open or swept reservation is settled with the bill
};

/// The decision on one `bill_check`, and the change it asks of the books.
struct bill_decision {
    bill_verdict verdict = bill_verdict::unverified;
    money bill;                 ///< what the provider billed (matched, differs, correct, settle)
    bill_difference difference; ///< the books against the bill (differs, correct, settle)
    rejected_bill rejection;    ///< rejected
    attempt_record settlement;  ///< settle: the record to append to the ledger
    std::vector<budget_charge> charges; ///< settle an open reservation: its windows, the bill
    bool operator==(const bill_decision&) const = default;
};

/// Decides `check` from what the provider said of its generation (`found`: null when it did
/// not answer). `now_ms` is the time of a swept reservation's new record. No I/O.
bill_decision decide_bill(
    const bill_check& check,
    const ledger_data& data,
    std::span<const swept_reservation> swept,
    const generation_info* found,
    std::int64_t now_ms);

/// Applies `decision` to `store` (`correct`, `settle`, `settle_swept`) and adds it to `out`.
/// A change the store refuses leaves the entry as it was: a correction is listed as a
/// difference, a settlement counts in `open_left`.
void apply_bill(
    budget_store& store,
    const bill_check& check,
    const ledger_data& data,
    std::span<const swept_reservation> swept,
    bill_decision decision,
    reconcile_result& out);

/// Options of `reconcile_ledger`.
struct reconcile_params {
    std::string ledger_path;
    /// Empty: the ledger's `base_url` note when it is trusted (OpenRouter's, the
    /// `OPENROUTER_BASE_URL`, or loopback), else the client's default.
    std::string base_url;
    std::string api_key;                             ///< empty: OPENROUTER_API_KEY
    std::chrono::milliseconds not_found_wait{15000}; ///< how long a 404 is retried
    std::int64_t since_ms = 0; ///< records from then on (open reservations are always checked)
    std::size_t concurrency = 8;
    /// redis://HOST:PORT/DB: the fleet's store, whose reservations swept into spend after
    /// their process died are settled to the proven bill too.
    std::string budget_store_url;
    /// The fleet's lease: a swept reservation is settled only once a lease has passed since
    /// its sweep (its process may have been slow rather than dead).
    std::chrono::milliseconds budget_lease{15 * 60 * 1000};
};

/// Looks every billed record with a generation id up on the provider (a `chat_client` of its
/// own, on an `io_context` of its own: the call blocks, and must not be made on an io thread)
/// and compares the bills; corrects estimated records and settles open reservations (and,
/// with a Redis store, swept ones) that a lookup proves. The ledger is opened for writing: no
/// other process may own it.
///
/// @returns what was found and done, or an error with `diag->message` saying why:
/// `error::budget_store_failed` (the ledger or the Redis store cannot be opened or read),
/// `error::insecure_url` (the ledger names a base URL the user has not trusted: the key is
/// not sent there), or the error of the lookups when none reached the provider.
boost::system::result<reconcile_result>
reconcile_ledger(const reconcile_params& params, diagnostics* diag = nullptr);

} // namespace frugal

#endif // FRUGAL_LEDGER_HPP
