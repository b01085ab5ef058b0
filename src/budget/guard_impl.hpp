#ifndef FRUGAL_SRC_BUDGET_GUARD_IMPL_HPP
#define FRUGAL_SRC_BUDGET_GUARD_IMPL_HPP

// The budget guard's implementation object, which `budget_guard` and `reservation` only point
// to. Its members are too many for one file, so they are defined by what they do: opening, and
// the public handles that forward to it (guard.cpp); pricing and granting a reservation
// (guard_grant.cpp); settling, releasing and correcting spend (guard_settle.cpp); and what
// reaches other executors, requests waiting for headroom and in-flight requests cancelled
// (guard_async.cpp).

#include <frugal/budget.hpp>

#include "budget/book.hpp"

#include <boost/asio/steady_timer.hpp>

#include <atomic>
#include <functional>
#include <optional>
#include <list>
#include <map>
#include <set>
#include <unordered_map>

#include <pthread.h>

namespace frugal {

namespace asio = boost::asio;
using boost::system::error_code;

namespace detail {

// Where the guard signals a reservation's request to stop. Shared, because the signal is
// emitted on the request's executor after the guard may have reused the reservation's slot.
struct cancel_state {
    asio::any_io_executor executor;
    asio::cancellation_signal signal;
    std::atomic<int> reason{0}; // a frugal::error, 0 while not cancelled
};

using reserve_handler = asio::any_completion_handler<void(error_code, reservation)>;

// An `async_reserve` waiting for headroom.
struct waiter {
    reserve_handler handler;
    asio::any_io_executor executor;
    asio::steady_timer timer;
    std::string model;
    std::vector<std::string> keys;
    reserve_request req;
    request_features features;
    std::string why; // the last reason it could not be granted
    bool queued = true;

    waiter(reserve_handler h, asio::any_io_executor ex)
        : handler(std::move(h)), executor(std::move(ex)), timer(executor)
    {
    }
};

// A mutex that spins briefly before it sleeps (glibc's adaptive kind): the guard's decisions
// are in memory (the store's writes happen after the lock, under store_mu_, except a Redis
// settlement's queueing), far shorter than a futex sleep and wake-up.
class adaptive_mutex {
public:
    adaptive_mutex() noexcept
    {
        pthread_mutexattr_t a;
        pthread_mutexattr_init(&a);
        pthread_mutexattr_settype(&a, PTHREAD_MUTEX_ADAPTIVE_NP);
        pthread_mutex_init(&m_, &a);
        pthread_mutexattr_destroy(&a);
    }
    adaptive_mutex(const adaptive_mutex&) = delete;
    adaptive_mutex& operator=(const adaptive_mutex&) = delete;
    ~adaptive_mutex() { pthread_mutex_destroy(&m_); }
    void lock() noexcept { pthread_mutex_lock(&m_); }
    void unlock() noexcept { pthread_mutex_unlock(&m_); }

private:
    pthread_mutex_t m_{};
};

// A reservation granted in memory that a remote store has yet to confirm: what the store is
// told, owned, so it can be told after the lock.
struct unconfirmed {
    std::uint64_t id = 0;
    std::int64_t time_ms = 0;
    std::uint64_t request_id = 0;
    std::string model;
    std::vector<std::string> budgets;
    std::vector<budget_charge_view> charges; // `budget`: set from `budgets` by confirm
};

// A waiter served (or denied) under the lock, completed after it (once its store confirmed).
struct completion {
    std::shared_ptr<waiter> w;
    error_code ec;
    reservation res;
    std::optional<unconfirmed> pending;
};

class guard_impl : public std::enable_shared_from_this<guard_impl> {
public:
    guard_impl(budget_params p, price_catalog prices, std::shared_ptr<budget_store> store);

    // Opening, and budgets replaced while it runs (guard.cpp).
    error_code open(std::string& detail);
    error_code arrivals_since_last_open(
        std::set<std::string, std::less<>>& fresh,
        std::set<std::string, std::less<>>& moved,
        std::string& detail);
    error_code set_budgets(std::vector<budget_spec> budgets, std::string& detail);
    error_code note_caps(std::string& detail);
    error_code note_budgets(
        const std::vector<budget_spec>& caps,
        const std::map<std::string, std::int64_t, std::less<>>& arrived,
        std::string& detail);
    void restore_note();

    // Pricing and granting (guard_grant.cpp).
    std::int64_t now_ms() const;
    const model_price* price_of(std::string_view model);
    static std::uint32_t wanted(const reserve_request& req, const model_price& p);
    shortfall grant(
        const reserve_request& req,
        const request_features& features,
        const asio::any_io_executor* cancel_on,
        reservation& out,
        error_code& ec,
        std::string* detail,
        std::optional<unconfirmed>* defer = nullptr);
    error_code store_reserve(const open_reservation& r);
    unconfirmed to_confirm(const open_reservation& r);
    error_code reserve_now(unconfirmed& u);
    // A store that writes to a disk in each call (SQLite): its settlements are written after
    // the decisions' lock. The memory store's ring and Redis's queue are written under it.
    bool writes_after_lock() const noexcept { return keeps_ && !async_store_; }
    // A store call outside the decisions: a store written after the lock is reached under
    // store_mu_ alone (no decision waits for its disk); another under mu_ too.
    template <class F>
    auto store_call(F f)
    {
        if (writes_after_lock()) {
            const std::lock_guard store_lock(store_mu_);
            return f(*store_);
        }
        const std::lock_guard lock(mu_);
        const std::lock_guard store_lock(store_mu_);
        return f(*store_);
    }
    error_code release_in_store(std::uint64_t id);
    error_code generation_in_store(std::uint64_t id, const std::string& generation_id);
    error_code correct_in_store(std::uint64_t record_id, money proven, correction& out);
    using reserved_handler = std::function<void(error_code, reservation)>;
    void confirm(
        unconfirmed u, reservation res, const asio::any_io_executor& ex, reserved_handler done);
    void drop_unconfirmed(reservation& res);
    void fill_views(const open_reservation& r, money amount);
    reservation try_reserve(
        const reserve_request& req,
        error_code& ec,
        std::string* detail,
        const asio::any_io_executor& cancel_on);

    // Settling, releasing and correcting (guard_settle.cpp).
    error_code settle(std::uint32_t slot, attempt_record& record, bool unknown);
    void
    note_anomaly(const open_reservation& r, attempt_record& record, money worst, bool surprise);
    static constexpr std::size_t max_kept_anomalies = 1000;
    void mark_unknown(const std::string& model, const std::string& why);
    void stop(const open_reservation& r, const std::string& why);
    void release(std::uint32_t slot) noexcept;
    void meter(std::uint32_t slot, std::uint64_t tokens);
    void note_generation(std::uint32_t slot, const std::string& id);
    error_code correct(std::uint64_t record_id, money proven);
    std::vector<reservation_entry> open_reservations();
    error_code settle_open(std::uint64_t id, attempt_record& record);
    // What slot `slot`'s answer is booked at (price_catalog::booked_cost, at the current
    // prices, for the model it was reserved for unless `model_asked` names one).
    std::optional<money> booked_cost(
        std::uint32_t slot,
        std::string_view model_asked,
        const chat_response& response,
        std::string& anomaly);
    price_catalog prices_now();

    // Waiting for headroom, and cancelling (guard_async.cpp).
    void trip(std::vector<std::shared_ptr<cancel_state>>& to_cancel);
    static void
    cancel_one(open_reservation& r, error reason, std::vector<std::shared_ptr<cancel_state>>& out);
    void fail(std::vector<std::shared_ptr<cancel_state>>& to_cancel);
    void pump(std::vector<completion>& done);
    static std::shared_ptr<cancel_state> make_cancel(const asio::any_io_executor& ex);
    void
    finish(std::vector<std::shared_ptr<cancel_state>>& to_cancel, std::vector<completion>& done);
    static void complete(const std::shared_ptr<waiter>& w, error_code ec, reservation r);
    void
    async_reserve(const reserve_request& req, const asio::any_io_executor& ex, reserve_handler h);
    void abandon(const std::shared_ptr<waiter>& w, error_code why);
    void close();

    adaptive_mutex mu_;
    // One replacement of the budgets at a time (set_budgets reads the store between its two
    // holds of mu_).
    std::mutex config_mu_;
    // Budgets that came in their current period while a guard ran (ledger_notes::arrived);
    // under config_mu_.
    std::map<std::string, std::int64_t, std::less<>> arrived_;
    bool arrivals_noted_ = false; // the store has a note of them (to be kept up)
    // The store, one call at a time: the book decides under mu_, and a SQLite store's writes
    // (its reservations and settlements) happen after it, under this alone, so no decision
    // waits for the disk. Every other store call holds it too, taken after mu_, never before
    // it; the one exception is the settlement of a store written under mu_ (the memory
    // store's ring, Redis's queue), which only calls under mu_ can meet (Redis's reservations,
    // made under this alone, it synchronizes itself).
    std::mutex store_mu_;
    budget_params params_;
    price_catalog prices_;
    std::string last_model_;
    const model_price* last_price_ = nullptr;
    std::shared_ptr<budget_store> store_;
    book book_;
    std::uint64_t next_id_ = 1;
    std::atomic<std::uint64_t> next_request_id_{1};
    bool closed_ = false;
    bool failed_ = false;
    bool keeps_ = true;
    bool async_store_ = false; // the store's reservations are awaited (confirm)
    // Settlements in the book that a store written after the lock has yet to write: what a
    // budget that comes meanwhile needs of their records (id, time, keys, cost).
    std::vector<attempt_record> unwritten_;
    std::vector<charge_ref> scratch_;
    std::vector<budget_charge_view> views_;
    std::vector<budget_account*> reached_;
    std::list<std::shared_ptr<waiter>> waiters_;
    // Models that billed above their prices: unknown for the guard's life.
    struct name_hash {
        using is_transparent = void;
        std::size_t operator()(std::string_view s) const noexcept
        {
            return std::hash<std::string_view>{}(s);
        }
    };
    std::unordered_map<std::string, model_price, name_hash, std::equal_to<>> surprised_;
    std::vector<spend_anomaly> anomalies_;
    std::uint64_t anomaly_count_ = 0;
};

} // namespace detail

} // namespace frugal

#endif // FRUGAL_SRC_BUDGET_GUARD_IMPL_HPP
