// The usage report as one self-contained HTML file: inline CSS and SVG charts, no script and
// nothing fetched, so it reads the same offline, in a mail attachment or in a CI artifact.
#include "cli/report.hpp"

#include <algorithm>
#include <cstdio>

namespace frugal::cli {

std::string html_escape(std::string_view s)
{
    std::string out;
    out.reserve(s.size());
    for (char c : s) {
        switch (c) {
        case '&': out += "&amp;"; break;
        case '<': out += "&lt;"; break;
        case '>': out += "&gt;"; break;
        case '"': out += "&quot;"; break;
        case '\'': out += "&#39;"; break;
        default: out += c;
        }
    }
    return out;
}

std::string html_number(double v)
{
    char buf[32];
    std::snprintf(buf, sizeof buf, "%.1f", v);
    return buf;
}

namespace {

std::string short_usd(money m)
{
    const double v = m.to_double();
    char buf[32];
    if (v == 0)
        return "$0";
    if (v < 0.01)
        std::snprintf(buf, sizeof buf, "$%.6f", v);
    else
        std::snprintf(buf, sizeof buf, "$%.4f", v);
    return buf;
}

std::string clock_label(std::int64_t unix_ms, bool date)
{
    return format_utc(unix_ms, date ? "%Y-%m-%d %H:%M" : "%H:%M:%S");
}

constexpr const char* paid_colour = "#2f6fdf";
constexpr const char* free_colour = "#1f9d55";
constexpr const char* cap_colour = "#d64545";
constexpr const char* spend_colour = "#7a3fd1";

std::string cost_chart(const ledger_report& r)
{
    const auto& rows = r.models;
    const int label_w = 300, bar_w = 380, row_h = 28, top = 10;
    const int h = top + row_h * static_cast<int>(std::max<std::size_t>(rows.size(), 1)) + 10;
    money most;
    for (const auto& m : rows)
        most = std::max(most, m.cost);
    std::string s = "<svg role=\"img\" aria-label=\"Cost per model\" width=\"800\" height=\"" +
                    std::to_string(h) + "\" viewBox=\"0 0 800 " + std::to_string(h) +
                    "\" xmlns=\"http://www.w3.org/2000/svg\">";
    int y = top;
    for (const auto& m : rows) {
        const double frac = most == money() ? 0.0 : m.cost.to_double() / most.to_double();
        const double w = std::max(m.free_model ? 3.0 : 2.0, frac * bar_w);
        s += "<text x=\"" + std::to_string(label_w - 8) + "\" y=\"" + std::to_string(y + 18) +
             "\" text-anchor=\"end\" class=\"lbl\">" + html_escape(m.name) + "</text>";
        s += "<rect class=\"bar\" x=\"" + std::to_string(label_w) + "\" y=\"" +
             std::to_string(y + 4) + "\" width=\"" + html_number(w) + "\" height=\"" +
             std::to_string(row_h - 8) + "\" fill=\"" + (m.free_model ? free_colour : paid_colour) +
             "\"/>";
        s += "<text x=\"" + html_number(label_w + w + 6) + "\" y=\"" + std::to_string(y + 18) +
             "\" class=\"val\">" + html_escape(short_usd(m.cost)) + (m.free_model ? " (free)" : "") +
             " · " + std::to_string(m.requests) + " req</text>";
        y += row_h;
    }
    if (rows.empty())
        s += "<text x=\"10\" y=\"30\" class=\"lbl\">no calls</text>";
    return s + "</svg>";
}

std::string spend_chart(const ledger_report& r)
{
    const int w = 800, h = 260, left = 90, right = 20, top = 16, bottom = 40;
    const int pw = w - left - right, ph = h - top - bottom;
    std::string s = "<svg role=\"img\" aria-label=\"Spend over time\" width=\"800\" height=\"260\" "
                    "viewBox=\"0 0 800 260\" xmlns=\"http://www.w3.org/2000/svg\">";
    s += "<rect x=\"" + std::to_string(left) + "\" y=\"" + std::to_string(top) + "\" width=\"" +
         std::to_string(pw) + "\" height=\"" + std::to_string(ph) +
         "\" fill=\"#fafbfc\" stroke=\"#d0d7de\"/>";
    // A single cap (the global one) is drawn as a line: the spend must stay under it.
    std::optional<money> cap;
    // Only a cap that never resets: a periodic one starts again while the curve does not.
    for (const auto& c : r.caps)
        if (c.budget.find(':') == std::string::npos && c.period == "none" && (!cap || c.cap < *cap))
            cap = c.cap;
    money top_value = r.timeline.empty() ? money() : r.timeline.back().second;
    if (cap)
        top_value = std::max(top_value, *cap);
    if (r.timeline.empty() || top_value == money()) {
        s += "<text x=\"" + std::to_string(left + 10) + "\" y=\"" + std::to_string(top + 24) +
             "\" class=\"lbl\">nothing spent</text>";
        return s + "</svg>";
    }
    const double vmax = top_value.to_double() * 1.08;
    const std::int64_t t0 = r.timeline.front().first;
    const std::int64_t t1 = std::max(r.timeline.back().first, t0 + 1000);
    auto x = [&](std::int64_t t) {
        return left + static_cast<double>(t - t0) / static_cast<double>(t1 - t0) * pw;
    };
    auto y = [&](money m) { return top + ph - m.to_double() / vmax * ph; };
    for (int i = 0; i <= 4; ++i) { // y grid and labels
        const double v = vmax * i / 4;
        const double yy = top + ph - static_cast<double>(ph) * i / 4;
        char buf[32];
        std::snprintf(buf, sizeof buf, v < 0.01 ? "$%.5f" : "$%.3f", v);
        s += "<line x1=\"" + std::to_string(left) + "\" x2=\"" + std::to_string(left + pw) +
             "\" y1=\"" + html_number(yy) + "\" y2=\"" + html_number(yy) + "\" stroke=\"#e5e7eb\"/>";
        s += "<text x=\"" + std::to_string(left - 6) + "\" y=\"" + html_number(yy + 4) +
             "\" text-anchor=\"end\" class=\"axis\">" + buf + "</text>";
    }
    s += "<text x=\"" + std::to_string(left) + "\" y=\"" + std::to_string(h - 12) +
         "\" class=\"axis\">" + html_escape(clock_label(t0, true)) + " UTC</text>";
    s += "<text x=\"" + std::to_string(left + pw) + "\" y=\"" + std::to_string(h - 12) +
         "\" text-anchor=\"end\" class=\"axis\">" + html_escape(clock_label(t1, false)) + "</text>";
    std::string pts = html_number(x(t0)) + "," + html_number(y(money()));
    money prev;
    for (const auto& [t, m] : r.timeline) { // a step line: spend jumps at each settlement
        pts += " " + html_number(x(t)) + "," + html_number(y(prev));
        pts += " " + html_number(x(t)) + "," + html_number(y(m));
        prev = m;
    }
    pts += " " + html_number(x(t1)) + "," + html_number(y(prev));
    s += "<polyline class=\"spend\" points=\"" + pts + "\" fill=\"none\" stroke=\"" + spend_colour +
         "\" stroke-width=\"2.5\"/>";
    if (cap) {
        const double cy = y(*cap);
        s += "<line x1=\"" + std::to_string(left) + "\" x2=\"" + std::to_string(left + pw) +
             "\" y1=\"" + html_number(cy) + "\" y2=\"" + html_number(cy) + "\" stroke=\"" + cap_colour +
             "\" stroke-width=\"2\" stroke-dasharray=\"6 4\"/>";
        s += "<text x=\"" + std::to_string(left + pw - 4) + "\" y=\"" + html_number(cy - 6) +
             "\" text-anchor=\"end\" class=\"axis\" fill=\"" + cap_colour + "\">cap " +
             html_escape(short_usd(*cap)) + "</text>";
    }
    return s + "</svg>";
}

std::string usage_table(const std::vector<usage_row>& rows, bool tiers)
{
    std::string s = "<table><tr><th>" + std::string(tiers ? "tier" : "model") +
                    "</th><th>requests</th><th>prompt tokens</th><th>completion tokens</th>"
                    "<th>cost (USD)</th></tr>";
    for (std::size_t i = 0; i < rows.size(); ++i) {
        const auto& m = rows[i];
        s += "<tr><td>" + (tiers ? std::to_string(m.tier) + ": " : std::string()) + html_escape(m.name) +
             "</td><td>" + std::to_string(m.requests) + "</td><td>" +
             std::to_string(m.prompt_tokens) + "</td><td>" + std::to_string(m.completion_tokens) +
             "</td><td>" + html_escape(m.cost.to_string()) + (m.free_model ? " <em>free</em>" : "") +
             "</td></tr>";
    }
    return s + "</table>";
}

std::string card(const std::string& title, const std::string& value)
{
    return "<div class=\"card\"><div class=\"t\">" + html_escape(title) + "</div><div class=\"v\">" +
           html_escape(value) + "</div></div>";
}

} // namespace

std::string format_html(const ledger_report& r)
{
    std::string s =
        "<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">"
        "<title>frugal usage report</title><style>"
        "body{font:15px/1.45 system-ui,-apple-system,'Segoe UI',sans-serif;margin:24px auto;"
        "max-width:860px;color:#1f2328;background:#fff}"
        "h1{font-size:24px;margin:0 0 4px}h2{font-size:18px;margin:28px 0 8px}"
        ".sub{color:#57606a}.cards{display:flex;flex-wrap:wrap;gap:12px;margin:18px 0}"
        ".card{border:1px solid #d0d7de;border-radius:8px;padding:10px 14px;min-width:150px}"
        ".card .t{color:#57606a;font-size:13px}.card .v{font-size:20px;font-weight:600}"
        "table{border-collapse:collapse;width:100%}th,td{padding:5px 8px;border-bottom:1px solid "
        "#e5e7eb;text-align:right}th:first-child,td:first-child{text-align:left}"
        "th{background:#f6f8fa}.lbl{font-size:13px;fill:#1f2328}.val{font-size:12px;fill:#57606a}"
        ".axis{font-size:11px;fill:#57606a}.bad{color:#d64545;font-weight:600}"
        ".good{color:#137333;font-weight:600}</style></head><body>\n";
    s += "<h1>frugal usage report</h1><div class=\"sub\">";
    if (r.records != 0) {
        s += std::to_string(r.records) + " ledger records, " + std::to_string(r.tasks) +
             " requests, " + html_escape(clock_label(r.first_ms, true)) + " to " +
             html_escape(clock_label(r.last_ms, true)) + " UTC";
    } else {
        s += "no records in this period";
    }
    s += "</div>\n<div class=\"cards\">";
    s += card("spent", "$" + r.total.to_string());
    if (r.flagship_priced && r.compared_tasks != 0) {
        s += card("on the flagship alone", "$" + r.flagship_only.to_string());
        s += card("saved", "$" + (r.flagship_only - r.compared_total).to_string());
    }
    s += card("escalated", std::to_string(r.escalated_tasks) + " of " + std::to_string(r.tasks));
    s += card("denied by the budget", std::to_string(r.denied));
    s += "</div>\n<h2>Cost per model</h2>" + cost_chart(r) + "\n";
    s += "<h2>Spend over time</h2>" + spend_chart(r) + "\n";
    s += "<h2>Models</h2>" + usage_table(r.models, false) + "\n";
    s += "<h2>Tiers</h2>" + usage_table(r.tiers, true) + "\n";
    s += "<h2>Escalation</h2><p>" + std::to_string(r.escalated_tasks) + " of " +
         std::to_string(r.tasks) + " requests went past their first tier";
    if (!r.reasons.empty()) {
        s += ": ";
        for (std::size_t i = 0; i < r.reasons.size(); ++i)
            s += (i != 0 ? ", " : "") + html_escape(r.reasons[i].first) + " " +
                 std::to_string(r.reasons[i].second);
    }
    s += ". " + std::to_string(r.denied) + " escalations were denied by the budget.";
    if (r.flagship_priced && r.compared_tasks != 0) {
        s += " The policy's " + std::to_string(r.compared_tasks) + " requests, which cost $" +
             html_escape(r.compared_total.to_string()) + ", on " + html_escape(r.flagship) +
             " alone would have cost $" +
             html_escape(r.flagship_only.to_string()) + " (" + std::to_string(r.flagship_estimated) +
             " of them priced from their answer's tokens).";
    }
    s += "</p>\n";
    if (!r.caps.empty()) {
        s += "<h2>Caps</h2><table><tr><th>budget</th><th>period</th><th>window</th>"
             "<th>spent</th><th>cap</th></tr>";
        for (const auto& c : r.caps) {
            s += "<tr><td>" + html_escape(c.budget) + "</td><td>" + html_escape(c.period) + "</td><td>" +
                 html_escape(c.window) + "</td><td>" + html_escape(c.spent.to_string()) + "</td><td>" +
                 html_escape(c.cap.to_string()) + "</td></tr>";
        }
        s += "</table>\n";
    }
    if (!r.anomalies.empty()) {
        s += "<h2 class=\"bad\">Anomalies</h2><p>Records whose cost is not what the provider "
             "reported: a bill above the model's prices, or a reported cost frugal could not "
             "take as a bill.</p><table><tr><th>time</th><th>record</th><th>model</th>"
             "<th>booked</th><th>what</th></tr>";
        for (const auto& a : r.anomalies) {
            s += "<tr><td>" + html_escape(format_utc(a.time_ms, "%Y-%m-%d %H:%M:%S")) + "</td><td>" +
                 std::to_string(a.record_id) + "</td><td>" + html_escape(a.model) + "</td><td>" +
                 html_escape(a.cost.to_string()) + "</td><td>" + html_escape(a.what) + "</td></tr>";
        }
        s += "</table>\n";
    }
    const auto& c = r.reconcile;
    if (c.ran) {
        s += "<h2>Reconciliation with the provider</h2><p>" + std::to_string(c.checked) +
             " generations looked up, " + std::to_string(c.matched) + " match, ";
        s += c.differences.empty()
                 ? "<span class=\"good\">none differ</span>"
                 : "<span class=\"bad\">" + std::to_string(c.differences.size()) + " differ</span>";
        s += ".</p>";
        if (!c.differences.empty() || !c.corrected.empty() || !c.settled.empty()) {
            s += "<table><tr><th>generation</th><th>model</th><th>what</th><th>ledger</th>"
                 "<th>provider</th></tr>";
            auto rows = [&](const std::vector<bill_difference>& v, const char* what) {
                for (const auto& x : v) {
                    s += "<tr><td>" + html_escape(x.generation_id) + "</td><td>" + html_escape(x.model) +
                         "</td><td>" + what + "</td><td>" + html_escape(x.recorded.to_string()) +
                         "</td><td>" + html_escape(x.billed.to_string()) + "</td></tr>";
                }
            };
            rows(c.differences, "differs");
            rows(c.corrected, "estimate corrected");
            rows(c.settled, "open reservation settled");
            s += "</table>\n";
        }
    }
    s += "</body></html>\n";
    return s;
}

} // namespace frugal::cli
