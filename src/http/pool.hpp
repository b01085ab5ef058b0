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
    pool(asio::any_io_executor ex, pool_params params);

    struct lease {
        std::shared_ptr<connection> conn;
        bool reused = false; // an idle connection, already established
    };

    /// A connection for `key`: an idle one that is still alive, else a new (unconnected) one
    /// if the limit allows, else waits until `deadline` for one to come back. `make` creates
    /// new connections.
    asio::awaitable<error_code> acquire(
        const std::string& key,
        steady_clock::time_point deadline,
        const std::function<std::shared_ptr<connection>()>& make,
        lease& out);

    /// Gives a connection back: to the idle list if `reusable`, else closes it.
    void release(const std::string& key, std::shared_ptr<connection> conn, bool reusable);

    std::size_t open() const noexcept { return open_; }
    std::size_t idle() const noexcept;

private:
    struct waiter {
        asio::steady_timer* timer = nullptr;
        bool woken = false;
    };
    void wake_one();

    asio::any_io_executor executor_;
    pool_params params_;
    std::unordered_map<std::string, std::vector<std::shared_ptr<connection>>> idle_;
    std::size_t open_ = 0;
    std::list<waiter*> waiters_;
};

} // namespace frugal::http

#endif // FRUGAL_HTTP_POOL_HPP
