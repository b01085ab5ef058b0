#ifndef FRUGAL_HTTP_CONNECTION_HPP
#define FRUGAL_HTTP_CONNECTION_HPP

// One HTTP/1.1 connection, plain or TLS, possibly through a CONNECT proxy, with a watchdog that
// enforces deadlines. It is a Beast AsyncStream, so Beast's parsers read from it directly.
//
// Deadlines: one timer per connection, re-armed only when a deadline moves earlier. Extending
// a deadline (the stall deadline after every read) just moves a number; when the timer fires
// early it re-arms itself. So a long stream costs one timer wake-up per stall period, not one
// timer operation per read.

#include "http/response.hpp"
#include "http/url.hpp"

#include <boost/asio/any_io_executor.hpp>
#include <boost/asio/async_result.hpp>
#include <boost/asio/awaitable.hpp>
#include <boost/asio/ip/tcp.hpp>
#include <boost/asio/ssl/context.hpp>
#include <boost/asio/ssl/stream.hpp>
#include <boost/asio/steady_timer.hpp>
#include <boost/beast/core/flat_buffer.hpp>

#include <chrono>
#include <memory>
#include <optional>
#include <string>

namespace frugal::http {

namespace asio = boost::asio;
using tcp = asio::ip::tcp;
using steady_clock = std::chrono::steady_clock;
using boost::system::error_code;

/// Where to connect and how.
struct route {
    url target;               // scheme, host and port of the server
    std::optional<url> proxy; // an http:// proxy to tunnel through with CONNECT
    std::string key() const;  // identifies interchangeable connections in the pool
};

/// Deadlines for establishing a connection.
struct connect_deadlines {
    std::chrono::milliseconds connect;
    std::chrono::milliseconds tls_handshake;
    steady_clock::time_point total;
};

class connection : public std::enable_shared_from_this<connection> {
public:
    /// A connection that will use TLS when `tls` is given.
    connection(const asio::any_io_executor& ex, std::shared_ptr<asio::ssl::context> tls);
    ~connection();

    using executor_type = asio::any_io_executor;
    // The socket's: a connection keeps no third copy of it (with the watchdog's).
    executor_type get_executor() { return socket_.get_executor(); }

    /// Connects (resolving the host, through the proxy if any) and shakes hands. On failure,
    /// `detail` says what failed, for diagnostics.
    asio::awaitable<error_code> establish(const route& r, connect_deadlines d, std::string& detail);

    template <class MutableBuffers, class Token>
    auto async_read_some(const MutableBuffers& buffers, Token&& token)
    {
        return asio::async_initiate<Token, void(error_code, std::size_t)>(
            [this](auto handler, const MutableBuffers& b) {
                if (tls_)
                    tls_->async_read_some(b, std::move(handler));
                else
                    socket_.async_read_some(b, std::move(handler));
            },
            token, buffers);
    }

    template <class ConstBuffers, class Token>
    auto async_write_some(const ConstBuffers& buffers, Token&& token)
    {
        return asio::async_initiate<Token, void(error_code, std::size_t)>(
            [this](auto handler, const ConstBuffers& b) {
                if (tls_)
                    tls_->async_write_some(b, std::move(handler));
                else
                    socket_.async_write_some(b, std::move(handler));
            },
            token, buffers);
    }

    /// Sets the deadline of the current phase; `phase` names it for error messages. When it
    /// passes, the connection is closed, so whatever is pending fails, and `timed_out()` tells.
    void arm(steady_clock::time_point deadline, const char* phase);
    /// No deadline (an idle connection in the pool), and no pending wake-up.
    void disarm();
    /// No deadline, but a pending wake-up stays: the next request's deadline is almost always
    /// later than it, so that request arms no timer (a cancellation and a wait fewer); when it
    /// fires, it re-arms for that request's deadline, or, still idle, just stops. Its wait keeps
    /// the io_context running: the pool calls `disarm` once no connection is busy.
    void rest() noexcept { deadline_ = steady_clock::time_point::max(); }
    bool timed_out() const noexcept { return timed_out_; }
    const char* phase() const noexcept { return phase_; }

    /// Whether an idle connection is still usable: the peer has neither closed it nor sent
    /// anything (a non-blocking peek).
    bool alive();

    /// Over plain TCP, writes what the socket takes at once (one non-blocking writev) and
    /// returns how many bytes that was; 0 over TLS or when the socket takes nothing now. `ec`
    /// is set when the write failed (a reset or closed peer): nothing more is to be written.
    std::size_t write_now(asio::const_buffer head, asio::const_buffer body, error_code& ec);

    void close();
    bool is_open() const { return socket_.is_open(); }
    bool encrypted() const noexcept { return tls_ != nullptr; }

    /// Read buffer, kept across requests on this connection.
    boost::beast::flat_buffer buffer;
    /// What of a request waits to be written: over TLS its head and body (one record for
    /// both), over plain TCP only what the socket did not take at once. Its room is kept
    /// across requests.
    std::string request;
    /// The head of the response being read, its room kept across responses.
    response_head head;
    /// The parser of the response being read (`start_response`).
    std::optional<response_reader> reader;
    /// A fresh parser for the next response, in place: no allocation.
    response_reader& start_response() { return reader.emplace(head); }
    steady_clock::time_point idle_since{};
    std::uint64_t requests = 0;
    /// The pool's marks: a stream between reads (`pool::pause`), and an idle connection whose
    /// wake-up was kept (`rest`), on the pool's list of those.
    bool paused = false;
    bool resting = false;

private:
    void on_watchdog(std::uint64_t generation, error_code ec);
    // The steps of `establish` that only some connections take, each its own coroutine: a
    // coroutine's frame holds every local of every branch, and a thousand plain connections
    // starting at once should not each hold a proxy's parser and a TLS handshake's strings.
    asio::awaitable<error_code> resolve_and_connect(const url& host, std::string& detail);
    asio::awaitable<error_code>
    tunnel(const route& r, connect_deadlines d, std::string& detail);
    asio::awaitable<error_code>
    handshake(const route& r, connect_deadlines d, std::string& detail);

    std::shared_ptr<asio::ssl::context> tls_context_;
    tcp::socket socket_;
    // Made by `establish` over TLS alone: a plain connection does not carry its room.
    std::unique_ptr<asio::ssl::stream<tcp::socket&>> tls_;
    tcp::resolver* resolving_ = nullptr;

    asio::steady_timer watchdog_;
    steady_clock::time_point deadline_ = steady_clock::time_point::max();
    steady_clock::time_point timer_expiry_{};
    bool timer_pending_ = false;
    std::uint64_t timer_generation_ = 0;
    bool timed_out_ = false;
    const char* phase_ = "";
};

/// A TLS client context: peer verification against the system store (SSL_CERT_FILE and
/// SSL_CERT_DIR honoured, as OpenSSL's own tools do) plus `ca_file`, TLS 1.2 at least.
std::shared_ptr<asio::ssl::context>
make_tls_context(const std::string& ca_file, bool verify, error_code& ec);

} // namespace frugal::http

#endif // FRUGAL_HTTP_CONNECTION_HPP
