#ifndef FRUGAL_DIAGNOSTICS_HPP
#define FRUGAL_DIAGNOSTICS_HPP

/// @file
/// What a failed request can tell beyond its error code.

#include <chrono>
#include <cstdint>
#include <optional>
#include <string>

namespace frugal {

/// A rate limit as the server stated it: OpenRouter's `X-RateLimit-*` headers (or their echo in
/// a 429 body's `metadata.headers`), and which window the message names.
struct rate_limit_info {
    std::optional<std::uint64_t> limit;     ///< requests the window allows
    std::optional<std::uint64_t> remaining; ///< requests left in it
    std::optional<std::int64_t> reset_ms;   ///< when it resets, Unix milliseconds
    /// "minute" (`free-models-per-min`), "day" (`free-models-per-day`) or empty when the
    /// server did not say.
    std::string window;
};

/// Details of a failure that talked to a provider, beside the `error_code` (Boost.MySQL's
/// `diagnostics` pattern). Operations clear it when they start and fill what they learn.
///
/// It never holds the API key: messages are the server's, or frugal's own wording.
struct diagnostics {
    /// The HTTP status of the response that failed, or 0 if none arrived.
    int http_status = 0;
    /// The server's message (`error.message`), or frugal's account of what went wrong (which
    /// deadline passed, what broke the protocol).
    std::string message;
    /// The error's `code` as OpenRouter sent it: a number or a string ("server_error").
    std::string code;
    /// `error.metadata.error_type` (OpenRouter's typed code), when present.
    std::string error_type;
    /// `error.metadata.raw`: the upstream provider's own text, when present.
    std::string raw;
    /// The provider named in the error or the response.
    std::string provider;
    /// The generation id, when the failure happened after one was assigned.
    std::string generation_id;
    /// How long the server asked to wait before retrying (`Retry-After`).
    std::optional<std::chrono::milliseconds> retry_after;
    /// The rate limit the server stated, when it did (a 429, mostly).
    std::optional<rate_limit_info> rate_limit;
    /// How many attempts the operation made (retries included).
    int attempts = 0;
    /// Whether some attempt wrote its whole request: a failure with this false cannot have
    /// been billed.
    bool request_sent = false;

    void clear() { *this = diagnostics{}; }

    /// One line for logs and the CLI: the message, the status and the code.
    std::string to_string() const;
};

} // namespace frugal

#endif // FRUGAL_DIAGNOSTICS_HPP
