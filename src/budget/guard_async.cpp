// What the budget guard does on other executors than its caller's: requests that wait for
// headroom (async_reserve), served or given up later, and in-flight requests cancelled when a
// budget trips or the store fails. Decided under the lock, delivered after it.
#include "budget/guard_impl.hpp"

#include <boost/asio/append.hpp>
#include <boost/asio/associated_cancellation_slot.hpp>
#include <boost/asio/associated_executor.hpp>
#include <boost/asio/post.hpp>

#include <algorithm>
#include <mutex>

namespace frugal::detail {

// Trips every account in `reached_`: its in-flight requests are cancelled.
void guard_impl::trip(std::vector<std::shared_ptr<cancel_state>>& to_cancel)
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

void guard_impl::cancel_one(
    open_reservation& r, error reason, std::vector<std::shared_ptr<cancel_state>>& out)
{
    int expected = 0;
    if (r.cancel &&
        r.cancel->reason.compare_exchange_strong(expected, static_cast<int>(reason)))
        out.push_back(r.cancel);
}

// A store that cannot record spend stops paid traffic: spend that cannot be recorded must
// not be followed by more.
void guard_impl::fail(std::vector<std::shared_ptr<cancel_state>>& to_cancel)
{
    failed_ = true;
    for (auto& r : book_.slots())
        if (r.in_use)
            cancel_one(r, error::budget_store_failed, to_cancel);
}

// Grants or denies waiting requests, oldest first, after headroom changed.
void guard_impl::pump(std::vector<completion>& done)
{
    for (auto it = waiters_.begin(); it != waiters_.end();) {
        auto& w = **it;
        reservation res;
        error_code ec;
        std::optional<unconfirmed> pending;
        const auto s = grant(w.req, w.features, &w.executor, res, ec, &w.why, &pending);
        if (s == shortfall::wait) {
            ++it;
            continue;
        }
        if (ec)
            res.why_ = w.why;
        w.queued = false;
        done.push_back({*it, ec, std::move(res), std::move(pending)});
        it = waiters_.erase(it);
    }
}

std::shared_ptr<cancel_state> guard_impl::make_cancel(const asio::any_io_executor& ex)
{
    auto c = std::make_shared<cancel_state>();
    c->executor = ex;
    return c;
}

// Outside the lock: signals cancellations and completes waiters on their executors.
void guard_impl::finish(
    std::vector<std::shared_ptr<cancel_state>>& to_cancel, std::vector<completion>& done)
{
    for (auto& c : to_cancel)
        asio::post(c->executor, [c] { c->signal.emit(asio::cancellation_type::terminal); });
    for (auto& d : done) {
        if (d.pending) {
            auto w = d.w;
            confirm(std::move(*d.pending), std::move(d.res), w->executor,
                [w](error_code e, reservation r) { complete(w, e, std::move(r)); });
        } else {
            complete(d.w, d.ec, std::move(d.res));
        }
    }
}

void guard_impl::complete(const std::shared_ptr<waiter>& w, error_code ec, reservation r)
{
    asio::post(w->executor, [w, ec, r = std::move(r)]() mutable {
        w->timer.cancel();
        auto slot = asio::get_associated_cancellation_slot(w->handler);
        if (slot.is_connected())
            slot.clear();
        std::move(w->handler)(ec, std::move(r));
    });
}

void guard_impl::async_reserve(
    const reserve_request& req, const asio::any_io_executor& ex, reserve_handler h)
{
    reservation res;
    error_code ec;
    shortfall s = shortfall::none;
    std::optional<unconfirmed> pending;
    auto features = inspect_extra_body(req.extra_body); // parsed once, outside the lock
    {
        const std::lock_guard lock(mu_);
        s = grant(req, features, &ex, res, ec, &res.why_, &pending);
    }
    if (pending) {
        // Granted in memory; a remote store confirms it off the lock.
        auto hp = std::make_shared<reserve_handler>(std::move(h));
        confirm(std::move(*pending), std::move(res), ex, [hp](error_code e, reservation r) {
            std::move(*hp)(e, std::move(r)); // on `ex` already
        });
        return;
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
        s = grant(w->req, w->features, &ex, res, ec, &w->why, &pending);
        if (s == shortfall::wait)
            waiters_.push_back(w);
        else
            res.why_ = w->why;
    }
    if (s != shortfall::wait) {
        std::vector<std::shared_ptr<cancel_state>> none;
        std::vector<completion> done;
        done.push_back({w, ec, std::move(res), std::move(pending)});
        finish(none, done);
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
void guard_impl::abandon(const std::shared_ptr<waiter>& w, error_code why)
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

void guard_impl::close()
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

} // namespace frugal::detail
