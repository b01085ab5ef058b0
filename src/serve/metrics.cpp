#include "serve/metrics.hpp"

#include <charconv>
#include <initializer_list>

namespace frugal::serve {

namespace {

constexpr char sep = '\x1f';

// The labels joined, in a buffer kept for the next lookup.
const std::string& joined(std::initializer_list<std::string_view> parts)
{
    thread_local std::string key;
    key.clear();
    bool first = true;
    for (const auto p : parts) {
        if (!first)
            key += sep;
        first = false;
        key += p;
    }
    return key;
}

// The label values of a joined key.
std::vector<std::string_view> split(std::string_view key)
{
    std::vector<std::string_view> out;
    for (;;) {
        const auto at = key.find(sep);
        out.push_back(key.substr(0, at));
        if (at == std::string_view::npos)
            return out;
        key.remove_prefix(at + 1);
    }
}

} // namespace

void metrics::count_request(std::string_view tenant, std::string_view model, std::string_view outcome)
{
    const auto& key = joined({tenant, model, outcome});
    if (const auto it = requests.find(key); it != requests.end())
        ++it->second;
    else
        requests.emplace(key, 1);
}

metrics::spend&
metrics::usage_of(std::string_view tenant, std::string_view model, std::string_view outcome)
{
    const auto& key = joined({tenant, model, outcome});
    if (const auto it = usage.find(key); it != usage.end())
        return it->second;
    return usage.emplace(key, spend{}).first->second;
}

void histogram::observe(double v)
{
    std::size_t i = 0;
    while (i < bounds_.size() && v > bounds_[i])
        ++i;
    ++counts_[i];
    sum_ += v;
    ++count_;
}

namespace {

void append_number(std::string& out, double v)
{
    char buf[32];
    const auto [end, ec] = std::to_chars(buf, buf + sizeof buf, v);
    out.append(buf, ec == std::errc() ? static_cast<std::size_t>(end - buf) : 0);
}

void help(std::string& out, std::string_view name, std::string_view type, std::string_view text)
{
    out += "# HELP ";
    out += name;
    out += ' ';
    out += text;
    out += "\n# TYPE ";
    out += name;
    out += ' ';
    out += type;
    out += '\n';
}

} // namespace

void histogram::write(std::string& out, const std::string& name) const
{
    std::uint64_t cumulative = 0;
    for (std::size_t i = 0; i <= bounds_.size(); ++i) {
        cumulative += counts_[i];
        out += name;
        out += "_bucket{le=\"";
        if (i == bounds_.size())
            out += "+Inf";
        else
            append_number(out, bounds_[i]);
        out += "\"} ";
        out += std::to_string(cumulative);
        out += '\n';
    }
    out += name + "_sum ";
    append_number(out, sum_);
    out += '\n' + name + "_count " + std::to_string(count_) + '\n';
}

void append_label(std::string& out, std::string_view name, std::string_view value, bool first)
{
    out += first ? "{" : ",";
    out += name;
    out += "=\"";
    for (const char c : value) {
        if (c == '\\')
            out += "\\\\";
        else if (c == '"')
            out += "\\\"";
        else if (c == '\n')
            out += "\\n";
        else
            out += c;
    }
    out += '"';
}

std::string
metrics::render(const std::vector<budget_snapshot>& budgets, const price_surprises& surprises) const
{
    std::string out;
    out.reserve(4096);
    help(out, "frugal_requests_total", "counter",
         "Chat requests by tenant, model asked (a model id or frugal/POLICY) and outcome.");
    for (const auto& [key, n] : requests) {
        const auto k = split(key);
        out += "frugal_requests_total";
        append_label(out, "tenant", k[0], true);
        append_label(out, "model", k[1], false);
        append_label(out, "outcome", k[2], false);
        out += "} " + std::to_string(n) + '\n';
    }
    help(out, "frugal_attempts_total", "counter",
         "Upstream attempts by tenant, model asked and outcome, as the ledger records them.");
    for (const auto& [key, s] : usage) {
        const auto k = split(key);
        out += "frugal_attempts_total";
        append_label(out, "tenant", k[0], true);
        append_label(out, "model", k[1], false);
        append_label(out, "outcome", k[2], false);
        out += "} " + std::to_string(s.attempts) + '\n';
    }
    help(out, "frugal_tokens_total", "counter", "Tokens by tenant, model asked, outcome and kind.");
    for (const auto& [key, s] : usage) {
        const auto k = split(key);
        for (const bool prompt : {true, false}) {
            out += "frugal_tokens_total";
            append_label(out, "tenant", k[0], true);
            append_label(out, "model", k[1], false);
            append_label(out, "outcome", k[2], false);
            append_label(out, "kind", prompt ? "prompt" : "completion", false);
            out += "} " + std::to_string(prompt ? s.prompt_tokens : s.completion_tokens) + '\n';
        }
    }
    help(out, "frugal_cost_usd_total", "counter",
         "Spend in USD by tenant, model asked and outcome (exact decimals, as the ledger books them).");
    for (const auto& [key, s] : usage) {
        const auto k = split(key);
        out += "frugal_cost_usd_total";
        append_label(out, "tenant", k[0], true);
        append_label(out, "model", k[1], false);
        append_label(out, "outcome", k[2], false);
        out += "} " + s.cost.to_string() + '\n';
    }
    help(out, "frugal_escalations_total", "counter",
         "Attempts sent up a tier (or started above the first), by reason, as the ledger records "
         "them: one that failed or that the budget denied included.");
    for (const auto& [reason, n] : escalations) {
        out += "frugal_escalations_total";
        append_label(out, "reason", reason, true);
        out += "} " + std::to_string(n) + '\n';
    }
    help(out, "frugal_budget_denials_total", "counter",
         "Requests or escalations the budget refused, by tenant.");
    for (const auto& [tenant, n] : budget_denials) {
        out += "frugal_budget_denials_total";
        append_label(out, "tenant", tenant, true);
        out += "} " + std::to_string(n) + '\n';
    }
    help(out, "frugal_budget_cap_usd", "gauge", "Each budget's cap in USD.");
    for (const auto& b : budgets) {
        out += "frugal_budget_cap_usd";
        append_label(out, "budget", b.name, true);
        append_label(out, "period", to_string(b.period), false);
        out += "} " + b.cap.to_string() + '\n';
    }
    help(out, "frugal_budget_spent_usd", "gauge",
         "Spend settled against each budget in its current period, in USD.");
    for (const auto& b : budgets) {
        out += "frugal_budget_spent_usd";
        append_label(out, "budget", b.name, true);
        out += "} " + b.committed.to_string() + '\n';
    }
    help(out, "frugal_budget_reserved_usd", "gauge",
         "Worst cases reserved by requests in flight against each budget, in USD.");
    for (const auto& b : budgets) {
        out += "frugal_budget_reserved_usd";
        append_label(out, "budget", b.name, true);
        out += "} " + b.reserved.to_string() + '\n';
    }
    help(out, "frugal_price_surprises_total", "counter",
         "Settlements billed above what the model's prices allowed (or a free model that billed): "
         "each stops the budgets it was charged to.");
    out += "frugal_price_surprises_total " + std::to_string(surprises.count) + '\n';
    help(out, "frugal_model_price_unknown", "gauge",
         "1 for a model whose bill passed its prices: refused to every request until the gateway "
         "restarts.");
    for (const auto& m : surprises.models) {
        out += "frugal_model_price_unknown";
        append_label(out, "model", m, true);
        out += "} 1\n";
    }
    help(out, "frugal_request_duration_seconds", "histogram",
         "Chat requests from the last byte of the request to the last byte of the answer.");
    duration.write(out, "frugal_request_duration_seconds");
    help(out, "frugal_gateway_added_seconds", "histogram",
         "The gateway's own share of a chat request: its duration minus the upstream's.");
    added.write(out, "frugal_gateway_added_seconds");
    return out;
}

} // namespace frugal::serve
