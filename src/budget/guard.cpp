// The budget guard's public handles, `budget_guard` and `reservation`, which forward to the
// implementation object (guard_impl.hpp), and the opening of a guard from its store.
#include "budget/guard_impl.hpp"

#include <frugal/ledger_notes.hpp>

#include <boost/asio/execution/outstanding_work.hpp>
#include <boost/asio/post.hpp>
#include <boost/asio/prefer.hpp>

#include <algorithm>
#include <map>
#include <set>
#include <limits>
#include <mutex>

namespace frugal::detail {

guard_impl::guard_impl(budget_params p, price_catalog prices, std::shared_ptr<budget_store> store)
    : params_(std::move(p)), prices_(std::move(prices)), store_(std::move(store))
{
    book_.mode = params_.mode;
    keeps_ = store_->keeps_reservations();
    async_store_ = keeps_ && store_->reserves_async();
}

// The budgets this guard opens with (by spec name, a template as "kind:*") that the store's
// last guard did not have (`fresh`) or had with another period (`moved`). None when the store
// has no note of its caps (a new store, or one written before the notes).
error_code guard_impl::arrivals_since_last_open(
    std::set<std::string, std::less<>>& fresh,
    std::set<std::string, std::less<>>& moved,
    std::string& detail)
{
    std::vector<ledger_note> notes;
    if (auto ec = store_->read_notes(notes)) {
        detail = "the budget store's notes could not be read: " + ec.message();
        return error::budget_store_failed;
    }
    const bool noted = std::any_of(notes.begin(), notes.end(), [](const ledger_note& n) {
        return n.first == ledger_notes::caps_key;
    });
    arrivals_noted_ = std::any_of(notes.begin(), notes.end(), [](const ledger_note& n) {
        return n.first == ledger_notes::arrivals_key;
    });
    if (!noted)
        return {};
    const auto noted_now = ledger_notes::parse(notes);
    const auto& before = noted_now.caps;
    const auto now = now_ms();
    for (const auto& s : params_.budgets) {
        const auto it = std::find_if(before.begin(), before.end(), [&](const budget_spec& b) {
            return b.name == s.name;
        });
        if (it == before.end()) {
            fresh.insert(s.name);
        } else if (it->period != s.period) {
            moved.insert(s.name);
        } else if (const auto a = noted_now.arrived.find(s.name);
                   a != noted_now.arrived.end() && a->second == window_of(s.period, now)) {
            // It came in this period while the last guard ran: the store holds its spend from
            // then on only.
            fresh.insert(s.name);
            arrived_.insert_or_assign(s.name, a->second);
        }
    }
    return {};
}

// The caps and arrivals notes for `caps`, of which `arriving` come now: written together,
// before the caps are in force, so a store that cannot keep them changes nothing.
error_code guard_impl::note_budgets(
    const std::vector<budget_spec>& caps,
    const std::map<std::string, std::int64_t, std::less<>>& arrived,
    std::string& detail)
{
    ledger_notes notes;
    notes.caps = caps;
    notes.arrived = arrived;
    std::vector<ledger_note> out{notes.format_caps()};
    // Written once there is something to say, and then kept up (emptied when it is over).
    if (!arrived.empty() || arrivals_noted_) {
        out.push_back(notes.format_arrivals());
        arrivals_noted_ = true;
    }
    for (const auto& note : out) {
        if (auto ec = store_call([&](budget_store& s) { return s.put_note(note.first, note.second); })) {
            detail = "the budget store could not be written: " + ec.message();
            return error::budget_store_failed;
        }
    }
    return {};
}

namespace {

// The earliest start of the current periods of the budgets of `specs` named in `names`: the
// ledger is read from there on.
std::int64_t earliest_start(
    const std::vector<budget_spec>& specs,
    std::initializer_list<const std::set<std::string, std::less<>>*> names,
    std::int64_t now_ms)
{
    auto since = std::numeric_limits<std::int64_t>::max();
    for (const auto& s : specs)
        for (const auto* n : names)
            if (n->contains(s.name))
                since = std::min(since, period_start_ms(s.period, now_ms));
    return since;
}

} // namespace

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
    // The caps the store was last opened with say which budgets come new or with another
    // period. Their spend in the current period is then summed from the ledger: the store
    // keeps spend per period index, and another period's indices mean nothing here.
    std::set<std::string, std::less<>> fresh, moved;
    if (auto ec = arrivals_since_last_open(fresh, moved, detail))
        return ec;
    // Summed from the ledger now, they are noted as come in this period: the store holds their
    // spend of this period from now on only, and the next opening in it sums again.
    for (const auto& b : params_.budgets)
        if (fresh.contains(b.name) || moved.contains(b.name))
            arrived_.insert_or_assign(b.name, window_of(b.period, now));
    const spec_index index(params_.budgets);
    for (const auto& c : st.committed) {
        const auto* spec = index.find(c.budget);
        if (spec != nullptr && moved.contains(spec->name))
            continue;
        if (auto* a = book_.find_or_make(c.budget)) {
            const auto window = window_of(a->period, now);
            // A window after today's is another period's index (a period changed twice
            // between openings), or a clock that stepped back: not this period's spend.
            if (c.window > window)
                continue;
            a->roll(window);
            book_.add_committed(*a, c.window, c.amount);
        }
    }
    std::vector<budget_seed> seeds;
    if (!fresh.empty() || !moved.empty()) {
        std::vector<attempt_record> records;
        if (auto ec = store_->read_ledger(earliest_start(params_.budgets, {&fresh, &moved}, now), records)) {
            detail = "the budget store's ledger could not be read: " + ec.message();
            return error::budget_store_failed;
        }
        seeds = seeds_of(params_.budgets, fresh, st.committed, records, now);
        auto more = seeds_of(params_.budgets, moved, {}, records, now);
        seeds.insert(seeds.end(), more.begin(), more.end());
    }
    for (const auto& z : seeds) {
        if (auto* a = book_.find_or_make(z.name)) {
            a->roll(window_of(a->period, now));
            a->current.committed = std::max(a->current.committed, z.committed);
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
    return note_caps(detail);
}

// Reports read the caps beside the ledger: one note, replaced whole, so a cap dropped from the
// configuration is dropped from the report too.
error_code guard_impl::note_caps(std::string& detail)
{
    std::vector<budget_spec> caps;
    {
        const std::lock_guard lock(mu_);
        caps = params_.budgets;
    }
    return note_budgets(caps, arrived_, detail);
}

error_code guard_impl::set_budgets(std::vector<budget_spec> budgets, std::string& detail)
{
    const std::lock_guard one_at_a_time(config_mu_);
    const auto now = now_ms();
    std::set<std::string, std::less<>> arriving;
    {
        const std::lock_guard lock(mu_);
        if (auto ec = book_.check_reconfigure(budgets, detail))
            return ec;
        arriving = book_.arrivals(budgets);
    }
    // The notes first: a store that cannot keep the caps changes nothing. The arrivals noted
    // are those of the current periods, and the budgets that come now.
    std::map<std::string, std::int64_t, std::less<>> arrived;
    for (const auto& b : budgets) {
        const auto window = window_of(b.period, now);
        const auto kept = arrived_.find(b.name);
        if (arriving.contains(b.name) || (kept != arrived_.end() && kept->second == window))
            arrived.insert_or_assign(b.name, window);
    }
    if (auto ec = note_budgets(budgets, arrived, detail))
        return ec;
    // The store's spend of the budgets that come, before they come (a fleet's, or an earlier
    // run's): read now, so it holds nothing they will be charged.
    budget_store_state st;
    if (!arriving.empty()) {
        if (auto ec = store_call([&](budget_store& s) { return s.load(st); })) {
            detail = "the budget store could not be read: " + ec.message();
            restore_note();
            return error::budget_store_failed;
        }
    }
    std::vector<std::shared_ptr<cancel_state>> none;
    std::vector<completion> done;
    arrival_plan plan;
    std::vector<attempt_record> unwritten;
    error_code refused;
    {
        const std::lock_guard lock(mu_);
        // Checked again: a request may have made a template's instance since.
        refused = book_.check_reconfigure(budgets, detail);
        if (!refused) {
            // Again too: an instance made since is in force, with its own spend.
            arriving = book_.arrivals(budgets);
            plan = book_.reconfigure(budgets, arriving, now_ms(), next_id_);
            unwritten = unwritten_;
            params_.budgets = budgets;
            // A raised cap may serve requests that wait; a lowered one may deny them.
            pump(done);
        }
    }
    if (refused) {
        restore_note();
        return refused;
    }
    arrived_ = std::move(arrived);
    finish(none, done);
    if (arriving.empty())
        return {};
    // What the budgets that came spent before, from the ledger read after they came: every
    // record settled before is in it, and the plan leaves out those they count already (in
    // flight when they came, or granted since). Meanwhile they grant nothing (requests wait).
    // Should that fail (a ledger that cannot be read, or anything thrown), they are stopped,
    // saying why: their earlier spend is unknown, and they must not wait for ever.
    struct stop_unless_seeded {
        guard_impl& g;
        std::string why = "an error while reading what this budget spent before it came";
        bool seeded = false;
        ~stop_unless_seeded()
        {
            if (seeded)
                return;
            std::vector<completion> left;
            {
                const std::lock_guard lock(g.mu_);
                g.book_.seed_failed(why);
                g.pump(left);
            }
            std::vector<std::shared_ptr<cancel_state>> no_cancel;
            g.finish(no_cancel, left);
        }
    } unseeded{*this};
    std::vector<attempt_record> records;
    const auto since = earliest_start(budgets, {&arriving}, plan.time_ms);
    std::vector<std::pair<std::string, std::int64_t>> dropped;
    if (auto ec = store_call([&](budget_store& s) {
            s.dropped_since(since, dropped);
            return s.read_ledger(since, records);
        })) {
        unseeded.why = "the ledger could not be read when this budget came (" + ec.message() +
                       "): what it spent before is unknown; drop it and bring it back, or "
                       "restart, once the ledger reads";
        return {};
    }
    // Settled before they came but not yet written when the ledger was read.
    for (auto& u : unwritten) {
        const bool read = std::any_of(records.begin(), records.end(), [&](const attempt_record& r) {
            return r.reservation_id == u.reservation_id;
        });
        if (!read)
            records.push_back(std::move(u));
    }
    std::erase_if(records, [&](const attempt_record& r) { return !plan.uncounted(r); });
    const auto seeds = seeds_of(budgets, arriving, st.committed, records, plan.time_ms);
    // Budgets that would have counted a record the store no longer has: their spend is unknown.
    const auto unknown = unread_by(budgets, arriving, dropped, plan.time_ms);
    {
        const std::lock_guard lock(mu_);
        book_.seed(plan, seeds, plan.time_ms);
        for (const auto& name : unknown)
            book_.stop_unread(
                name,
                "the ledger no longer holds every record of this budget's period (the memory "
                "store keeps only its newest, memory_store_params::ledger_capacity): what it "
                "spent before it came is unknown; use the SQLite store to change budgets while "
                "the guard runs, or restart");
        pump(done);
    }
    unseeded.seeded = true;
    finish(none, done);
    return {};
}

// Puts back the note of the caps in force, after a change that was refused. The refusal is
// what the caller hears; a store that fails here fails the next write too.
void guard_impl::restore_note()
{
    std::string ignored;
    (void)note_caps(ignored);
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

error_code budget_guard::set_budgets(std::vector<budget_spec> budgets, diagnostics* diag)
{
    if (diag != nullptr)
        diag->clear();
    std::string detail;
    const auto ec = impl_->set_budgets(std::move(budgets), detail);
    if (ec && diag != nullptr)
        diag->message = std::move(detail);
    return ec;
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

std::vector<std::string> budget_guard::unpriced_models() const
{
    const std::lock_guard lock(impl_->mu_);
    std::vector<std::string> out;
    out.reserve(impl_->surprised_.size());
    for (const auto& [model, _] : impl_->surprised_)
        out.push_back(model);
    std::sort(out.begin(), out.end());
    return out;
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
        // Stopped because the spend it came with could not be read: a reset does not know it
        // either. Dropping and bringing the budget back reads it again.
        if (a->unread)
            return error::budget_store_failed;
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

std::optional<std::int64_t> budget_guard::take_free_request(
    std::int64_t now_ms, std::uint32_t per_minute, std::uint32_t per_day)
{
    std::int64_t wait = 0;
    if (impl_->store_->take_free_request(now_ms, per_minute, per_day, wait))
        return std::nullopt;
    return wait;
}

void budget_guard::take_rated_impl(
    std::string_view limiter,
    std::uint32_t per_minute,
    const asio::any_io_executor& ex,
    asio::any_completion_handler<void(error_code, std::int64_t)> h)
{
    // The store answers on any thread, possibly under its lock: the handler is posted to its
    // executor, which counts the work until then (so that its io_context does not run out
    // while the store is asked), and the guard is kept until then. A std::function must be
    // copyable, so the handler is shared.
    auto shared = std::make_shared<decltype(h)>(std::move(h));
    impl_->store_->async_take_rated_request(
        limiter, per_minute,
        [work = asio::prefer(ex, asio::execution::outstanding_work.tracked), keep = impl_,
         shared](error_code ec, std::int64_t wait) {
            asio::post(work, [shared, ec, wait] { (*shared)(ec, wait); });
        });
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
