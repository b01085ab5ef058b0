#ifndef FRUGAL_ERROR_HPP
#define FRUGAL_ERROR_HPP

/// @file
/// frugal's error codes and their category.
///
/// frugal reports failures as `boost::system::error_code`. Codes that Asio, Beast or OpenSSL
/// already define (`asio::error::operation_aborted` for cancellation, `beast::error::timeout`
/// for I/O timeouts) are passed through unchanged; this enum holds only the conditions that are
/// frugal's own. Values start at 1 because 0 means success.

#include <boost/system/error_code.hpp>

#include <type_traits>

namespace frugal {

/// Failure conditions specific to frugal.
///
/// @par Stability
/// Enumerators are appended, never renumbered, so values may be logged and compared across
/// versions.
enum class error {
    /// An event stream held a line longer than `sse_parser_params::max_line_size` (line end
    /// not counted). Reported as soon as the unfinished line is known to be too long; the
    /// parser stays failed until `sse_parser::reset()`.
    sse_line_too_long = 1,

    /// An event's data buffer (its data lines and the line feeds joining them) would grow
    /// past `sse_parser_params::max_event_size`. The parser stays failed until
    /// `sse_parser::reset()`.
    sse_event_too_large,

    /// The base URL is not an `http://` or `https://` URL frugal can use.
    bad_url,

    /// A plain `http://` URL names a host that is not loopback, and
    /// `client_params::allow_insecure_http` is off: the API key would cross the network in
    /// clear text.
    insecure_url,

    /// No API key was given (`client_params::api_key` or `OPENROUTER_API_KEY`).
    missing_api_key,

    /// A request could not be encoded: an `extra_body` or `response_format` schema that is not
    /// valid JSON of the right kind, or an `extra_body` that sets a member the typed request or
    /// the budget guard owns (`max_tokens`, `models`, ...). Nothing was sent.
    bad_request_body,

    /// A deadline of `client_params::timeouts` passed (connect, TLS handshake, first byte,
    /// a stall between stream chunks, or the whole request); diagnostics say which.
    timeout,

    /// The proxy refused or failed the `CONNECT` tunnel.
    proxy_error,

    /// The server's bytes are not what the protocol allows: a response body that is not the
    /// JSON expected, a stream event whose data is not JSON, a wrong content type.
    protocol_error,

    /// A stream ended (the connection closed or the body ended) before `data: [DONE]`.
    stream_truncated,

    /// The provider reported an error inside a stream that had started (HTTP 200): a chunk with
    /// a top-level `error`, or a choice that finished with `finish_reason: "error"`.
    midstream_error,

    /// HTTP 400: the provider rejected the request (a bad parameter, an unknown model).
    bad_request,

    /// HTTP 400 whose `error_type` is `context_length_exceeded`: the prompt and `max_tokens`
    /// do not fit the model's context.
    context_length_exceeded,

    /// HTTP 401: the key is missing, invalid or disabled.
    unauthorized,

    /// HTTP 402: the account or the key cannot pay for the request (including "can only
    /// afford N" tokens).
    insufficient_credits,

    /// HTTP 403 with moderation metadata: the input was flagged.
    moderation,

    /// HTTP 403 otherwise: the key may not do this (a guardrail, a management-only endpoint).
    forbidden,

    /// HTTP 404: no such model, endpoint or generation (a generation may not be visible yet).
    not_found,

    /// HTTP 408 or 524: the provider or OpenRouter's edge timed out.
    upstream_timeout,

    /// HTTP 413: the request is larger than the provider accepts.
    payload_too_large,

    /// HTTP 429: a rate limit (OpenRouter's free tier, or the upstream provider's).
    rate_limited,

    /// HTTP 500: OpenRouter failed internally.
    server_error,

    /// HTTP 502 or 503: the model's provider is down or returned an invalid response, or no
    /// provider meets the routing requirements.
    upstream_unavailable,

    /// HTTP 529: the provider is overloaded.
    upstream_overloaded,

    /// Any other error status, or a 200 response whose body is an `{"error": ...}` object
    /// without a recognised code.
    provider_error,

    /// A second `chat_stream::async_read_delta` was started while one was outstanding.
    operation_in_progress,

    /// `chat_stream::async_read_delta` was called on a stream that has ended or was never
    /// started.
    stream_not_readable,

    /// The budget guard denied a paid request: some budget it falls under cannot cover even
    /// the smallest request allowed (after waiting, for `async_reserve`), or has reached its
    /// cap. Also the reason a guard gives for cancelling a request in flight.
    budget_exhausted,

    /// The budget guard was closed: paid requests are refused and in-flight ones cancelled.
    budget_closed,

    /// No price is known for the model (not in the catalog, or priced as variable): a cost
    /// frugal cannot bound is never taken as $0.
    price_unknown,

    /// The budget store could not record a reservation or a settlement; the guard stops paid
    /// traffic until it is reopened.
    budget_store_failed,

    /// A budget configuration or key is malformed (a spec with no name, a negative cap, a name
    /// given twice, a key without `kind:`).
    bad_budget_config,

    /// A reservation was used after it was settled or released.
    reservation_inactive,

    /// A cascade policy is malformed; the diagnostics' message names the member and why.
    bad_policy,

    /// A simulator configuration (`parse_sim_config`) is malformed; the diagnostics' message
    /// names the field and why.
    bad_sim_config,

    /// A file of recorded outcomes (`frugal eval`, `frugal sim --outcomes`) is malformed or
    /// does not fit the policy; the diagnostics' message names the line or column and why.
    bad_outcomes,
};

/// Whether an operation that failed with `ec` may succeed if tried again later: rate limits,
/// upstream timeouts, outages and overload, and connection failures. The caller must still
/// know that retrying is safe (no request byte sent, or the request is idempotent).
bool is_retryable(const boost::system::error_code& ec) noexcept;

/// Whether `ec` leaves the connection it happened on unusable: every failure that is not a
/// complete HTTP response from the provider (I/O and TLS errors, timeouts, cancellation,
/// protocol errors, truncated or failed streams).
bool is_fatal(const boost::system::error_code& ec) noexcept;

/// The category of `frugal::error`; its name is `"frugal"`.
const boost::system::error_category& error_category() noexcept;

/// Makes `e` an `error_code` in frugal's category (found by argument-dependent lookup).
inline boost::system::error_code make_error_code(error e) noexcept
{
    return {static_cast<int>(e), error_category()};
}

} // namespace frugal

template <>
struct boost::system::is_error_code_enum<frugal::error> : std::true_type {
};

#endif // FRUGAL_ERROR_HPP
