// The accounting path of the budget guard after a request: its reservation settled with what it
// cost or released, a bill above its prices kept as an anomaly, and a ledger record corrected.
#include "budget/guard_impl.hpp"

#include <algorithm>
#include <mutex>

namespace frugal::detail {

std::optional<money> guard_impl::booked_cost(
    std::uint32_t slot,
    std::string_view model_asked,
    const chat_response& response,
    std::string& anomaly)
{
    const std::lock_guard lock(mu_);
    const std::string_view model = model_asked.empty() ? book_.at(slot).model : model_asked;
    return prices_.booked_cost(model, response, anomaly);
}

price_catalog guard_impl::prices_now()
{
    const std::lock_guard lock(mu_);
    return prices_;
}

// Settles slot `slot` with `record.cost` (or its whole live amount when `unknown`).
error_code guard_impl::settle(std::uint32_t slot, attempt_record& record, bool unknown)
{
    std::vector<std::shared_ptr<cancel_state>> to_cancel;
    std::vector<completion> done;
    error_code ec;
    std::vector<budget_charge_view> views; // a SQLite store's charges, kept past the lock
    std::uint64_t id = 0;
    {
        const std::lock_guard lock(mu_);
        auto& r = book_.at(slot);
        if (unknown && !r.free) {
            // A bill the answer's own report could not price (an anomaly) is held at the
            // worst case, not at a metered hold: the report may hide any part of it.
            // A cost the report gave, refused as the bill, is its least (`frugal::settle`).
            record.cost = std::max(
                record.cost, record.anomaly.empty() ? r.live : std::max(r.live, book::worst(r)));
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
        id = r.free ? 0 : r.id;
        record.reservation_id = id;
        if (writes_after_lock()) {
            views.assign(views_.begin(), views_.end()); // the names live as long as the guard
            // Settled in the book, not yet in the ledger: a budget that comes meanwhile counts
            // it from here (book::arrival_plan).
            if (id != 0) {
                auto& u = unwritten_.emplace_back();
                u.reservation_id = id;
                u.time_ms = record.time_ms;
                u.keys = record.keys;
                u.cost = record.cost;
            }
        }
        reached_.clear();
        book_.commit(r, record.cost, reached_);
        if (surprise)
            stop(r, record.anomaly);
        book_.free_slot(slot);
        if (!writes_after_lock()) {
            // In memory (a ring), or a fleet's queue: under the lock, which every other call
            // that reaches the same state holds too (see store_mu_). A settlement that raises
            // the spend must reach Redis before any reservation granted after it.
            ec = store_->settle(id, views_, record);
            if (ec)
                fail(to_cancel);
        }
        trip(to_cancel);
        pump(done);
    }
    if (writes_after_lock()) {
        // The book has it; the store is told after the lock (a SQLite transaction), so no
        // decision waits for the disk. A failed write stops paid traffic.
        {
            const std::lock_guard store_lock(store_mu_);
            ec = store_->settle(id, views, record);
        }
        if (id != 0 || ec) {
            const std::lock_guard lock(mu_);
            const auto it = std::find_if(unwritten_.begin(), unwritten_.end(), [&](const auto& u) {
                return u.reservation_id == id;
            });
            if (id != 0 && it != unwritten_.end())
                unwritten_.erase(it);
            if (ec)
                fail(to_cancel);
        }
    }
    finish(to_cancel, done);
    return ec ? error_code(error::budget_store_failed) : error_code();
}

// Keeps an anomaly of settling `r` and, for a surprise, says it in `record` and makes the
// model unknown: its prices did not bound what it billed.
void guard_impl::note_anomaly(
    const open_reservation& r, attempt_record& record, money worst, bool surprise)
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

// A model that billed above its prices is priced as unknown for the guard's life.
void guard_impl::mark_unknown(const std::string& model, const std::string& why)
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
void guard_impl::stop(const open_reservation& r, const std::string& why)
{
    auto stop_one = [&](budget_account* a) {
        if (!a->stopped)
            a->stopped_by = why;
        a->stopped = true;
        if (std::find(reached_.begin(), reached_.end(), a) == reached_.end())
            reached_.push_back(a);
    };
    for (const auto& c : r.charges)
        stop_one(c.account);
    for (const auto& c : r.counted) // budgets that came while it was in flight
        if (!c.account->retired)
            stop_one(c.account);
}

// The store calls made under mu_ (rare, or needing the book and the store to agree at once):
// store_mu_ inside it, as everywhere.
error_code guard_impl::release_in_store(std::uint64_t id)
{
    const std::lock_guard store_lock(store_mu_);
    return store_->release(id);
}

error_code guard_impl::generation_in_store(std::uint64_t id, const std::string& generation_id)
{
    const std::lock_guard store_lock(store_mu_);
    return store_->note_generation(id, generation_id);
}

error_code guard_impl::correct_in_store(std::uint64_t record_id, money proven, correction& out)
{
    const std::lock_guard store_lock(store_mu_);
    return store_->correct(record_id, proven, out);
}

void guard_impl::release(std::uint32_t slot) noexcept
{
    std::vector<std::shared_ptr<cancel_state>> to_cancel;
    std::vector<completion> done;
    bool tell = false;
    std::uint64_t id = 0;
    {
        const std::lock_guard lock(mu_);
        auto& r = book_.at(slot);
        book_.unhold(r);
        tell = keeps_ && !r.free;
        id = r.id;
        if (tell && !writes_after_lock() && release_in_store(id))
            fail(to_cancel);
        book_.free_slot(slot);
        pump(done);
    }
    if (tell && writes_after_lock() && release_in_store(id)) {
        const std::lock_guard lock(mu_);
        fail(to_cancel);
    }
    finish(to_cancel, done);
}

void guard_impl::meter(std::uint32_t slot, std::uint64_t tokens)
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

void guard_impl::note_generation(std::uint32_t slot, const std::string& id)
{
    std::vector<std::shared_ptr<cancel_state>> to_cancel;
    std::vector<completion> done;
    std::uint64_t rid = 0;
    {
        const std::lock_guard lock(mu_);
        auto& r = book_.at(slot);
        r.generation_id = id;
        rid = r.id;
        // A store that cannot record what a crash would need stops paid traffic, as any
        // failed write does.
        if (keeps_ && !writes_after_lock() && generation_in_store(rid, id))
            fail(to_cancel);
        pump(done);
    }
    if (keeps_ && writes_after_lock() && generation_in_store(rid, id)) {
        const std::lock_guard lock(mu_);
        fail(to_cancel);
    }
    finish(to_cancel, done);
}

error_code guard_impl::correct(std::uint64_t record_id, money proven)
{
    if (proven < money())
        return boost::system::errc::make_error_code(boost::system::errc::invalid_argument);
    std::vector<std::shared_ptr<cancel_state>> to_cancel;
    std::vector<completion> done;
    correction c;
    // The store says what the record was charged; the book follows it.
    if (writes_after_lock()) {
        if (auto ec = correct_in_store(record_id, proven, c))
            return ec;
    }
    {
        const std::lock_guard lock(mu_);
        if (!writes_after_lock()) {
            if (auto ec = correct_in_store(record_id, proven, c))
                return ec;
        }
        const money delta = proven - c.previous;
        book_.total_committed += delta;
        reached_.clear();
        spend_anomaly a;
        for (const auto& m : c.moved) {
            auto* account = book_.find_kept(m.budget);
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

std::vector<reservation_entry> guard_impl::open_reservations()
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

error_code guard_impl::settle_open(std::uint64_t id, attempt_record& record)
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

} // namespace frugal::detail
