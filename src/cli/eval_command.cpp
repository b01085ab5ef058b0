// `frugal eval`: a policy's cost and quality on recorded answers, beside the baselines, as a
// table, one JSON object, or an HTML page with the sweep's cost/quality curve.
#include "cli/commands.hpp"
#include "cli/json_text.hpp"
#include "cli/report.hpp"

#include <frugal/chat_client.hpp>
#include <frugal/eval.hpp>
#include <frugal/prices.hpp>
#include <frugal/router.hpp>

#include <boost/json.hpp>

#include <algorithm>
#include <cstdio>
#include <fstream>

namespace frugal::cli {

namespace json = boost::json;

namespace {

// `NAME=V1,V2,...` or `NAME=[JSON array]` (for values holding commas, such as patterns). A
// value that reads as JSON is taken as such (a number, true); otherwise it is a string.
bool parse_sweep(
    const std::string& spec, std::string& name, std::vector<json::value>& values, std::string& why)
{
    const auto eq = spec.find('=');
    if (eq == std::string::npos || eq == 0) {
        why = "--sweep must be NAME=V1,V2,... (or NAME=[JSON array])";
        return false;
    }
    name = spec.substr(0, eq);
    const std::string rest = spec.substr(eq + 1);
    boost::system::error_code ec;
    if (!rest.empty() && rest.front() == '[') {
        const auto v = json::parse(rest, ec);
        if (ec || !v.is_array() || v.get_array().empty()) {
            why = "--sweep " + name + ": the values are not a non-empty JSON array";
            return false;
        }
        values.assign(v.get_array().begin(), v.get_array().end());
        return true;
    }
    std::size_t from = 0;
    for (;;) {
        const auto comma = rest.find(',', from);
        const std::string item = rest.substr(from, comma == std::string::npos ? comma : comma - from);
        if (item.empty()) {
            why = "--sweep " + name + ": an empty value";
            return false;
        }
        auto v = json::parse(item, ec);
        values.push_back(ec ? json::value(json::string(item)) : std::move(v));
        if (comma == std::string::npos)
            return true;
        from = comma + 1;
    }
}

std::string value_label(const json::value& v)
{
    return v.is_string() ? std::string(v.get_string()) : json::serialize(v);
}

json::value opt(const std::optional<double>& d)
{
    return d ? json::value(*d) : json::value(nullptr);
}

json::object measure_json(const eval_measure& m, const std::vector<std::string>& tiers)
{
    json::object by_tier;
    json::object sent_to;
    for (std::size_t i = 0; i < tiers.size() && i < m.by_tier.size(); ++i) {
        by_tier[tiers[i]] = m.by_tier[i];
        sent_to[tiers[i]] = m.sent_to[i];
    }
    return json::object{
        {"accuracy", m.accuracy},
        {"cost", m.cost.to_string()},
        {"escalated_share", m.escalated_share},
        {"pgr", opt(m.pgr)},
        {"by_tier", std::move(by_tier)},
        {"sent_to", std::move(sent_to)}};
}

json::object baselines_json(const eval_report& r)
{
    return json::object{
        {"always_cheap", measure_json(r.always_cheap, r.tiers)},
        {"always_flagship", measure_json(r.always_flagship, r.tiers)},
        {"random", measure_json(r.random, r.tiers)},
        {"oracle", measure_json(r.oracle, r.tiers)}};
}

std::string pct(double share)
{
    char buf[32];
    std::snprintf(buf, sizeof buf, "%.1f%%", share * 100);
    return buf;
}

std::string fixed(std::optional<double> v)
{
    if (!v)
        return "-";
    char buf[32];
    std::snprintf(buf, sizeof buf, "%.3f", *v);
    return buf;
}

std::string row(const std::string& name, const eval_measure& m, int width)
{
    char buf[1024];
    std::snprintf(
        buf, sizeof buf, "%-*s %9s %16s %10s %7s\n", width, name.c_str(), pct(m.accuracy).c_str(),
        m.cost.to_string().c_str(), pct(m.escalated_share).c_str(), fixed(m.pgr).c_str());
    return buf;
}

struct point {
    std::string label;
    const eval_measure* m;
    bool baseline;
};

// Cost (x) against accuracy (y): the sweep's points joined as a curve, the baselines as
// labelled dots, in the report dashboard's colours.
std::string chart(const std::vector<point>& points)
{
    constexpr double w = 760, h = 380, left = 70, right = 20, top = 20, bottom = 50;
    double max_cost = 0;
    double lo = 1;
    double hi = 0;
    for (const auto& p : points) {
        max_cost = std::max(max_cost, p.m->cost.to_double());
        lo = std::min(lo, p.m->accuracy);
        hi = std::max(hi, p.m->accuracy);
    }
    if (max_cost <= 0)
        max_cost = 1;
    lo = std::max(0.0, lo - 0.02);
    hi = std::min(1.0, hi + 0.02);
    if (hi <= lo)
        hi = lo + 0.01;
    auto x = [&](double c) { return left + (w - left - right) * c / max_cost; };
    auto y = [&](double a) { return top + (h - top - bottom) * (1 - (a - lo) / (hi - lo)); };
    std::string s = "<svg viewBox=\"0 0 " + html_number(w) + " " + html_number(h) +
                    "\" width=\"100%\" role=\"img\" aria-label=\"cost against accuracy\">";
    s += "<line x1=\"" + html_number(left) + "\" y1=\"" + html_number(h - bottom) + "\" x2=\"" + html_number(w - right) +
         "\" y2=\"" + html_number(h - bottom) + "\" stroke=\"#8c959f\"/>";
    s += "<line x1=\"" + html_number(left) + "\" y1=\"" + html_number(top) + "\" x2=\"" + html_number(left) + "\" y2=\"" +
         html_number(h - bottom) + "\" stroke=\"#8c959f\"/>";
    s += "<text class=\"lbl\" x=\"" + html_number((w + left) / 2) + "\" y=\"" + html_number(h - 10) +
         "\" text-anchor=\"middle\">cost (USD, up to " + html_escape(std::to_string(max_cost)) +
         ")</text>";
    s += "<text class=\"lbl\" x=\"14\" y=\"" + html_number(top + 10) + "\">accuracy</text>";
    for (int i = 0; i <= 4; ++i) {
        const double a = lo + (hi - lo) * i / 4;
        s += "<text class=\"val\" x=\"" + html_number(left - 6) + "\" y=\"" + html_number(y(a) + 4) +
             "\" text-anchor=\"end\">" + html_number(a * 100) + "%</text>";
    }
    std::string path;
    for (const auto& p : points) {
        if (p.baseline)
            continue;
        path += (path.empty() ? "M" : " L") + html_number(x(p.m->cost.to_double())) + " " +
                html_number(y(p.m->accuracy));
    }
    if (!path.empty())
        s += "<path d=\"" + path + "\" fill=\"none\" stroke=\"#2f6fdf\" stroke-width=\"2\"/>";
    for (const auto& p : points) {
        const double px = x(p.m->cost.to_double());
        const double py = y(p.m->accuracy);
        s += "<circle cx=\"" + html_number(px) + "\" cy=\"" + html_number(py) + "\" r=\"5\" fill=\"" +
             (p.baseline ? "#7a3fd1" : "#2f6fdf") + "\"><title>" + html_escape(p.label) + "</title></circle>";
        s += "<text class=\"val\" x=\"" + html_number(px + 8) + "\" y=\"" + html_number(py - 6) + "\">" +
             html_escape(p.label) + "</text>";
    }
    return s + "</svg>";
}

std::string html_page(
    const eval_report& base,
    const std::vector<std::pair<std::string, eval_report>>& runs,
    const std::string& sweep_name)
{
    std::vector<point> points;
    for (const auto& [label, r] : runs)
        if (r.judged)
            points.push_back({sweep_name.empty() ? "policy" : sweep_name + "=" + label, &r.policy, false});
    points.push_back({"always cheap", &base.always_cheap, true});
    points.push_back({"always flagship", &base.always_flagship, true});
    points.push_back(
        {sweep_name.empty() ? "random" : "random (share of " + sweep_name + "=" + runs.front().first + ")",
         &base.random, true});
    points.push_back({"oracle", &base.oracle, true});
    std::string s =
        "<!doctype html><html lang=\"en\"><meta charset=\"utf-8\"><title>frugal eval</title><style>"
        "body{font-family:system-ui,-apple-system,Segoe UI,Roboto,sans-serif;margin:24px auto;"
        "max-width:860px;color:#1f2328;background:#fff}"
        "table{border-collapse:collapse;width:100%}th,td{padding:5px 8px;border-bottom:1px solid "
        "#d0d7de;text-align:right}th:first-child,td:first-child{text-align:left}"
        "th{background:#f6f8fa}.lbl{font-size:13px;fill:#1f2328}.val{font-size:12px;fill:#57606a}"
        "</style><h1>frugal eval</h1>";
    s += "<p>" + std::to_string(base.prompts) + " prompts; tiers ";
    for (std::size_t i = 0; i < base.tiers.size(); ++i)
        s += (i ? " → " : "") + html_escape(base.tiers[i]);
    s += ".</p>" + chart(points);
    s += "<table><tr><th>routing</th><th>accuracy</th><th>cost (USD)</th><th>escalated</th>"
         "<th>PGR</th></tr>";
    for (const auto& p : points)
        s += "<tr><td>" + html_escape(p.label) + "</td><td>" + pct(p.m->accuracy) + "</td><td>" +
             p.m->cost.to_string() + "</td><td>" + pct(p.m->escalated_share) + "</td><td>" +
             fixed(p.m->pgr) + "</td></tr>";
    s += "</table>";
    for (const auto& note : base.notes)
        s += "<p>" + html_escape(note) + "</p>";
    return s + "</html>\n";
}

} // namespace

int run_eval(const eval_options& options)
{
    const char* me = "frugal eval";
    diagnostics diag;
    auto outcomes = read_outcomes(options.outcome_files, &diag);
    if (!outcomes) {
        std::fprintf(stderr, "%s: %s\n", me, diag.message.c_str());
        return exit_failure;
    }
    const auto policy_text = read_text_file(options.policy_file);
    if (!policy_text) {
        std::fprintf(stderr, "%s: cannot read %s\n", me, options.policy_file.c_str());
        return exit_usage;
    }

    // Prices: a saved catalog, or the endpoint's own.
    std::vector<model_info> rows;
    if (!options.prices_file.empty()) {
        const auto text = read_text_file(options.prices_file);
        if (!text) {
            std::fprintf(stderr, "%s: cannot read %s\n", me, options.prices_file.c_str());
            return exit_usage;
        }
        auto parsed = parse_models(*text);
        if (!parsed) {
            std::fprintf(
                stderr, "%s: %s: not a models catalog in OpenRouter's shape ({\"data\": [...]})\n",
                me, options.prices_file.c_str());
            return exit_usage;
        }
        rows = std::move(*parsed);
    } else {
        auto fetched = fetch_catalog(options.base_url, "eval");
        if (!fetched)
            return exit_failure;
        rows = std::move(*fetched);
    }
    const price_catalog prices(rows);

    // The runs: the policy as written, or once per value of the swept member.
    std::string sweep_name;
    std::vector<json::value> values;
    if (!options.sweep.empty()) {
        std::string why;
        if (!parse_sweep(options.sweep, sweep_name, values, why)) {
            std::fprintf(stderr, "%s: %s\n", me, why.c_str());
            return exit_usage;
        }
    }
    std::vector<std::pair<std::string, eval_report>> runs;
    auto run_one = [&](const std::string& text, const std::string& label) -> int {
        auto policy = parse_policy(text, &diag);
        if (!policy) {
            std::fprintf(
                stderr, "%s: %s%s: %s\n", me, options.policy_file.c_str(),
                label.empty() ? "" : (" with " + sweep_name + "=" + label).c_str(),
                diag.message.c_str());
            return exit_usage;
        }
        auto r = evaluate(*outcomes, *policy, prices, &diag);
        if (!r) {
            std::fprintf(stderr, "%s: %s\n", me, diag.message.c_str());
            return r.error() == error::bad_outcomes ? exit_failure : exit_usage;
        }
        runs.emplace_back(label, std::move(*r));
        return 0;
    };
    if (values.empty()) {
        if (const int rc = run_one(*policy_text, {}); rc != 0)
            return rc;
    } else {
        boost::system::error_code ec;
        auto doc = json::parse(*policy_text, ec);
        if (ec || !doc.is_object()) {
            std::fprintf(
                stderr, "%s: %s: policy: must be a JSON object\n", me, options.policy_file.c_str());
            return exit_usage;
        }
        for (const auto& v : values) {
            doc.get_object()[sweep_name] = v;
            if (const int rc = run_one(json::serialize(doc), value_label(v)); rc != 0)
                return rc;
        }
    }
    eval_report& base = runs.front().second;
    // The baselines are those of the first value; a member that changes them (max_tokens cuts
    // answers) is said, and each point's PGR stays against its own baselines.
    for (const auto& [label, r] : runs) {
        if (r.always_cheap.cost != base.always_cheap.cost ||
            r.always_flagship.cost != base.always_flagship.cost ||
            r.always_cheap.accuracy != base.always_cheap.accuracy ||
            r.always_flagship.accuracy != base.always_flagship.accuracy) {
            base.notes.push_back(
                "the baselines change with " + sweep_name + ": those shown are for " +
                sweep_name + "=" + runs.front().first +
                "; each point's PGR is against its own baselines");
            break;
        }
    }

    if (!options.decisions_file.empty()) {
        // One line per prompt of each run: what the policy did with it, to set beside a live
        // run's answers.
        std::ofstream out(options.decisions_file, std::ios::binary | std::ios::trunc);
        for (const auto& [label, r] : runs) {
            for (std::size_t i = 0; i < r.decisions.size(); ++i) {
                const auto& d = r.decisions[i];
                const auto& p = outcomes->prompts[i];
                json::object o{
                    {"index", i},
                    {"file", p.file},
                    {"line", p.line},
                    {"tier", d.tier},
                    {"model", r.tiers[d.tier]},
                    {"escalated", d.tier > 0},
                    {"reason", d.reason == escalation_reason::none ? json::value(nullptr)
                                                                   : json::value(to_string(d.reason))},
                    {"cost", d.cost.to_string()},
                    {"correct", d.correct}};
                if (!sweep_name.empty())
                    o["value"] = label;
                out << to_json(o) << '\n';
            }
        }
        if (!out.flush()) {
            std::fprintf(stderr, "%s: cannot write %s\n", me, options.decisions_file.c_str());
            return exit_failure;
        }
    }

    if (!options.html_file.empty()) {
        std::ofstream out(options.html_file, std::ios::binary | std::ios::trunc);
        out << html_page(base, runs, sweep_name);
        if (!out.flush()) {
            std::fprintf(stderr, "%s: cannot write %s\n", me, options.html_file.c_str());
            return exit_failure;
        }
    }

    if (options.json) {
        json::object o{{"prompts", base.prompts}};
        if (sweep_name.empty()) {
            o["policy"] = base.judged ? json::value(measure_json(base.policy, base.tiers))
                                      : json::value(nullptr);
        } else {
            json::array points;
            for (const auto& [label, r] : runs) {
                json::object p{{"value", label}};
                if (r.judged)
                    for (auto& [k, v] : measure_json(r.policy, r.tiers))
                        p[k] = v;
                points.push_back(std::move(p));
            }
            o["sweep"] = json::object{{"member", sweep_name}, {"points", std::move(points)}};
        }
        o["baselines"] = baselines_json(base);
        json::array notes;
        for (const auto& n : base.notes)
            notes.push_back(json::string(n));
        o["notes"] = std::move(notes);
        std::printf("%s\n", to_json(o).c_str());
        return 0;
    }

    std::string text = std::to_string(base.prompts) + " prompts; tiers ";
    for (std::size_t i = 0; i < base.tiers.size(); ++i)
        text += (i ? " -> " : "") + base.tiers[i];
    text += "\n\n";
    auto label_of = [&](const std::string& value) {
        return sweep_name.empty() ? std::string("policy") : sweep_name + "=" + value;
    };
    int width = 20;
    for (const auto& run : runs)
        width = std::max(width, static_cast<int>(std::min<std::size_t>(label_of(run.first).size(), 200)));
    char head[256];
    std::snprintf(
        head, sizeof head, "%-*s %9s %16s %10s %7s\n", width, "routing", "accuracy", "cost (USD)",
        "escalated", "PGR");
    text += head;
    for (const auto& [label, r] : runs)
        if (r.judged)
            text += row(label_of(label), r.policy, width);
    text += row("always cheap", base.always_cheap, width);
    text += row("always flagship", base.always_flagship, width);
    text += row(
        sweep_name.empty() ? "random (same share)" : "random (share of " + label_of(runs.front().first) + ")",
        base.random, width);
    text += row("oracle", base.oracle, width);
    for (const auto& n : base.notes)
        text += "\nnote: " + n;
    std::printf("%s\n", text.c_str());
    return 0;
}

} // namespace frugal::cli
