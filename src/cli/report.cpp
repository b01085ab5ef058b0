// The usage report's text, JSON and CSV forms (the report is computed by the ledger layer).
#include "cli/report.hpp"

#include "cli/json_text.hpp"

#include <boost/json.hpp>

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <ctime>

namespace frugal::cli {

namespace json = boost::json;

namespace {

std::string utc_date(std::int64_t unix_ms, bool with_time)
{
    return format_utc(unix_ms, with_time ? "%Y-%m-%d %H:%M:%S UTC" : "%Y-%m-%d");
}

std::string usd(money m)
{
    return "$" + m.to_string();
}

} // namespace

std::string format_utc(std::int64_t unix_ms, const char* fmt)
{
    const std::time_t t = static_cast<std::time_t>(unix_ms / 1000);
    std::tm tm{};
    gmtime_r(&t, &tm);
    char buf[64];
    return std::string(buf, std::strftime(buf, sizeof buf, fmt, &tm));
}

std::int64_t unix_now_ms()
{
    return std::chrono::duration_cast<std::chrono::milliseconds>(
               std::chrono::system_clock::now().time_since_epoch())
        .count();
}

// ---- text ----

namespace {

void appendf(std::string& out, const char* fmt, auto... args)
{
    char buf[512];
    const int n = std::snprintf(buf, sizeof buf, fmt, args...);
    if (n > 0)
        out.append(buf, std::min<std::size_t>(static_cast<std::size_t>(n), sizeof buf - 1));
}

void usage_table(std::string& out, const char* first, const std::vector<usage_row>& rows)
{
    appendf(
        out, "%-44s %9s %12s %12s %16s\n", first, "requests", "prompt tok", "completion",
        "cost (USD)");
    for (const auto& m : rows) {
        const std::string cost = m.cost.to_string() + (m.free_model ? " free" : "");
        appendf(
            out, "%-44s %9llu %12llu %12llu %16s\n", m.name.c_str(),
            static_cast<unsigned long long>(m.requests),
            static_cast<unsigned long long>(m.prompt_tokens),
            static_cast<unsigned long long>(m.completion_tokens), cost.c_str());
    }
}

double percent(std::size_t part, std::size_t whole)
{
    return whole == 0 ? 0.0 : 100.0 * static_cast<double>(part) / static_cast<double>(whole);
}

} // namespace

std::string format_text(const ledger_report& r)
{
    std::string out;
    if (r.records == 0) {
        out += "The ledger holds no records in this period.\n";
    } else {
        appendf(
            out, "Ledger: %zu records, %zu requests, %s to %s\n\n", r.records, r.tasks,
            utc_date(r.first_ms, true).c_str(), utc_date(r.last_ms, true).c_str());
        usage_table(out, "model", r.models);
        out += '\n';
        std::vector<usage_row> tiers = r.tiers;
        for (auto& t : tiers)
            t.name = "tier " + std::to_string(t.tier) + ": " + t.name;
        usage_table(out, "tier", tiers);
        appendf(
            out, "\nescalated: %zu of %zu requests (%.1f%%)", r.escalated_tasks, r.tasks,
            percent(r.escalated_tasks, r.tasks));
        if (!r.reasons.empty()) {
            out += "; reasons:";
            for (const auto& [why, n] : r.reasons)
                appendf(out, " %s %zu", why.c_str(), n);
        }
        appendf(out, "\nescalations denied by the budget: %zu\n", r.denied);
        if (r.refused != 0)
            appendf(out, "requests refused by the budget at their first tier: %zu\n", r.refused);
    }
    appendf(out, "total: %s", usd(r.total).c_str());
    if (r.estimated != 0) {
        appendf(
            out, " (%zu records, %s, charged their whole reservation: bill unknown)", r.estimated,
            usd(r.estimated_cost).c_str());
    }
    out += '\n';
    if (r.flagship_priced && r.compared_tasks != 0) {
        const money saved = r.flagship_only - r.compared_total;
        appendf(
            out, "on %s alone: %s; saved %s (%.1f%%)\n", r.flagship.c_str(),
            usd(r.flagship_only).c_str(), usd(saved).c_str(),
            r.flagship_only == money() ? 0.0
                                       : 100.0 * saved.to_double() / r.flagship_only.to_double());
    } else if (!r.flagship_priced && !r.flagship.empty()) {
        appendf(out, "on %s alone: its price is not in the ledger\n", r.flagship.c_str());
    }
    if (!r.caps.empty()) {
        out += "\ncaps:\n";
        for (const auto& c : r.caps) {
            appendf(
                out, "  %-24s %-10s %-22s %s of %s (%.1f%%)\n", c.budget.c_str(), c.period.c_str(),
                c.window.c_str(), usd(c.spent).c_str(), usd(c.cap).c_str(),
                c.cap == money() ? 100.0 : 100.0 * c.spent.to_double() / c.cap.to_double());
        }
    }
    if (!r.anomalies.empty()) {
        appendf(
            out, "\nANOMALIES: %zu records whose cost is not what the provider reported:\n",
            r.anomalies.size());
        for (const auto& a : r.anomalies) {
            out += "  " + utc_date(a.time_ms, true) + " record " + std::to_string(a.record_id) +
                   " " + a.model + ": " + a.what + "; booked " + usd(a.cost) + '\n';
        }
    }
    if (r.open_reservations != 0) {
        appendf(
            out,
            "open reservations (in flight, or left by a process that ended without settling "
            "them): %zu holding %s\n",
            r.open_reservations, usd(r.open_amount).c_str());
    }
    const auto& c = r.reconcile;
    if (c.ran) {
        appendf(
            out, "\nreconciliation with %s: %zu generations looked up, %zu match",
            c.base_url.c_str(), c.checked, c.matched);
        appendf(out, ", %zu differ\n", c.differences.size());
        auto list = [&](const char* title, const std::vector<bill_difference>& v) {
            for (const auto& x : v) {
                appendf(
                    out, "  %s record %llu (%s, %s): ledger %s, provider %s\n", title,
                    static_cast<unsigned long long>(x.record_id), x.generation_id.c_str(),
                    x.model.c_str(), usd(x.recorded).c_str(), usd(x.billed).c_str());
            }
        };
        list("DIFFERENT", c.differences);
        for (const auto& x : c.rejected) {
            appendf(
                out, "  REJECTED record %llu (%s): %s; the ledger keeps %s\n",
                static_cast<unsigned long long>(x.record_id), x.generation_id.c_str(),
                x.reason.c_str(), usd(x.recorded).c_str());
        }
        list("corrected to the proven bill", c.corrected);
        list("settled open reservation", c.settled);
        if (!c.unverified.empty()) {
            appendf(
                out, "  not answered by the provider: %zu (%s%s)\n", c.unverified.size(),
                c.unverified.front().c_str(), c.unverified.size() > 1 ? ", ..." : "");
        }
        if (c.without_id != 0)
            appendf(out, "  billed records without a generation id: %zu\n", c.without_id);
        if (c.open_left != 0)
            appendf(out, "  open reservations left as spent: %zu\n", c.open_left);
        if (c.differences.empty() && c.unverified.empty()) {
            if (c.checked > 0 && c.without_id == 0 && c.open_left == 0)
                out += "  frugal's books match the provider's bill\n";
            else
                out += "  no differences found\n";
        }
    }
    return out;
}

// ---- JSON ----

namespace {

json::string jmoney(money m)
{
    return json::string(m.to_string());
}

json::array usage_json(const std::vector<usage_row>& rows, const char* key)
{
    json::array a;
    for (const auto& m : rows) {
        a.push_back(json::object{
            {key, m.name},
            {"requests", m.requests},
            {"prompt_tokens", m.prompt_tokens},
            {"completion_tokens", m.completion_tokens},
            {"cost", jmoney(m.cost)},
            {"free", m.free_model}});
    }
    return a;
}

json::array rejected_json(const std::vector<rejected_bill>& v)
{
    json::array a;
    for (const auto& x : v) {
        a.push_back(json::object{
            {"record_id", x.record_id},
            {"generation_id", x.generation_id},
            {"reason", x.reason},
            {"ledger", jmoney(x.recorded)}});
    }
    return a;
}

json::array differences_json(const std::vector<bill_difference>& v)
{
    json::array a;
    for (const auto& x : v) {
        a.push_back(json::object{
            {"record_id", x.record_id},
            {"generation_id", x.generation_id},
            {"model", x.model},
            {"ledger", jmoney(x.recorded)},
            {"provider", jmoney(x.billed)}});
    }
    return a;
}

} // namespace

std::string format_json(const ledger_report& r)
{
    json::object o;
    o["records"] = r.records;
    o["requests"] = r.tasks;
    o["from"] = r.records != 0 ? json::value(utc_date(r.first_ms, true)) : json::value(nullptr);
    o["to"] = r.records != 0 ? json::value(utc_date(r.last_ms, true)) : json::value(nullptr);
    o["total_cost"] = jmoney(r.total);
    o["estimated"] = json::object{{"records", r.estimated}, {"cost", jmoney(r.estimated_cost)}};
    o["by_model"] = usage_json(r.models, "model");
    auto tiers = usage_json(r.tiers, "model");
    for (std::size_t i = 0; i < tiers.size(); ++i)
        tiers[i].as_object()["tier"] = r.tiers[i].tier;
    o["by_tier"] = std::move(tiers);
    json::object reasons;
    for (const auto& [why, n] : r.reasons)
        reasons[why] = n;
    o["escalation"] = json::object{
        {"escalated", r.escalated_tasks},
        {"rate", r.tasks == 0
                     ? 0.0
                     : static_cast<double>(r.escalated_tasks) / static_cast<double>(r.tasks)},
        {"reasons", std::move(reasons)},
        {"denied_by_budget", r.denied},
        {"refused_at_first_tier", r.refused}};
    if (r.flagship_priced) {
        o["flagship_only"] = json::object{
            {"model", r.flagship},
            {"cost", jmoney(r.flagship_only)},
            {"requests", r.compared_tasks},
            {"spent", jmoney(r.compared_total)},
            {"saving", jmoney(r.flagship_only - r.compared_total)},
            {"requests_estimated_from_tokens", r.flagship_estimated}};
    } else {
        o["flagship_only"] = nullptr;
    }
    json::array caps;
    for (const auto& c : r.caps) {
        caps.push_back(json::object{
            {"budget", c.budget},
            {"period", c.period},
            {"window", c.window},
            {"spent", jmoney(c.spent)},
            {"cap", jmoney(c.cap)}});
    }
    o["caps"] = std::move(caps);
    json::array anomalies;
    for (const auto& a : r.anomalies) {
        anomalies.push_back(json::object{
            {"time", utc_date(a.time_ms, true)},
            {"record_id", a.record_id},
            {"model", a.model},
            {"cost", jmoney(a.cost)},
            {"what", a.what}});
    }
    o["anomalies"] = std::move(anomalies);
    o["open_reservations"] =
        json::object{{"count", r.open_reservations}, {"amount", jmoney(r.open_amount)}};
    json::array timeline;
    for (const auto& [t, m] : r.timeline)
        timeline.push_back(json::array{t, jmoney(m)});
    o["spend_over_time"] = std::move(timeline);
    const auto& c = r.reconcile;
    if (c.ran) {
        json::array unverified;
        for (const auto& id : c.unverified)
            unverified.push_back(json::string(id));
        o["reconciliation"] = json::object{
            {"base_url", c.base_url},
            {"checked", c.checked},
            {"matched", c.matched},
            {"differences", differences_json(c.differences)},
            {"corrected", differences_json(c.corrected)},
            {"settled_open", differences_json(c.settled)},
            {"unverified", std::move(unverified)},
            {"rejected", rejected_json(c.rejected)},
            {"without_generation_id", c.without_id},
            {"open_left", c.open_left}};
    }
    return to_json(o) + '\n';
}

// ---- CSV ----

// RFC 4180: a field with a comma, quote or line break is quoted, its quotes doubled. A text
// that a spreadsheet would run as a formula (it begins with = + - @, a tab or a carriage
// return: OWASP's list) gets a leading apostrophe, which spreadsheets show as text.
std::string csv_field(std::string_view s)
{
    std::string text;
    if (!s.empty() && std::string_view("=+-@\t\r").find(s.front()) != std::string_view::npos)
        text = "'";
    text += s;
    if (text.find_first_of(",\"\r\n") == std::string::npos)
        return text;
    std::string out = "\"";
    for (char c : text) {
        if (c == '"')
            out += '"';
        out += c;
    }
    return out + '"';
}

std::string format_csv(const ledger_report& r)
{
    // One table: a section column says what each row is, so one file loads into one sheet.
    std::string out = "section,name,requests,prompt_tokens,completion_tokens,cost_usd,cap_usd\r\n";
    auto row = [&](std::string_view section, std::string_view name, const std::string& requests,
                   const std::string& prompt, const std::string& completion,
                   const std::string& cost, const std::string& cap) {
        out += csv_field(section) + ',' + csv_field(name) + ',' + requests + ',' + prompt + ',' +
               completion + ',' + cost + ',' + cap + "\r\n";
    };
    auto usage = [&](std::string_view section, const std::vector<usage_row>& rows) {
        for (const auto& m : rows)
            row(section, m.name, std::to_string(m.requests), std::to_string(m.prompt_tokens),
                std::to_string(m.completion_tokens), m.cost.to_string(), "");
    };
    usage("model", r.models);
    usage("tier", r.tiers);
    for (const auto& [why, n] : r.reasons)
        row("escalation_reason", why, std::to_string(n), "", "", "", "");
    row("denied_by_budget", "", std::to_string(r.denied), "", "", "", "");
    for (const auto& c : r.caps)
        row("cap", c.budget + " " + c.window, "", "", "", c.spent.to_string(), c.cap.to_string());
    if (r.flagship_priced) {
        // The requests compared (the policy's) on the flagship alone, and what they cost.
        row("flagship_only", r.flagship, std::to_string(r.compared_tasks), "", "",
            r.flagship_only.to_string(), "");
        row("compared_spend", "", std::to_string(r.compared_tasks), "", "",
            r.compared_total.to_string(), "");
    }
    row("total", "", std::to_string(r.tasks), "", "", r.total.to_string(), "");
    for (const auto& x : r.reconcile.differences)
        row("difference", x.generation_id, "", "", "", x.recorded.to_string(),
            x.billed.to_string());
    for (const auto& a : r.anomalies)
        row("anomaly", a.model + ": " + a.what, "", "", "", a.cost.to_string(), "");
    return out;
}

} // namespace frugal::cli
