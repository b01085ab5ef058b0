// The usage report: aggregation of a ledger, and its text, JSON and CSV forms.
#include "cli/json_text.hpp"
#include "cli/report.hpp"


#include <frugal/budget.hpp>

#include <boost/json.hpp>

#include <algorithm>
#include <array>
#include <cstdio>
#include <ctime>
#include <map>
#include <set>
#include <sstream>

namespace frugal::cli {

namespace json = boost::json;

namespace {

bool billed(attempt_outcome o)
{
    return o != attempt_outcome::not_sent && o != attempt_outcome::denied;
}

struct price_note {
    money prompt, completion, request;
};

std::optional<price_note> parse_price(const std::string& text)
{
    std::istringstream in(text);
    std::string a, b, c;
    if (!(in >> a >> b >> c))
        return std::nullopt;
    const auto p = money::parse(a), q = money::parse(b), r = money::parse(c);
    if (!p || !q || !r)
        return std::nullopt;
    return price_note{*p, *q, *r};
}

std::optional<budget_period> parse_period(std::string_view s)
{
    for (auto p :
         {budget_period::none, budget_period::daily, budget_period::weekly, budget_period::monthly})
        if (s == to_string(p))
            return p;
    return std::nullopt;
}

std::string utc_date(std::int64_t unix_ms, bool with_time)
{
    return format_utc(unix_ms, with_time ? "%Y-%m-%d %H:%M:%S UTC" : "%Y-%m-%d");
}

std::string window_label(budget_period p, std::int64_t window)
{
    switch (p) {
    case budget_period::none: return "all time";
    case budget_period::daily: return utc_date(period_window_end_ms(p, window - 1), false);
    case budget_period::weekly:
        return "week of " + utc_date(period_window_end_ms(p, window - 1), false);
    case budget_period::monthly:
        return utc_date(period_window_end_ms(p, window - 1), false).substr(0, 7);
    }
    return "";
}

// tokens × price, exactly; token counts come from a file, so a product past the range
// saturates rather than wraps.
money times(money price, std::uint64_t tokens)
{
    return money::saturating_times(price, tokens);
}

std::string usd(money m)
{
    return "$" + m.to_string();
}

} // namespace

const std::string* find_note(const ledger_notes& notes, std::string_view key)
{
    for (const auto& [k, v] : notes)
        if (k == key)
            return &v;
    return nullptr;
}

std::vector<std::string> noted_tiers(const ledger_notes& notes)
{
    std::vector<std::string> out;
    if (const auto* t = find_note(notes, "tiers")) {
        std::istringstream in(*t);
        for (std::string m; in >> m;)
            out.push_back(m);
    }
    return out;
}

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

bool load_ledger(
    const std::string& path, std::int64_t since_ms, ledger_data& out, std::string& error)
{
    sqlite_store_params p;
    p.path = path;
    p.read_only = true;
    diagnostics diag;
    auto opened = open_sqlite_store(p, &diag);
    if (!opened) {
        error = diag.message;
        return false;
    }
    const auto& store = *opened;
    if (store->load(out.state) || store->read_ledger(since_ms, out.records) ||
        store->read_notes(out.notes)) {
        error = path + ": the ledger could not be read";
        return false;
    }
    return true;
}

ledger_report build_report(const ledger_data& d, std::int64_t now_ms)
{
    ledger_report r;
    r.records = d.records.size();
    std::map<std::string, usage_row> models;
    std::map<std::uint32_t, usage_row> tiers;
    std::map<std::string, std::size_t> reasons;
    // Request id 0 (a record written through the guard directly) is a request of its own.
    std::map<std::pair<std::uint64_t, std::uint64_t>, std::vector<const attempt_record*>> tasks;

    const std::vector<std::string> tier_names = noted_tiers(d.notes);
    auto is_free = [&](const std::string& model) {
        if (const auto* p = find_note(d.notes, "price:" + model))
            if (auto pn = parse_price(*p))
                return pn->prompt == money() && pn->completion == money() && pn->request == money();
        return model.size() > 5 && model.compare(model.size() - 5, 5, ":free") == 0;
    };

    bool first = true;
    for (const auto& rec : d.records) {
        if (first || rec.time_ms < r.first_ms)
            r.first_ms = rec.time_ms;
        r.last_ms = first ? rec.time_ms : std::max(r.last_ms, rec.time_ms);
        first = false;
        r.total += rec.cost;
        tasks[{rec.request_id, rec.request_id == 0 ? rec.record_id : 0}].push_back(&rec);
        if (rec.estimated) {
            ++r.estimated;
            r.estimated_cost += rec.cost;
        }
        if (rec.outcome == attempt_outcome::denied)
            ++(rec.reason.empty() ? r.refused : r.denied);
        if (!rec.reason.empty())
            ++reasons[rec.reason];
        if (!rec.anomaly.empty())
            r.anomalies.push_back(
                {rec.time_ms, rec.record_id, rec.model_asked, rec.cost, rec.anomaly});
        if (!billed(rec.outcome))
            continue;
        const auto& name = rec.model_served.empty() ? rec.model_asked : rec.model_served;
        auto& m = models[name];
        m.name = name;
        m.free_model = is_free(rec.model_asked);
        auto& t = tiers[rec.tier];
        t.tier = rec.tier;
        t.name = rec.tier < tier_names.size() ? tier_names[rec.tier] : rec.model_asked;
        t.free_model = is_free(rec.model_asked);
        for (auto* u : {&m, &t}) {
            ++u->requests;
            u->prompt_tokens += rec.prompt_tokens;
            u->completion_tokens += rec.completion_tokens;
            u->cost += rec.cost;
        }
    }
    for (auto& [_, m] : models)
        r.models.push_back(std::move(m));
    std::stable_sort(r.models.begin(), r.models.end(), [](const auto& a, const auto& b) {
        return a.cost != b.cost ? a.cost > b.cost : a.requests > b.requests;
    });
    for (auto& [_, t] : tiers)
        r.tiers.push_back(std::move(t));
    for (const auto& [k, v] : reasons)
        r.reasons.emplace_back(k, v);
    std::stable_sort(r.reasons.begin(), r.reasons.end(), [](const auto& a, const auto& b) {
        return a.second > b.second;
    });

    // Requests, and what the same ones would have cost on the flagship alone: an attempt the
    // flagship made costs what it cost; a request the flagship never saw costs its accepted
    // answer's tokens at the flagship's prices.
    r.tasks = tasks.size();
    std::optional<price_note> fp;
    if (!tier_names.empty()) {
        r.flagship = tier_names.back();
        if (const auto* p = find_note(d.notes, "price:" + r.flagship))
            fp = parse_price(*p);
    }
    r.flagship_priced = fp.has_value();
    for (const auto& [_, attempts] : tasks) {
        // Escalated: an answer came from a tier the request was sent up to (a denied
        // escalation, or one that failed, kept the lower tier's answer).
        const bool escalated = std::any_of(attempts.begin(), attempts.end(), [](const auto* a) {
            return !a->reason.empty() && a->outcome == attempt_outcome::ok;
        });
        r.escalated_tasks += escalated ? 1 : 0;
        if (!fp)
            continue;
        money on_flagship;
        bool flagship_ran = false;
        const attempt_record* answer = nullptr;
        for (const auto* a : attempts) {
            if (a->model_asked == r.flagship && billed(a->outcome)) {
                on_flagship += a->cost;
                flagship_ran = true;
            }
            if (a->outcome == attempt_outcome::ok)
                answer = a;
        }
        if (!flagship_ran && answer != nullptr) {
            on_flagship = times(fp->prompt, answer->prompt_tokens) +
                          times(fp->completion, answer->completion_tokens) + fp->request;
            ++r.flagship_estimated;
        }
        r.flagship_only += on_flagship;
    }

    // Spend against each cap, in its current window; open reservations count as spent.
    std::vector<std::string> named; // caps of one key, which a `kind:*` cap does not cover
    const auto* budgets = find_note(d.notes, "budgets");
    std::istringstream caps_in(budgets != nullptr ? *budgets : "");
    std::vector<std::array<std::string, 3>> caps;
    for (std::string line; std::getline(caps_in, line);) {
        std::istringstream in(line);
        std::array<std::string, 3> c;
        if (in >> c[0] >> c[1] >> c[2]) {
            caps.push_back(c);
            if (c[0].find(':') != std::string::npos && !c[0].ends_with(":*"))
                named.push_back(c[0]);
        }
    }
    for (const auto& [name, cap_text, period_text] : caps) {
        const auto cap = money::parse(cap_text);
        const auto period = parse_period(period_text);
        if (!cap || !period)
            continue;
        const auto window = period_window(*period, now_ms);
        const bool per_key = name.size() > 2 && name.compare(name.size() - 2, 2, ":*") == 0;
        const std::string kind = per_key ? name.substr(0, name.size() - 1) : "";
        std::map<std::string, money> spent;
        if (!per_key)
            spent[name] = money();
        const std::string& own = name; // a lambda may not name a structured binding (Clang)
        auto matches = [&](const std::string& b) {
            if (!per_key)
                return b == own;
            return b.rfind(kind, 0) == 0 && std::find(named.begin(), named.end(), b) == named.end();
        };
        for (const auto& c : d.state.committed)
            if (c.window == window && matches(c.budget))
                spent[c.budget] += c.amount;
        for (const auto& o : d.state.open) {
            for (const auto& c : o.charges)
                if (c.window == window && matches(c.budget))
                    spent[c.budget] += c.amount;
        }
        for (const auto& [b, s] : spent)
            r.caps.push_back({b, to_string(*period), window_label(*period, window), s, *cap});
    }
    for (const auto& o : d.state.open) {
        ++r.open_reservations;
        if (!o.charges.empty())
            r.open_amount += o.charges.front().amount;
    }

    std::vector<const attempt_record*> by_time;
    for (const auto& rec : d.records)
        if (rec.cost != money())
            by_time.push_back(&rec);
    std::stable_sort(by_time.begin(), by_time.end(), [](const auto* a, const auto* b) {
        return a->time_ms < b->time_ms;
    });
    money running;
    for (const auto* rec : by_time) {
        running += rec->cost;
        if (!r.timeline.empty() && r.timeline.back().first == rec->time_ms)
            r.timeline.back().second = running;
        else
            r.timeline.emplace_back(rec->time_ms, running);
    }
    return r;
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
    if (r.flagship_priced && r.tasks != 0) {
        const money saved = r.flagship_only - r.total;
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
            {"saving", jmoney(r.flagship_only - r.total)},
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

namespace {

} // namespace

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

namespace {

} // namespace

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
    if (r.flagship_priced)
        row("flagship_only", r.flagship, std::to_string(r.tasks), "", "",
            r.flagship_only.to_string(), "");
    row("total", "", std::to_string(r.tasks), "", "", r.total.to_string(), "");
    for (const auto& x : r.reconcile.differences)
        row("difference", x.generation_id, "", "", "", x.recorded.to_string(),
            x.billed.to_string());
    for (const auto& a : r.anomalies)
        row("anomaly", a.model + ": " + a.what, "", "", "", a.cost.to_string(), "");
    return out;
}

} // namespace frugal::cli
