// What a failed request reports: statuses and error bodies mapped to error codes, diagnostics
// from error bodies and headers (Retry-After, rate limits), and the key scrubbed from them.
#include "openrouter/client_impl.hpp"
#include "openrouter/codec_detail.hpp"

#include <algorithm>
#include <charconv>
#include <cstdlib>
#include <ctime>

namespace frugal {

namespace {

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

} // namespace

// The start of a body quoted in a message, as text that is UTF-8 whatever the body held (an
// HTML page in Latin-1, a gzip body): a message goes into JSON the gateway's clients parse. A
// character the cut would split is left out; a byte that starts none becomes U+FFFD.
std::string client_detail::snippet(std::string_view body)
{
    constexpr std::size_t most = 160;
    std::string s;
    s.reserve(std::min(body.size(), most) + 4);
    std::size_t i = 0;
    while (i < body.size() && i < most) {
        const std::size_t n = openrouter::codec_detail::utf8_sequence(body.substr(i, 4));
        if (n == 0) {
            s += "\xEF\xBF\xBD";
            ++i;
            continue;
        }
        if (i + n > most)
            break;
        const char c = body[i];
        s.append(body.data() + i, n);
        if (n == 1 && (c == '\n' || c == '\r'))
            s.back() = ' ';
        i += n;
    }
    return i < body.size() ? s + "..." : s;
}

void client_detail::note_rate_limit(
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

void client_detail::fill(diagnostics& d, const openrouter::provider_error_info& e)
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

void client_detail::scrub(const openrouter::key_scrubber& k, diagnostics& d)
{
    if (!k)
        return;
    for (auto* text : {&d.message, &d.code, &d.error_type, &d.raw, &d.provider, &d.generation_id})
        k.scrub(*text);
}

void client_detail::scrub(const openrouter::key_scrubber& k, chat_response& r)
{
    if (!k)
        return;
    for (auto* text :
         {&r.id, &r.model, &r.provider, &r.content, &r.reasoning, &r.refusal, &r.finish_reason,
          &r.native_finish_reason})
        k.scrub(*text);
    for (auto& t : r.tool_calls) {
        k.scrub(t.id);
        k.scrub(t.name);
        k.scrub(t.arguments);
    }
}

void client_detail::scrub(const openrouter::key_scrubber& k, generation_info& g)
{
    for (auto* text : {&g.id, &g.model, &g.provider, &g.finish_reason, &g.created_at})
        k.scrub(*text);
}

void client_detail::scrub(const openrouter::key_scrubber& k, key_info& i)
{
    k.scrub(i.label);
}

void client_detail::scrub(const openrouter::key_scrubber& k, std::vector<model_info>& rows)
{
    for (auto& m : rows) {
        for (auto* text : {&m.id, &m.name, &m.canonical_slug, &m.alias_target, &m.price_problem})
            k.scrub(*text);
        for (auto& [name, price] : m.other_prices)
            k.scrub(name); // a pricing member's name is the provider's text too
    }
}

std::optional<std::chrono::milliseconds> client_detail::parse_retry_after(std::string_view v)
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

error_code client_detail::response_error(int status, std::string_view body, diagnostics& diag)
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

} // namespace frugal
