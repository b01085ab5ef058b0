#ifndef FRUGAL_HTTP_POOL_HPP
#define FRUGAL_HTTP_POOL_HPP

// Keep-alive connections, shared by every request of a client. A connection is checked out for
// one exchange and comes back only if that exchange ended cleanly; failed and cancelled ones are
// closed. At the limit, requests wait (bounded by their deadline) for one to come back.

#include "http/connection.hpp"

#include <boost/asio/awaitable.hpp>

#include <functional>
#include <list>
#include <memory>
#include <string>
#include <unordered_map>
#include <vector>

namespace frugal::http {

struct pool_params {
    std::size_t max_connections = 256;
    std::chrono::milliseconds idle_timeout{60'000};
};

class pool {
public:
    /// The largest read buffer kept as a spare.
    static constexpr std::size_t spare_capacity = std::size_t{64} * 1024;

    pool(asio::any_io_executor ex, pool_params params);

    /// A checked-out connection, owed back to its pool: given back closed when the lease is
    /// destroyed, unless `give_back(true)` returned it reusable first. The pool and the key it
    /// was acquired under must outlive the lease. Failure paths need not remember to give it
    /// back, and neither does a coroutine destroyed mid-exchange.
    class lease {
    public:
        lease() noexcept = default;
        lease(lease&& other) noexcept;
        lease& operator=(lease&& other) noexcept;
        ~lease() { give_back(false); }

        explicit operator bool() const noexcept { return conn_ != nullptr; }
        connection& operator*() const noexcept { return *conn_; }
        connection* operator->() const noexcept { return conn_.get(); }
        /// The connection, for reads that must keep it alive after the lease is given back.
        const std::shared_ptr<connection>& shared() const noexcept { return conn_; }
        /// An idle connection, already established.
        bool reused() const noexcept { return reused_; }

        /// Returns the connection: to the idle list if `reusable`, else closed. Idempotent.
        void give_back(bool reusable) noexcept;

    private:
        friend class pool;
        pool* pool_ = nullptr;
        const std::string* key_ = nullptr;
        std::shared_ptr<connection> conn_;
        bool reused_ = false;
    };

    /// A connection for `key`: an idle one that is still alive, else a new (unconnected) one
    /// if the limit allows, else waits until `deadline` for one to come back. `make` creates
    /// new connections. `key` must outlive the lease.
    asio::awaitable<error_code> acquire(
        const std::string& key,
        steady_clock::time_point deadline,
        const std::function<std::shared_ptr<connection>()>& make,
        lease& out);
    /// `acquire` without the wait: false when the limit is reached. A plain call, so that the
    /// common case costs no coroutine frame.
    bool try_acquire(
        const std::string& key,
        const std::function<std::shared_ptr<connection>()>& make,
        lease& out);

    /// Takes `conn`'s read buffer when it holds no unread bytes: into the spares, which the
    /// next connection to read without a buffer borrows (`lend_buffer`), or back to the heap.
    /// A stream calls it between reads: its caller sets the pace, and a stream waiting on its
    /// caller should hold nothing, yet a fast stream should not allocate a buffer per read.
    void take_buffer(connection& conn);
    /// Gives `conn` a spare read buffer if it has none: the largest no larger than `most` bytes
    /// (a stream that reads little at a time, a slow one, is not lent a large buffer to wait
    /// with).
    /// A buffer larger than `most` that holds a few unread bytes (the end of a chunk's framing)
    /// is traded for a smaller one with those bytes, and goes to the spares.
    void lend_buffer(connection& conn, std::size_t most = spare_capacity);

    /// A stream between reads: its connection waits on no deadline (its caller sets the pace)
    /// and keeps no other connection's wake-up pending.
    void pause(connection& conn) noexcept;
    /// The stream reads again: call before arming its deadline.
    void resume(connection& conn) noexcept;

    std::size_t open() const noexcept { return open_; }
    std::size_t idle() const noexcept;

private:
    void release(const std::string& key, std::shared_ptr<connection> conn, bool reusable);

    struct waiter {
        asio::steady_timer* timer = nullptr;
        bool woken = false;
    };
    void wake_one();
    void closed_one();
    // Fills `out` with `conn`, checked out under `key`, lent a spare read buffer.
    void
    hand_out(const std::string& key, std::shared_ptr<connection> conn, bool reused, lease& out);

    asio::any_io_executor executor_;
    pool_params params_;
    std::unordered_map<std::string, std::vector<std::shared_ptr<connection>>> idle_;
    std::size_t open_ = 0;
    // Connections handed out and not given back, and of those the streams between reads
    // (`pause`). While some lease is busy (out and not paused), a connection given back keeps
    // its watchdog's pending wake-up (`connection::rest`): the io_context runs on for the busy
    // one anyway, and the next request on the rested connection arms no timer. When none is
    // busy any more, the wake-ups kept are cancelled, so that none keeps `run()` from returning
    // (a caller pacing a stream runs the io_context one read at a time).
    std::size_t leased_ = 0;
    std::size_t paused_ = 0;
    std::vector<connection*> resting_; // idle, with a kept wake-up
    bool busy() const noexcept { return leased_ > paused_; }
    void unrest(connection& conn) noexcept;
    void stop_idle_wakeups() noexcept;
    std::list<waiter*> waiters_;
    // Read buffers of connections gone idle or between a stream's reads, handed to the next
    // connection to read: an idle connection holds none, and a busy one does not allocate one
    // per request or per read. Never more than `max_spares`, nor more bytes than
    // `spare_budget()`, and none past `spare_capacity` bytes: a thousand streams held by slow
    // callers hold no buffers.
    static constexpr std::size_t max_spares = 16;
    std::size_t spare_budget() const noexcept;
    std::size_t spare_bytes() const noexcept;
    bool may_keep(std::size_t capacity) const noexcept;
    std::vector<boost::beast::flat_buffer> spare_;
};

} // namespace frugal::http

#endif // FRUGAL_HTTP_POOL_HPP
