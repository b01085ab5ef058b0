#ifndef FRUGAL_LEDGER_NOTES_HPP
#define FRUGAL_LEDGER_NOTES_HPP

/// @file
/// The notes a ledger keeps beside its records, typed: the caps a budget guard enforces, the
/// tiers a router escalates through and their prices, the base URL the generations were made
/// against.
///
/// A store keeps notes as text (`budget_store::put_note`, `read_notes`). The guard and the
/// router write theirs through `ledger_notes::format_caps` and `format_tiers`, and reports
/// read them back with `ledger_notes::parse`, so that writer and reader share one format. The
/// header belongs to the budget layer (the guard writes notes, and the router above it): the
/// ledger layer (`ledger.hpp`) reads them from here.

#include <frugal/budget_types.hpp>
#include <frugal/money.hpp>

#include <cstdint>
#include <functional>
#include <map>
#include <optional>
#include <span>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

namespace frugal {

/// One note as a store keeps it: key, value.
using ledger_note = std::pair<std::string, std::string>;

/// What a model costs, as a router notes it for its tiers: USD per prompt token, per
/// completion token and per request (`model_price::prompt`, `completion`, `request`).
struct noted_price {
    money prompt;
    money completion;
    money request;

    /// Whether all three are zero.
    bool free() const noexcept
    {
        return prompt == money() && completion == money() && request == money();
    }
    bool operator==(const noted_price&) const = default;
};

/// The notes of a ledger, typed.
///
/// The text form of each part:
/// - `budgets`: one line `NAME CAP PERIOD` per cap (`0.25`, `daily`), replaced whole each time
///   a guard opens, so a cap dropped from the configuration leaves the notes;
/// - `budgets_arrived`: one line `WINDOW NAME` per budget that came into force while a guard
///   ran (`budget_guard::set_budgets`), with the index of the period it came in: the next
///   guard sums that period's spend from the ledger, since the store's own spend for it begins
///   only when it came;
/// - `tiers`: the model ids of the last policy a router ran, cheapest first, separated by
///   spaces;
/// - `price:MODEL`: `PROMPT COMPLETION REQUEST` for each tier the catalog priced; a later
///   policy's notes add to these, so a ledger shared by several policies prices them all;
/// - `base_url`: the API the generations were made against (`frugal batch`, `frugal demo`).
///
/// In `budgets` and `tiers`, a name or id is written with `%XX` (two hex digits) for every
/// byte that is white space, a control character or `%` itself, so ids with spaces or line
/// breaks come back whole; a `%` not followed by two hex digits is read as itself (ledgers
/// written before this encoding read as they did).
///
/// @par Thread safety
/// A value type: distinct objects safe, shared objects safe for reading.
struct ledger_notes {
    static constexpr std::string_view caps_key = "budgets";
    static constexpr std::string_view arrivals_key = "budgets_arrived";
    static constexpr std::string_view tiers_key = "tiers";
    static constexpr std::string_view price_key_prefix = "price:";
    static constexpr std::string_view base_url_key = "base_url";

    /// The caps of the last guard that opened the ledger (or changed them since).
    std::vector<budget_spec> caps;
    /// Budgets that came while a guard ran, by name, with the period index they came in.
    std::map<std::string, std::int64_t, std::less<>> arrived;
    /// The last policy's tiers, cheapest first (tier index = position); empty when no router
    /// noted any.
    std::vector<std::string> tiers;
    /// The prices of every model a router noted: this policy's tiers and earlier ones'.
    std::map<std::string, noted_price, std::less<>> prices;
    /// The base URL the generations were made against, when noted.
    std::optional<std::string> base_url;
    /// Notes of any other key, kept as they are.
    std::vector<ledger_note> other;

    /// The noted price of `model`, or null.
    const noted_price* price_of(std::string_view model) const;

    /// Reads the notes a store holds. A part that cannot be read (a cap line without three
    /// fields, an amount or period that does not parse, a price without three amounts) is
    /// left out; everything else is kept.
    static ledger_notes parse(std::span<const ledger_note> notes);

    /// The `budgets` note, written whole even when there are no caps: what a guard writes when
    /// it opens.
    ledger_note format_caps() const;

    /// The `budgets_arrived` note, written whole.
    ledger_note format_arrivals() const;

    /// The notes of a router: `price:MODEL` for each of `tiers` that `prices` holds, in tier
    /// order, then `tiers`.
    std::vector<ledger_note> format_tiers() const;

    /// Every note this holds: `format_caps()`, `format_arrivals()` (when there are any), a `price:MODEL` note per price, `tiers` (when
    /// there are tiers), `base_url` (when set) and `other`. `parse(format())` gives back the
    /// same notes (for model ids and cap names that are not empty).
    std::vector<ledger_note> format() const;

    bool operator==(const ledger_notes&) const = default;
};

} // namespace frugal

#endif // FRUGAL_LEDGER_NOTES_HPP
