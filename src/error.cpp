#include <frugal/error.hpp>

#include <string>

namespace frugal {
namespace {

class category final : public boost::system::error_category {
public:
    // A fixed id lets error codes from different shared objects compare equal.
    category() noexcept : boost::system::error_category(0xf20a1c0de5ULL) {}

    const char* name() const noexcept override { return "frugal"; }

    std::string message(int ev) const override { return message(ev, nullptr, 0); }

    const char* message(int ev, char* /*buffer*/, std::size_t /*len*/) const noexcept override
    {
        // No default: a new enumerator without a message is a -Wswitch error.
        switch (static_cast<error>(ev)) {
        case error::sse_line_too_long:
            return "event stream line longer than the parser's max_line_size";
        case error::sse_event_too_large:
            return "event stream event larger than the parser's max_event_size";
        case error::bad_url: return "not a usable http:// or https:// URL";
        case error::insecure_url:
            return "plain http:// to a host that is not loopback (allow_insecure_http is off)";
        case error::missing_api_key: return "no API key (set OPENROUTER_API_KEY)";
        case error::bad_request_body: return "the request could not be encoded as JSON";
        case error::timeout: return "the request timed out";
        case error::proxy_error: return "the proxy refused the CONNECT tunnel";
        case error::protocol_error: return "the server's response breaks the protocol";
        case error::stream_truncated: return "the stream ended before [DONE]";
        case error::midstream_error: return "the provider reported an error during the stream";
        case error::bad_request: return "the provider rejected the request (400)";
        case error::context_length_exceeded:
            return "the prompt and max_tokens exceed the model's context length (400)";
        case error::unauthorized: return "the API key was refused (401)";
        case error::insufficient_credits: return "insufficient credits for the request (402)";
        case error::moderation: return "the input was flagged by moderation (403)";
        case error::forbidden: return "the key is not allowed to do this (403)";
        case error::not_found: return "not found (404)";
        case error::upstream_timeout: return "the provider timed out (408/524)";
        case error::payload_too_large: return "the request is too large (413)";
        case error::rate_limited: return "rate limited (429)";
        case error::server_error: return "OpenRouter failed internally (500)";
        case error::upstream_unavailable: return "the model's provider is unavailable (502/503)";
        case error::upstream_overloaded: return "the model's provider is overloaded (529)";
        case error::provider_error: return "the provider returned an error";
        case error::operation_in_progress: return "another read is already in progress";
        case error::stream_not_readable: return "the stream has ended or was never started";
        case error::budget_exhausted: return "the budget cannot cover the request";
        case error::budget_closed: return "the budget guard is closed";
        case error::price_unknown: return "no price is known for the model";
        case error::budget_store_failed: return "the budget store failed";
        case error::bad_budget_config: return "the budget configuration is invalid";
        case error::reservation_inactive: return "the reservation was already settled or released";
        case error::bad_policy: return "the cascade policy is invalid";
        case error::bad_sim_config: return "the simulator configuration is invalid";
        case error::bad_outcomes: return "the recorded outcomes are invalid";
        }
        return "unknown frugal error";
    }
};

} // namespace

bool is_retryable(const boost::system::error_code& ec) noexcept
{
    if (ec.category() == error_category()) {
        switch (static_cast<error>(ec.value())) {
        case error::rate_limited:
        case error::upstream_timeout:
        case error::upstream_unavailable:
        case error::upstream_overloaded:
        case error::timeout: return true;
        default: return false;
        }
    }
    // Connection failures: the server may be back, or the next connection may be healthy.
    namespace errc = boost::system::errc;
    return ec == errc::connection_refused || ec == errc::connection_reset ||
           ec == errc::connection_aborted || ec == errc::broken_pipe ||
           ec == errc::network_unreachable || ec == errc::host_unreachable || ec == errc::timed_out;
}

bool is_fatal(const boost::system::error_code& ec) noexcept
{
    if (!ec)
        return false;
    if (ec.category() != error_category())
        return true; // I/O, TLS, HTTP parsing, cancellation
    switch (static_cast<error>(ec.value())) {
    case error::bad_request:
    case error::context_length_exceeded:
    case error::unauthorized:
    case error::insufficient_credits:
    case error::moderation:
    case error::forbidden:
    case error::not_found:
    case error::upstream_timeout:
    case error::payload_too_large:
    case error::rate_limited:
    case error::server_error:
    case error::upstream_unavailable:
    case error::upstream_overloaded:
    case error::provider_error:
    case error::bad_url:
    case error::insecure_url:
    case error::missing_api_key:
    case error::bad_request_body:
    case error::operation_in_progress:
    case error::stream_not_readable:
    case error::budget_exhausted:
    case error::budget_closed:
    case error::price_unknown:
    case error::budget_store_failed:
    case error::bad_budget_config:
    case error::reservation_inactive:
    case error::bad_policy:
    case error::bad_sim_config:
    case error::bad_outcomes: return false;
    default: return true;
    }
}

const boost::system::error_category& error_category() noexcept
{
    static const category instance;
    return instance;
}

} // namespace frugal
