// The budget guard's public handles, `budget_guard` and `reservation`, which forward to the
// implementation object (guard_impl.hpp), and the opening of a guard from its store.
#include "budget/guard_impl.hpp"

#include <frugal/ledger_notes.hpp>

#include <algorithm>
#include <mutex>

namespace frugal::detail {

guard_impl::guard_impl(budget_params p, price_catalog prices, std::shared_ptr<budget_store> store)
    : params_(std::move(p)), prices_(std::move(prices)), store_(std::move(store))
{
    book_.mode = params_.mode;
    keeps_ = store_->keeps_reservations();
    async_store_ = keeps_ && store_->reserves_async();
}

error_code guard_impl::open(std::string& detail)
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
    ledger_notes notes;
    notes.caps = params_.budgets;
    const auto [key, caps] = notes.format_caps();
    if (auto ec = store_->put_note(key, caps)) {
        detail = "the budget store could not be written: " + ec.message();
        return error::budget_store_failed;
    }
    return {};
}

} // namespace frugal::detail

namespace frugal {

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

boost::system::result<budget_guard> budget_guard::open(
    budget_params params,
    price_catalog prices,
    std::shared_ptr<budget_store> store,
    diagnostics* diag)
{
    if (diag != nullptr)
        diag->clear();
    if (!store)
        store = make_memory_store();
    auto impl = std::make_shared<detail::guard_impl>(
        std::move(params), std::move(prices), std::move(store));
    std::string detail;
    if (const auto ec = impl->open(detail)) {
        if (diag != nullptr)
            diag->message = std::move(detail);
        return ec;
    }
    return budget_guard(std::move(impl));
}

bool budget_guard::reserves_async() const noexcept
{
    return impl_->async_store_;
}

boost::system::result<reservation> budget_guard::try_reserve(
    const reserve_request& req, diagnostics* diag, const asio::any_io_executor& cancel_on)
{
    if (diag != nullptr)
        diag->clear();
    error_code ec;
    auto res = impl_->try_reserve(req, ec, diag != nullptr ? &diag->message : nullptr, cancel_on);
    if (ec)
        return ec;
    return res;
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

price_catalog budget_guard::prices() const
{
    return impl_->prices_now();
}

std::vector<budget_snapshot> budget_guard::snapshot() const
{
    const std::lock_guard lock(impl_->mu_);
    return impl_->book_.snapshot();
}

std::optional<budget_snapshot> budget_guard::snapshot(std::string_view name) const
{
    const std::lock_guard lock(impl_->mu_);
    return impl_->book_.snapshot(name);
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
    return impl_->store_call([&](budget_store& s) { return s.read_ledger(since_ms, out); });
}

error_code budget_guard::record(attempt_record& record)
{
    record.cost = money();
    return impl_->store_call([&](budget_store& s) { return s.settle(0, {}, record); })
               ? error_code(error::budget_store_failed)
               : error_code();
}

std::uint64_t budget_guard::new_request_id() noexcept
{
    return impl_->next_request_id_.fetch_add(1, std::memory_order_relaxed);
}

error_code budget_guard::annotate(std::string_view key, std::string_view value)
{
    return impl_->store_call([&](budget_store& s) { return s.put_note(key, value); })
               ? error_code(error::budget_store_failed)
               : error_code();
}

error_code budget_guard::keep_answer(std::string_view id, std::string_view answer)
{
    return impl_->store_call([&](budget_store& s) { return s.put_answer(id, answer); })
               ? error_code(error::budget_store_failed)
               : error_code();
}

error_code budget_guard::read_answers(std::vector<std::pair<std::string, std::string>>& out)
{
    return impl_->store_call([&](budget_store& s) { return s.read_answers(out); })
               ? error_code(error::budget_store_failed)
               : error_code();
}

error_code budget_guard::read_notes(std::vector<std::pair<std::string, std::string>>& out)
{
    return impl_->store_call([&](budget_store& s) { return s.read_notes(out); })
               ? error_code(error::budget_store_failed)
               : error_code();
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
