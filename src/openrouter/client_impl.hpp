#ifndef FRUGAL_SRC_OPENROUTER_CLIENT_IMPL_HPP
#define FRUGAL_SRC_OPENROUTER_CLIENT_IMPL_HPP

// The client's insides, shared by the files it is split into: its configuration
// (client_config.cpp), the HTTP exchange with its retries (client_exchange.cpp), the mapping of
// statuses and error bodies to errors and diagnostics (client_errors.cpp), the stream
// (client_stream.cpp) and the public member functions (client.cpp). Only what crosses from one
// of those files to another is here; what one file alone uses stays in its anonymous namespace.

#include <frugal/chat_client.hpp>

#include "http/connection.hpp"
#include "http/pool.hpp"
#include "openrouter/codec.hpp"
#include "openrouter/scrub.hpp"

#include <boost/asio/any_io_executor.hpp>
#include <boost/asio/as_tuple.hpp>
#include <boost/asio/awaitable.hpp>
#include <boost/asio/use_awaitable.hpp>

#include <algorithm>
#include <chrono>
#include <cstddef>
#include <cstdint>
#include <functional>
#include <memory>
#include <optional>
#include <random>
#include <string>
#include <string_view>
#include <tuple>
#include <vector>

namespace frugal {

namespace asio = boost::asio;
namespace beast = boost::beast;
namespace bhttp = boost::beast::http;
using boost::system::error_code;
using http::steady_clock;

struct chat_client::impl : std::enable_shared_from_this<impl> {
    // Out of line, in client_config.cpp: only that file reads the environment.
    impl(asio::any_io_executor ex, client_params p);

    void configure();

    std::shared_ptr<http::connection> make_connection() const
    {
        return std::make_shared<http::connection>(executor, tls);
    }

    std::chrono::milliseconds backoff(int attempt)
    {
        // Full jitter: a random wait up to the exponential bound, so retries spread out.
        double bound = static_cast<double>(params.retry.initial_backoff.count());
        for (int i = 1; i < attempt; ++i)
            bound *= params.retry.multiplier;
        bound = std::min(bound, static_cast<double>(params.retry.max_backoff.count()));
        std::uniform_real_distribution<double> d(bound / 2, bound);
        return std::chrono::milliseconds(static_cast<std::int64_t>(d(rng)));
    }

    asio::any_io_executor executor;
    client_params params;
    error_code config_error;
    std::string config_detail;
    http::route route;
    std::string key;
    std::string base_path;
    std::shared_ptr<asio::ssl::context> tls;
    std::string fixed_headers;
    openrouter::key_scrubber scrubber;
    http::pool pool;
    std::mt19937_64 rng;
};

namespace client_detail {

using client_impl = chat_client::impl;

// Called with the generation id of the response head (`call_options::on_generation`).
using generation_hook = std::function<void(const std::string&)>;

inline constexpr auto tuple_awaitable = asio::as_tuple(asio::use_awaitable);

// Room for a read. Beast reads 512 bytes when its buffer has no room, a system call for every
// one or two stream events; a roomy buffer takes dozens per call. Buffers are given back when a
// connection goes idle. A response head gets `head_reserve`; a whole body `read_reserve` per
// read; a stream adapts (see `chat_stream::state::read_size`), so that a slow stream waiting for
// its next token holds little and a fast one reads many events per call.
inline constexpr std::size_t head_reserve = std::size_t{4} * 1024;
// A stream's head alone: OpenRouter's is under a kilobyte, and its first events come later.
// A thousand streams waiting for their heads at once then hold a megabyte, not four; a longer
// head grows the buffer once.
inline constexpr std::size_t stream_head_reserve = 1024;
inline constexpr std::size_t read_reserve = std::size_t{16} * 1024;
inline constexpr std::size_t min_stream_read = 512;
inline constexpr std::size_t max_stream_read = std::size_t{64} * 1024;
// The most a connection's read buffer holds: bytes read and not yet parsed, which are at most a
// response head, a chunk's size line or its trailers, and the room of one read. Beast bounds
// neither a chunk's size line nor its trailers, so a provider sending one without end would
// otherwise grow the buffer without end; past this the read fails (`buffer_overflow`).
inline std::size_t read_buffer_limit(std::size_t max_header_size) noexcept
{
    return max_header_size + 2 * max_stream_read;
}

// A stream's tool calls are kept by their index: no answer makes more than a few, and OpenAI
// allows 128 tools a request.
inline constexpr std::uint32_t max_stream_tool_calls = 1024;

// Errors and diagnostics (client_errors.cpp) ---------------------------------------------------

std::string snippet(std::string_view body);

// A rate limit's fields, from headers or a body's echo of them; the window from the message.
void note_rate_limit(
    diagnostics& d,
    std::string_view limit,
    std::string_view remaining,
    std::string_view reset,
    std::string_view message,
    std::string_view source);

void fill(diagnostics& d, const openrouter::provider_error_info& e);

// The key never leaves in what a provider sent back: an error may echo the request's headers.
// Every overload is declared here, so that no caller can fall through to the template by not
// seeing the overload meant for it.
void scrub(const openrouter::key_scrubber& k, diagnostics& d);
void scrub(const openrouter::key_scrubber& k, chat_response& r);

// What the other endpoints return is provider text too.
template <class T>
void scrub(const openrouter::key_scrubber&, T&)
{
}

void scrub(const openrouter::key_scrubber& k, generation_info& g);
void scrub(const openrouter::key_scrubber& k, key_info& i);
void scrub(const openrouter::key_scrubber& k, std::vector<model_info>& rows);

// Retry-After: delay-seconds or an HTTP-date (RFC 9110 10.2.3).
std::optional<std::chrono::milliseconds> parse_retry_after(std::string_view v);

// Maps a complete non-success response (or a 200 whose body is an error) to an error code.
error_code response_error(int status, std::string_view body, diagnostics& diag);

// The exchange (client_exchange.cpp) -----------------------------------------------------------

// What one attempt learned, for the retry decision.
struct attempt_state {
    bool request_sent = false;     // every byte of the request was written
    bool response_started = false; // a status line arrived
    std::optional<std::chrono::milliseconds> retry_after;
};

// Decoding is synchronous, so one decoder and one chunk per thread serve every response and
// stream on it; a stream keeps only its own state (a thousand open streams share them).
struct decode_scratch {
    openrouter::chat_decoder decoder;
    openrouter::chat_chunk chunk;
};

inline decode_scratch& scratch()
{
    thread_local decode_scratch s;
    return s;
}

// The strings that carry a request's JSON body and a response's whole body, kept per thread
// between requests (a few, none larger than 64 KiB): each would otherwise be a heap allocation
// per request. A string may be taken on one thread and given back on another.
class text_spares {
public:
    static constexpr std::size_t most = 8;
    static constexpr std::size_t largest = std::size_t{64} * 1024;
    static std::string take() noexcept;
    static void give(std::string&& s) noexcept;
};

// Sends `method path` with `body` and reads the response head into `conn->head`, with the
// connection's parser (`conn->reader`), which then reads the body. `whole`: the body will be
// read whole, so a Content-Length beyond max_body_size fails now. The connection stays checked
// out on success; on failure it has been given back (closed).
asio::awaitable<error_code> start_exchange(
    std::shared_ptr<client_impl> c,
    std::string_view method,
    std::string_view path,
    const std::string* body,
    std::string_view accept,
    steady_clock::time_point total,
    bool whole,
    http::pool::lease& conn,
    attempt_state& st,
    diagnostics& diag);

// Reads the rest of a whole body into `body`, extending the stall deadline after every read
// (OpenRouter's keep-alive whitespace counts as progress; the total deadline still bounds it), then
// gives the connection back, reusable if the message ended cleanly and keeps the connection alive.
asio::awaitable<error_code> finish_whole(
    std::shared_ptr<client_impl> c,
    http::pool::lease& conn,
    std::string& body,
    steady_clock::time_point total,
    diagnostics& diag);

// How long to wait before the next attempt, or nothing when the failure must be reported.
// Transient failures are retried only where the request cannot have been served twice: a
// complete error response, a failure before the request was sent, or (when configured) a
// connection that failed after sending but before any response byte.
std::optional<std::chrono::milliseconds> retry_delay(
    client_impl& c,
    const error_code& ec,
    const attempt_state& st,
    const diagnostics& diag,
    int attempt,
    steady_clock::time_point total,
    bool retry_rate_limited = true);

// Waits `delay` before a retry; the error is the timer's (cancellation).
asio::awaitable<error_code>
wait_before_retry(asio::any_io_executor ex, std::chrono::milliseconds delay);

// One GET or POST whose whole body is wanted, with retries. What the exchange found out goes,
// scrubbed, to `*out` when it is given. `method` and `path` are read until it completes.
asio::awaitable<std::tuple<error_code, std::string>> request_whole(
    std::shared_ptr<client_impl> c,
    std::string_view method,
    std::string_view path,
    std::string body,
    diagnostics* out,
    const generation_hook* on_generation = nullptr,
    bool retry_rate_limited = true);

asio::awaitable<std::tuple<error_code, chat_response>> chat_op(
    std::shared_ptr<client_impl> c,
    std::string body,
    bool invalid,
    diagnostics* out,
    generation_hook on_generation = {},
    bool retry_rate_limited = true);

// chat_op decoding the answer into `into` (chat_client::chat's second form).
asio::awaitable<std::tuple<error_code>> chat_into_op(
    std::shared_ptr<client_impl> c,
    std::string body,
    bool invalid,
    diagnostics* out,
    generation_hook on_generation,
    bool retry_rate_limited,
    chat_response& into);

} // namespace client_detail

} // namespace frugal

#endif // FRUGAL_SRC_OPENROUTER_CLIENT_IMPL_HPP
