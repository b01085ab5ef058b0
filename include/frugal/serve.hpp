#ifndef FRUGAL_SERVE_HPP
#define FRUGAL_SERVE_HPP

/// `frugal serve`: an OpenAI-compatible gateway in front of an upstream (OpenRouter by
/// default), with cheap-first policies offered as models and a hard cap per tenant. It runs on
/// the library's router, guard, stores and client: the gateway adds the HTTP front, the keys
/// and the metrics, nothing that decides about money. docs/gateway.md describes every member.

#include <frugal/budget_types.hpp>
#include <frugal/diagnostics.hpp>
#include <frugal/money.hpp>
#include <frugal/router.hpp>

#include <boost/asio/any_completion_handler.hpp>
#include <boost/asio/any_io_executor.hpp>
#include <boost/asio/async_result.hpp>
#include <boost/asio/deferred.hpp>
#include <boost/system/error_code.hpp>
#include <boost/system/result.hpp>

#include <chrono>
#include <cstdint>
#include <map>
#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

namespace frugal {

/// What one gateway key may do.
struct gateway_key {
    std::string tenant; ///< whose spend this is: budgets, metrics and the ledger name it
    /// The tenant's cap (shared by every key of the tenant), none: uncapped.
    std::optional<money> budget;
    budget_period period = budget_period::none;
    /// Models and policies ("frugal/NAME") the key may call; "*" or empty: all.
    std::vector<std::string> allow;
    std::uint32_t rpm = 0; ///< requests per minute, 0: no limit
};

/// The gateway's configuration (`frugal serve --config FILE`).
struct gateway_config {
    std::string base_url;   ///< the upstream; empty: the client's default (OpenRouter)
    std::string ca_file;    ///< extra trusted CAs for the upstream
    std::chrono::milliseconds upstream_timeout{120'000}; ///< a whole upstream request
    std::chrono::milliseconds connect_timeout{10'000};
    std::size_t pool_size = 1024; ///< connections to the upstream: one per request in flight
    /// max_tokens of a passed-through request that sets none: the budget reserves a bound.
    std::uint32_t default_max_tokens = 4096;
    std::map<std::string, cascade_policy, std::less<>> policies;
    /// The keys, by the lower-case hex SHA-256 of the key: the file may hold either.
    std::map<std::string, gateway_key, std::less<>> keys;
    std::string ledger;       ///< SQLite path; empty: no ledger (budgets live in memory)
    std::string budget_store; ///< redis://HOST:PORT/DB: a cap shared by several gateways
    std::uint64_t max_body_bytes = 1 << 20;
    std::chrono::milliseconds client_timeout{30'000}; ///< to read a request's head and body
    std::chrono::milliseconds grace{30'000};          ///< SIGTERM: how long in-flight may run
    std::size_t max_connections = 10'000;             ///< client connections at once
    /// The kernel's send buffer of each client connection (SO_SNDBUF), which bounds the
    /// kernel memory of many open streams to slow readers; 0 keeps the system's autotuning.
    std::size_t socket_send_buffer_bytes = 0;
};

/// Parses the JSON configuration. Every error names the member and says why; a key is named by
/// the start of its hash, never by itself.
boost::system::result<gateway_config>
parse_gateway_config(std::string_view json, diagnostics* diag = nullptr);

/// The lower-case hex SHA-256 of `text`.
std::string sha256_hex(std::string_view text);

/// Where the gateway listens, and how it reaches the upstream.
struct gateway_params {
    std::string host = "127.0.0.1";
    std::uint16_t port = 0; ///< 0: a free one
    std::string tls_cert;   ///< PEM files: serve HTTPS; empty: plain HTTP
    std::string tls_key;
    std::string api_key; ///< the upstream's; empty: OPENROUTER_API_KEY
};

namespace detail {
struct gateway_impl;
} // namespace detail

/// The gateway. Runs on one executor (one thread): every request is a coroutine on it.
class gateway {
public:
    gateway(boost::asio::any_io_executor executor, gateway_config config, gateway_params params);
    ~gateway();
    gateway(const gateway&) = delete;
    gateway& operator=(const gateway&) = delete;

    /// Opens the ledger and the budget store, loads the upstream's catalog, checks that every
    /// policy's tier and every allowed model is in it, and starts listening. Completes with
    /// the reason it could not (the message in `diag`).
    template <class CompletionToken = boost::asio::deferred_t>
    auto async_start(diagnostics& diag, CompletionToken&& token = {})
    {
        return boost::asio::async_initiate<CompletionToken, void(boost::system::error_code)>(
            [this, &diag](auto handler) { start_impl(diag, std::move(handler)); }, token);
    }

    /// Stops accepting, lets requests in flight finish for up to `grace` (the config's), then
    /// cancels the rest; completes once every request has ended and settled.
    template <class CompletionToken = boost::asio::deferred_t>
    auto async_shutdown(CompletionToken&& token = {})
    {
        return boost::asio::async_initiate<CompletionToken, void()>(
            [this](auto handler) { shutdown_impl(std::move(handler)); }, token);
    }

    /// Takes new keys and policies at once; requests in flight finish under what they started
    /// with. Budgets and the upstream, ledger and store are fixed while running: a change to
    /// them is refused with the reason, and nothing is applied.
    boost::system::error_code reload(gateway_config config, diagnostics* diag = nullptr);

    std::uint16_t port() const noexcept;
    /// http(s)://HOST:PORT/api/v1
    std::string base_url() const;

private:
    void start_impl(
        diagnostics& diag, boost::asio::any_completion_handler<void(boost::system::error_code)> h);
    void shutdown_impl(boost::asio::any_completion_handler<void()> h);
    std::shared_ptr<detail::gateway_impl> impl_;
};

} // namespace frugal

#endif // FRUGAL_SERVE_HPP
