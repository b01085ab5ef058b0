#include <frugal/router.hpp>

#include <frugal/error.hpp>

#include "cascade/judge.hpp"
#include "json/strict.hpp"

#include <boost/json.hpp>

#include <limits>
#include <tuple>

namespace frugal {

namespace json = boost::json;

namespace {

struct reader {
    const json::object& o;
    std::string& detail;
    bool failed = false;

    bool fail(const std::string& why)
    {
        if (!failed)
            detail = why;
        failed = true;
        return false;
    }

    std::optional<std::string> string(std::string_view key)
    {
        const auto* v = o.if_contains(key);
        if (v == nullptr)
            return std::nullopt;
        if (!v->is_string() || v->get_string().empty()) {
            fail("\"" + std::string(key) + "\" must be a non-empty string");
            return std::nullopt;
        }
        return std::string(v->get_string());
    }

    std::optional<std::uint64_t> count(std::string_view key, std::uint64_t max)
    {
        const auto* v = o.if_contains(key);
        if (v == nullptr)
            return std::nullopt;
        std::uint64_t n = 0;
        if (v->is_uint64())
            n = v->get_uint64();
        else if (v->is_int64() && v->get_int64() >= 0)
            n = static_cast<std::uint64_t>(v->get_int64());
        else {
            fail("\"" + std::string(key) + "\" must be a whole number ≥ 0");
            return std::nullopt;
        }
        if (n > max) {
            fail("\"" + std::string(key) + "\" must be at most " + std::to_string(max));
            return std::nullopt;
        }
        return n;
    }

    std::optional<std::vector<std::string>> strings(std::string_view key)
    {
        const auto* v = o.if_contains(key);
        if (v == nullptr)
            return std::nullopt;
        if (!v->is_array()) {
            fail("\"" + std::string(key) + "\" must be an array of strings");
            return std::nullopt;
        }
        std::vector<std::string> out;
        for (const auto& e : v->get_array()) {
            if (!e.is_string()) {
                fail("\"" + std::string(key) + "\" must be an array of strings");
                return std::nullopt;
            }
            out.emplace_back(e.get_string());
        }
        return out;
    }
};

std::optional<escalation_reason> reason_named(std::string_view s)
{
    for (auto r :
         {escalation_reason::length, escalation_reason::empty, escalation_reason::error,
          escalation_reason::timeout, escalation_reason::rate_limited, escalation_reason::refusal,
          escalation_reason::invalid_json, escalation_reason::too_short,
          escalation_reason::must_match})
        if (s == to_string(r))
            return r;
    if (s == "rate_limit")
        return escalation_reason::rate_limited;
    return std::nullopt;
}

} // namespace

boost::system::result<cascade_policy> parse_policy(std::string_view text, diagnostics* diag)
{
    if (diag != nullptr)
        diag->clear();
    auto bad = [&](std::string why) -> boost::system::result<cascade_policy> {
        if (diag != nullptr)
            diag->message = "policy: " + std::move(why);
        return boost::system::error_code(error::bad_policy);
    };
    boost::system::error_code jec;
    std::string strict;
    const json::value v = frugal::detail::parse_strict(text, jec, strict);
    if (jec)
        return bad("not JSON as it must be: " + strict);
    if (!v.is_object())
        return bad("must be a JSON object");
    const auto& o = v.get_object();
    static constexpr std::string_view known[] = {
        "cheap",       "flagship",      "tiers",
        "escalate_on", "max_tokens",    "refusal_patterns",
        "min_chars",   "json_schema",   "on_budget_exhausted",
        "free_tier",   "hedge_after_ms", "must_match"};
    for (const auto& [k, _] : o)
        if (std::find(std::begin(known), std::end(known), std::string_view(k)) == std::end(known))
            return bad("unknown member \"" + std::string(k) + "\"");

    std::string why;
    reader r{o, why};
    cascade_policy p;
    const auto cheap = r.string("cheap");
    const auto flagship = r.string("flagship");
    const auto tiers = r.strings("tiers");
    if (r.failed)
        return bad(why);
    if (tiers && (cheap || flagship))
        return bad("give either \"tiers\" or \"cheap\" and \"flagship\", not both");
    if (tiers) {
        if (tiers->empty())
            return bad("\"tiers\" must name at least one model");
        for (const auto& t : *tiers)
            if (t.empty())
                return bad("\"tiers\" has an empty model name");
        p.tiers = *tiers;
    } else {
        if (!cheap)
            return bad("\"cheap\" (the first model) is missing");
        if (!flagship)
            return bad("\"flagship\" (the model to escalate to) is missing");
        p.tiers = {*cheap, *flagship};
    }
    if (const auto on = r.strings("escalate_on")) {
        p.escalate_on.clear();
        for (const auto& name : *on) {
            const auto reason = reason_named(name);
            if (!reason) {
                return bad(
                    "\"escalate_on\": unknown condition \"" + name +
                    "\" (length, empty, error, timeout, rate_limited, refusal, "
                    "invalid_json, too_short, must_match)");
            }
            p.escalate_on.push_back(*reason);
        }
    }
    if (const auto n = r.count("max_tokens", 10'000'000)) {
        if (*n == 0)
            return bad("\"max_tokens\" must be at least 1");
        p.max_tokens = static_cast<std::uint32_t>(*n);
    }
    if (const auto pats = r.strings("refusal_patterns")) {
        p.refusal_patterns.clear();
        for (auto s : *pats) {
            for (auto& c : s)
                c = static_cast<char>(std::tolower(static_cast<unsigned char>(c)));
            p.refusal_patterns.push_back(std::move(s));
        }
    }
    if (const auto n = r.count("min_chars", 10'000'000))
        p.min_chars = static_cast<std::uint32_t>(*n);
    if (const auto pattern = r.string("must_match")) {
        if (auto why_not = detail::pattern_error(*pattern); !why_not.empty())
            return bad("\"must_match\" is not an ECMAScript regular expression: " + why_not);
        p.must_match = *pattern;
    }
    if (const auto* s = o.if_contains("json_schema")) {
        if (!s->is_object())
            return bad("\"json_schema\" must be a JSON Schema object");
        p.json_schema = json::serialize(*s);
    }
    if (p.must_match.empty() && detail::enabled(p, escalation_reason::must_match))
        return bad("\"escalate_on\" lists \"must_match\" but the policy has no \"must_match\" pattern");
    // A member whose condition is off would do nothing: a mistake, said here rather than found
    // in a bill. With no `escalate_on`, giving the member turns its condition on.
    for (const auto& [member, given, reason] :
         {std::tuple{"must_match", !p.must_match.empty(), escalation_reason::must_match},
          std::tuple{"min_chars", p.min_chars > 0, escalation_reason::too_short},
          std::tuple{"json_schema", !p.json_schema.empty(), escalation_reason::invalid_json}}) {
        if (!given || detail::enabled(p, reason))
            continue;
        if (o.contains("escalate_on"))
            return bad(
                "\"" + std::string(member) + "\" is set but \"escalate_on\" does not list \"" +
                to_string(reason) + "\"");
        p.escalate_on.push_back(reason);
    }
    if (const auto b = r.string("on_budget_exhausted")) {
        if (*b == "return_cheap")
            p.budget_exhausted = on_budget_exhausted::return_cheap;
        else if (*b == "fail")
            p.budget_exhausted = on_budget_exhausted::fail;
        else
            return bad("\"on_budget_exhausted\" must be \"return_cheap\" or \"fail\"");
    }
    if (const auto* f = o.if_contains("free_tier")) {
        if (!f->is_object())
            return bad("\"free_tier\" must be an object");
        std::string fwhy;
        reader fr{f->get_object(), fwhy};
        for (const auto& [k, _] : f->get_object())
            if (k != "per_minute" && k != "per_day" && k != "when_empty" && k != "max_wait_ms")
                return bad("\"free_tier\": unknown member \"" + std::string(k) + "\"");
        if (const auto n = fr.count("per_minute", 1'000'000))
            p.free_tier.per_minute = static_cast<std::uint32_t>(*n); // 0: the server's
        if (const auto n = fr.count("per_day", 100'000'000))
            p.free_tier.per_day = static_cast<std::uint32_t>(*n);
        if (const auto n = fr.count("max_wait_ms", 86'400'000))
            p.free_tier.max_wait = std::chrono::milliseconds(*n);
        if (const auto w = fr.string("when_empty")) {
            if (*w == "escalate")
                p.free_tier.when_empty = on_free_tier_empty::escalate;
            else if (*w == "wait")
                p.free_tier.when_empty = on_free_tier_empty::wait;
            else
                return bad("\"free_tier.when_empty\" must be \"escalate\" or \"wait\"");
        }
        if (fr.failed)
            return bad("\"free_tier\": " + fwhy);
    }
    if (const auto n = r.count("hedge_after_ms", 3'600'000))
        p.hedge_after = std::chrono::milliseconds(*n);
    if (r.failed)
        return bad(why);
    return p;
}

} // namespace frugal
