// The usage report of a ledger: loading it from SQLite, and the aggregation (per model, per
// tier, per cap, escalations, anomalies, the flagship-only comparison, spend over time).
#include <frugal/ledger.hpp>

#include <frugal/error.hpp>

#include <algorithm>
#include <ctime>
#include <map>

namespace frugal {

namespace {

bool billed(attempt_outcome o)
{
    return o != attempt_outcome::not_sent && o != attempt_outcome::denied;
}

std::string utc_day(std::int64_t unix_ms)
{
    const auto t = static_cast<std::time_t>(unix_ms / 1000);
    std::tm tm{};
    gmtime_r(&t, &tm);
    char buf[32];
    return std::string(buf, std::strftime(buf, sizeof buf, "%Y-%m-%d", &tm));
}

std::string window_label(budget_period p, std::int64_t window)
{
    switch (p) {
    case budget_period::none: return "all time";
    case budget_period::daily: return utc_day(period_window_end_ms(p, window - 1));
    case budget_period::weekly: return "week of " + utc_day(period_window_end_ms(p, window - 1));
    case budget_period::monthly: return utc_day(period_window_end_ms(p, window - 1)).substr(0, 7);
    }
    return "";
}

// tokens × price, exactly; token counts come from a file, so a product past the range
// saturates rather than wraps.
money times(money price, std::uint64_t tokens)
{
    return money::saturating_times(price, tokens);
}

// A model is free when its noted prices are all zero; a model no router priced is judged by
// its id, for want of better.
bool is_free(const ledger_notes& notes, const std::string& model)
{
    if (const auto* p = notes.price_of(model))
        return p->free();
    return model.size() > 5 && model.compare(model.size() - 5, 5, ":free") == 0;
}

using task_map =
    std::map<std::pair<std::uint64_t, std::uint64_t>, std::vector<const attempt_record*>>;

// Requests, and what the same ones would have cost on the flagship alone: an attempt the
// flagship made costs what it cost; a request the flagship never saw costs its accepted
// answer's tokens at the flagship's prices.
void add_tasks(const ledger_data& d, const task_map& tasks, ledger_report& r)
{
    r.tasks = tasks.size();
    const noted_price* fp = nullptr;
    if (!d.notes.tiers.empty()) {
        r.flagship = d.notes.tiers.back();
        fp = d.notes.price_of(r.flagship);
    }
    r.flagship_priced = fp != nullptr;
    for (const auto& [_, attempts] : tasks) {
        // Escalated: an answer came from a tier the request was sent up to (a denied
        // escalation, or one that failed, kept the lower tier's answer).
        const bool escalated = std::any_of(attempts.begin(), attempts.end(), [](const auto* a) {
            return !a->reason.empty() && a->outcome == attempt_outcome::ok;
        });
        r.escalated_tasks += escalated ? 1 : 0;
        if (fp == nullptr)
            continue;
        // A request that is not the policy's (a gateway's pass-through to a model of the
        // caller's choice) has no flagship to be compared with.
        const bool of_policy = std::all_of(attempts.begin(), attempts.end(), [&](const auto* a) {
            return std::find(d.notes.tiers.begin(), d.notes.tiers.end(), a->model_asked) !=
                   d.notes.tiers.end();
        });
        if (!of_policy)
            continue;
        ++r.compared_tasks;
        for (const auto* a : attempts)
            r.compared_total += a->cost;
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
}

// Spend against each cap, in its current window; open reservations count as spent.
void add_caps(const ledger_data& d, std::int64_t now_ms, ledger_report& r)
{
    std::vector<std::string> named; // caps of one key, which a `kind:*` cap does not cover
    for (const auto& c : d.notes.caps)
        if (c.name.find(':') != std::string::npos && !c.name.ends_with(":*"))
            named.push_back(c.name);
    for (const auto& c : d.notes.caps) {
        const std::string& name = c.name;
        const auto window = period_window(c.period, now_ms);
        const bool per_key = name.size() > 2 && name.ends_with(":*");
        const std::string kind = per_key ? name.substr(0, name.size() - 1) : "";
        std::map<std::string, money> spent;
        if (!per_key)
            spent[name] = money();
        auto matches = [&](const std::string& b) {
            if (!per_key)
                return b == name;
            return b.rfind(kind, 0) == 0 && std::find(named.begin(), named.end(), b) == named.end();
        };
        for (const auto& s : d.state.committed)
            if (s.window == window && matches(s.budget))
                spent[s.budget] += s.amount;
        for (const auto& o : d.state.open) {
            for (const auto& s : o.charges)
                if (s.window == window && matches(s.budget))
                    spent[s.budget] += s.amount;
        }
        for (const auto& [b, s] : spent)
            r.caps.push_back({b, to_string(c.period), window_label(c.period, window), s, c.cap});
    }
    for (const auto& o : d.state.open) {
        ++r.open_reservations;
        if (!o.charges.empty())
            r.open_amount += o.charges.front().amount;
    }
}

void add_timeline(const ledger_data& d, ledger_report& r)
{
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
}

} // namespace

boost::system::result<ledger_data>
load_ledger(const std::string& path, std::int64_t since_ms, diagnostics* diag)
{
    sqlite_store_params p;
    p.path = path;
    p.read_only = true;
    auto opened = open_sqlite_store(p, diag);
    if (!opened)
        return opened.error();
    const auto& store = *opened;
    ledger_data out;
    std::vector<ledger_note> notes;
    if (store->load(out.state) || store->read_ledger(since_ms, out.records) ||
        store->read_notes(notes)) {
        if (diag != nullptr)
            diag->message = path + ": the ledger could not be read";
        return make_error_code(error::budget_store_failed);
    }
    out.notes = ledger_notes::parse(notes);
    return out;
}

ledger_report build_report(const ledger_data& d, std::int64_t now_ms)
{
    ledger_report r;
    r.records = d.records.size();
    std::map<std::string, usage_row> models;
    // By tier and model asked: a record of another cascade than the noted policy's (a
    // gateway's pass-through, another policy) is not that tier's, though its index is.
    std::map<std::pair<std::uint32_t, std::string>, usage_row> tiers;
    std::map<std::string, std::size_t> reasons;
    // Request id 0 (a record written through the guard directly) is a request of its own.
    task_map tasks;

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
        const bool free_model = is_free(d.notes, rec.model_asked);
        auto& m = models[name];
        m.name = name;
        m.free_model = free_model;
        auto& t = tiers[{rec.tier, rec.model_asked}];
        t.tier = rec.tier;
        t.name = rec.model_asked; // the noted tier's model, when the record is the policy's
        t.free_model = free_model;
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
    add_tasks(d, tasks, r);
    add_caps(d, now_ms, r);
    add_timeline(d, r);
    return r;
}

} // namespace frugal
