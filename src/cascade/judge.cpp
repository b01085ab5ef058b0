#include "cascade/judge.hpp"

#include <frugal/error.hpp>

#include <boost/asio/error.hpp>
#include <boost/json.hpp>
#include <boost/regex.hpp>

#include <algorithm>
#include <cstdint>
#include <cstring>
#include <limits>
#include <optional>
#include <stdexcept>
#include <unordered_map>
#include <cctype>
#include <cstring>
#include <iterator>

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

// A byte-by-byte scan, for policies whose patterns start with many different letters. A
// pattern starts in the window and may end past it, as in the fast scan.
bool refuses_slow(const cascade_policy& p, std::string_view text)
{
    const auto window = text.substr(0, refusal_window);
    for (std::size_t i = 0; i < window.size(); ++i) {
        for (const auto& pat : p.refusal_patterns) {
            const bool opens =
                !pat.empty() &&
                (lower(window[i]) == pat[0] || (pat[0] == '\'' && window[i] == '\xE2'));
            if (opens && matches_at(text, i, pat))
                return true;
        }
    }
    return false;
}

// Whether a policy's refusal pattern (lower-case ASCII) occurs at the start of `text`. Every
// accepted answer is checked, so candidates are found with memchr (vectorised) on each
// pattern's first letter, in both cases, rather than byte by byte; and a candidate is ruled out
// by the byte after it (most are a letter inside a word) before any pattern is compared.
bool refuses(const cascade_policy& p, std::string_view text)
{
    const auto window = text.substr(0, refusal_window);
    // Per first byte: the second bytes its patterns go on with (a 256-bit set), or `any` when
    // one cannot be filtered so (a one-byte pattern; a typographic apostrophe, whose second
    // byte is three bytes on).
    struct opening {
        char first;
        bool any;
        std::uint64_t seconds[4];
        void add(char c) noexcept
        {
            const auto u = static_cast<unsigned char>(c);
            seconds[u >> 6] |= std::uint64_t{1} << (u & 63);
        }
        bool goes_on_with(char c) const noexcept
        {
            const auto u = static_cast<unsigned char>(c);
            return any || (seconds[u >> 6] >> (u & 63) & 1) != 0;
        }
    };
    opening firsts[8];
    std::size_t nfirst = 0;
    auto opening_of = [&](char c) -> opening* {
        for (std::size_t f = 0; f < nfirst; ++f)
            if (firsts[f].first == c)
                return &firsts[f];
        if (nfirst == std::size(firsts))
            return nullptr;
        firsts[nfirst] = {c, false, {}};
        return &firsts[nfirst++];
    };
    for (const auto& pat : p.refusal_patterns) {
        if (pat.empty())
            continue;
        auto* o = opening_of(pat[0]);
        if (o == nullptr)
            return refuses_slow(p, text);
        if (pat.size() == 1) {
            o->any = true;
        } else {
            o->add(pat[1]);
            if (pat[1] == '\'')
                o->add('\xE2'); // a typographic apostrophe's first byte
        }
        // A pattern opening with an apostrophe opens with a typographic one (0xE2...) too.
        if (pat[0] == '\'') {
            auto* typographic = opening_of('\xE2');
            if (typographic == nullptr)
                return refuses_slow(p, text);
            typographic->any = true;
        }
    }
    for (std::size_t f = 0; f < nfirst; ++f) {
        const opening& o = firsts[f];
        const char lo = o.first;
        const char up = lo >= 'a' && lo <= 'z' ? static_cast<char>(lo - 'a' + 'A') : lo;
        const char cases[2] = {lo, up};
        for (int k = 0; k < (lo == up ? 1 : 2); ++k) {
            const char c = cases[k];
            const char* at = window.data();
            const char* end = window.data() + window.size();
            while ((at = static_cast<const char*>(std::memchr(at, c, end - at))) != nullptr) {
                const auto i = static_cast<std::size_t>(at - window.data());
                ++at;
                if (!o.goes_on_with(i + 1 < text.size() ? lower(text[i + 1]) : '\0'))
                    continue;
                for (const auto& pat : p.refusal_patterns) {
                    // 0xE2 opens a pattern that starts with it (a dash, a quote) and, as a
                    // typographic apostrophe, one that starts with an ASCII apostrophe.
                    if (!pat.empty() && (pat[0] == lo || (lo == '\xE2' && pat[0] == '\'')) &&
                        matches_at(text, i, pat))
                        return true;
                }
            }
        }
    }
    return false;
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
    auto on = [&](escalation_reason x) { return enabled(p, x); };
    if (on(escalation_reason::length) && r.finish_reason == "length")
        return escalation_reason::length;
    if (on(escalation_reason::empty) && blank(r.content) && r.tool_calls.empty())
        return escalation_reason::empty;
    if (on(escalation_reason::refusal) && (!r.refusal.empty() || refuses(p, r.content)))
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
    if (enabled(p, escalation_reason::refusal) && refuses(p, text))
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
