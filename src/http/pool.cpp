#include "http/pool.hpp"

#include <frugal/error.hpp>

#include <boost/asio/as_tuple.hpp>
#include <boost/asio/buffer.hpp>
#include <boost/asio/use_awaitable.hpp>

#include <algorithm>
#include <utility>

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

bool pool::try_acquire(
    const std::string& key, const std::function<std::shared_ptr<connection>()>& make, lease& out)
{
    const auto now = steady_clock::now();
    if (auto it = idle_.find(key); it != idle_.end()) {
        auto& list = it->second;
        // Most recently used first: the warmest connection, the least likely to be closed.
        while (!list.empty()) {
            auto conn = std::move(list.back());
            list.pop_back();
            if (conn->resting)
                unrest(*conn); // handed out with its wake-up, which the next deadline uses
            if (now - conn->idle_since < params_.idle_timeout && conn->alive()) {
                hand_out(key, std::move(conn), true, out);
                return true;
            }
            conn->close();
            closed_one();
        }
    }
    if (open_ < params_.max_connections) {
        ++open_;
        hand_out(key, make(), false, out);
        return true;
    }
    return false;
}

void pool::hand_out(
    const std::string& key, std::shared_ptr<connection> conn, bool reused, lease& out)
{
    lend_buffer(*conn);
    ++leased_;
    out = lease{};
    out.pool_ = this;
    out.key_ = &key;
    out.conn_ = std::move(conn);
    out.reused_ = reused;
}

asio::awaitable<error_code> pool::acquire(
    const std::string& key,
    steady_clock::time_point deadline,
    const std::function<std::shared_ptr<connection>()>& make,
    lease& out)
{
    for (;;) {
        if (try_acquire(key, make, out))
            co_return error_code{};
        // At the limit: wait for a release, the deadline, or cancellation.
        asio::steady_timer timer(executor_);
        timer.expires_at(deadline);
        waiter w{&timer};
        waiters_.push_back(&w);
        // Off the list however the wait ends, the frame destroyed with its io_context included:
        // a lease given back then must not wake a waiter that is gone.
        struct unlist {
            std::list<waiter*>& list;
            std::list<waiter*>::iterator me;
            const waiter& w;
            ~unlist()
            {
                if (!w.woken)
                    list.erase(me);
            }
        } guard{waiters_, std::prev(waiters_.end()), w};
        auto [ec] = co_await timer.async_wait(asio::as_tuple(asio::use_awaitable));
        if (w.woken)
            continue;
        if (!ec)
            co_return error::timeout; // the deadline passed while waiting for a connection
        co_return ec;                 // cancelled
    }
}

pool::lease::lease(lease&& other) noexcept
    : pool_(std::exchange(other.pool_, nullptr)), key_(std::exchange(other.key_, nullptr)),
      conn_(std::move(other.conn_)), reused_(other.reused_)
{
}

pool::lease& pool::lease::operator=(lease&& other) noexcept
{
    if (this != &other) {
        give_back(false);
        pool_ = std::exchange(other.pool_, nullptr);
        key_ = std::exchange(other.key_, nullptr);
        conn_ = std::move(other.conn_);
        reused_ = other.reused_;
    }
    return *this;
}

// The bytes the spares may hold: a read buffer's largest for each connection open, and two
// even for one connection (a fast stream's buffer grows through several sizes, each of which
// the next stream needs again); nothing when none is open.
std::size_t pool::spare_budget() const noexcept
{
    return open_ == 0 ? 0 : std::max<std::size_t>(open_, 2) * spare_capacity;
}

std::size_t pool::spare_bytes() const noexcept
{
    std::size_t held = 0;
    for (const auto& b : spare_)
        held += b.capacity();
    return held;
}

bool pool::may_keep(std::size_t capacity) const noexcept
{
    return capacity != 0 && capacity <= spare_capacity && spare_.size() < max_spares &&
           spare_bytes() + capacity <= spare_budget();
}

// A connection closed: the spares shrink to what the connections left may use.
void pool::closed_one()
{
    --open_;
    std::size_t held = spare_bytes();
    while (!spare_.empty() && held > spare_budget()) {
        held -= spare_.back().capacity();
        spare_.pop_back();
    }
}

void pool::lend_buffer(connection& conn, std::size_t most)
{
    const auto held = conn.buffer.size();
    if (conn.buffer.capacity() > most && held != 0 && held <= most / 2) {
        boost::beast::flat_buffer smaller;
        smaller.reserve(most / 2);
        smaller.commit(boost::asio::buffer_copy(smaller.prepare(held), conn.buffer.data()));
        std::swap(conn.buffer, smaller);
        smaller.clear();
        if (may_keep(smaller.capacity()))
            spare_.push_back(std::move(smaller));
        return;
    }
    if (conn.buffer.capacity() != 0)
        return;
    // The largest spare within `most`: the read it is lent for then grows it least (a growth
    // is an allocation). None larger: a stream waiting with it would hold it from faster ones.
    auto pick = spare_.end();
    for (auto it = spare_.begin(); it != spare_.end(); ++it) {
        if (it->capacity() <= most && (pick == spare_.end() || it->capacity() > pick->capacity()))
            pick = it;
    }
    if (pick != spare_.end()) {
        conn.buffer = std::move(*pick);
        spare_.erase(pick);
    }
}

void pool::take_buffer(connection& conn)
{
    if (conn.buffer.size() != 0)
        return; // unread bytes stay where they are
    if (may_keep(conn.buffer.capacity()))
        spare_.push_back(std::exchange(conn.buffer, {}));
    else
        conn.buffer.shrink_to_fit();
}

void pool::lease::give_back(bool reusable) noexcept
{
    if (!conn_)
        return;
    pool_->release(*key_, std::move(conn_), reusable);
    conn_.reset();
    pool_ = nullptr;
}

void pool::release(const std::string& key, std::shared_ptr<connection> conn, bool reusable)
{
    --leased_;
    if (conn->paused) {
        conn->paused = false;
        --paused_;
    }
    if (reusable && conn->is_open()) {
        if (busy()) {
            conn->rest();
            conn->resting = true;
            resting_.push_back(conn.get());
        } else {
            conn->disarm();
        }
        // An idle connection holds no read buffer: it goes to the spares, or back to the heap.
        take_buffer(*conn);
        conn->buffer.shrink_to_fit(); // what is left over (never, after a clean end)
        if (conn->request.capacity() > spare_capacity)
            std::string().swap(conn->request); // a large prompt's room is not kept idle
        conn->idle_since = steady_clock::now();
        idle_[key].push_back(std::move(conn));
    } else {
        conn->close();
        closed_one();
    }
    if (!busy() && !resting_.empty())
        stop_idle_wakeups();
    wake_one();
}

void pool::pause(connection& conn) noexcept
{
    conn.disarm();
    if (!conn.paused) {
        conn.paused = true;
        ++paused_;
    }
    if (!busy() && !resting_.empty())
        stop_idle_wakeups();
}

void pool::resume(connection& conn) noexcept
{
    if (conn.paused) {
        conn.paused = false;
        --paused_;
    }
}

void pool::unrest(connection& conn) noexcept
{
    conn.resting = false;
    // From the back: the connection taken is the one given back last, most often the last rested.
    if (const auto at = std::find(resting_.rbegin(), resting_.rend(), &conn);
        at != resting_.rend()) {
        *at = resting_.back();
        resting_.pop_back();
    }
}

// Only the rested connections: a large idle pool is not walked each time the load drains.
void pool::stop_idle_wakeups() noexcept
{
    for (auto* conn : resting_) {
        conn->resting = false;
        conn->disarm();
    }
    resting_.clear();
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
