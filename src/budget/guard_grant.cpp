// The reservation path of the budget guard: a request priced and, under the guard's lock,
// granted or refused against its budgets.
#include "budget/guard_impl.hpp"

#include <boost/asio/post.hpp>

#include <time.h>

#include <algorithm>
#include <mutex>

namespace frugal::detail {

namespace {

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

} // namespace

std::int64_t guard_impl::now_ms() const
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
const model_price* guard_impl::price_of(std::string_view model)
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
std::uint32_t guard_impl::wanted(const reserve_request& req, const model_price& p)
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
shortfall guard_impl::grant(
    const reserve_request& req,
    const request_features& features,
    const asio::any_io_executor* cancel_on,
    reservation& out,
    error_code& ec,
    std::string* detail,
    std::optional<unconfirmed>* defer)
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
            // The smallest request that would have been granted: the tokens held, or fewer
            // down to the minimum when the request may be clamped.
            *detail = describe_shortfall(
                d, b, req.allow_clamp ? std::min(hold, params_.min_max_tokens) : hold);
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
    r.keys.assign(req.keys.begin(), req.keys.end()); // the slot's strings keep their room
    r.cancel = cancel;
    book_.hold(r);
    if (defer != nullptr && keeps_) {
        // Held here; the store is told after the lock (`confirm`, `reserve_now`), before
        // anything is sent.
        *defer = to_confirm(r);
    } else if (auto e = keeps_ ? store_reserve(r) : error_code()) {
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

error_code guard_impl::store_reserve(const open_reservation& r)
{
    fill_views(r, r.amount);
    const std::lock_guard store_lock(store_mu_);
    return store_->reserve({r.id, r.time_ms, r.request_id, r.model, views_});
}

// The budget views are pointed at the strings by `confirm`, once the value is in place.
unconfirmed guard_impl::to_confirm(const open_reservation& r)
{
    unconfirmed u;
    u.id = r.id;
    u.time_ms = r.time_ms;
    u.request_id = r.request_id;
    u.model = r.model;
    u.budgets.reserve(r.charges.size());
    for (const auto& c : r.charges)
        u.budgets.push_back(c.account->name);
    for (std::size_t i = 0; i < r.charges.size(); ++i) {
        const auto& c = r.charges[i];
        u.charges.push_back({{}, c.window, r.amount, c.account->cap, c.account->index});
    }
    return u;
}

// Tells the store of a reservation granted in memory, off the lock; `done` gets it on `ex`
// once the store agreed, or the store's refusal (the headroom given back first). The store
// answers on its own thread, often under its own lock: all that is done there is a post.
void guard_impl::confirm(
    unconfirmed u, reservation res, const asio::any_io_executor& ex, reserved_handler done)
{
    // A moved string may move its characters (short ones live inside it): the views are
    // pointed at `u`'s strings where they now are. The store reads them before it returns.
    for (std::size_t i = 0; i < u.charges.size(); ++i)
        u.charges[i].budget = u.budgets[i];
    const reservation_view v{u.id, u.time_ms, u.request_id, u.model, u.charges};
    auto self = shared_from_this();
    auto held = std::make_shared<reservation>(std::move(res));
    const std::lock_guard store_lock(store_mu_);
    store_->async_reserve(v, ex, [self, held, ex, done = std::move(done)](error_code e) {
        asio::post(ex, [self, held, done, e] {
            if (e) {
                self->drop_unconfirmed(*held);
                const auto ec =
                    e == error::budget_exhausted ? e : error_code(error::budget_store_failed);
                reservation none;
                none.why_ = "the budget store refused the reservation: " + e.message();
                done(ec, std::move(none));
                return;
            }
            done({}, std::move(*held));
        });
    });
}

// A reservation its store refused: Redis holds nothing, so it is only given back here.
void guard_impl::drop_unconfirmed(reservation& res)
{
    std::vector<std::shared_ptr<cancel_state>> to_cancel;
    std::vector<completion> done;
    {
        const std::lock_guard lock(mu_);
        auto& r = book_.at(res.slot_);
        book_.unhold(r);
        book_.free_slot(res.slot_);
        pump(done);
    }
    res.guard_ = nullptr; // nothing left to release
    finish(to_cancel, done);
}

void guard_impl::fill_views(const open_reservation& r, money amount)
{
    views_.clear();
    for (const auto& c : r.charges)
        views_.push_back({c.account->name, c.window, amount, c.account->cap, c.account->index});
}

// Tells the store of a reservation granted in memory, on this thread, after the lock.
error_code guard_impl::reserve_now(unconfirmed& u)
{
    for (std::size_t i = 0; i < u.charges.size(); ++i)
        u.charges[i].budget = u.budgets[i];
    const std::lock_guard store_lock(store_mu_);
    return store_->reserve({u.id, u.time_ms, u.request_id, u.model, u.charges});
}

reservation guard_impl::try_reserve(
    const reserve_request& req,
    error_code& ec,
    std::string* detail,
    const asio::any_io_executor& cancel_on)
{
    ec = {};
    reservation out;
    const auto features = inspect_extra_body(req.extra_body); // parsed outside the lock
    std::optional<unconfirmed> pending;
    {
        const std::lock_guard lock(mu_);
        grant(req, features, &cancel_on, out, ec, detail, &pending);
    }
    if (pending) {
        if (auto e = reserve_now(*pending)) {
            drop_unconfirmed(out); // the headroom goes back
            ec = e == error::budget_exhausted ? e : error_code(error::budget_store_failed);
            if (detail != nullptr)
                *detail = "the budget store refused the reservation: " + e.message();
            return reservation();
        }
    }
    return out;
}

} // namespace frugal::detail
