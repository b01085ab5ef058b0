#ifndef FRUGAL_BUDGET_STORE_HPP
#define FRUGAL_BUDGET_STORE_HPP

/// @file
/// Where budgets keep their spend and the ledger of attempts: in memory, in SQLite, or in a
/// store a fleet of servers shares.

#include <frugal/diagnostics.hpp>
#include <frugal/money.hpp>

#include <boost/system/error_code.hpp>
#include <boost/system/result.hpp>

#include <chrono>
#include <cstdint>
#include <functional>
#include <memory>
#include <span>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

// Declared only: the store interface names the executor a reservation's caller runs on, and
// the budget's sans-io book, which includes this header, must not reach Asio.
namespace boost::asio {
class any_io_executor;
} // namespace boost::asio

namespace frugal {

/// How an attempt ended, as the ledger records it.
enum class attempt_outcome : std::uint8_t {
    ok,        ///< a complete answer (whatever its quality)
    error,     ///< the provider answered with an error; billed what it reports
    cancelled, ///< stopped by the caller or the guard after the request was sent
    unknown,   ///< cut, timed out or lost: charged its whole reservation until proven
    not_sent,  ///< never reached the provider; costs nothing
    denied,    ///< refused by the budget guard before it was sent; costs nothing
};

/// The name of `o` as the ledger writes it ("ok", "error", ...).
const char* to_string(attempt_outcome o) noexcept;

/// One call to a model, as the ledger keeps it. A cascade's attempt is one of these
/// (`cascade_attempt` derives from it): the router settles with the attempt itself, so the
/// ledger keeps each attempt as the cascade reports it.
struct attempt_record {
    std::int64_t time_ms = 0; ///< when the attempt started, Unix milliseconds
    std::uint64_t request_id = 0;
    std::string generation_id; ///< the provider's id, when one was seen
    std::uint32_t tier = 0;    ///< the cascade tier (0 = the cheapest)
    std::string model_asked;
    std::string model_served;
    std::string provider;
    std::uint64_t prompt_tokens = 0;
    std::uint64_t completion_tokens = 0;
    money cost; ///< what the attempt was charged
    attempt_outcome outcome = attempt_outcome::ok;
    /// The cost is the whole reservation because the bill is not known yet; a generation
    /// lookup may later prove a smaller one (`budget_guard::correct`).
    bool estimated = false;
    std::int64_t latency_us = 0;
    std::string keys; ///< the budget keys the request was made under, space separated
    /// Why the cascade asked this tier: empty for the tier a request starts at, else the
    /// escalation reason's name ("length", "refusal", "rate_limited", "timeout", ...).
    std::string reason;
    /// Empty, or why the cost is not simply what the provider reported: a reported cost that
    /// could not be taken as a bill ("usage.cost was negative (-0.99)"), booked at no less than
    /// the reservation and the tokens at catalog prices; or a bill above the worst case of the
    /// model's prices (a surprise). Frugal's own words, never the provider's text.
    std::string anomaly;
    std::uint64_t record_id = 0; ///< set by the store
    /// The guard's id of the reservation this settled (0 when none held anything: a free
    /// call, a denial); set by the guard.
    std::uint64_t reservation_id = 0;
    bool operator==(const attempt_record&) const = default;
};

/// A charge against one window of one budget.
struct budget_charge {
    std::string budget;      ///< the budget instance's name ("global", "user:42")
    std::int64_t window = 0; ///< the period's index (0 for budgets that never reset)
    money amount;
    bool operator==(const budget_charge&) const = default;
};

/// A charge as the guard hands it to a store: views into the guard's own strings.
struct budget_charge_view {
    std::string_view budget;
    std::int64_t window = 0;
    money amount;
    money cap;                 ///< the budget's cap, for stores that check totals themselves
    std::uint32_t account = 0; ///< the guard's index of the budget instance, stable while it lives
};

/// A reservation as a store keeps it until it is settled or released.
struct reservation_entry {
    std::uint64_t id = 0;
    std::int64_t time_ms = 0;
    std::uint64_t request_id = 0;
    std::string model;
    std::string generation_id;
    std::vector<budget_charge> charges; ///< the same amount against every budget it falls under
    bool operator==(const reservation_entry&) const = default;
};

/// A reservation a shared store turned into spend because the process that made it died (a
/// Redis lease ran out), kept so that a generation lookup can settle it to the proven bill.
struct swept_reservation {
    std::string key;           ///< the store's name for it
    std::string generation_id; ///< empty when the process died before it was known
    std::string model;
    std::vector<budget_charge> charges; ///< the amount it was turned into, per budget window
    bool operator==(const swept_reservation&) const = default;
};

/// What `budget_store::correct` changed.
struct correction {
    money previous;                   ///< the record's cost before
    std::string model;                ///< the model the record asked
    std::vector<budget_charge> moved; ///< each budget window charged, and the signed difference
};

/// The anomaly a correction writes when the proven bill is above what was booked.
std::string proven_above_booked(money proven, money booked);

/// A new reservation as the guard hands it to a store.
struct reservation_view {
    std::uint64_t id = 0;
    std::int64_t time_ms = 0;
    std::uint64_t request_id = 0;
    std::string_view model;
    std::span<const budget_charge_view> charges;
};

/// The state a store hands back when a guard opens it.
struct budget_store_state {
    std::vector<budget_charge> committed; ///< settled spend per budget window
    std::vector<reservation_entry> open;  ///< reservations no one settled (a crash)
    std::uint64_t next_id = 1;            ///< above every reservation id the store has used
    std::uint64_t next_request_id = 1;    ///< above every request id the ledger holds
    money ledger_total;                   ///< the sum of every ledger record's cost
};

/// The persistence behind a `budget_guard`.
///
/// The guard decides (under its own lock, from its in-memory book) and then tells the store,
/// in order, before it acts on the decision: a reservation is written before the request may
/// be sent; a settlement and its ledger record are written together. A store that reports an
/// error makes the guard fail closed (the reservation is refused; a failed settlement trips the
/// guard, because spend it cannot record must not be followed by more spend).
///
/// A store shared by several processes (a fleet) also checks its own totals in `reserve` and
/// refuses with `error::budget_exhausted` when another process has taken the headroom.
///
/// @par Thread safety
/// Called by one guard one call at a time, with one exception: a store that reserves
/// asynchronously (`reserves_async`, Redis) may see `async_reserve` and `reserve` beside a
/// `settle`, and must synchronize those itself. Otherwise implementations need no locking of
/// their own unless they are shared by several guards.
class budget_store {
public:
    virtual ~budget_store() = default;

    /// The committed spend and open reservations kept from earlier runs.
    virtual boost::system::error_code load(budget_store_state& out) = 0;

    /// Whether the store keeps open reservations (`reserve`, `release`, `note_generation`). A
    /// store that does not (memory) is not told of them, which saves the guard their cost.
    virtual bool keeps_reservations() const noexcept { return true; }

    /// Records `r` (durably, for a durable store) before the request is sent.
    virtual boost::system::error_code reserve(const reservation_view& r) = 0;

    /// Whether a reservation is a network round trip (Redis). The guard then decides under its
    /// lock, confirms with `async_reserve` after it, and hands the reservation out when the
    /// store answers, so reservations overlap and no io thread waits on the network.
    virtual bool reserves_async() const noexcept { return false; }

    /// `reserve`, answered later: `done` is called once, on any thread (possibly under the
    /// store's own lock), with what `reserve` would have returned; it must not call back into
    /// the store, and should do no more than hand the result on. `r` is read before this
    /// returns. `caller` is the executor the reservation's caller resumes on: a store may do
    /// its I/O there, so the answer wakes that thread alone. The default calls `reserve` and
    /// `done` at once.
    virtual void async_reserve(
        const reservation_view& r,
        const boost::asio::any_io_executor& caller,
        std::function<void(boost::system::error_code)> done);

    /// Records the generation id of an open reservation, so a crash leaves enough to look the
    /// bill up. Optional: the default does nothing.
    virtual boost::system::error_code
    note_generation(std::uint64_t reservation_id, const std::string& generation_id);

    /// Replaces reservation `reservation_id` (0: none, an unreserved charge) by `charges` of
    /// the actual cost and appends `record` to the ledger, atomically. Sets `record.record_id`.
    virtual boost::system::error_code settle(
        std::uint64_t reservation_id,
        std::span<const budget_charge_view> charges,
        attempt_record& record) = 0;

    /// Drops reservation `id` (its request was never sent).
    virtual boost::system::error_code release(std::uint64_t id) = 0;

    /// Changes the cost of ledger record `record_id` to `proven` and moves the committed spend
    /// of the budget windows it was charged to by the difference, atomically; a proven bill
    /// above the recorded cost is also written into the record's `anomaly`. `out` receives what
    /// changed. Fails with `error::not_found` when the record is not kept.
    virtual boost::system::error_code
    correct(std::uint64_t record_id, money proven, correction& out) = 0;

    /// The ledger records from `since_ms` on, oldest first.
    virtual boost::system::error_code
    read_ledger(std::int64_t since_ms, std::vector<attempt_record>& out) = 0;

    /// The records with a cost made since `since_ms` that `read_ledger` no longer returns, as
    /// their `keys` (space separated) and the latest `time_ms` among those dropped with the
    /// same keys. A store that keeps only its newest records (the memory store) drops some; a
    /// budget that comes while the guard runs and would have counted one of them is stopped,
    /// since what it spent is unknown, rather than started short. The default: none.
    virtual void
    dropped_since(std::int64_t since_ms, std::vector<std::pair<std::string, std::int64_t>>& out) const;

    /// Keeps `value` under `key`, replacing an older value: the facts a report needs beside
    /// the ledger (each cap, the policy's tiers and their prices). Optional: the default keeps
    /// nothing.
    virtual boost::system::error_code put_note(std::string_view key, std::string_view value);

    /// Every note, ordered by key.
    virtual boost::system::error_code
    read_notes(std::vector<std::pair<std::string, std::string>>& out);

    /// The reservations this store turned into spend after their process died; none for a
    /// store that keeps them open instead (memory, SQLite: `budget_store_state::open`).
    virtual boost::system::error_code read_swept(std::vector<swept_reservation>& out);

    /// Replaces the spend of swept reservation `s` by `record.cost` (a proven bill) in the
    /// windows it was charged to, and appends `record` to the ledger, counted once: fails with
    /// `error::not_found` when it was settled already.
    virtual boost::system::error_code
    settle_swept(const swept_reservation& s, attempt_record& record);

    /// Keeps the final answer of prompt `id` (a JSON object, as `frugal batch` writes it), so a
    /// rerun can skip what was answered. Optional: the default keeps nothing.
    virtual boost::system::error_code put_answer(std::string_view id, std::string_view answer);

    /// Every answer kept, by prompt id.
    virtual boost::system::error_code
    read_answers(std::vector<std::pair<std::string, std::string>>& out);

    /// The free tier's quota, shared by every router over the guard, and by every process of a
    /// fleet when the store is shared (Redis): takes one request at `now_ms` (Unix) under the
    /// limits given (UINT32_MAX: not known, no limit), or sets `wait_ms` to how long until one
    /// is free. The memory and SQLite stores count in this process. Fails with
    /// `error::not_found` when the store keeps no count (each router then counts its own).
    virtual boost::system::error_code take_free_request(
        std::int64_t now_ms,
        std::uint32_t per_minute,
        std::uint32_t per_day,
        std::int64_t& wait_ms);

    /// No free request before `until_ms`, for everyone who shares the count (a 429's reset).
    virtual boost::system::error_code block_free_until(std::int64_t until_ms);

    /// A rate named `limiter` (a gateway key's requests a minute), shared by every process of a
    /// fleet when the store is shared (Redis): `per_minute` requests a minute, as many at once,
    /// refilled evenly. Takes one request now, or sets `wait_ms` to how long until one is
    /// free. Fails with `error::not_found` when the store keeps no count (the memory and
    /// SQLite stores, or Redis unreachable): the caller then counts in its own process.
    virtual boost::system::error_code
    take_rated_request(std::string_view limiter, std::uint32_t per_minute, std::int64_t& wait_ms);

    /// `take_rated_request`, answered later, so that no io thread waits on the network: `done`
    /// is called once, on any thread (possibly under the store's own lock), with what
    /// `take_rated_request` would have returned and the wait it would have set; it must not
    /// call back into the store. The default calls `take_rated_request` and `done` at once.
    virtual void async_take_rated_request(
        std::string_view limiter,
        std::uint32_t per_minute,
        std::function<void(boost::system::error_code, std::int64_t)> done);

    /// Waits up to `timeout` until every change the store accepted has reached where it is
    /// kept. A store that writes before it returns (memory, SQLite) has nothing to wait for; a
    /// shared store that sends settlements in batches (Redis) waits for their acknowledgement,
    /// and fails with `error::budget_store_failed` when they have not all landed in time.
    virtual boost::system::error_code sync(std::chrono::milliseconds timeout);
};

/// Options of the memory store.
struct memory_store_params {
    /// The newest records kept; older ones are dropped (the budgets in force keep their spend
    /// counted, but a budget that comes later cannot read it: it is stopped, saying so, when
    /// its period's records have been dropped). Servers that need every record, or change
    /// their budgets while they run, use the SQLite store or `on_record`.
    std::size_t ledger_capacity = 1u << 16;
    /// Called with each record as it is written, under the guard's store lock: it must be quick and
    /// must not call the guard.
    std::function<void(const attempt_record&)> on_record;
};

/// A store that forgets everything when the process ends: the default.
std::shared_ptr<budget_store> make_memory_store(memory_store_params params = {});

/// How hard the SQLite store pushes each write to the disk.
enum class sqlite_durability {
    /// Every transaction survives the process being killed (WAL, `synchronous=NORMAL`).
    process_crash,
    /// Every transaction also survives a power loss or OS crash (`synchronous=FULL`).
    power_loss,
};

/// Options of the SQLite store.
struct sqlite_store_params {
    std::string path;
    sqlite_durability durability = sqlite_durability::power_loss;
    /// Opens the file only to read it (reports): no lock is taken, so a process owning the
    /// file may be writing it meanwhile. Every read sees one snapshot: the last transaction
    /// committed before the first read.
    bool read_only = false;
};

/// A durable store in an SQLite file (WAL mode): spend, open reservations and the ledger
/// survive restarts and crashes. One process owns the file at a time; a second one fails to
/// open it with `error::budget_store_failed`, as does a file that cannot be opened, read or
/// made into a store. `diag->message`, when `diag` is given, says what failed and SQLite's
/// reason (it is cleared first).
boost::system::result<std::shared_ptr<budget_store>>
open_sqlite_store(const sqlite_store_params& params, diagnostics* diag = nullptr);

/// Options of the Redis store.
struct redis_store_params {
    std::string url = "redis://127.0.0.1:6379/0"; ///< redis://HOST:PORT/DB
    /// The keys' namespace: the processes that share one set of caps share one prefix.
    std::string prefix = "frugal";
    /// How long an open reservation lives without being settled. A process that dies leaves
    /// its reservations to expire into spend (never back into headroom) after this; it must
    /// exceed the longest request.
    std::chrono::milliseconds lease{15 * 60 * 1000};
    /// Connecting and each command; a command that times out fails its operation.
    std::chrono::milliseconds timeout{1000};
    /// While Redis is unreachable, grant reservations on this process's own books alone
    /// (its local caps still hold; the fleet's may be crossed by what the others spend
    /// meanwhile). Off: they are refused.
    bool fail_open = false;
};

/// A store a fleet of processes shares: committed spend and open reservations live in Redis,
/// and every change is a Lua script that checks the budget windows it touches and records the
/// change atomically. The ledger records (and notes) go to `ledger` (an SQLite store for
/// reports; memory when null).
///
/// A reservation is one round trip. Awaited (`budget_guard::async_reserve`), it goes on a
/// connection of the caller's own io_context and its reply is read there, so it wakes no other
/// thread; blocking (`try_reserve`), the reserving thread makes it itself on a connection kept
/// for that. Settlements, releases and corrections are queued, summed into batches
/// and sent within a millisecond on a pipelined connection with a thread of its own (their
/// reservations cover the spend until they land), each batch counted once however often it
/// is resent. `sync` waits for them.
///
/// Redis unreachable fails closed: every reservation is refused with
/// `error::budget_store_failed` until it is back (reconnecting with a backoff up to 5 s), and
/// free calls, which reserve nothing, go on; with `fail_open` it is granted on the process's own
/// books. Only a malformed URL fails here, with `error::bad_budget_config`; `diag->message`,
/// when `diag` is given, says what is wrong with it (it is cleared first).
///
/// Keys are `PREFIX:spend` (one hash), `PREFIX:leases` and `PREFIX:swept:ID` on one Redis node
/// (the scripts name their keys themselves, which Redis Cluster does not allow).
boost::system::result<std::shared_ptr<budget_store>> open_redis_store(
    const redis_store_params& params,
    std::shared_ptr<budget_store> ledger = nullptr,
    diagnostics* diag = nullptr);

} // namespace frugal

#endif // FRUGAL_BUDGET_STORE_HPP
