#include <frugal/budget.hpp>

#include "budget/book.hpp"

#include <boost/asio/append.hpp>
#include <boost/asio/associated_cancellation_slot.hpp>
#include <boost/asio/associated_executor.hpp>
#include <boost/asio/post.hpp>
#include <boost/asio/steady_timer.hpp>

#include <time.h>

#include <algorithm>
#include <atomic>
#include <list>
#include <mutex>
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

namespace {

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

std::int64_t unix_ms(std::chrono::system_clock::time_point t)
{
    return std::chrono::duration_cast<std::chrono::milliseconds>(t.time_since_epoch()).count();
}

std::string describe_shortfall(const decision& d, const cost_bound& b, std::uint32_t min_tokens)
{
    if (d.limiting == nullptr)
        return "no budget can cover the request";
    const auto& a = *d.limiting;
    if (a.tripped)
        return "budget '" + a.name + "' has reached its cap of $" + a.cap.to_string();
    return "budget '" + a.name + "' ($" + a.cap.to_string() + " cap, $" +
           a.current.committed.to_string() + " committed, $" + a.current.reserved.to_string() +
           " reserved) cannot cover the smallest request allowed ($" +
           saturating_fma(b.per_completion_token, min_tokens, b.fixed).to_string() + " for " +
           std::to_string(min_tokens) + " completion tokens)";
}

// A mutex that spins briefly before it sleeps (glibc's adaptive kind): the guard's critical
// sections last tens of nanoseconds, far less than a futex sleep and wake-up.
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

// A waiter served (or denied) under the lock, completed after it.
struct completion {
    std::shared_ptr<waiter> w;
    error_code ec;
    reservation res;
};

} // namespace

class guard_impl : public std::enable_shared_from_this<guard_impl> {
public:
    guard_impl(budget_params p, price_catalog prices, std::shared_ptr<budget_store> store)
        : params_(std::move(p)), prices_(std::move(prices)), store_(std::move(store))
    {
        book_.mode = params_.mode;
        keeps_ = store_->keeps_reservations();
    }

    error_code open(std::string& detail)
    {
        if (auto ec = book_.configure(params_.budgets, detail))
            return ec;
        budget_store_state st;
        if (auto ec = store_->load(st)) {
            detail = "the budget store could not be read: " + ec.message();
            return error::budget_store_failed;
        }
        const auto now = now_ms();
        for (const auto& c : st.committed) {
            if (auto* a = book_.find_or_make(c.budget)) {
                a->roll(window_of(a->period, now));
                book_.add_committed(*a, c.window, c.amount);
            }
        }
        book_.total_committed = st.ledger_total;
        for (const auto& o : st.open) {
            const auto slot = book_.acquire();
            auto& r = book_.at(slot);
            r.in_use = true;
            r.orphan = true;
            r.id = o.id;
            r.request_id = o.request_id;
            r.time_ms = o.time_ms;
            r.model = o.model;
            r.generation_id = o.generation_id;
            r.amount = o.charges.empty() ? money() : o.charges.front().amount;
            r.bound = {r.amount, {}};
            r.max_tokens = 0;
            r.charges.clear();
            for (const auto& c : o.charges) {
                if (auto* a = book_.find_or_make(c.budget)) {
                    a->roll(window_of(a->period, now));
                    r.charges.push_back({a, c.window});
                }
            }
            book_.hold(r);
        }
        next_id_ = std::max<std::uint64_t>(st.next_id, 1);
        next_request_id_.store(std::max<std::uint64_t>(st.next_request_id, 1));
        // Reports read the caps beside the ledger: one note, replaced whole, so a cap dropped
        // from the configuration is dropped from the report too.
        std::string caps;
        for (const auto& b : params_.budgets)
            caps += b.name + ' ' + b.cap.to_string() + ' ' + to_string(b.period) + '\n';
        if (auto ec = store_->put_note("budgets", caps)) {
            detail = "the budget store could not be written: " + ec.message();
            return error::budget_store_failed;
        }
        return {};
    }

    std::int64_t now_ms() const
    {
        if (params_.clock)
            return unix_ms(params_.clock());
        // The coarse clock (a few milliseconds of resolution) is plenty to place spend in a
        // day, and costs a tenth of the precise one on virtual machines.
        timespec ts{};
        ::clock_gettime(CLOCK_REALTIME_COARSE, &ts);
        return std::int64_t{ts.tv_sec} * 1000 + ts.tv_nsec / 1'000'000;
    }

    // The catalog lookup, remembering the last model (most traffic names a few). A model that
    // surprised earlier is priced as unknown.
    const model_price* price_of(std::string_view model)
    {
        if (last_price_ != nullptr && model == last_model_)
            return last_price_;
        if (!surprised_.empty()) {
            if (const auto it = surprised_.find(model); it != surprised_.end())
                return &it->second;
        }
        const auto* p = prices_.find(model);
        if (p != nullptr) {
            last_model_.assign(model);
            last_price_ = p;
        }
        return p;
    }

    // The tokens a request wants: what it asks, else the model's maximum completion.
    static std::uint32_t wanted(const reserve_request& req, const model_price& p)
    {
        if (req.max_tokens != 0)
            return req.max_tokens;
        const auto m = p.max_completion_tokens ? *p.max_completion_tokens
                       : p.context_length      ? *p.context_length
                                               : 4096;
        return static_cast<std::uint32_t>(std::min<std::uint64_t>(m, 0xffffffffu));
    }

    // One attempt to grant `req`, under the lock. Success fills `out`; a shortfall says
    // whether waiting may help.
    shortfall grant(
        const reserve_request& req,
        const request_features& features,
        const asio::any_io_executor* cancel_on,
        reservation& out,
        error_code& ec,
        std::string* detail)
    {
        const model_price* p = price_of(req.model);
        if (p == nullptr || !p->known()) {
            ec = error::price_unknown;
            if (detail != nullptr)
                *detail =
                    p == nullptr
                        ? "no price is known for model '" + std::string(req.model) + "'"
                        : "model '" + std::string(req.model) + "' cannot be priced: " + p->unknown;
            return shortfall::denied;
        }
        const bool free = p->free() && features.unbounded_fee.empty();
        if (!free && (closed_ || failed_)) {
            ec = failed_ ? error::budget_store_failed : error::budget_closed;
            if (detail != nullptr)
                *detail = failed_ ? "the budget store failed earlier; paid traffic is stopped"
                                  : "the budget guard is closed";
            return shortfall::denied;
        }
        const auto now = now_ms();
        if (auto e = book_.resolve(req.keys, now, scratch_, detail)) {
            ec = e;
            return shortfall::denied;
        }
        for (const auto& c : scratch_) {
            if (c.account->stopped) {
                ec = error::budget_exhausted;
                if (detail != nullptr)
                    *detail = "budget '" + c.account->name + "' is stopped until its next " +
                              "period or a reset: " + c.account->stopped_by;
                return shortfall::denied;
            }
        }
        if (!features.unbounded_fee.empty() && !scratch_.empty()) {
            ec = error::price_unknown;
            if (detail != nullptr)
                *detail = "extra_body turns on " + features.unbounded_fee +
                          ", whose fees frugal cannot bound; a cap refuses it";
            return shortfall::denied;
        }
        const auto want = wanted(req, *p);
        if (free) {
            // Holds nothing, but is charged to its budgets if the model bills anyway.
            const auto slot = book_.acquire();
            auto& r = book_.at(slot);
            r.in_use = true;
            r.free = true;
            r.id = 0;
            r.request_id = req.request_id;
            r.time_ms = now;
            r.amount = money();
            r.bound = {};
            r.max_tokens = want;
            r.model.assign(req.model);
            r.charges.assign(scratch_.begin(), scratch_.end());
            book_.hold(r);
            out.guard_ = this;
            out.slot_ = slot;
            out.free_ = true;
            out.max_tokens_ = want;
            return shortfall::none;
        }
        const auto b = worst_case(*p, req.prompt_bytes, features);
        const auto hold = params_.mode == budget_mode::metered
                              ? std::min(want, params_.expected_completion_tokens)
                              : want;
        const auto d =
            book_.decide(scratch_, b, want, hold, params_.min_max_tokens, req.allow_clamp);
        if (d.result != shortfall::none) {
            ec = error::budget_exhausted;
            if (detail != nullptr)
                *detail = describe_shortfall(d, b, params_.min_max_tokens);
            return d.result;
        }
        std::shared_ptr<cancel_state> cancel;
        if (cancel_on != nullptr && *cancel_on)
            cancel = make_cancel(*cancel_on); // only paid requests can be stopped by the guard
        const auto slot = book_.acquire();
        auto& r = book_.at(slot);
        r.in_use = true;
        r.id = next_id_++;
        r.request_id = req.request_id;
        r.time_ms = now;
        r.amount = d.amount;
        r.bound = b;
        r.max_tokens = d.max_tokens;
        r.model.assign(req.model);
        r.charges.assign(scratch_.begin(), scratch_.end());
        r.cancel = cancel;
        book_.hold(r);
        if (auto e = keeps_ ? store_reserve(r) : error_code()) {
            book_.unhold(r);
            book_.free_slot(slot);
            ec = e == error::budget_exhausted ? e : error_code(error::budget_store_failed);
            if (detail != nullptr)
                *detail = "the budget store refused the reservation: " + e.message();
            return shortfall::denied;
        }
        out.guard_ = this;
        out.slot_ = slot;
        out.id_ = r.id;
        out.amount_ = d.amount;
        out.max_tokens_ = d.max_tokens;
        out.clamped_ = d.clamped;
        out.cancel_ = cancel;
        return shortfall::none;
    }

    error_code store_reserve(const open_reservation& r)
    {
        fill_views(r, r.amount);
        return store_->reserve({r.id, r.time_ms, r.request_id, r.model, views_});
    }

    void fill_views(const open_reservation& r, money amount)
    {
        views_.clear();
        for (const auto& c : r.charges)
            views_.push_back({c.account->name, c.window, amount, c.account->cap, c.account->index});
    }

    reservation try_reserve(
        const reserve_request& req,
        error_code& ec,
        std::string* detail,
        const asio::any_io_executor& cancel_on)
    {
        ec = {};
        reservation out;
        const auto features = inspect_extra_body(req.extra_body); // parsed outside the lock
        const std::lock_guard lock(mu_);
        grant(req, features, &cancel_on, out, ec, detail);
        return out;
    }

    // Settles slot `slot` with `record.cost` (or its whole live amount when `unknown`).
    error_code settle(std::uint32_t slot, attempt_record& record, bool unknown)
    {
        std::vector<std::shared_ptr<cancel_state>> to_cancel;
        std::vector<completion> done;
        error_code ec;
        {
            const std::lock_guard lock(mu_);
            auto& r = book_.at(slot);
            if (unknown && !r.free) {
                record.cost = r.live;
                record.estimated = true;
            } else if (!record.anomaly.empty()) {
                // A report frugal could not take as a bill never lowers the books.
                record.cost = std::max(record.cost, r.live);
            }
            if (record.generation_id.empty())
                record.generation_id = r.generation_id;
            if (record.request_id == 0)
                record.request_id = r.request_id;
            if (record.model_asked.empty())
                record.model_asked = r.model;
            if (record.time_ms == 0)
                record.time_ms = r.time_ms;
            const money worst = book::worst(r);
            const bool surprise = record.cost > worst;
            if (surprise || !record.anomaly.empty())
                note_anomaly(r, record, worst, surprise);
            fill_views(r, record.cost);
            if (r.free && record.cost == money())
                views_.clear(); // nothing to charge: the ledger record alone
            reached_.clear();
            book_.commit(r, record.cost, reached_);
            if (surprise)
                stop(r, record.anomaly);
            ec = store_->settle(r.free ? 0 : r.id, views_, record);
            book_.free_slot(slot);
            if (ec)
                fail(to_cancel);
            trip(to_cancel);
            pump(done);
        }
        finish(to_cancel, done);
        return ec ? error_code(error::budget_store_failed) : error_code();
    }

    // Keeps an anomaly of settling `r` and, for a surprise, says it in `record` and makes the
    // model unknown: its prices did not bound what it billed.
    void note_anomaly(const open_reservation& r, attempt_record& record, money worst, bool surprise)
    {
        if (surprise) {
            std::string what =
                r.free ? "the free model " + r.model + " billed $" + record.cost.to_string()
                       : r.model + " billed $" + record.cost.to_string() +
                             " where its prices allowed at most $" + worst.to_string();
            record.anomaly = record.anomaly.empty() ? what : record.anomaly + "; " + what;
            mark_unknown(r.model, what);
        }
        ++anomaly_count_;
        if (anomalies_.size() >= max_kept_anomalies)
            return;
        spend_anomaly a;
        a.time_ms = now_ms();
        a.model = r.model;
        a.booked = record.cost;
        a.allowed = worst;
        a.surprise = surprise;
        a.what = record.anomaly;
        for (const auto& c : r.charges)
            a.budgets.push_back(c.account->name);
        anomalies_.push_back(std::move(a));
    }
    static constexpr std::size_t max_kept_anomalies = 1000;

    // A model that billed above its prices is priced as unknown for the guard's life.
    void mark_unknown(const std::string& model, const std::string& why)
    {
        model_price unknown;
        if (const auto* p = prices_.find(model))
            unknown = *p;
        unknown.id = model;
        unknown.unknown = "earlier in this process " + why;
        surprised_.insert_or_assign(model, std::move(unknown));
        last_price_ = nullptr;
    }

    // A surprise stops every budget `r` was charged to: no request of any price is granted
    // under them until their next period or a reset, and their in-flight requests are
    // cancelled (`trip`).
    void stop(const open_reservation& r, const std::string& why)
    {
        for (const auto& c : r.charges) {
            auto* a = c.account;
            if (!a->stopped)
                a->stopped_by = why;
            a->stopped = true;
            if (std::find(reached_.begin(), reached_.end(), a) == reached_.end())
                reached_.push_back(a);
        }
    }

    void release(std::uint32_t slot) noexcept
    {
        std::vector<std::shared_ptr<cancel_state>> to_cancel;
        std::vector<completion> done;
        {
            const std::lock_guard lock(mu_);
            auto& r = book_.at(slot);
            book_.unhold(r);
            if (keeps_ && !r.free && store_->release(r.id))
                fail(to_cancel);
            book_.free_slot(slot);
            pump(done);
        }
        finish(to_cancel, done);
    }

    void meter(std::uint32_t slot, std::uint64_t tokens)
    {
        if (params_.mode != budget_mode::metered)
            return;
        std::vector<std::shared_ptr<cancel_state>> to_cancel;
        std::vector<completion> done;
        {
            const std::lock_guard lock(mu_);
            reached_.clear();
            book_.meter(book_.at(slot), tokens, reached_);
            if (reached_.empty())
                return;
            trip(to_cancel);
            pump(done);
        }
        finish(to_cancel, done);
    }

    void note_generation(std::uint32_t slot, const std::string& id)
    {
        std::vector<std::shared_ptr<cancel_state>> to_cancel;
        std::vector<completion> done;
        {
            const std::lock_guard lock(mu_);
            auto& r = book_.at(slot);
            r.generation_id = id;
            // A store that cannot record what a crash would need stops paid traffic, as any
            // failed write does.
            if (keeps_ && store_->note_generation(r.id, id))
                fail(to_cancel);
            pump(done);
        }
        finish(to_cancel, done);
    }

    // Trips every account in `reached_`: its in-flight requests are cancelled.
    void trip(std::vector<std::shared_ptr<cancel_state>>& to_cancel)
    {
        if (reached_.empty())
            return;
        for (auto* a : reached_)
            a->tripped = true;
        for (auto& r : book_.slots()) {
            if (!r.in_use || !r.cancel)
                continue;
            const bool hit = std::any_of(r.charges.begin(), r.charges.end(), [&](const auto& c) {
                return std::find(reached_.begin(), reached_.end(), c.account) != reached_.end();
            });
            if (hit)
                cancel_one(r, error::budget_exhausted, to_cancel);
        }
        reached_.clear();
    }

    static void
    cancel_one(open_reservation& r, error reason, std::vector<std::shared_ptr<cancel_state>>& out)
    {
        int expected = 0;
        if (r.cancel &&
            r.cancel->reason.compare_exchange_strong(expected, static_cast<int>(reason)))
            out.push_back(r.cancel);
    }

    // A store that cannot record spend stops paid traffic: spend that cannot be recorded must
    // not be followed by more.
    void fail(std::vector<std::shared_ptr<cancel_state>>& to_cancel)
    {
        failed_ = true;
        for (auto& r : book_.slots())
            if (r.in_use)
                cancel_one(r, error::budget_store_failed, to_cancel);
    }

    // Grants or denies waiting requests, oldest first, after headroom changed.
    void pump(std::vector<completion>& done)
    {
        for (auto it = waiters_.begin(); it != waiters_.end();) {
            auto& w = **it;
            reservation res;
            error_code ec;
            const auto s = grant(w.req, w.features, &w.executor, res, ec, &w.why);
            if (s == shortfall::wait) {
                ++it;
                continue;
            }
            if (ec)
                res.why_ = w.why;
            w.queued = false;
            done.push_back({*it, ec, std::move(res)});
            it = waiters_.erase(it);
        }
    }

    static std::shared_ptr<cancel_state> make_cancel(const asio::any_io_executor& ex)
    {
        auto c = std::make_shared<cancel_state>();
        c->executor = ex;
        return c;
    }

    // Outside the lock: signals cancellations and completes waiters on their executors.
    void
    finish(std::vector<std::shared_ptr<cancel_state>>& to_cancel, std::vector<completion>& done)
    {
        for (auto& c : to_cancel)
            asio::post(c->executor, [c] { c->signal.emit(asio::cancellation_type::terminal); });
        for (auto& d : done)
            complete(d.w, d.ec, std::move(d.res));
    }

    static void complete(const std::shared_ptr<waiter>& w, error_code ec, reservation r)
    {
        asio::post(w->executor, [w, ec, r = std::move(r)]() mutable {
            w->timer.cancel();
            auto slot = asio::get_associated_cancellation_slot(w->handler);
            if (slot.is_connected())
                slot.clear();
            std::move(w->handler)(ec, std::move(r));
        });
    }

    void
    async_reserve(const reserve_request& req, const asio::any_io_executor& ex, reserve_handler h)
    {
        reservation res;
        error_code ec;
        shortfall s = shortfall::none;
        auto features = inspect_extra_body(req.extra_body); // parsed once, outside the lock
        {
            const std::lock_guard lock(mu_);
            s = grant(req, features, &ex, res, ec, &res.why_);
        }
        if (s != shortfall::wait || params_.max_wait.count() <= 0) {
            // Decided at once (most requests): no waiter, no timer.
            asio::post(ex, asio::append(std::move(h), ec, std::move(res)));
            return;
        }
        auto w = std::make_shared<waiter>(std::move(h), ex);
        w->why = std::move(res.why_);
        res.why_.clear();
        w->model = std::string(req.model);
        w->keys.assign(req.keys.begin(), req.keys.end());
        w->req = req;
        w->req.model = w->model;
        w->req.keys = w->keys;
        w->req.extra_body = {}; // the caller's text need not outlive the wait: its features do
        w->features = std::move(features);
        {
            // Headroom may have come back since the first try: judge again as a queued waiter.
            const std::lock_guard lock(mu_);
            s = grant(w->req, w->features, &ex, res, ec, &w->why);
            if (s == shortfall::wait)
                waiters_.push_back(w);
            else
                res.why_ = w->why;
        }
        if (s != shortfall::wait) {
            complete(w, ec, std::move(res));
            return;
        }
        auto self = shared_from_this();
        auto slot = asio::get_associated_cancellation_slot(w->handler);
        if (slot.is_connected()) {
            slot.assign([self, w](asio::cancellation_type) {
                self->abandon(w, asio::error::operation_aborted);
            });
        }
        w->timer.expires_after(params_.max_wait);
        w->timer.async_wait([self, w](error_code tec) {
            if (!tec)
                self->abandon(w, error::budget_exhausted);
        });
    }

    // A waiter that gave up (cancelled, or its time ran out), unless it was already served.
    void abandon(const std::shared_ptr<waiter>& w, error_code why)
    {
        reservation none;
        {
            const std::lock_guard lock(mu_);
            if (!w->queued)
                return;
            w->queued = false;
            waiters_.remove(w);
            if (why == error::budget_exhausted)
                none.why_ = w->why + " (after waiting " +
                            std::to_string(params_.max_wait.count()) + " ms for headroom)";
        }
        complete(w, why, std::move(none));
    }

    void close()
    {
        std::vector<std::shared_ptr<cancel_state>> to_cancel;
        std::vector<completion> done;
        {
            const std::lock_guard lock(mu_);
            closed_ = true;
            for (auto& r : book_.slots())
                if (r.in_use)
                    cancel_one(r, error::budget_closed, to_cancel);
            pump(done);
        }
        finish(to_cancel, done);
    }

    error_code correct(std::uint64_t record_id, money proven)
    {
        if (proven < money())
            return boost::system::errc::make_error_code(boost::system::errc::invalid_argument);
        std::vector<std::shared_ptr<cancel_state>> to_cancel;
        std::vector<completion> done;
        {
            const std::lock_guard lock(mu_);
            correction c;
            if (auto ec = store_->correct(record_id, proven, c))
                return ec;
            const money delta = proven - c.previous;
            book_.total_committed += delta;
            reached_.clear();
            spend_anomaly a;
            for (const auto& m : c.moved) {
                auto* account = book_.find_or_make(m.budget);
                if (account == nullptr)
                    continue;
                if (m.window == account->current.window)
                    account->current.committed += m.amount;
                a.budgets.push_back(account->name);
                if (delta > money())
                    reached_.push_back(account);
            }
            if (delta > money()) {
                // The provider's own record proves a bill above what frugal booked (the whole
                // reservation, or the cost it reported): a surprise, as at settlement.
                a.time_ms = now_ms();
                a.model = c.model;
                a.booked = proven;
                a.allowed = c.previous;
                a.surprise = true;
                a.what = proven_above_booked(proven, c.previous) + " (ledger record " +
                         std::to_string(record_id) + ")";
                ++book_.price_anomalies;
                ++anomaly_count_;
                for (auto* account : reached_) {
                    if (!account->stopped)
                        account->stopped_by = a.what;
                    account->stopped = true;
                }
                if (!c.model.empty())
                    mark_unknown(c.model, a.what);
                if (anomalies_.size() < max_kept_anomalies)
                    anomalies_.push_back(std::move(a));
                trip(to_cancel);
            }
            pump(done);
        }
        finish(to_cancel, done);
        return {};
    }

    std::vector<reservation_entry> open_reservations()
    {
        const std::lock_guard lock(mu_);
        std::vector<reservation_entry> out;
        for (const auto& r : book_.slots()) {
            if (!r.in_use || !r.orphan)
                continue;
            reservation_entry e{r.id, r.time_ms, r.request_id, r.model, r.generation_id, {}};
            for (const auto& c : r.charges)
                e.charges.push_back({c.account->name, c.window, r.amount});
            out.push_back(std::move(e));
        }
        return out;
    }

    error_code settle_open(std::uint64_t id, attempt_record& record)
    {
        std::uint32_t slot = 0;
        {
            const std::lock_guard lock(mu_);
            const auto& slots = book_.slots();
            const auto it = std::find_if(slots.begin(), slots.end(), [&](const auto& r) {
                return r.in_use && r.orphan && r.id == id;
            });
            if (it == slots.end())
                return error::not_found;
            slot = static_cast<std::uint32_t>(it - slots.begin());
        }
        return settle(slot, record, false);
    }

    adaptive_mutex mu_;
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

// reservation

reservation::reservation(reservation&& o) noexcept
    : guard_(std::exchange(o.guard_, nullptr)), slot_(std::exchange(o.slot_, no_slot)), id_(o.id_),
      amount_(o.amount_), max_tokens_(o.max_tokens_), clamped_(o.clamped_), sent_(o.sent_),
      free_(o.free_), cancel_(std::move(o.cancel_)), why_(std::move(o.why_))
{
}

reservation& reservation::operator=(reservation&& o) noexcept
{
    if (this != &o) {
        this->~reservation();
        new (this) reservation(std::move(o));
    }
    return *this;
}

reservation::~reservation()
{
    if (guard_ == nullptr)
        return;
    if (free_ || !sent_) {
        release(); // a free one holds nothing to charge
        return;
    }
    attempt_record r;
    r.time_ms = 0;
    r.outcome = attempt_outcome::unknown;
    // A destructor cannot report a store failure; the guard stops paid traffic on one.
    (void)settle_unknown(r);
}

void reservation::note_generation(const std::string& generation_id)
{
    // The provider's text: an id with control characters (a line break would split a store's
    // record) is not one frugal can look up, and is not kept.
    const bool printable = std::none_of(generation_id.begin(), generation_id.end(), [](char c) {
        return static_cast<unsigned char>(c) < 0x20 || c == 0x7f;
    });
    if (guard_ != nullptr && !free() && printable && !generation_id.empty() &&
        generation_id.size() <= 256)
        guard_->note_generation(slot_, generation_id);
}

void reservation::meter(std::uint64_t completion_tokens)
{
    if (guard_ != nullptr && !free())
        guard_->meter(slot_, completion_tokens);
}

error_code reservation::settle(attempt_record& record)
{
    if (guard_ == nullptr)
        return error::reservation_inactive;
    auto* g = std::exchange(guard_, nullptr);
    return g->settle(std::exchange(slot_, no_slot), record, false);
}

error_code reservation::settle_unknown(attempt_record& record)
{
    if (guard_ == nullptr)
        return error::reservation_inactive;
    auto* g = std::exchange(guard_, nullptr);
    if (record.outcome == attempt_outcome::ok && !free_)
        record.outcome = attempt_outcome::unknown;
    return g->settle(std::exchange(slot_, no_slot), record, true);
}

void reservation::release() noexcept
{
    if (guard_ == nullptr)
        return;
    if (sent_ && !free_) {
        attempt_record r;
        r.outcome = attempt_outcome::unknown;
        (void)settle_unknown(r);
        return;
    }
    auto* g = std::exchange(guard_, nullptr);
    g->release(std::exchange(slot_, no_slot));
}

asio::cancellation_slot reservation::cancellation_slot() noexcept
{
    return cancel_ ? cancel_->signal.slot() : asio::cancellation_slot();
}

error_code reservation::cancel_reason() const noexcept
{
    const int r = cancel_ ? cancel_->reason.load() : 0;
    return r == 0 ? error_code() : error_code(static_cast<error>(r));
}

// budget_guard

budget_guard::budget_guard(std::shared_ptr<detail::guard_impl> impl) noexcept
    : impl_(std::move(impl))
{
}

std::optional<budget_guard> budget_guard::open(
    budget_params params,
    price_catalog prices,
    std::shared_ptr<budget_store> store,
    error_code& ec,
    std::string& detail)
{
    if (!store)
        store = make_memory_store();
    auto impl = std::make_shared<detail::guard_impl>(
        std::move(params), std::move(prices), std::move(store));
    ec = impl->open(detail);
    if (ec)
        return std::nullopt;
    return budget_guard(std::move(impl));
}

reservation budget_guard::try_reserve(
    const reserve_request& req,
    error_code& ec,
    std::string* detail,
    const asio::any_io_executor& cancel_on)
{
    return impl_->try_reserve(req, ec, detail, cancel_on);
}

void budget_guard::async_reserve_impl(
    const reserve_request& req,
    const asio::any_io_executor& ex,
    asio::any_completion_handler<void(error_code, reservation)> h)
{
    impl_->async_reserve(req, ex, std::move(h));
}

error_code budget_guard::correct(std::uint64_t record_id, money proven)
{
    return impl_->correct(record_id, proven);
}

std::vector<reservation_entry> budget_guard::open_reservations() const
{
    return impl_->open_reservations();
}

error_code budget_guard::settle_open(std::uint64_t reservation_id, attempt_record record)
{
    return impl_->settle_open(reservation_id, record);
}

void budget_guard::update_prices(price_catalog prices)
{
    const std::lock_guard lock(impl_->mu_);
    impl_->prices_ = std::move(prices);
    impl_->last_price_ = nullptr;
}

std::vector<budget_snapshot> budget_guard::snapshot() const
{
    const std::lock_guard lock(impl_->mu_);
    return impl_->book_.snapshot();
}

money budget_guard::committed_total() const
{
    const std::lock_guard lock(impl_->mu_);
    return impl_->book_.total_committed;
}

std::uint64_t budget_guard::price_anomalies() const
{
    const std::lock_guard lock(impl_->mu_);
    return impl_->book_.price_anomalies;
}

std::vector<spend_anomaly> budget_guard::anomalies() const
{
    const std::lock_guard lock(impl_->mu_);
    return impl_->anomalies_;
}

error_code budget_guard::reset(std::string_view name)
{
    std::vector<detail::completion> done;
    std::vector<std::shared_ptr<detail::cancel_state>> none;
    {
        const std::lock_guard lock(impl_->mu_);
        auto* a = impl_->book_.find(name);
        if (a == nullptr)
            return error::not_found;
        a->tripped = false;
        a->stopped = false;
        a->stopped_by.clear();
        a->overshoot = {};
        impl_->pump(done);
    }
    impl_->finish(none, done);
    return {};
}

error_code budget_guard::read_ledger(std::int64_t since_ms, std::vector<attempt_record>& out)
{
    const std::lock_guard lock(impl_->mu_);
    return impl_->store_->read_ledger(since_ms, out);
}

error_code budget_guard::record(attempt_record& record)
{
    record.cost = money();
    const std::lock_guard lock(impl_->mu_);
    return impl_->store_->settle(0, {}, record) ? error_code(error::budget_store_failed)
                                                : error_code();
}

std::uint64_t budget_guard::new_request_id() noexcept
{
    return impl_->next_request_id_.fetch_add(1, std::memory_order_relaxed);
}

error_code budget_guard::annotate(std::string_view key, std::string_view value)
{
    const std::lock_guard lock(impl_->mu_);
    return impl_->store_->put_note(key, value) ? error_code(error::budget_store_failed)
                                               : error_code();
}

error_code budget_guard::keep_answer(std::string_view id, std::string_view answer)
{
    const std::lock_guard lock(impl_->mu_);
    return impl_->store_->put_answer(id, answer) ? error_code(error::budget_store_failed)
                                                 : error_code();
}

error_code budget_guard::read_answers(std::vector<std::pair<std::string, std::string>>& out)
{
    const std::lock_guard lock(impl_->mu_);
    return impl_->store_->read_answers(out) ? error_code(error::budget_store_failed)
                                            : error_code();
}

error_code budget_guard::read_notes(std::vector<std::pair<std::string, std::string>>& out)
{
    const std::lock_guard lock(impl_->mu_);
    return impl_->store_->read_notes(out) ? error_code(error::budget_store_failed) : error_code();
}

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

std::optional<std::int64_t> budget_guard::take_free_request(
    std::int64_t now_ms, std::uint32_t per_minute, std::uint32_t per_day)
{
    std::int64_t wait = 0;
    if (impl_->store_->take_free_request(now_ms, per_minute, per_day, wait))
        return std::nullopt;
    return wait;
}

bool budget_guard::block_free_until(std::int64_t until_ms)
{
    return !impl_->store_->block_free_until(until_ms);
}

void budget_guard::close()
{
    impl_->close();
}

} // namespace frugal
