#ifndef FRUGAL_CLI_REPORT_HPP
#define FRUGAL_CLI_REPORT_HPP

// The usage report of a ledger: what `frugal report` prints and `frugal demo` shows. Built
// from the store's records, its notes (caps, tiers, prices) and its spend, so a ledger written
// by any program that uses a router and a guard over SQLite can be reported on.

#include <frugal/budget_store.hpp>
#include <frugal/money.hpp>

#include <chrono>
#include <cstdint>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

namespace frugal::cli {

using ledger_notes = std::vector<std::pair<std::string, std::string>>;

/// Everything a report reads from a ledger.
struct ledger_data {
    std::vector<attempt_record> records;
    ledger_notes notes;
    budget_store_state state; ///< committed spend per budget window, open reservations
};

/// The value of note `key`, or null when the ledger does not have it.
const std::string* find_note(const ledger_notes& notes, std::string_view key);

/// The policy's tiers as a router noted them, cheapest first (empty when none did).
std::vector<std::string> noted_tiers(const ledger_notes& notes);

/// Now, in Unix milliseconds.
std::int64_t unix_now_ms();

/// `unix_ms` in UTC, formatted by strftime's `fmt`.
std::string format_utc(std::int64_t unix_ms, const char* fmt);

/// Reads the SQLite ledger at `path` (read-only: a process owning it may be running) from
/// `since_ms` on. False with `error` set when it cannot.
bool load_ledger(
    const std::string& path, std::int64_t since_ms, ledger_data& out, std::string& error);

struct usage_row {
    std::string name;
    std::uint32_t tier = 0; ///< in the per-tier table
    std::uint64_t requests = 0;
    std::uint64_t prompt_tokens = 0;
    std::uint64_t completion_tokens = 0;
    money cost;
    bool free_model = false;
};

struct cap_row {
    std::string budget;
    std::string period;
    std::string window; ///< "all time", "2026-11-26", "week of 2026-11-23", "2026-11"
    money spent;        ///< committed in the current window, plus what open reservations hold
    money cap;
};

/// One generation whose record and bill differ (or were made to agree).
struct bill_difference {
    std::uint64_t record_id = 0; ///< 0 for an open reservation
    std::string generation_id;
    std::string model;
    money recorded; ///< what frugal's ledger says (an open reservation: what it holds)
    money billed;   ///< what the provider's /generation says
};

/// A generation record whose bill frugal could not take (and so did not write).
struct rejected_bill {
    std::uint64_t record_id = 0; ///< 0 for an open reservation
    std::string generation_id;
    std::string reason; ///< "total_cost was negative (-0.5)"
    money recorded;     ///< what the ledger keeps
};

struct reconcile_result {
    bool ran = false;
    std::string base_url;    ///< where the generations were looked up
    std::size_t checked = 0; ///< records with a generation id that were looked up
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
};

/// A record whose cost is not simply what the provider reported (`attempt_record::anomaly`).
struct anomaly_row {
    std::int64_t time_ms = 0;
    std::uint64_t record_id = 0;
    std::string model; ///< the model asked
    money cost;        ///< what the ledger booked
    std::string what;
};

struct ledger_report {
    std::int64_t first_ms = 0;
    std::int64_t last_ms = 0;
    std::size_t records = 0;
    std::size_t tasks = 0;           ///< distinct requests (a cascade's attempts share one)
    std::size_t escalated_tasks = 0; ///< requests that went past the tier they started at
    std::size_t denied = 0;          ///< escalations the budget refused
    std::size_t refused = 0;         ///< requests the budget refused at their first tier
    money total;
    std::size_t estimated = 0; ///< records charged their whole reservation, bill unknown
    money estimated_cost;
    std::vector<usage_row> models;                            ///< by served model, costliest first
    std::vector<usage_row> tiers;                             ///< by tier index
    std::vector<std::pair<std::string, std::size_t>> reasons; ///< escalation reasons, by count
    std::vector<cap_row> caps;
    std::vector<anomaly_row> anomalies; ///< oldest first
    std::size_t open_reservations = 0;
    money open_amount;
    std::string flagship; ///< the policy's top tier, when the ledger notes it
    bool flagship_priced = false;
    money flagship_only;                ///< the same requests on the flagship alone
    std::size_t flagship_estimated = 0; ///< requests whose flagship cost is from their tokens
    std::vector<std::pair<std::int64_t, money>> timeline; ///< cumulative spend, by time
    reconcile_result reconcile;
};

ledger_report build_report(const ledger_data& data, std::int64_t now_ms);

std::string format_text(const ledger_report& r);
std::string format_json(const ledger_report& r);
std::string format_csv(const ledger_report& r);

/// A CSV field (RFC 4180), neutralised for spreadsheets: text beginning with = + - @, a tab or
/// a carriage return is prefixed with an apostrophe so that it is never run as a formula.
std::string csv_field(std::string_view s);
std::string format_html(const ledger_report& r);

struct reconcile_options {
    std::string ledger_path;
    std::string base_url; ///< empty: the ledger's note, else the client's default
    std::string api_key;  ///< empty: OPENROUTER_API_KEY
    std::chrono::milliseconds not_found_wait{15000}; ///< how long a 404 is retried
    std::int64_t since_ms = 0; ///< records from then on (open reservations are always checked)
    std::size_t concurrency = 8;
    /// redis://HOST:PORT/DB: the fleet's store, whose reservations swept into spend after
    /// their process died are settled to the proven bill too.
    std::string budget_store;
    /// The fleet's lease: a swept reservation is settled only once a lease has passed since
    /// its sweep (its process may have been slow rather than dead).
    std::chrono::milliseconds budget_lease{15 * 60 * 1000};
};

/// Looks every billed record with a generation id up on the provider and compares the bills;
/// corrects estimated records and settles open reservations (and, with a Redis store, swept
/// ones) that a lookup proves (the ledger is opened for writing: no other process may own it).
/// False with `error` set when the ledger cannot be opened, when it names a base URL the user has
/// not trusted, or when no lookup reached the provider.
bool reconcile_ledger(const reconcile_options& options, reconcile_result& out, std::string& error);

} // namespace frugal::cli

#endif // FRUGAL_CLI_REPORT_HPP
