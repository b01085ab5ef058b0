#include "cascade/judge.hpp"

#include <frugal/error.hpp>

#include <boost/asio/error.hpp>
#include <boost/json.hpp>
#include <boost/regex.hpp>

#include <algorithm>
#include <array>
#include <bit>
#include <cctype>
#include <cstdint>
#include <cstring>
#include <iterator>
#include <limits>
#include <optional>
#include <stdexcept>
#include <unordered_map>
#include <utility>

#if defined(__SSE2__)
#include <emmintrin.h>
#endif

namespace frugal {

namespace json = boost::json;

const char* to_string(escalation_reason r) noexcept
{
    switch (r) {
    case escalation_reason::none: return "none";
    case escalation_reason::length: return "length";
    case escalation_reason::empty: return "empty";
    case escalation_reason::error: return "error";
    case escalation_reason::timeout: return "timeout";
    case escalation_reason::rate_limited: return "rate_limited";
    case escalation_reason::refusal: return "refusal";
    case escalation_reason::invalid_json: return "invalid_json";
    case escalation_reason::too_short: return "too_short";
    case escalation_reason::predicate: return "predicate";
    case escalation_reason::context: return "context";
    case escalation_reason::rule: return "rule";
    case escalation_reason::must_match: return "must_match";
    }
    return "none";
}

namespace detail {

namespace {

bool blank(std::string_view s) noexcept
{
    return std::all_of(s.begin(), s.end(), [](unsigned char c) { return std::isspace(c) != 0; });
}

// Refusals open the answer ("I'm sorry, but I can't ..."), sometimes after a short preface.
constexpr std::size_t refusal_window = 160;

char lower(char c) noexcept
{
    return c >= 'A' && c <= 'Z' ? static_cast<char>(c - 'A' + 'a') : c;
}

// Whether lower-case ASCII `pat` matches `text` at `i`, case-insensitively, a typographic
// apostrophe (U+2019, three bytes) matching an ASCII one.
bool matches_at(std::string_view text, std::size_t i, std::string_view pat) noexcept
{
    for (const char want : pat) {
        if (i >= text.size())
            return false;
        if (want == '\'' && text[i] == '\xE2' && text.compare(i, 3, "\xE2\x80\x99") == 0) {
            i += 3;
            continue;
        }
        if (lower(text[i]) != want)
            return false;
        ++i;
    }
    return true;
}

// The subset of JSON Schema that says what an answer must hold: type, properties, required,
// items, enum.
bool matches(const json::value& v, const json::value& schema, int depth = 0)
{
    if (depth > 32 || !schema.is_object())
        return true;
    const auto& s = schema.get_object();
    if (const auto* t = s.if_contains("type"); t != nullptr && t->is_string()) {
        const auto& type = t->get_string();
        const bool ok = (type == "object" && v.is_object()) || (type == "array" && v.is_array()) ||
                        (type == "string" && v.is_string()) ||
                        (type == "number" && v.is_number()) ||
                        (type == "integer" && (v.is_int64() || v.is_uint64())) ||
                        (type == "boolean" && v.is_bool()) || (type == "null" && v.is_null());
        if (!ok)
            return false;
    }
    if (const auto* e = s.if_contains("enum"); e != nullptr && e->is_array()) {
        const auto& a = e->get_array();
        if (std::find(a.begin(), a.end(), v) == a.end())
            return false;
    }
    if (v.is_object()) {
        const auto& o = v.get_object();
        if (const auto* req = s.if_contains("required"); req != nullptr && req->is_array()) {
            for (const auto& k : req->get_array()) {
                if (k.is_string() && !o.contains(k.get_string()))
                    return false;
            }
        }
        if (const auto* props = s.if_contains("properties");
            props != nullptr && props->is_object()) {
            for (const auto& [k, sub] : props->get_object()) {
                const auto* member = o.if_contains(k);
                if (member != nullptr && !matches(*member, sub, depth + 1))
                    return false;
            }
        }
    }
    if (const auto* items = s.if_contains("items"); items != nullptr && v.is_array()) {
        for (const auto& el : v.get_array()) {
            if (!matches(el, *items, depth + 1))
                return false;
        }
    }
    return true;
}

// JavaScript's semantics without flags: `^` and `$` hold at the ends of the answer only, and
// `.` matches no line break (Boost's Perl defaults are the other way round).
constexpr auto ecmascript =
    boost::regex::ECMAScript | boost::regex::no_mod_m | boost::regex::no_mod_s;

// A policy holds its pattern as text (the public header stays free of a regex engine), so the
// compiled form is cached per thread: judging is on the hot path, compiling is not.
// Boost.Regex rather than std::regex: its matcher is not recursive, so a long answer cannot
// overflow the stack, and a pathological pattern stops at a complexity limit (an exception)
// instead of running for ever.
const boost::regex* compiled(const std::string& pattern)
{
    struct entry {
        bool ok = false;
        boost::regex re;
    };
    thread_local std::unordered_map<std::string, entry> cache;
    if (auto it = cache.find(pattern); it != cache.end())
        return it->second.ok ? &it->second.re : nullptr;
    if (cache.size() >= 64) // policies come from a handful of files: bound it all the same
        cache.clear();
    entry e;
    try {
        e.re.assign(pattern, ecmascript);
        e.ok = true;
    } catch (const std::exception&) {
        e.ok = false;
    }
    auto& slot = cache[pattern] = std::move(e);
    return slot.ok ? &slot.re : nullptr;
}

} // namespace

refusal_finder::refusal_finder(const std::vector<std::string>& patterns)
{
    for (const auto& pat : patterns)
        if (!pat.empty())
            patterns_.push_back(pat);
    auto add = [&](char first, char second, bool any) {
        const opening o{
            static_cast<char>(first | 0x20), static_cast<char>(second | 0x20), any};
        for (std::size_t k = 0; k < n_openings_; ++k) {
            const auto& h = openings_[k];
            if (h.first == o.first && (h.any || (!o.any && h.second == o.second)))
                return;
        }
        if (n_openings_ == most_openings) {
            every_position_ = true;
            return;
        }
        openings_[n_openings_++] = o;
    };
    for (const auto& pat : patterns_) {
        const bool one = pat.size() == 1;
        add(pat[0], one ? '\0' : pat[1], one);
        if (!one && pat[1] == '\'')
            add(pat[0], '\xE2', false); // a typographic apostrophe's first byte
        if (pat[0] == '\'')
            add('\xE2', '\0', true); // its second byte is three bytes on
    }
}

// Whether a pattern starts at `i`, compared exactly.
bool refusal_finder::starts_at(std::string_view text, std::size_t i) const noexcept
{
    const char c = lower(text[i]);
    for (const auto& pat : patterns_)
        if ((pat[0] == c || (pat[0] == '\'' && c == '\xE2')) && matches_at(text, i, pat))
            return true;
    return false;
}

// The filter at one position: its byte and the next, folded, against the openings.
bool refusal_finder::may_start(std::string_view text, std::size_t i) const noexcept
{
    const char x = static_cast<char>(text[i] | 0x20);
    const char y = i + 1 < text.size() ? static_cast<char>(text[i + 1] | 0x20) : '\0';
    for (std::size_t k = 0; k < n_openings_; ++k) {
        const auto& o = openings_[k];
        if (o.first == x && (o.any || o.second == y))
            return true;
    }
    return false;
}

#if defined(__SSE2__)
template <std::size_t N>
bool refusal_finder::scan(std::string_view text, std::size_t& i, std::size_t window) const noexcept
{
    // Sixteen positions at a time: each compared with every opening at once, its byte and the
    // next (the block reads 17 bytes), so that most windows hold no position to compare.
    const __m128i fold = _mm_set1_epi8(0x20);
    // An opening of one byte masks its next byte to zero, and compares it with zero.
    __m128i firsts[N];
    __m128i masks[N];
    __m128i seconds[N];
#pragma GCC unroll 16
    for (std::size_t k = 0; k < N; ++k) {
        const auto& o = openings_[k];
        firsts[k] = _mm_set1_epi8(o.first);
        masks[k] = _mm_set1_epi8(o.any ? 0 : -1);
        seconds[k] = _mm_set1_epi8(o.any ? 0 : o.second);
    }
    for (; i + 16 <= window && i + 17 <= text.size(); i += 16) {
        const auto* at = reinterpret_cast<const __m128i*>(text.data() + i);
        const __m128i x = _mm_or_si128(_mm_loadu_si128(at), fold);
        const __m128i y = _mm_or_si128(
            _mm_loadu_si128(reinterpret_cast<const __m128i*>(text.data() + i + 1)), fold);
        __m128i hit = _mm_setzero_si128();
#pragma GCC unroll 16
        for (std::size_t k = 0; k < N; ++k) {
            const __m128i second = _mm_cmpeq_epi8(_mm_and_si128(y, masks[k]), seconds[k]);
            hit = _mm_or_si128(hit, _mm_and_si128(_mm_cmpeq_epi8(x, firsts[k]), second));
        }
        for (auto bits = static_cast<unsigned>(_mm_movemask_epi8(hit)); bits != 0;
             bits &= bits - 1)
            if (starts_at(text, i + static_cast<std::size_t>(std::countr_zero(bits))))
                return true;
    }
    return false;
}
#endif

bool refusal_finder::in(std::string_view text) const noexcept
{
    const std::size_t window = std::min(text.size(), refusal_window);
    if (every_position_) {
        for (std::size_t i = 0; i < window; ++i)
            if (starts_at(text, i))
                return true;
        return false;
    }
    std::size_t i = 0;
#if defined(__SSE2__)
    // The block scan is instantiated for each number of openings: its loops unrolled, their
    // constants held in registers.
    using scan_fn = bool (refusal_finder::*)(std::string_view, std::size_t&, std::size_t) const noexcept;
    static constexpr auto scans = []<std::size_t... N>(std::index_sequence<N...>) {
        return std::array<scan_fn, sizeof...(N)>{&refusal_finder::scan<N + 1>...};
    }(std::make_index_sequence<most_openings>{});
    if (n_openings_ != 0 && (this->*scans[n_openings_ - 1])(text, i, window))
        return true;
#endif
    for (; i < window; ++i)
        if (may_start(text, i) && starts_at(text, i))
            return true;
    return false;
}

std::string pattern_error(std::string_view pattern)
{
    // Boost reads a Perl superset of ECMAScript: what the two read differently, or what only
    // Perl has, is refused so a pattern means what it would in JavaScript.
    bool in_class = false;
    for (std::size_t i = 0; i < pattern.size(); ++i) {
        const char c = pattern[i];
        const char next = i + 1 < pattern.size() ? pattern[i + 1] : '\0';
        if (c == '\\') {
            if (next == 'u')
                return "\\u escapes are not supported: write the character itself (UTF-8)";
            if (next != '\0' && std::strchr("QEAZzGKhHRNeX", next) != nullptr)
                return std::string("\\") + next + " is Perl, not ECMAScript";
            ++i;
            continue;
        }
        if (in_class) {
            in_class = c != ']';
            continue;
        }
        if (c == '[') {
            // "[]" and "[^]" close at once in ECMAScript; Perl reads the "]" as a member.
            if (next == ']' || (next == '^' && i + 2 < pattern.size() && pattern[i + 2] == ']'))
                return "\"[]\" and \"[^]\" are read differently by Perl: write [\\s\\S] for any "
                       "character";
            in_class = true;
            continue;
        }
        if (c == '(' && next == '?') {
            const char k = i + 2 < pattern.size() ? pattern[i + 2] : '\0';
            if (k != '=' && k != '!' && k != ':' && k != '<')
                return std::string("(?") + k + " is Perl, not ECMAScript";
        }
        if ((c == '*' || c == '+' || c == '?' || c == '}') && next == '+')
            return "possessive quantifiers (" + std::string(1, c) + "+) are Perl, not ECMAScript";
    }
    try {
        boost::regex re(pattern.begin(), pattern.end(), ecmascript);
    } catch (const boost::regex_error& e) {
        return e.what();
    }
    return {};
}

bool contains_match(const std::string& pattern, std::string_view text)
{
    const boost::regex* re = compiled(pattern);
    if (re == nullptr)
        return false;
    try {
        return boost::regex_search(text.begin(), text.end(), *re);
    } catch (const std::runtime_error&) {
        return false; // past the complexity or memory limit: not shown to match
    }
}

bool enabled(const cascade_policy& p, escalation_reason r) noexcept
{
    return std::find(p.escalate_on.begin(), p.escalate_on.end(), r) != p.escalate_on.end();
}

bool wants_json(const chat_request& req) noexcept
{
    return req.response_format == "json_object" || req.response_format == "json_schema";
}

bool json_acceptable(const cascade_policy& p, std::string_view text)
{
    boost::system::error_code ec;
    const json::value v = json::parse(text, ec);
    if (ec)
        return false;
    if (p.json_schema.empty())
        return true;
    const json::value schema = json::parse(p.json_schema, ec);
    return ec || matches(v, schema);
}

escalation_reason judge(const cascade_policy& p, const chat_request& req, const chat_response& r)
{
    return judge(p, refusal_finder(p.refusal_patterns), req, r);
}

escalation_reason judge(
    const cascade_policy& p,
    const refusal_finder& refusals,
    const chat_request& req,
    const chat_response& r)
{
    // The policy's reasons as a set, read once: six of them are asked about below. (A value
    // past the enumerators, cast in by a program, is none of them.)
    static_assert(static_cast<unsigned>(escalation_reason::must_match) < 32);
    std::uint32_t set = 0;
    for (const auto x : p.escalate_on)
        if (static_cast<unsigned>(x) < 32)
            set |= std::uint32_t{1} << static_cast<unsigned>(x);
    auto on = [set](escalation_reason x) { return (set >> static_cast<unsigned>(x) & 1) != 0; };
    if (on(escalation_reason::length) && r.finish_reason == "length")
        return escalation_reason::length;
    if (on(escalation_reason::empty) && blank(r.content) && r.tool_calls.empty())
        return escalation_reason::empty;
    if (on(escalation_reason::refusal) && (!r.refusal.empty() || refusals.in(r.content)))
        return escalation_reason::refusal;
    if (on(escalation_reason::invalid_json) && wants_json(req) && !json_acceptable(p, r.content))
        return escalation_reason::invalid_json;
    if (on(escalation_reason::too_short) && r.content.size() < p.min_chars)
        return escalation_reason::too_short;
    if (on(escalation_reason::must_match) && !contains_match(p.must_match, r.content))
        return escalation_reason::must_match;
    for (const auto& pred : p.predicates)
        if (pred && !pred(req, r))
            return escalation_reason::predicate;
    return escalation_reason::none;
}

escalation_reason judge_error(const cascade_policy& p, const boost::system::error_code& ec)
{
    escalation_reason r = escalation_reason::error;
    if (ec == error::rate_limited)
        r = escalation_reason::rate_limited;
    else if (ec == error::timeout || ec == error::upstream_timeout)
        r = escalation_reason::timeout;
    if (enabled(p, r))
        return r;
    // "error" covers every failure the policy does not name more precisely.
    return enabled(p, escalation_reason::error) ? escalation_reason::error
                                                : escalation_reason::none;
}

escalation_reason judge_early(const cascade_policy& p, bool json_wanted, std::string_view text)
{
    return judge_early(p, refusal_finder(p.refusal_patterns), json_wanted, text);
}

escalation_reason judge_early(
    const cascade_policy& p,
    const refusal_finder& refusals,
    bool json_wanted,
    std::string_view text)
{
    if (enabled(p, escalation_reason::refusal) && refusals.in(text))
        return escalation_reason::refusal;
    if (json_wanted && enabled(p, escalation_reason::invalid_json)) {
        const auto first = text.find_first_not_of(" \t\r\n");
        if (first != std::string_view::npos && text[first] != '{' && text[first] != '[')
            return escalation_reason::invalid_json;
    }
    return escalation_reason::none;
}

std::int64_t free_tier_limiter::acquire(std::int64_t now_ms)
{
    return window_.take(now_ms, per_minute_, per_day_);
}

std::int64_t free_tier_limiter::held_back(std::int64_t now_ms) const
{
    return window_.held_back(now_ms, per_day_);
}

void free_tier_limiter::count_extra(std::uint32_t n, std::int64_t now_ms)
{
    window_.count_extra(n, now_ms);
}

std::int64_t free_tier_limiter::learn(const diagnostics& d, std::int64_t now_ms)
{
    // A 429 that says nothing of when to come back: a short pause, then the server is asked
    // again (an upstream provider's congestion clears in seconds).
    constexpr std::int64_t unknown_pause_ms = 5'000;
    constexpr std::int64_t longest_ms = 2 * 86'400'000; // a reset further off is not believed
    std::optional<std::int64_t> stated;
    if (d.rate_limit) {
        const auto& rl = *d.rate_limit;
        const auto limit = rl.limit ? static_cast<std::uint32_t>(std::min<std::uint64_t>(
                                          *rl.limit, std::numeric_limits<std::uint32_t>::max()))
                                    : 0u;
        // A day's limit is the server's count (it resets at 00:00 UTC). A minute's is followed
        // by its reset, not counted here: the server's window need not be this side's sliding
        // minute, and its reset says when to ask again.
        if (rl.window == "day" && limit != 0) {
            per_day_ = limit;
            window_.spent_today(limit); // spent, as the server says
        }
        if (rl.reset_ms && *rl.reset_ms > now_ms)
            stated = std::min(*rl.reset_ms, now_ms + longest_ms);
    }
    if (d.retry_after) {
        const auto after = now_ms + std::min<std::int64_t>(d.retry_after->count(), longest_ms);
        stated = std::max(stated.value_or(after), after);
    }
    // A reset already past (or a Retry-After of 0) still pauses a second: asking again at once
    // only collects another 429.
    constexpr std::int64_t least_pause_ms = 1'000;
    const auto until =
        std::max(stated.value_or(now_ms + unknown_pause_ms), now_ms + least_pause_ms);
    block_until(until);
    return until;
}

void free_tier_limiter::learn(const key_info& k)
{
    if (!day_fixed_)
        per_day_ = k.is_free_tier ? 50 : 1000;
}

} // namespace detail
} // namespace frugal
