// The prompt's say in a request: `[sim ...]` directives, and the faults that answer with an
// error (or drop the connection) instead of a completion.

#include "sim/sim_detail.hpp"

#include <algorithm>

namespace frugal::sim {
namespace {

// Faults answered with a plain error status, in OpenRouter's words.
struct status_fault {
    std::string_view name;
    int status;
    std::string_view message;
    std::string_view error_type;
    bool upstream;        // an upstream provider's error: metadata carries raw and provider_name
    std::string_view raw; // the upstream text
};

constexpr status_fault status_faults[] = {
    {"402", 402, "Insufficient credits. Add more using https://openrouter.ai/credits",
     "payment_required", false, ""},
    {"408", 408, "Operation timed out. Please try again later.", "timeout", false, ""},
    {"500", 500, "Internal Server Error", "server", false, ""},
    {"502", 502, "Provider returned error", "provider_unavailable", true, "upstream connect error"},
    {"503", 503, "No available model provider that meets your routing requirements",
     "provider_overloaded", false, ""},
    {"524", 524, "Request timed out. Please try again later.", "timeout", false, ""},
    {"529", 529, "Provider returned error", "provider_overloaded", true, "overloaded"},
};

} // namespace

void parse_directives(std::string_view text, directives& d)
{
    for (auto at = text.find("[sim "); at != std::string_view::npos;
         at = text.find("[sim ", at + 1)) {
        const auto end = text.find(']', at);
        if (end == std::string_view::npos)
            return;
        std::string_view body = text.substr(at + 5, end - at - 5);
        while (!body.empty()) {
            const auto space = body.find(' ');
            const std::string_view item = body.substr(0, space);
            body = space == std::string_view::npos ? std::string_view() : body.substr(space + 1);
            const auto eq = item.find('=');
            if (eq == std::string_view::npos)
                continue;
            const std::string_view k = item.substr(0, eq);
            const std::string_view v = item.substr(eq + 1);
            if (k == "difficulty")
                d.difficulty = number<int>(v);
            else if (k == "fault")
                d.fault = std::string(v);
            else if (k == "after")
                d.after = number<std::size_t>(v);
            else if (k == "ms")
                d.ms = number<std::int64_t>(v);
            else if (k == "retry_after")
                d.retry_after = number<std::int64_t>(v);
            else if (k == "tokens")
                d.tokens = number<std::size_t>(v);
            else if (k == "poor")
                d.poor = std::string(v);
            else if (k == "keepalive")
                d.keepalive = v == "1" || v == "true";
            else if (k == "usage")
                d.usage = std::string(v);
            else if (k == "overbill")
                d.overbill = std::string(v);
            else if (k == "cost")
                d.cost = std::string(v);
            else if (k == "served")
                d.served = std::string(v);
            else if (k == "tool")
                d.tool = std::string(v);
        }
    }
}

std::string
engine::choose_fault(const std::string& directive, const sim_model& model, const sim_model* asked)
{
    // A directive in the prompt wins over configured rules.
    std::string fault_name = directive;
    if (fault_name.empty()) {
        for (std::size_t i = 0; i < config_.faults.size(); ++i) {
            const auto& rule = config_.faults[i];
            if (!rule.model.empty() && rule.model != model.id &&
                (asked == nullptr || rule.model != asked->id))
                continue;
            if (rule.first_n != 0 && rule_hits_[i] >= rule.first_n)
                continue;
            if (rule.probability < 1.0 && rng_.unit() >= rule.probability)
                continue;
            ++rule_hits_[i];
            fault_name = rule.fault;
            break;
        }
    }
    if (fault_name.empty() && !model.fault.empty() && !number<int>(model.fault))
        fault_name = model.fault;
    return fault_name;
}

std::optional<reply> fault_reply(
    const std::string& fault_name,
    const directives& d,
    const sim_model& model,
    const request& req,
    const std::string& last_user,
    bool whitespace_keepalive,
    outcome& out)
{
    const std::string retry_after = std::to_string(d.retry_after.value_or(1));
    if (fault_name == "429" || fault_name == "429-no-retry-after") {
        reply r = error_reply(
            429, "Provider returned error",
            provider_metadata(
                model, model.id + " is temporarily rate-limited upstream. Please retry shortly.",
                "rate_limit_exceeded"));
        if (fault_name == "429")
            r.headers.emplace_back("Retry-After", retry_after);
        return r;
    }
    if (fault_name == "echo-key") {
        // A misbehaving upstream that echoes the request's credentials back: plainly in the
        // message, cut short and in base64 in the raw text. A client must never show them.
        const std::string token(
            req.authorization.substr(std::min<std::size_t>(req.authorization.size(), 7)));
        std::string raw = "upstream saw Authorization: ";
        static constexpr char b64[] =
            "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
        const std::string header = "Bearer " + token;
        for (std::size_t i = 0; i + 2 < header.size(); i += 3) {
            const unsigned v = static_cast<unsigned char>(header[i]) << 16 |
                               static_cast<unsigned char>(header[i + 1]) << 8 |
                               static_cast<unsigned char>(header[i + 2]);
            for (const int shift : {18, 12, 6, 0})
                raw += b64[v >> shift & 63];
        }
        raw += " (first part " + token.substr(0, 20) + ")";
        std::string md = "{\"raw\":\"";
        append_json_escaped(md, raw);
        md += "\",\"provider_name\":\"";
        append_json_escaped(md, model.provider);
        md += "\"}";
        return error_reply(400, "Invalid request header Authorization: Bearer " + token, md);
    }
    if (fault_name == "403") {
        std::string md = "{\"reasons\":[\"harassment\"],\"flagged_input\":\"";
        append_json_escaped(md, last_user.substr(0, 100));
        md += "\",\"provider_name\":\"";
        append_json_escaped(md, model.provider);
        md += "\",\"model_slug\":\"";
        md += model.id;
        md += "\",\"error_type\":\"content_policy_violation\"}";
        return error_reply(
            403,
            model.id + " requires moderation on " + model.provider +
                ". Your input was flagged for \"harassment\". No credits were charged.",
            md);
    }
    for (const auto& f : status_faults) {
        if (fault_name != f.name)
            continue;
        const std::string metadata = f.upstream
                                         ? provider_metadata(model, f.raw, f.error_type)
                                         : "{\"error_type\":\"" + std::string(f.error_type) + "\"}";
        reply r = error_reply(f.status, f.message, metadata);
        // OpenRouter may send Retry-After on a 503; the simulator does when asked to.
        if (f.status == 503 && d.retry_after)
            r.headers.emplace_back("Retry-After", retry_after);
        return r;
    }
    if (fault_name == "error-200") {
        reply r = error_reply(
            502, "Provider returned error",
            provider_metadata(model, "upstream connect error", "provider_unavailable"));
        r.status = 200;
        if (whitespace_keepalive || d.keepalive.value_or(false))
            r.body.insert(0, "\n\n\n");
        return r;
    }
    if (fault_name == "reset" || fault_name == "hang") {
        out = drop{fault_name == "reset" ? fault::reset : fault::hang};
        return reply{};
    }
    return std::nullopt;
}

} // namespace frugal::sim
