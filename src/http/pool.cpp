#include "http/pool.hpp"

#include <frugal/error.hpp>

#include <boost/asio/as_tuple.hpp>
#include <boost/asio/use_awaitable.hpp>

namespace frugal::http {

pool::pool(asio::any_io_executor ex, pool_params params) : executor_(std::move(ex)), params_(params)
{
}

std::size_t pool::idle() const noexcept
{
    std::size_t n = 0;
    for (const auto& [key, list] : idle_)
        n += list.size();
    return n;
}

asio::awaitable<error_code> pool::acquire(
    const std::string& key,
    steady_clock::time_point deadline,
    const std::function<std::shared_ptr<connection>()>& make,
    lease& out)
{
    for (;;) {
        const auto now = steady_clock::now();
        if (auto it = idle_.find(key); it != idle_.end()) {
            auto& list = it->second;
            // Most recently used first: the warmest connection, the least likely to be closed.
            while (!list.empty()) {
                auto conn = std::move(list.back());
                list.pop_back();
                if (now - conn->idle_since < params_.idle_timeout && conn->alive()) {
                    out = {std::move(conn), true};
                    co_return error_code{};
                }
                conn->close();
                --open_;
            }
        }
        if (open_ < params_.max_connections) {
            ++open_;
            out = {make(), false};
            co_return error_code{};
        }
        // At the limit: wait for a release, the deadline, or cancellation.
        asio::steady_timer timer(executor_);
        timer.expires_at(deadline);
        waiter w{&timer};
        waiters_.push_back(&w);
        const auto me = std::prev(waiters_.end());
        auto [ec] = co_await timer.async_wait(asio::as_tuple(asio::use_awaitable));
        if (!w.woken)
            waiters_.erase(me);
        if (w.woken)
            continue;
        if (!ec)
            co_return error::timeout; // the deadline passed while waiting for a connection
        co_return ec;                 // cancelled
    }
}

void pool::release(const std::string& key, std::shared_ptr<connection> conn, bool reusable)
{
    if (reusable && conn->is_open()) {
        conn->disarm();
        conn->buffer.shrink_to_fit(); // an idle connection holds no read buffer
        conn->idle_since = steady_clock::now();
        idle_[key].push_back(std::move(conn));
    } else {
        conn->close();
        --open_;
    }
    wake_one();
}

void pool::wake_one()
{
    if (waiters_.empty())
        return;
    waiter* w = waiters_.front();
    waiters_.pop_front();
    w->woken = true;
    w->timer->cancel();
}

} // namespace frugal::http
