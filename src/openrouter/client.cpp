// chat_client and chat_stream: requests over the pool, retries, error mapping, streams.
#include <frugal/chat_client.hpp>

#include "openrouter/client_access.hpp"

#include "http/connection.hpp"
#include "http/pool.hpp"
#include "http/url.hpp"
#include "openrouter/codec.hpp"
#include "openrouter/scrub.hpp"

#include <frugal/sse_parser.hpp>

#include <boost/asio/append.hpp>
#include <boost/asio/as_tuple.hpp>
#include <boost/asio/bind_cancellation_slot.hpp>
#include <boost/asio/co_spawn.hpp>
#include <boost/asio/compose.hpp>
#include <boost/asio/dispatch.hpp>
#include <boost/asio/post.hpp>
#include <boost/asio/steady_timer.hpp>
#include <boost/asio/system_executor.hpp>
#include <boost/asio/this_coro.hpp>
#include <boost/asio/use_awaitable.hpp>
#include <boost/asio/write.hpp>
#include <boost/beast/core/buffers_range.hpp>
#include <boost/beast/http/parser.hpp>
#include <boost/beast/http/read.hpp>
#include <boost/beast/http/string_body.hpp>

#include <algorithm>
#include <array>
#include <cctype>
#include <charconv>
#include <cstdlib>
#include <ctime>
#include <functional>
#include <random>

namespace frugal {

namespace asio = boost::asio;
namespace beast = boost::beast;
namespace bhttp = boost::beast::http;
using boost::system::error_code;
using http::steady_clock;
using namespace std::chrono_literals;

namespace {

constexpr auto tuple_awaitable = asio::as_tuple(asio::use_awaitable);

// Room for a read. Beast reads 512 bytes when its buffer has no room, a system call for every
// one or two stream events; a roomy buffer takes dozens per call. Buffers are given back when a
// connection goes idle. A response head gets `head_reserve`; a whole body `read_reserve` per
// read; a stream adapts (see `chat_stream::state::read_size`), so that a slow stream waiting for
// its next token holds little and a fast one reads many events per call.
constexpr std::size_t head_reserve = std::size_t{4} * 1024;
constexpr std::size_t read_reserve = std::size_t{16} * 1024;
constexpr std::size_t min_stream_read = 1024;
constexpr std::size_t max_stream_read = std::size_t{64} * 1024;

std::string env(const char* name)
{
    const char* v = std::getenv(name); // NOLINT(concurrency-mt-unsafe): read once, at construction
    return v == nullptr ? std::string() : std::string(v);
}

std::string snippet(std::string_view body)
{
    std::string s(body.substr(0, 160));
    std::replace_if(
        s.begin(), s.end(), [](char c) { return c == '\n' || c == '\r'; }, ' ');
    return body.size() > 160 ? s + "..." : s;
}

error_code error_for_status(int status, const openrouter::provider_error_info& e)
{
    switch (status) {
    case 400:
        if (e.error_type == "context_length_exceeded" ||
            e.message.find("context length") != std::string::npos)
            return error::context_length_exceeded;
        return error::bad_request;
    case 401: return error::unauthorized;
    case 402: return error::insufficient_credits;
    case 403: return e.moderation ? error::moderation : error::forbidden;
    case 404: return error::not_found;
    case 408:
    case 524: return error::upstream_timeout;
    case 413: return error::payload_too_large;
    case 429: return error::rate_limited;
    case 500: return error::server_error;
    case 502:
    case 503: return error::upstream_unavailable;
    case 529: return error::upstream_overloaded;
    default: return error::provider_error;
    }
}

std::optional<std::uint64_t> count_of(std::string_view v)
{
    std::uint64_t n = 0;
    const auto [p, ec] = std::from_chars(v.data(), v.data() + v.size(), n);
    if (ec != std::errc() || p != v.data() + v.size())
        return std::nullopt;
    return n;
}

// A rate limit's fields, from headers or a body's echo of them; the window from the message.
void note_rate_limit(
    diagnostics& d,
    std::string_view limit,
    std::string_view remaining,
    std::string_view reset,
    std::string_view message,
    std::string_view source)
{
    rate_limit_info info = d.rate_limit.value_or(rate_limit_info{});
    if (const auto n = count_of(limit))
        info.limit = n;
    if (const auto n = count_of(remaining))
        info.remaining = n;
    if (const auto n = count_of(reset)) {
        // Epoch milliseconds, as OpenRouter sends it; a value that small is seconds.
        const auto v = static_cast<std::int64_t>(std::min<std::uint64_t>(*n, 1ULL << 62));
        info.reset_ms = v < 100'000'000'000 ? v * 1000 : v;
    }
    if (message.find("per-min") != std::string_view::npos ||
        source.find("minute") != std::string_view::npos)
        info.window = "minute";
    else if (message.find("per-day") != std::string_view::npos ||
             source.find("daily") != std::string_view::npos)
        info.window = "day";
    if (info.limit || info.remaining || info.reset_ms || !info.window.empty())
        d.rate_limit = std::move(info);
}

void fill(diagnostics& d, const openrouter::provider_error_info& e)
{
    if (!e.message.empty())
        d.message = e.message;
    d.code = e.code;
    d.error_type = e.error_type;
    d.raw = e.raw;
    if (!e.provider.empty())
        d.provider = e.provider;
    note_rate_limit(d, e.rate_limit, e.rate_remaining, e.rate_reset, e.message, e.limit_source);
}

// The key never leaves in what a provider sent back: an error may echo the request's headers.
void scrub(const openrouter::key_scrubber& k, diagnostics& d)
{
    if (!k)
        return;
    for (auto* text : {&d.message, &d.code, &d.error_type, &d.raw, &d.provider, &d.generation_id})
        k.scrub(*text);
}

void scrub(const openrouter::key_scrubber& k, chat_response& r)
{
    if (!k)
        return;
    for (auto* text : {&r.id, &r.model, &r.provider, &r.content, &r.reasoning, &r.refusal})
        k.scrub(*text);
    for (auto& t : r.tool_calls) {
        k.scrub(t.id);
        k.scrub(t.name);
        k.scrub(t.arguments);
    }
}

// What the other endpoints return is provider text too.
template <class T>
void scrub(const openrouter::key_scrubber&, T&)
{
}

void scrub(const openrouter::key_scrubber& k, generation_info& g)
{
    for (auto* text : {&g.id, &g.model, &g.provider, &g.finish_reason, &g.created_at})
        k.scrub(*text);
}

void scrub(const openrouter::key_scrubber& k, key_info& i)
{
    k.scrub(i.label);
}

void scrub(const openrouter::key_scrubber& k, std::vector<model_info>& rows)
{
    for (auto& m : rows)
        for (auto* text : {&m.id, &m.name, &m.canonical_slug, &m.alias_target})
            k.scrub(*text);
}

// Retry-After: delay-seconds or an HTTP-date (RFC 9110 10.2.3).
std::optional<std::chrono::milliseconds> parse_retry_after(std::string_view v)
{
    if (v.empty())
        return std::nullopt;
    // A server's number is capped at two days: beyond it, the arithmetic of a deadline would
    // overflow, and no rate limit is that long.
    constexpr long long longest_s = 2 * 86'400;
    if (std::all_of(v.begin(), v.end(), [](char c) { return c >= '0' && c <= '9'; }))
        return std::chrono::seconds(
            v.size() > 7 ? longest_s
                         : std::min(std::strtoll(std::string(v).c_str(), nullptr, 10), longest_s));
    std::tm tm{};
    const std::string text(v);
    if (strptime(text.c_str(), "%a, %d %b %Y %H:%M:%S GMT", &tm) == nullptr)
        return std::nullopt;
    const auto when = std::chrono::system_clock::from_time_t(timegm(&tm));
    const auto wait = std::chrono::duration_cast<std::chrono::milliseconds>(
        when - std::chrono::system_clock::now());
    return std::clamp(
        wait, std::chrono::milliseconds(0),
        std::chrono::milliseconds(std::chrono::seconds(longest_s)));
}

} // namespace

std::string diagnostics::to_string() const
{
    std::string s = message.empty() ? std::string("no details") : message;
    if (http_status != 0) {
        s += " (HTTP " + std::to_string(http_status) +
             (code.empty() || code == std::to_string(http_status) ? "" : ", code " + code) + ")";
    } else if (!code.empty()) {
        s += " (code " + code + ")";
    }
    if (!error_type.empty())
        s += " [" + error_type + "]";
    if (!raw.empty() && raw != message)
        s += ": " + raw;
    if (!provider.empty())
        s += " provider=" + provider;
    if (!generation_id.empty())
        s += " generation=" + generation_id;
    return s;
}

// ---------------------------------------------------------------------------------------------

struct chat_client::impl : std::enable_shared_from_this<impl> {
    impl(asio::any_io_executor ex, client_params p)
        : executor(std::move(ex)), params(std::move(p)),
          pool(executor, {params.max_connections, params.idle_timeout}), rng(std::random_device{}())
    {
        if (params.base_url.empty())
            params.base_url = env("OPENROUTER_BASE_URL");
        if (params.base_url.empty())
            params.base_url = "https://openrouter.ai/api/v1";
        if (params.api_key.empty())
            params.api_key = env("OPENROUTER_API_KEY");
        configure();
    }

    void configure()
    {
        auto target = http::parse_url(params.base_url);
        if (!target) {
            config_error = error::bad_url;
            config_detail =
                "base URL \"" + params.base_url + "\" is not an http:// or https:// URL";
            return;
        }
        if (!target->tls && !params.allow_insecure_http && !http::is_loopback_host(target->host)) {
            config_error = error::insecure_url;
            config_detail =
                "refusing plain http:// to " + target->host +
                ": the API key would cross the network unencrypted (allow_insecure_http)";
            return;
        }
        if (params.api_key.empty()) {
            config_error = error::missing_api_key;
            config_detail = "no API key: set OPENROUTER_API_KEY or client_params::api_key";
            return;
        }
        route.target = *target;
        base_path = target->path;
        std::string proxy = params.https_proxy;
        if (proxy.empty() && params.proxy_from_environment && target->tls) {
            proxy = env("HTTPS_PROXY");
            if (proxy.empty())
                proxy = env("https_proxy");
            std::string no_proxy = env("NO_PROXY");
            if (no_proxy.empty())
                no_proxy = env("no_proxy");
            if (http::no_proxy_matches(no_proxy, target->host))
                proxy.clear();
        }
        if (!proxy.empty() && target->tls) {
            if (proxy.find("://") == std::string::npos)
                proxy = "http://" + proxy;
            auto p = http::parse_url(proxy);
            if (!p || p->tls) {
                config_error = error::bad_url;
                config_detail = "proxy \"" + http::parse_url(proxy).value_or(http::url{}).host +
                                "\" is not an http://host:port URL";
                return;
            }
            route.proxy = *p;
        }
        if (target->tls) {
            error_code ec;
            tls = http::make_tls_context(params.ca_file, params.verify_peer, ec);
            if (!tls) {
                config_error = ec;
                config_detail =
                    "cannot set up TLS" +
                    (params.ca_file.empty() ? std::string() : " with CA file " + params.ca_file) +
                    ": " + ec.message();
                return;
            }
        }
        key = route.key();
        scrubber = openrouter::key_scrubber(params.api_key);
        // Everything but the request line and the body is the same for every request.
        fixed_headers =
            "Host: " +
            (route.target.port == (route.target.tls ? 443 : 80) ? route.target.host
                                                                : route.target.authority()) +
            "\r\nAuthorization: Bearer " + params.api_key + "\r\nUser-Agent: " + params.user_agent +
            "\r\n";
        if (!params.http_referer.empty())
            fixed_headers += "HTTP-Referer: " + params.http_referer + "\r\n";
        if (!params.app_title.empty())
            fixed_headers += "X-OpenRouter-Title: " + params.app_title + "\r\n";
    }

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

namespace {

using client_impl = chat_client::impl;

// What one attempt learned, for the retry decision.
struct attempt_state {
    bool request_sent = false;     // every byte of the request was written
    bool response_started = false; // a status line arrived
    std::optional<std::chrono::milliseconds> retry_after;
};

// A checked-out connection and the parser of its response.
// Beast's parsers cannot be moved, so the exchange holds its parser on the heap: a stream takes
// it over when the exchange succeeds.
template <class Body>
struct exchange {
    std::shared_ptr<http::connection> conn;
    std::unique_ptr<bhttp::response_parser<Body>> parser =
        std::make_unique<bhttp::response_parser<Body>>();
    bool reused = false;
};

// Decoding is synchronous, so one decoder and one chunk per thread serve every response and
// stream on it; a stream keeps only its own state (a thousand open streams share them).
struct decode_scratch {
    openrouter::chat_decoder decoder;
    openrouter::chat_chunk chunk;
};

decode_scratch& scratch()
{
    thread_local decode_scratch s;
    return s;
}

std::string body_limit_message(std::uint64_t limit)
{
    return "the response body is larger than max_body_size (" + std::to_string(limit) + " bytes)";
}

// Sends `method path` with `body` and reads the response head into `x`. The connection stays
// checked out on success; on failure it has been given back (closed).
template <class Body>
asio::awaitable<error_code> start_exchange(
    std::shared_ptr<client_impl> c,
    std::string method,
    std::string path,
    const std::string* body,
    std::string_view accept,
    steady_clock::time_point total,
    exchange<Body>& x,
    attempt_state& st,
    diagnostics& diag)
{
    const auto& t = c->params.timeouts;
    for (int stale = 0;; ++stale) {
        http::pool::lease lease;
        const std::function<std::shared_ptr<http::connection>()> make = [&c] {
            return c->make_connection();
        };
        if (auto ec = co_await c->pool.acquire(c->key, total, make, lease)) {
            diag.message = ec == error::timeout ? "no connection became free before the deadline"
                                                : ec.message();
            co_return ec;
        }
        x.conn = std::move(lease.conn);
        x.reused = lease.reused;
        if (!x.reused) {
            std::string detail;
            const auto ec =
                co_await x.conn->establish(c->route, {t.connect, t.tls_handshake, total}, detail);
            if (ec) {
                diag.message = x.conn->timed_out() ? std::string("timed out: ") + x.conn->phase() +
                                                         " to " + c->route.target.authority()
                                                   : detail;
                c->pool.release(c->key, std::move(x.conn), false);
                co_return ec;
            }
        }
        ++x.conn->requests;

        std::string head = method;
        head += ' ';
        head += c->base_path;
        head += path;
        head += " HTTP/1.1\r\n";
        head += c->fixed_headers;
        head += "Accept: ";
        head += accept;
        head += "\r\n";
        if (body != nullptr) {
            head += "Content-Type: application/json\r\nContent-Length: " +
                    std::to_string(body->size()) + "\r\n\r\n";
            head += *body;
        } else {
            head += "\r\n";
        }
        x.conn->arm(
            std::min(steady_clock::now() + t.first_byte, total), "waiting for the response");
        auto [wec, wn] = co_await asio::async_write(*x.conn, asio::buffer(head), tuple_awaitable);
        if (wec) {
            const bool timed_out = x.conn->timed_out();
            c->pool.release(c->key, std::move(x.conn), false);
            // A pooled connection the server had closed: no request byte reached a live server,
            // so a fresh connection is safe (and not a retry).
            if (lease.reused && !timed_out && stale < 3)
                continue;
            diag.message = timed_out ? "timed out writing the request"
                                     : "writing the request failed: " + wec.message();
            co_return timed_out ? error_code(error::timeout) : wec;
        }
        st.request_sent = true;
        diag.request_sent = true;

        x.conn->buffer.reserve(head_reserve);
        x.parser->header_limit(c->params.limits.max_header_size);
        // Set before the head is read, so a Content-Length beyond it fails at once. A stream
        // has no overall limit (its lines and events have theirs); Beast's default is 8 MB.
        if constexpr (std::is_same_v<Body, bhttp::string_body>)
            x.parser->body_limit(c->params.limits.max_body_size);
        else
            x.parser->body_limit(boost::none);
        auto [rec, rn] =
            co_await bhttp::async_read_header(*x.conn, x.conn->buffer, *x.parser, tuple_awaitable);
        if (rec) {
            const bool timed_out = x.conn->timed_out();
            if (timed_out) {
                diag.message = "no response within the first-byte deadline";
            } else if (rec == bhttp::error::body_limit) {
                diag.message = body_limit_message(c->params.limits.max_body_size);
            } else if (rec == bhttp::error::header_limit) {
                diag.message = "the response headers are larger than max_header_size (" +
                               std::to_string(c->params.limits.max_header_size) + " bytes)";
            } else {
                diag.message = "reading the response head failed: " + rec.message();
            }
            c->pool.release(c->key, std::move(x.conn), false);
            co_return timed_out ? error_code(error::timeout) : rec;
        }
        st.response_started = true;
        const auto& h = x.parser->get();
        diag.http_status = static_cast<int>(h.result_int());
        if (const auto id = h["X-Generation-Id"]; !id.empty())
            diag.generation_id = std::string(id);
        st.retry_after = parse_retry_after(h[bhttp::field::retry_after]);
        diag.retry_after = st.retry_after;
        if (const auto limit = h["X-RateLimit-Limit"]; !limit.empty())
            note_rate_limit(
                diag, limit, h["X-RateLimit-Remaining"], h["X-RateLimit-Reset"], {}, {});
        co_return error_code{};
    }
}

// Reads the rest of a whole body, extending the stall deadline after every read (OpenRouter's
// keep-alive whitespace counts as progress; the total deadline still bounds it), then gives the
// connection back, reusable if the message ended cleanly and keeps the connection alive.
asio::awaitable<error_code> finish_whole(
    std::shared_ptr<client_impl> c,
    exchange<bhttp::string_body>& x,
    steady_clock::time_point total,
    diagnostics& diag)
{
    const auto stall = c->params.timeouts.stall;
    while (!x.parser->is_done()) {
        x.conn->arm(std::min(steady_clock::now() + stall, total), "reading the response body");
        x.conn->buffer.reserve(x.conn->buffer.size() + read_reserve);
        auto [ec, n] =
            co_await bhttp::async_read_some(*x.conn, x.conn->buffer, *x.parser, tuple_awaitable);
        if (ec) {
            const bool timed_out = x.conn->timed_out();
            if (timed_out) {
                diag.message = steady_clock::now() >= total
                                   ? "the whole-request deadline passed while reading the body"
                                   : "the response body stalled";
            } else if (ec == bhttp::error::body_limit) {
                diag.message = body_limit_message(c->params.limits.max_body_size);
            } else {
                diag.message = "reading the response body failed: " + ec.message();
            }
            c->pool.release(c->key, std::move(x.conn), false);
            co_return timed_out ? error_code(error::timeout) : ec;
        }
    }
    // Reusable only after a clean end: nothing left over that the next response would inherit.
    const bool clean = x.parser->get().keep_alive() && x.conn->buffer.size() == 0;
    c->pool.release(c->key, std::move(x.conn), clean);
    co_return error_code{};
}

// Maps a complete non-success response (or a 200 whose body is an error) to an error code.
error_code response_error(int status, std::string_view body, diagnostics& diag)
{
    openrouter::provider_error_info e;
    if (openrouter::decode_error_body(body, e))
        fill(diag, e);
    else if (diag.message.empty())
        diag.message = body.empty() ? "HTTP " + std::to_string(status) : snippet(body);
    if (status == 200) {
        // An error after the status went out: its code, if numeric, is the status it stands for.
        int code = 0;
        std::from_chars(e.code.data(), e.code.data() + e.code.size(), code);
        return code >= 400 ? error_for_status(code, e) : error_code(error::provider_error);
    }
    return error_for_status(status, e);
}

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
    bool retry_rate_limited = true)
{
    if (ec == error::rate_limited && !retry_rate_limited)
        return std::nullopt;
    const bool complete_response = st.response_started && diag.http_status >= 400;
    const bool before_sent = !st.request_sent;
    const bool sent_no_reply =
        st.request_sent && !st.response_started && c.params.retry.after_request_sent;
    if (!is_retryable(ec) || !(complete_response || before_sent || sent_no_reply) ||
        attempt >= c.params.retry.max_attempts)
        return std::nullopt;
    auto delay = c.backoff(attempt);
    if (st.retry_after)
        delay = std::max(delay, *st.retry_after);
    if (steady_clock::now() + delay >= total)
        return std::nullopt;
    return delay;
}

// One GET or POST whose whole body is wanted, with retries.
asio::awaitable<std::tuple<error_code, std::string>> request_whole(
    std::shared_ptr<client_impl> c,
    std::string method,
    std::string path,
    std::string body,
    diagnostics& diag,
    const detail::generation_hook* on_generation = nullptr,
    bool retry_rate_limited = true)
{
    const auto start = steady_clock::now();
    const auto total = start + c->params.timeouts.total;
    error_code last;
    diag.request_sent = false;
    for (int attempt = 1;; ++attempt) {
        const bool sent_before = diag.request_sent; // by an earlier attempt
        diag = {};
        diag.request_sent = sent_before;
        diag.attempts = attempt;
        attempt_state st;
        exchange<bhttp::string_body> x;
        error_code ec = co_await start_exchange(
            c, method, path, method == "POST" ? &body : nullptr, "application/json", total, x, st,
            diag);
        std::string text;
        if (!ec && on_generation != nullptr && *on_generation && !diag.generation_id.empty()) {
            c->scrubber.scrub(diag.generation_id);
            (*on_generation)(diag.generation_id); // known long before the body ends
        }
        if (!ec) {
            ec = co_await finish_whole(c, x, total, diag);
            if (!ec) {
                text = std::move(x.parser->get().body());
                const int status = diag.http_status;
                if (status >= 200 && status < 300)
                    co_return std::tuple{error_code{}, std::move(text)};
                ec = response_error(status, text, diag);
            }
        }
        last = ec;
        const auto delay = retry_delay(*c, ec, st, diag, attempt, total, retry_rate_limited);
        if (!delay)
            co_return std::tuple{last, std::move(text)};
        asio::steady_timer timer(c->executor);
        timer.expires_after(*delay);
        auto [tec] = co_await timer.async_wait(tuple_awaitable);
        if (tec)
            co_return std::tuple{tec, std::string()};
    }
}

// An operation's handler and the result it will be given. The result is moved into place
// once and handed over once: passed along Asio's completion chain instead (co_spawn's
// completion, dispatch, append, the type-erased handler, as_tuple) a chat_response was moved
// about 175 times per request, a fifth of the client's instructions.
template <class T>
struct launched {
    explicit launched(asio::any_completion_handler<void(error_code, T)> h) : handler(std::move(h))
    {
    }
    asio::any_completion_handler<void(error_code, T)> handler;
    error_code ec;
    T value{};
};

template <class T>
asio::awaitable<void>
deliver_into(std::shared_ptr<launched<T>> st, asio::awaitable<std::tuple<error_code, T>> op)
{
    // Cancellation must end the operation with an error code, never an exception: a request
    // whose write completed just before it was cancelled must still report `request_sent`
    // (it may be billed), which an exception thrown at the next co_await would lose.
    co_await asio::this_coro::throw_if_cancelled(false);
    auto [ec, value] = co_await std::move(op);
    st->ec = ec;
    st->value = std::move(value);
}

// Runs `op` as a coroutine bound to the handler's cancellation slot, and completes the handler
// through its associated executor with (error_code, value).
template <class T, class Op>
void launch(
    const std::shared_ptr<client_impl>& c,
    Op op,
    asio::any_completion_handler<void(error_code, T)> handler)
{
    auto slot = asio::get_associated_cancellation_slot(handler);
    auto ex = c->executor;
    auto st = std::make_shared<launched<T>>(std::move(handler));
    asio::co_spawn(
        ex, deliver_into(st, std::move(op)),
        asio::bind_cancellation_slot(slot, [ex, st](const std::exception_ptr& ep) {
            if (ep) {
                // Only bad_alloc and bugs throw in here; report rather than terminate.
                st->ec = asio::error::no_memory;
                st->value = T{};
            }
            const auto hex = asio::get_associated_executor(st->handler, ex);
            asio::dispatch(hex, [st] { std::move(st->handler)(st->ec, std::move(st->value)); });
        }));
}

asio::awaitable<std::tuple<error_code, chat_response>> chat_op(
    std::shared_ptr<client_impl> c,
    std::string body,
    bool invalid,
    diagnostics* out,
    detail::generation_hook on_generation = {},
    bool retry_rate_limited = true)
{
    diagnostics diag;
    chat_response response;
    error_code ec = c->config_error;
    if (ec) {
        diag.message = c->config_detail;
    } else {
        if (invalid) {
            ec = error::bad_request_body;
            diag.message = std::move(body); // what encode found wrong
        } else {
            auto [rec, text] = co_await request_whole(
                c, "POST", "/chat/completions", std::move(body), diag, &on_generation,
                retry_rate_limited);
            ec = rec;
            if (!ec) {
                auto& [decoder, chunk] = scratch();
                if (decoder.decode(text, chunk)) {
                    ec = error::protocol_error;
                    diag.message = "the response is not a chat completion: " + snippet(text);
                } else if (chunk.error.present) {
                    ec = response_error(200, text, diag);
                } else if (chunk.finish_reason == "error" || chunk.choice_error.present) {
                    ec = error::provider_error;
                    fill(diag, chunk.choice_error);
                    if (diag.message.empty()) {
                        diag.message =
                            "the provider ended the answer with finish_reason \"error\" (" +
                            chunk.native_finish_reason + ")";
                    }
                } else if (!chunk.has_choice) {
                    ec = error::protocol_error;
                    diag.message = "the response has no choices: " + snippet(text);
                }
                response.id = std::move(chunk.id);
                response.model = std::move(chunk.model);
                response.provider = std::move(chunk.provider);
                response.created = chunk.created;
                response.content = std::move(chunk.content);
                response.reasoning = std::move(chunk.reasoning);
                response.refusal = std::move(chunk.refusal);
                for (auto& t : chunk.tool_calls)
                    response.tool_calls.push_back(
                        {std::move(t.id), "function", std::move(t.name), std::move(t.arguments)});
                response.finish_reason = std::move(chunk.finish_reason);
                response.native_finish_reason = std::move(chunk.native_finish_reason);
                response.usage = chunk.usage;
                if (diag.generation_id.empty())
                    diag.generation_id = response.id;
                if (diag.provider.empty())
                    diag.provider = response.provider;
            }
        }
    }
    scrub(c->scrubber, diag);
    scrub(c->scrubber, response);
    if (out != nullptr)
        *out = std::move(diag);
    co_return std::tuple{ec, std::move(response)};
}

template <class T, class Decode>
asio::awaitable<std::tuple<error_code, T>>
get_op(std::shared_ptr<client_impl> c, std::string path, Decode decode, diagnostics* out)
{
    diagnostics diag;
    T value{};
    error_code ec = c->config_error;
    if (ec) {
        diag.message = c->config_detail;
    } else {
        auto [rec, text] = co_await request_whole(c, "GET", std::move(path), std::string(), diag);
        ec = rec;
        if (!ec && decode(text, value)) {
            ec = error::protocol_error;
            diag.message = "unexpected response: " + snippet(text);
        }
    }
    scrub(c->scrubber, diag);
    if (c->scrubber)
        scrub(c->scrubber, value);
    if (out != nullptr)
        *out = std::move(diag);
    co_return std::tuple{ec, std::move(value)};
}

} // namespace

chat_client::chat_client(executor_type executor, client_params params)
    : impl_(std::make_shared<impl>(std::move(executor), std::move(params)))
{
}
chat_client::~chat_client() = default;
chat_client::chat_client(chat_client&&) noexcept = default;
chat_client& chat_client::operator=(chat_client&&) noexcept = default;

chat_client::executor_type chat_client::get_executor() const noexcept
{
    return impl_->executor;
}
const client_params& chat_client::params() const noexcept
{
    return impl_->params;
}
std::size_t chat_client::open_connections() const noexcept
{
    return impl_->pool.open();
}
std::size_t chat_client::idle_connections() const noexcept
{
    return impl_->pool.idle();
}

asio::awaitable<std::tuple<error_code, chat_response>> detail::client_access::chat(
    chat_client& client, chat_request request, diagnostics* diag, bool retry_rate_limited)
{
    auto e = chat_client::encode(request);
    return chat_op(client.impl_, std::move(e.body), e.invalid, diag, {}, retry_rate_limited);
}

void detail::client_access::async_chat_impl(
    chat_client& client,
    const chat_request& request,
    diagnostics* diag,
    generation_hook on_generation,
    asio::any_completion_handler<void(error_code, chat_response)> handler)
{
    auto e = chat_client::encode(request);
    launch<chat_response>(
        client.impl_,
        chat_op(client.impl_, std::move(e.body), e.invalid, diag, std::move(on_generation)),
        std::move(handler));
}

chat_client::encoded_request chat_client::encode(const chat_request& req)
{
    encoded_request out;
    std::string problem;
    out.invalid =
        static_cast<bool>(openrouter::encode_chat_request(req, false, out.body, &problem));
    if (out.invalid)
        out.body = std::move(problem);
    return out;
}

void chat_client::async_chat_impl(
    encoded_request req,
    diagnostics* diag,
    asio::any_completion_handler<void(error_code, chat_response)> handler)
{
    launch<chat_response>(
        impl_, chat_op(impl_, std::move(req.body), req.invalid, diag), std::move(handler));
}

void chat_client::async_models_impl(
    diagnostics* diag,
    asio::any_completion_handler<void(error_code, std::vector<model_info>)> handler)
{
    launch<std::vector<model_info>>(
        impl_, get_op<std::vector<model_info>>(impl_, "/models", openrouter::decode_models, diag),
        std::move(handler));
}

void chat_client::async_generation_impl(
    const std::string& id,
    diagnostics* diag,
    asio::any_completion_handler<void(error_code, generation_info)> handler)
{
    std::string path = "/generation?id=";
    for (const char ch : id) {
        // Generation ids are alphanumeric with dashes; anything else is percent-encoded.
        const auto u = static_cast<unsigned char>(ch);
        if (std::isalnum(u) != 0 || ch == '-' || ch == '_' || ch == '.' || ch == '~') {
            path += ch;
        } else {
            char buf[4];
            std::snprintf(buf, sizeof buf, "%%%02X", u);
            path += buf;
        }
    }
    launch<generation_info>(
        impl_, get_op<generation_info>(impl_, std::move(path), openrouter::decode_generation, diag),
        std::move(handler));
}

void chat_client::async_key_info_impl(
    diagnostics* diag, asio::any_completion_handler<void(error_code, key_info)> handler)
{
    launch<key_info>(
        impl_, get_op<key_info>(impl_, "/key", openrouter::decode_key_info, diag),
        std::move(handler));
}

// Streams --------------------------------------------------------------------------------------

void ingest(chat_stream::state& s, std::string_view bytes);

namespace {

// A Beast Body whose reader hands the response body, straight out of the connection's read
// buffer, to the stream's SSE parser and decoder: no copy into a body buffer of its own.
struct sse_body {
    struct value_type {
        chat_stream::state* stream = nullptr;
    };

    class reader {
    public:
        // Beast builds the reader with the parser, before the stream is known: keep the body.
        template <bool IsRequest, class Fields>
        reader(bhttp::header<IsRequest, Fields>& /*header*/, value_type& body) : body_(body)
        {
        }
        void init(const boost::optional<std::uint64_t>& /*length*/, error_code& ec) { ec = {}; }
        template <class ConstBufferSequence>
        std::size_t put(const ConstBufferSequence& buffers, error_code& ec)
        {
            ec = {};
            std::size_t n = 0;
            for (const auto b : beast::buffers_range_ref(buffers)) {
                ingest(*body_.stream, {static_cast<const char*>(b.data()), b.size()});
                n += b.size();
            }
            return n;
        }
        void finish(error_code& ec) { ec = {}; }

    private:
        value_type& body_;
    };
};

} // namespace

struct chat_stream::state : std::enable_shared_from_this<state> {
    std::shared_ptr<client_impl> client;
    std::shared_ptr<http::connection> conn;
    std::unique_ptr<bhttp::response_parser<sse_body>> parser;
    sse_parser sse;
    // Decoded and not yet handed out: a read takes everything that arrived since the previous
    // one, so a stream that outpaces its reader costs one completion per batch, not per event.
    chat_delta pending;
    chat_response response;
    std::string model_seen, provider_seen; // as the provider wrote them, before scrubbing
    frugal::diagnostics diag;
    error_code error; // the stream failed (handed out once the pending deltas are)
    steady_clock::time_point total{};
    std::size_t read_size = min_stream_read; // room given to the next read; adapts to the pace
    bool started = false;
    bool keep_alive = false; // the response allows the connection to be reused
    bool done_seen = false;  // data: [DONE] was read
    bool done = false;       // the caller was told
    bool reading = false;

    ~state() { abandon(); }

    // Gives the connection back: reusable only after a clean end of the HTTP message.
    void release(bool reusable)
    {
        if (conn)
            client->pool.release(client->key, std::move(conn), reusable);
    }
    void abandon()
    {
        if (conn) {
            conn->close();
            release(false);
        }
    }
    void fail(error_code ec)
    {
        if (!error)
            error = ec;
        abandon();
    }

    // Body bytes, straight from the connection's read buffer: every event they complete is
    // decoded now (the bytes do not outlive this call) and joined into `pending`.
    void ingest(std::string_view bytes)
    {
        if (error || done_seen)
            return; // after [DONE] only the end of the chunked body may follow
        sse.feed(bytes);
        auto& [decoder, chunk] = scratch();
        while (auto event = sse.next()) {
            if (event->data == "[DONE]") {
                done_seen = true;
                break;
            }
            if (decoder.decode(event->data, chunk)) {
                diag.message = "a stream event is not JSON: " + snippet(event->data);
                error = error::protocol_error;
                break;
            }
            // What the router writes to the ledger before the stream ends: scrubbed as it
            // arrives (rarely: a stream repeats the same values).
            const auto& k = client->scrubber;
            if (response.id.empty() && !chunk.id.empty()) {
                response.id = chunk.id;
                k.scrub(response.id);
                response.created = chunk.created;
                diag.generation_id = response.id;
            }
            if (!chunk.model.empty() && chunk.model != model_seen) {
                model_seen = chunk.model;
                response.model = chunk.model;
                k.scrub(response.model);
            }
            if (!chunk.provider.empty() && chunk.provider != provider_seen) {
                provider_seen = chunk.provider;
                response.provider = diag.provider = chunk.provider;
                k.scrub(response.provider);
                k.scrub(diag.provider);
            }
            if (chunk.error.present || chunk.finish_reason == "error") {
                // OpenRouter reports a failure after the 200 in the stream itself.
                fill(diag, chunk.error.present ? chunk.error : chunk.choice_error);
                scrub(client->scrubber, diag);
                if (diag.message.empty()) {
                    diag.message = "the provider ended the stream with finish_reason \"error\"" +
                                   (chunk.native_finish_reason.empty()
                                        ? std::string()
                                        : " (" + chunk.native_finish_reason + ")");
                }
                response.finish_reason = "error";
                response.native_finish_reason = chunk.native_finish_reason;
                error = error::midstream_error;
                break;
            }
            // The usage chunk may repeat the finish choice: the finish reason is set, not counted.
            if (!chunk.finish_reason.empty())
                response.finish_reason = chunk.finish_reason;
            if (!chunk.native_finish_reason.empty())
                response.native_finish_reason = chunk.native_finish_reason;
            if (chunk.usage)
                response.usage = chunk.usage;
            response.content += chunk.content;
            response.reasoning += chunk.reasoning;
            response.refusal += chunk.refusal;
            for (const auto& t : chunk.tool_calls) {
                if (response.tool_calls.size() <= t.index)
                    response.tool_calls.resize(t.index + 1);
                auto& call = response.tool_calls[t.index];
                if (!t.id.empty())
                    call.id = t.id;
                if (!t.name.empty())
                    call.name = t.name;
                call.arguments += t.arguments;
            }
            if (!chunk.content.empty() || !chunk.reasoning.empty() || !chunk.tool_calls.empty()) {
                pending.content += chunk.content;
                pending.reasoning += chunk.reasoning;
                for (auto& t : chunk.tool_calls) {
                    auto& list = pending.tool_calls;
                    if (!list.empty() && list.back().index == t.index && t.id.empty() &&
                        t.name.empty())
                        list.back().arguments += t.arguments;
                    else
                        list.push_back(std::move(t));
                }
                ++pending.events;
            }
        }
        if (!error && sse.error()) {
            diag.message = sse.error() == frugal::error::sse_line_too_long
                               ? "a stream line is longer than max_sse_line_size"
                               : "a stream event is larger than max_sse_event_size";
            error = sse.error();
        }
    }

    // What the next read can complete with without reading: pending text, the end, or the
    // failure (after the text decoded before it).
    bool ready() const { return pending.events != 0 || done_seen || error; }

    error_code take(chat_delta& out)
    {
        const auto& k = client->scrubber;
        if (pending.events != 0) {
            out = std::move(pending);
            pending = chat_delta{};
            if (k) {
                // A key cut across two events is out of reach here; whole, it is not.
                k.scrub(out.content);
                k.scrub(out.reasoning);
                for (auto& t : out.tool_calls) {
                    k.scrub(t.id);
                    k.scrub(t.name);
                    k.scrub(t.arguments);
                }
            }
            return {};
        }
        done = true;
        scrub(k, diag);
        scrub(k, response);
        if (error) {
            abandon();
            return error;
        }
        return {}; // [DONE]: an empty delta, and done() is now true
    }
};

void ingest(chat_stream::state& s, std::string_view bytes)
{
    s.ingest(bytes);
}

namespace {

// After [DONE], reads the rest of the HTTP message (the chunked body's end) in the background,
// so the connection can go back to the pool; the caller already has its answer.
void drain(const std::shared_ptr<chat_stream::state>& s)
{
    if (!s->conn)
        return;
    if (s->parser->is_done()) {
        s->release(s->keep_alive && s->conn->buffer.size() == 0);
        return;
    }
    s->conn->arm(
        std::min(steady_clock::now() + s->client->params.timeouts.stall, s->total), "stream end");
    // The read keeps its connection alive even if the stream gives it up meanwhile.
    auto conn = s->conn;
    bhttp::async_read_some(*conn, conn->buffer, *s->parser, [s, conn](error_code ec, std::size_t) {
        if (!s->conn)
            return;
        if (ec)
            return s->abandon();
        drain(s);
    });
}

// One async_read_delta that has to wait for the network: reads until the body yields a delta,
// the end or a failure. A hand-written composed operation: a stream delivers hundreds of deltas.
struct read_delta_op {
    std::shared_ptr<chat_stream::state> s;
    // The connection being read: kept alive here even if the stream abandons it meanwhile.
    std::shared_ptr<http::connection> conn;
    bool reading = false;

    template <class Self>
    void operator()(Self& self, error_code ec = {}, std::size_t n = 0)
    {
        if (reading) {
            reading = false;
            // A read that filled its room asks for more next time; one that used a quarter, less.
            if (n >= s->read_size)
                s->read_size = std::min(s->read_size * 2, max_stream_read);
            else if (n < s->read_size / 4)
                s->read_size = std::max(s->read_size / 2, min_stream_read);
            if (ec) {
                const bool timed_out = conn && conn->timed_out();
                if (ec == asio::error::operation_aborted && !timed_out) {
                    s->fail(ec);
                } else if (timed_out) {
                    s->diag.message = steady_clock::now() >= s->total
                                          ? "the whole-request deadline passed mid-stream"
                                          : "the stream stalled";
                    s->fail(error::timeout);
                } else {
                    s->diag.message = "the connection ended mid-stream: " + ec.message();
                    s->fail(error::stream_truncated);
                }
            } else if (!s->ready() && s->parser->is_done()) {
                s->diag.message = "the response body ended without [DONE]";
                s->fail(error::stream_truncated);
            }
        }
        if (!s->ready()) {
            reading = true;
            conn = s->conn;
            conn->buffer.reserve(conn->buffer.size() + s->read_size);
            conn->arm(
                std::min(steady_clock::now() + s->client->params.timeouts.stall, s->total),
                "stream");
            auto& c = *conn;
            return bhttp::async_read_some(c, c.buffer, *s->parser, std::move(self));
        }
        if (s->conn) {
            s->conn->disarm(); // between reads the caller sets the pace
            if (s->conn->buffer.size() == 0)
                s->conn->buffer.shrink_to_fit();
        }
        chat_delta delta;
        const error_code result = s->take(delta);
        s->reading = false;
        if (s->done && !result)
            drain(s);
        self.complete(result, std::move(delta));
    }
};

// The handler of a read, as Beast's composed operations need it: they post intermediate steps
// to the handler's executor with blocking.never, which the type-erased any_completion_executor
// of Asio 1.26 cannot take. So the operation runs on the client's executor, and the final
// completion goes to the caller's handler through its own associated executor.
struct delta_completion {
    asio::any_completion_handler<void(error_code, chat_delta)> handler;
    asio::any_io_executor executor;

    using executor_type = asio::any_io_executor;
    executor_type get_executor() const noexcept { return executor; }
    using cancellation_slot_type = asio::cancellation_slot;
    cancellation_slot_type get_cancellation_slot() const noexcept
    {
        return asio::get_associated_cancellation_slot(handler);
    }

    void operator()(error_code ec, chat_delta delta)
    {
        asio::dispatch(executor, asio::append(std::move(handler), ec, std::move(delta)));
    }
};

asio::awaitable<std::tuple<error_code, bool>> start_stream_op(
    std::shared_ptr<client_impl> c,
    chat_request req,
    std::shared_ptr<chat_stream::state> s,
    bool retry_rate_limited)
{
    co_await asio::this_coro::throw_if_cancelled(false); // as deliver_into: errors, not throws
    diagnostics& diag = s->diag;
    if (c->config_error) {
        diag.message = c->config_detail;
        s->fail(c->config_error);
        s->done = true;
        co_return std::tuple{s->error, false};
    }
    std::string body;
    if (auto ec = openrouter::encode_chat_request(req, true, body, &diag.message)) {
        s->fail(ec);
        s->done = true;
        co_return std::tuple{ec, false};
    }
    s->total = steady_clock::now() + c->params.timeouts.total;
    diag.request_sent = false;
    for (int attempt = 1;; ++attempt) {
        const bool sent_before = diag.request_sent; // by an earlier attempt
        diag = {};
        diag.request_sent = sent_before;
        diag.attempts = attempt;
        attempt_state st;
        exchange<sse_body> x;
        x.parser->get().body().stream = s.get(); // the body reader feeds this stream
        error_code ec = co_await start_exchange(
            c, "POST", "/chat/completions", &body, "text/event-stream", s->total, x, st, diag);
        if (!ec) {
            const std::string content_type(x.parser->get()[bhttp::field::content_type]);
            if (diag.http_status == 200 && content_type.starts_with("text/event-stream")) {
                x.conn->disarm(); // between reads the caller sets the pace
                if (x.conn->buffer.size() == 0)
                    x.conn->buffer.shrink_to_fit();
                s->conn = std::move(x.conn);
                s->parser = std::move(x.parser);
                // The head has told what it had to; a long-lived stream need not keep its fields.
                s->keep_alive = s->parser->get().keep_alive();
                s->parser->get().clear();
                s->started = true;
                co_return std::tuple{error_code{}, true};
            }
            // An error answer (or a 200 that is not a stream): read it whole, then map it.
            exchange<bhttp::string_body> whole{
                std::move(x.conn),
                std::make_unique<bhttp::response_parser<bhttp::string_body>>(std::move(*x.parser)),
                x.reused};
            whole.parser->body_limit(c->params.limits.max_body_size);
            ec = co_await finish_whole(c, whole, s->total, diag);
            if (!ec)
                ec = response_error(diag.http_status, whole.parser->get().body(), diag);
            if (!ec) {
                ec = error::protocol_error;
                diag.message = "expected an event stream, got " + content_type;
            }
        }
        const auto delay =
            retry_delay(*c, ec, st, diag, attempt, s->total, retry_rate_limited);
        if (!delay) {
            scrub(c->scrubber, diag);
            s->fail(ec);
            s->done = true;
            co_return std::tuple{ec, false};
        }
        asio::steady_timer timer(c->executor);
        timer.expires_after(*delay);
        auto [tec] = co_await timer.async_wait(tuple_awaitable);
        if (tec) {
            s->fail(tec);
            s->done = true;
            co_return std::tuple{tec, false};
        }
    }
}

} // namespace

void chat_client::async_start_stream_impl(
    chat_request req,
    chat_stream* stream,
    asio::any_completion_handler<void(error_code)> handler,
    bool retry_rate_limited)
{
    auto s = std::make_shared<chat_stream::state>();
    s->client = impl_;
    s->sse = sse_parser(
        {impl_->params.limits.max_sse_line_size, impl_->params.limits.max_sse_event_size});
    if (stream->state_)
        stream->state_->abandon();
    stream->state_ = s;
    auto slot = asio::get_associated_cancellation_slot(handler);
    auto ex = impl_->executor;
    asio::co_spawn(
        ex, start_stream_op(impl_, std::move(req), s, retry_rate_limited),
        asio::bind_cancellation_slot(
            slot, [ex, h = std::move(handler)](
                      const std::exception_ptr& ep, std::tuple<error_code, bool> r) mutable {
                error_code ec = std::get<0>(r);
                if (ep)
                    ec = asio::error::no_memory;
                asio::dispatch(ex, asio::append(std::move(h), ec));
            }));
}

chat_stream::chat_stream() = default;
chat_stream::~chat_stream()
{
    // A stream that reached [DONE] may still be reading the end of its HTTP message so that its
    // connection can go back to the pool; any other stream gives its connection up now.
    if (state_ && !state_->done_seen)
        state_->abandon();
}
chat_stream::chat_stream(chat_stream&&) noexcept = default;
chat_stream& chat_stream::operator=(chat_stream&& other) noexcept
{
    if (this != &other) {
        if (state_ && !state_->done_seen)
            state_->abandon();
        state_ = std::move(other.state_);
    }
    return *this;
}

chat_stream::executor_type chat_stream::get_executor() const
{
    return state_ ? state_->client->executor : asio::any_io_executor();
}

bool chat_stream::done() const noexcept
{
    return state_ && state_->done;
}
error_code chat_stream::error() const noexcept
{
    return state_ ? state_->error : error_code();
}

const chat_response& chat_stream::response() const noexcept
{
    static const chat_response empty;
    return state_ ? state_->response : empty;
}

const frugal::diagnostics& chat_stream::diagnostics() const noexcept
{
    static const frugal::diagnostics empty;
    return state_ ? state_->diag : empty;
}

void chat_stream::async_read_delta_impl(
    asio::any_completion_handler<void(error_code, chat_delta)> handler)
{
    if (!state_ || !state_->started || state_->done || state_->reading) {
        const error_code ec = state_ && state_->reading
                                  ? error_code(frugal::error::operation_in_progress)
                                  : error_code(frugal::error::stream_not_readable);
        // A stream that was never started has no executor of its own.
        const auto fallback =
            state_ ? get_executor() : asio::any_io_executor(asio::system_executor());
        asio::post(fallback, asio::append(std::move(handler), ec, chat_delta{}));
        return;
    }
    auto& s = *state_;
    if (s.ready() || steady_clock::now() >= s.total) {
        // Already decoded (most deltas are: one read brings many events), or past the deadline:
        // complete without touching the network, but never inside this call.
        if (!s.ready()) {
            s.diag.message = "the whole-request deadline passed before this read";
            s.fail(error::timeout);
        }
        chat_delta delta;
        const error_code ec = s.take(delta);
        if (s.done && !ec)
            drain(state_);
        asio::post(s.client->executor, asio::append(std::move(handler), ec, std::move(delta)));
        return;
    }
    s.reading = true;
    delta_completion completion{std::move(handler), s.client->executor};
    asio::async_compose<delta_completion, void(error_code, chat_delta)>(
        read_delta_op{state_}, completion, s.client->executor);
}

} // namespace frugal
