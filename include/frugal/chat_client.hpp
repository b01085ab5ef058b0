#ifndef FRUGAL_CHAT_CLIENT_HPP
#define FRUGAL_CHAT_CLIENT_HPP

/// @file
/// The OpenRouter (or any OpenAI-compatible) client: whole and streamed chat completions, the
/// models catalog, generation lookups and key information, over a keep-alive HTTPS connection
/// pool.

#include <frugal/diagnostics.hpp>
#include <frugal/error.hpp>
#include <frugal/types.hpp>

#include <boost/asio/any_completion_handler.hpp>
#include <boost/asio/any_io_executor.hpp>
#include <boost/asio/associated_executor.hpp>
#include <boost/asio/as_tuple.hpp>
#include <boost/asio/async_result.hpp>
#include <boost/asio/awaitable.hpp>
#include <boost/asio/deferred.hpp>
#include <boost/asio/use_awaitable.hpp>
#include <boost/system/error_code.hpp>
#include <boost/system/result.hpp>

#include <chrono>
#include <cstdint>
#include <functional>
#include <memory>
#include <optional>
#include <string>
#include <tuple>
#include <type_traits>
#include <vector>

namespace frugal {

/// Deadlines of one request. Each is measured from the start of its phase; `total` bounds the
/// whole operation, retries included, and is the one that catches a server that keeps a
/// connection busy with keep-alive bytes (OpenRouter sends whitespace or comments while a model
/// works, which no per-read timeout ever sees as a stall).
struct timeouts {
    std::chrono::milliseconds connect{10'000};       ///< TCP connect, per attempt
    std::chrono::milliseconds tls_handshake{10'000}; ///< TLS handshake (and proxy CONNECT)
    std::chrono::milliseconds first_byte{120'000};   ///< request written to response headers
    std::chrono::milliseconds stall{60'000};         ///< longest silence inside a response body
    std::chrono::milliseconds total{600'000};        ///< the whole operation
};

/// Size limits on what a server may send. Each breach fails the operation with a clear error
/// instead of growing memory.
struct limits {
    std::uint32_t max_header_size = 64 * 1024;                     ///< response headers
    std::uint64_t max_body_size = std::uint64_t{64} * 1024 * 1024; ///< a whole response body
    std::size_t max_sse_line_size = std::size_t{8} * 1024 * 1024;  ///< one line of a stream
    std::size_t max_sse_event_size = std::size_t{8} * 1024 * 1024; ///< one event of a stream
};

/// When a failed attempt is tried again.
struct retry_policy {
    /// Attempts in all, the first included; 1 disables retries.
    int max_attempts = 3;
    std::chrono::milliseconds initial_backoff{500}; ///< before the second attempt
    std::chrono::milliseconds max_backoff{30'000};
    double multiplier = 2.0;
    /// Retry a connection that failed after the request was written but before any response
    /// byte. Off by default: the provider may have run (and billed) that request.
    bool after_request_sent = false;
};

/// How a `chat_client` reaches its server.
struct client_params {
    /// The API's base URL; empty means `OPENROUTER_BASE_URL`, else
    /// `https://openrouter.ai/api/v1`.
    std::string base_url;
    /// The API key; empty means `OPENROUTER_API_KEY`. It is sent only in the Authorization
    /// header and never appears in errors, diagnostics or logs.
    std::string api_key;
    std::string http_referer; ///< `HTTP-Referer`: the app's URL, for OpenRouter's attribution
    std::string app_title;    ///< `X-OpenRouter-Title`
    std::string user_agent = "frugal/0.1";

    frugal::timeouts timeouts;
    frugal::limits limits;
    retry_policy retry;

    /// A PEM file of trusted CAs, in addition to the system store (which honours
    /// SSL_CERT_FILE and SSL_CERT_DIR as OpenSSL's tools do).
    std::string ca_file;
    /// Verify the server's certificate chain and host name. Turning this off is for tests.
    bool verify_peer = true;
    /// Allow plain `http://` to hosts that are not loopback. Off: the key would travel in
    /// clear text.
    bool allow_insecure_http = false;
    /// An `http://host:port` proxy for HTTPS, reached with CONNECT; empty means
    /// `HTTPS_PROXY` / `https_proxy` (minus hosts listed in `NO_PROXY` / `no_proxy`).
    std::string https_proxy;
    /// Read the proxy settings from the environment when `https_proxy` is empty.
    bool proxy_from_environment = true;

    /// Connections kept open to the server, busy or idle.
    std::size_t max_connections = 256;
    /// An idle connection older than this is closed rather than reused.
    std::chrono::milliseconds idle_timeout{60'000};
};

class chat_client;

/// Per-call choices of a chat beyond the request itself: the `async_chat`,
/// `async_start_stream` and `chat` overloads that take them.
struct call_options {
    /// Retry a 429 in the client, paced as `retry_policy` says. A caller that paces a rate
    /// limit itself (a cascade waits for a free tier's reset) turns this off: each 429 is then
    /// reported at once, and every request it sends is one it counted.
    bool retry_rate_limited = true;
    /// Called with the generation id as soon as the response head names it
    /// (`X-Generation-Id`), long before the body ends: a budget records it, so a crash cannot
    /// lose the means to look the bill up. Whole chats only; a stream's id is in
    /// `chat_stream::response()` and `diagnostics()` once its head is read.
    std::function<void(const std::string&)> on_generation;
};

namespace detail {
// Whether `handler` runs where `ex` runs. An operation that ends there may then call it
// directly, as `dispatch` would, instead of through the type-erased executor that
// `any_completion_handler` gives it, which costs heap allocations on every completion.
template <class Handler>
bool runs_on(const Handler& handler, const boost::asio::any_io_executor& ex)
{
    using associated =
        boost::asio::associated_executor_t<Handler, boost::asio::any_io_executor>;
    if constexpr (std::is_same_v<associated, boost::asio::any_io_executor>)
        return boost::asio::get_associated_executor(handler, ex) == ex;
    else
        return false;
}
} // namespace detail

/// A streamed chat completion, read delta by delta (the Boost.MySQL start/read-some model).
///
/// `chat_client::async_start_stream` sends the request and reads the response headers; then
/// each `async_read_delta` completes with the next piece of text until `done()`. When the
/// stream ends, `response()` holds what it added up to: content, finish reason, usage and the
/// generation id.
///
/// @par Object lifetimes
/// The stream owns its connection. Destroying or abandoning it before the end discards the
/// connection instead of returning it to the pool (for providers that support it, that cancels
/// the generation).
///
/// @par Thread safety
/// Distinct objects: safe. Shared objects: unsafe. One read at a time.
class chat_stream {
public:
    chat_stream();
    ~chat_stream();
    chat_stream(chat_stream&&) noexcept;
    chat_stream& operator=(chat_stream&&) noexcept;

    using executor_type = boost::asio::any_io_executor;
    /// The executor of the client that started the stream (a default executor before).
    executor_type get_executor() const;

    /// Reads the next delta.
    ///
    /// @par Completion signature
    /// `void(boost::system::error_code, chat_delta)`. Keep-alive comments are skipped. The read
    /// that meets `data: [DONE]` completes with whatever it had (possibly an empty delta) and
    /// `done()` becomes true.
    ///
    /// @par Errors
    /// `error::midstream_error` when the provider reports an error in the stream (see
    /// `diagnostics()`); `error::stream_truncated` when the stream ends without `[DONE]`;
    /// `error::protocol_error` for an event that is not JSON; `error::timeout` when a deadline
    /// passes; `error::operation_in_progress` for a second concurrent read;
    /// `error::stream_not_readable` after the end.
    ///
    /// @par Per-operation cancellation
    /// Terminal cancellation is supported; the connection is then closed, and the stream
    /// fails with `asio::error::operation_aborted`.
    template <class CompletionToken = boost::asio::deferred_t>
        requires(!std::is_same_v<std::remove_cvref_t<CompletionToken>, chat_delta>)
    auto async_read_delta(CompletionToken&& token = {})
    {
        return boost::asio::async_initiate<
            CompletionToken, void(boost::system::error_code, chat_delta)>(
            initiation<false>{this, nullptr}, token);
    }

    /// Reads the next delta into `into`, whose strings keep their room from read to read.
    ///
    /// The form above hands every read's text over in strings of its own: a read that joins
    /// more than a few bytes allocates them. A reader that keeps one delta across reads (a
    /// server relaying tokens) allocates nothing per read once its strings have grown.
    ///
    /// @par Completion signature
    /// `void(boost::system::error_code)`. `into` is cleared when the read starts and holds the
    /// delta when it completes (empty when the read fails or meets `data: [DONE]` alone); a
    /// read refused at once (`operation_in_progress`, `stream_not_readable`) leaves it as it
    /// was. It must outlive the operation. Errors and cancellation are those of the form above.
    template <class CompletionToken = boost::asio::deferred_t>
    auto async_read_delta(chat_delta& into, CompletionToken&& token = {})
    {
        return boost::asio::async_initiate<CompletionToken, void(boost::system::error_code)>(
            initiation<true>{this, &into}, token);
    }

    /// Whether the stream reached `data: [DONE]` (or failed: see `error()`).
    bool done() const noexcept;

    /// The error that ended the stream, if it failed.
    boost::system::error_code error() const noexcept;

    /// The response the stream added up to so far; complete when `done()`.
    const chat_response& response() const noexcept;

    /// What the server said about a failure (status, message, provider, generation id).
    const frugal::diagnostics& diagnostics() const noexcept;

    struct state; // defined in src/openrouter

private:
    friend class chat_client;
    // Both forms' initiation: `Into`, the read goes into the caller's delta (`into`).
    template <bool Into>
    struct initiation {
        chat_stream* self;
        chat_delta* into;
        using executor_type = boost::asio::any_io_executor;
        executor_type get_executor() const noexcept { return self->get_executor(); }
        template <class Handler>
        void operator()(Handler&& handler) const
        {
            const bool here = detail::runs_on(handler, get_executor());
            if constexpr (Into)
                self->async_read_delta_impl(*into, std::forward<Handler>(handler), here);
            else
                self->async_read_delta_impl(std::forward<Handler>(handler), here);
        }
    };
    void async_read_delta_impl(
        boost::asio::any_completion_handler<void(boost::system::error_code, chat_delta)> handler,
        bool here);
    void async_read_delta_impl(
        chat_delta& into,
        boost::asio::any_completion_handler<void(boost::system::error_code)> handler,
        bool here);

    std::shared_ptr<state> state_;
};

/// A client for OpenRouter's API (or any OpenAI-compatible one).
///
/// All operations share one connection pool and may run concurrently on one executor:
/// thousands of requests in flight on a single thread is the intended use.
///
/// Every `async_*` operation takes a completion token (the default, `deferred`, makes
/// `co_await client.async_chat(req)` work) and has an overload taking a `diagnostics&`,
/// written when the operation completes (so it must outlive the operation). Failed attempts are
/// retried as `client_params::retry` says, and only before a response has begun.
///
/// @par Per-operation cancellation
/// Every operation supports terminal cancellation: the request in flight is abandoned and its
/// connection closed, never returned to the pool.
///
/// @par Thread safety
/// Distinct objects: safe. Shared objects: unsafe; use the client from its executor.
class chat_client {
public:
    using executor_type = boost::asio::any_io_executor;

    /// Creates a client. The parameters are checked when the first request starts (a bad URL
    /// or a missing key fails that request with a clear error).
    explicit chat_client(executor_type executor, client_params params = {});
    ~chat_client();
    chat_client(chat_client&&) noexcept;
    chat_client& operator=(chat_client&&) noexcept;

    executor_type get_executor() const noexcept;

    /// The parameters, with the environment's defaults filled in.
    const client_params& params() const noexcept;

    /// Sends a chat completion and reads the whole response. `request` is encoded before this
    /// returns; it need not outlive the call.
    ///
    /// @par Completion signature
    /// `void(boost::system::error_code, chat_response)`.
    ///
    /// @par Errors
    /// HTTP statuses map to `error::bad_request`, `unauthorized`, `insufficient_credits`,
    /// `moderation`, `rate_limited`, `upstream_unavailable`, ... ; a 200 response whose body is
    /// an error object maps the same way by its code; a choice that finished with
    /// `finish_reason: "error"` is `error::provider_error`.
    template <class CompletionToken = boost::asio::deferred_t>
    auto async_chat(const chat_request& request, CompletionToken&& token = {})
    {
        return start_chat(
            encode(request), nullptr, call_options{}, std::forward<CompletionToken>(token));
    }
    template <class CompletionToken = boost::asio::deferred_t>
        requires(!std::is_same_v<std::decay_t<CompletionToken>, call_options>)
    auto
    async_chat(const chat_request& request, frugal::diagnostics& diag, CompletionToken&& token = {})
    {
        return start_chat(
            encode(request), &diag, call_options{}, std::forward<CompletionToken>(token));
    }
    template <class CompletionToken = boost::asio::deferred_t>
    auto async_chat(
        const chat_request& request,
        frugal::diagnostics& diag,
        call_options options,
        CompletionToken&& token = {})
    {
        return start_chat(
            encode(request), &diag, std::move(options), std::forward<CompletionToken>(token));
    }

    /// `async_chat` for code already in a coroutine: the exchange runs inside the awaiting
    /// coroutine (no coroutine of its own, no completion handler), and follows its
    /// cancellation. The cheapest form of a chat; a cascade's attempts use it.
    boost::asio::awaitable<std::tuple<boost::system::error_code, chat_response>>
    chat(const chat_request& request, frugal::diagnostics* diag = nullptr, call_options options = {});
    /// `chat` that decodes the answer into `into`, which it clears first: no response is
    /// moved through the coroutines, and `into`'s strings keep their room for the next answer.
    /// `into` holds what a whole answer (or a 200 whose body is an error) said, and is empty
    /// after an error before any; it must outlive the operation.
    boost::asio::awaitable<std::tuple<boost::system::error_code>> chat(
        const chat_request& request,
        chat_response& into,
        frugal::diagnostics* diag = nullptr,
        call_options options = {});

    /// Sends a streamed chat completion and reads the response headers into `stream`.
    ///
    /// @par Completion signature
    /// `void(boost::system::error_code)`.
    ///
    /// @par Object lifetimes
    /// `stream` must outlive the operation. `request` is encoded by the call itself (as
    /// `async_chat`'s is), so it need not, and no copy of it is made.
    template <class CompletionToken = boost::asio::deferred_t>
        requires(!std::is_same_v<std::decay_t<CompletionToken>, call_options>)
    auto async_start_stream(const chat_request& request, chat_stream& stream, CompletionToken&& token = {})
    {
        return start_stream(
            encode(request, true), stream, true, std::forward<CompletionToken>(token));
    }
    /// With `options` (only `retry_rate_limited` applies to a stream).
    template <class CompletionToken = boost::asio::deferred_t>
    auto async_start_stream(
        const chat_request& request,
        chat_stream& stream,
        const call_options& options,
        CompletionToken&& token = {})
    {
        return start_stream(
            encode(request, true), stream, options.retry_rate_limited,
            std::forward<CompletionToken>(token));
    }

    /// The models catalog, with exact prices.
    ///
    /// @par Completion signature
    /// `void(boost::system::error_code, std::vector<model_info>)`.
    template <class CompletionToken = boost::asio::deferred_t>
    auto async_models(CompletionToken&& token = {})
    {
        return boost::asio::async_initiate<
            CompletionToken, void(boost::system::error_code, std::vector<model_info>)>(
            models_initiation{this}, token, static_cast<frugal::diagnostics*>(nullptr));
    }
    template <class CompletionToken = boost::asio::deferred_t>
    auto async_models(frugal::diagnostics& diag, CompletionToken&& token = {})
    {
        return boost::asio::async_initiate<
            CompletionToken, void(boost::system::error_code, std::vector<model_info>)>(
            models_initiation{this}, token, &diag);
    }

    /// The provider's record of a generation. OpenRouter answers 404 for a short while after a
    /// generation ends; that is `error::not_found`, and worth retrying after a second.
    ///
    /// @par Completion signature
    /// `void(boost::system::error_code, generation_info)`.
    template <class CompletionToken = boost::asio::deferred_t>
    auto async_generation(std::string id, CompletionToken&& token = {})
    {
        return boost::asio::async_initiate<
            CompletionToken, void(boost::system::error_code, generation_info)>(
            generation_initiation{this}, token, std::move(id),
            static_cast<frugal::diagnostics*>(nullptr));
    }
    template <class CompletionToken = boost::asio::deferred_t>
    auto async_generation(std::string id, frugal::diagnostics& diag, CompletionToken&& token = {})
    {
        return boost::asio::async_initiate<
            CompletionToken, void(boost::system::error_code, generation_info)>(
            generation_initiation{this}, token, std::move(id), &diag);
    }

    /// The key's limit and spend.
    ///
    /// @par Completion signature
    /// `void(boost::system::error_code, key_info)`.
    template <class CompletionToken = boost::asio::deferred_t>
    auto async_key_info(CompletionToken&& token = {})
    {
        return boost::asio::async_initiate<
            CompletionToken, void(boost::system::error_code, key_info)>(
            key_initiation{this}, token, static_cast<frugal::diagnostics*>(nullptr));
    }
    template <class CompletionToken = boost::asio::deferred_t>
    auto async_key_info(frugal::diagnostics& diag, CompletionToken&& token = {})
    {
        return boost::asio::async_initiate<
            CompletionToken, void(boost::system::error_code, key_info)>(
            key_initiation{this}, token, &diag);
    }

    /// Connections open now, and how many of them are idle in the pool.
    std::size_t open_connections() const noexcept;
    std::size_t idle_connections() const noexcept;

    struct impl; // defined in src/openrouter

private:
    template <class Derived>
    struct base_initiation {
        chat_client* self;
        using executor_type = boost::asio::any_io_executor;
        executor_type get_executor() const noexcept { return self->get_executor(); }
    };
    // A request travels to the operation as its JSON body: Asio's initiation moves its
    // arguments a score of times, and a string moves in a few instructions.
    struct encoded_request {
        std::string body;
        // extra_body or response_schema cannot be sent: `body` then says why
        bool invalid = false;
    };
    static encoded_request encode(const chat_request& req, bool stream = false);

    // The awaitable form, for any caller in a coroutine.
    boost::asio::awaitable<std::tuple<boost::system::error_code, chat_response>>
    chat_encoded(encoded_request req, frugal::diagnostics* diag, call_options options);

    // `as_tuple(use_awaitable)`, the token a coroutine most often passes, gets the awaitable
    // form itself: the same result, without a coroutine and a handler of its own.
    template <class CompletionToken>
    auto start_chat(
        encoded_request req, frugal::diagnostics* diag, call_options options, CompletionToken&& token)
    {
        if constexpr (std::is_same_v<
                          std::decay_t<CompletionToken>,
                          boost::asio::as_tuple_t<boost::asio::use_awaitable_t<>>>)
            return chat_encoded(std::move(req), diag, std::move(options));
        else
            return boost::asio::async_initiate<
                CompletionToken, void(boost::system::error_code, chat_response)>(
                chat_initiation{this}, token, std::move(req), diag, std::move(options));
    }

    // A stream's start in the awaiting coroutine, for `as_tuple(use_awaitable)` (as
    // `start_chat`): a thousand streams starting at once hold no coroutine and handler each
    // beside their callers'. Errors and cancellation end it with an error code, as the
    // initiating form's, whatever the caller's `throw_if_cancelled`.
    boost::asio::awaitable<std::tuple<boost::system::error_code>>
    stream_encoded(encoded_request req, chat_stream* stream, bool retry_rate_limited);

    template <class CompletionToken>
    auto start_stream(
        encoded_request req, chat_stream& stream, bool retry_rate_limited, CompletionToken&& token)
    {
        if constexpr (std::is_same_v<
                          std::decay_t<CompletionToken>,
                          boost::asio::as_tuple_t<boost::asio::use_awaitable_t<>>>)
            return stream_encoded(std::move(req), &stream, retry_rate_limited);
        else
            return boost::asio::async_initiate<CompletionToken, void(boost::system::error_code)>(
                stream_initiation{this}, token, std::move(req), &stream, retry_rate_limited);
    }

    struct chat_initiation : base_initiation<chat_initiation> {
        template <class Handler>
        // NOLINTNEXTLINE(performance-unnecessary-value-param): moved into the operation
        void operator()(
            Handler&& h, encoded_request req, frugal::diagnostics* diag, call_options options) const
        {
            const bool here = detail::runs_on(h, get_executor());
            self->async_chat_impl(
                std::move(req), diag, std::move(options), std::forward<Handler>(h), here);
        }
    };
    struct stream_initiation : base_initiation<stream_initiation> {
        template <class Handler>
        // NOLINTNEXTLINE(performance-unnecessary-value-param): moved into the operation
        void operator()(
            Handler&& h, encoded_request req, chat_stream* stream, bool retry_rate_limited) const
        {
            const bool here = detail::runs_on(h, get_executor());
            self->async_start_stream_impl(
                std::move(req), stream, std::forward<Handler>(h), retry_rate_limited, here);
        }
    };
    struct models_initiation : base_initiation<models_initiation> {
        template <class Handler>
        void operator()(Handler&& h, frugal::diagnostics* diag) const
        {
            self->async_models_impl(diag, std::forward<Handler>(h));
        }
    };
    struct generation_initiation : base_initiation<generation_initiation> {
        template <class Handler>
        // NOLINTNEXTLINE(performance-unnecessary-value-param): moved into the operation
        void operator()(Handler&& h, std::string id, frugal::diagnostics* diag) const
        {
            self->async_generation_impl(id, diag, std::forward<Handler>(h));
        }
    };
    struct key_initiation : base_initiation<key_initiation> {
        template <class Handler>
        void operator()(Handler&& h, frugal::diagnostics* diag) const
        {
            self->async_key_info_impl(diag, std::forward<Handler>(h));
        }
    };

    void async_chat_impl(
        encoded_request req,
        frugal::diagnostics* diag,
        call_options options,
        boost::asio::any_completion_handler<void(boost::system::error_code, chat_response)>
            handler,
        bool here);
    void async_start_stream_impl(
        encoded_request req,
        chat_stream* stream,
        boost::asio::any_completion_handler<void(boost::system::error_code)> handler,
        bool retry_rate_limited,
        bool here);
    void async_models_impl(
        frugal::diagnostics* diag,
        boost::asio::any_completion_handler<
            void(boost::system::error_code, std::vector<model_info>)> handler);
    void async_generation_impl(
        const std::string& id,
        frugal::diagnostics* diag,
        boost::asio::any_completion_handler<void(boost::system::error_code, generation_info)>
            handler);
    void async_key_info_impl(
        frugal::diagnostics* diag,
        boost::asio::any_completion_handler<void(boost::system::error_code, key_info)> handler);

    std::shared_ptr<impl> impl_;
};

/// Reads a models catalog saved from `GET /models` (OpenRouter's shape), as `async_models`
/// reads the live one. Fails with `error::protocol_error` when it is not that shape.
boost::system::result<std::vector<model_info>> parse_models(std::string_view json);

} // namespace frugal

#endif // FRUGAL_CHAT_CLIENT_HPP
