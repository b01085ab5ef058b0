// Reconciliation's decisions, without I/O: which generations to look up, what each lookup
// proves, and the change it makes to the books.
#include <frugal/ledger.hpp>

#include <algorithm>

namespace frugal {

namespace {

std::uint32_t tier_of(const ledger_notes& notes, const std::string& model)
{
    const auto& tiers = notes.tiers;
    const auto it = std::find(tiers.begin(), tiers.end(), model);
    return it == tiers.end() ? 0 : static_cast<std::uint32_t>(it - tiers.begin());
}

money held_by(const std::vector<budget_charge>& charges)
{
    return charges.empty() ? money() : charges.front().amount;
}

bool is_reservation(const bill_check& c)
{
    return c.what != bill_check::entry::record;
}

// A reservation proven by its generation: the record the settlement appends.
attempt_record settled_record(const generation_info& g, const ledger_notes& notes, money bill)
{
    attempt_record rec;
    rec.generation_id = g.id;
    rec.tier = tier_of(notes, g.model);
    rec.model_asked = g.model;
    rec.model_served = g.model;
    rec.provider = g.provider;
    rec.prompt_tokens = g.tokens_prompt;
    rec.completion_tokens = g.tokens_completion;
    rec.cost = bill;
    rec.outcome = g.cancelled.value_or(false) ? attempt_outcome::cancelled : attempt_outcome::ok;
    return rec;
}

} // namespace

reconcile_plan plan_reconcile(const ledger_data& data, std::span<const swept_reservation> swept)
{
    reconcile_plan plan;
    for (std::size_t i = 0; i < data.records.size(); ++i) {
        const auto& r = data.records[i];
        if (r.outcome == attempt_outcome::not_sent || r.outcome == attempt_outcome::denied)
            continue;
        if (r.generation_id.empty()) {
            ++plan.without_id;
            continue;
        }
        plan.checks.push_back(
            {bill_check::entry::record, i, r.generation_id, r.time_ms + r.latency_us / 1000});
    }
    for (std::size_t i = 0; i < data.state.open.size(); ++i) {
        const auto& o = data.state.open[i];
        if (o.generation_id.empty()) {
            ++plan.open_left;
            continue;
        }
        plan.checks.push_back({bill_check::entry::open_reservation, i, o.generation_id, o.time_ms});
    }
    for (std::size_t i = 0; i < swept.size(); ++i) {
        if (swept[i].generation_id.empty()) {
            ++plan.open_left;
            continue;
        }
        plan.checks.push_back({bill_check::entry::swept_reservation, i, swept[i].generation_id, 0});
    }
    return plan;
}

bill_decision decide_bill(
    const bill_check& check,
    const ledger_data& data,
    std::span<const swept_reservation> swept,
    const generation_info* found,
    std::int64_t now_ms)
{
    bill_decision d;
    const attempt_record* r =
        check.what == bill_check::entry::record ? &data.records.at(check.index) : nullptr;
    const reservation_entry* o = check.what == bill_check::entry::open_reservation
                                     ? &data.state.open.at(check.index)
                                     : nullptr;
    const swept_reservation* sw =
        check.what == bill_check::entry::swept_reservation ? &swept[check.index] : nullptr;
    const money booked = r != nullptr    ? r->cost
                         : o != nullptr  ? held_by(o->charges)
                         : sw != nullptr ? held_by(sw->charges)
                                         : money();
    // What a lookup could lower: an estimate, or a reservation. Only a paid model's is above 0.
    const bool lowerable = r == nullptr || r->estimated;
    std::string rejected;
    if (found != nullptr && !found->total_cost_rejected.empty())
        rejected = "total_cost was " + found->total_cost_rejected;
    else if (
        found != nullptr && found->total_cost == money() && lowerable && booked > money() &&
        !found->is_byok.value_or(false) &&
        (found->tokens_prompt + found->tokens_completion > 0 || !found->tokens_rejected.empty()))
        // As the answer's own cost of 0 is refused; counts that prove nothing prove no zero.
        rejected = found->tokens_rejected.empty()
                       ? "total_cost was 0 for tokens a paid model served"
                       : "total_cost was 0 and " + found->tokens_rejected;
    if (!rejected.empty()) {
        // Never written into the books: a negative, unreadable or zero bill proves nothing.
        d.verdict = bill_verdict::rejected;
        d.rejection = {
            r != nullptr ? r->record_id : 0, check.generation_id, std::move(rejected), booked};
        return d;
    }
    if (found == nullptr || !found->total_cost)
        return d; // unverified
    d.bill = *found->total_cost;
    if (r != nullptr) {
        d.difference = {
            r->record_id, r->generation_id,
            r->model_served.empty() ? r->model_asked : r->model_served, r->cost, d.bill};
        // Proven, even when the estimate was right: the record stops saying "unknown". A bill
        // above the books is written too, and the record then carries the anomaly (the books
        // are never left below the bill).
        if (r->estimated || d.bill > r->cost)
            d.verdict = bill_verdict::correct;
        else
            d.verdict = d.bill == r->cost ? bill_verdict::matched : bill_verdict::differs;
        return d;
    }
    d.verdict = bill_verdict::settle;
    d.settlement = settled_record(*found, data.notes, d.bill);
    d.settlement.generation_id = check.generation_id;
    money held;
    if (sw != nullptr) {
        d.settlement.time_ms = now_ms;
        held = held_by(sw->charges);
        d.difference = {0, sw->generation_id, d.settlement.model_asked, held, d.bill};
    } else {
        d.settlement.time_ms = o->time_ms;
        d.settlement.request_id = o->request_id;
        d.settlement.tier = tier_of(data.notes, o->model);
        d.settlement.model_asked = o->model;
        // The reservation's own budget windows, charged the proven bill instead of its hold.
        for (const auto& c : o->charges)
            d.charges.push_back({c.budget, c.window, d.bill});
        held = held_by(o->charges);
        d.difference = {0, o->generation_id, o->model, held, d.bill};
    }
    if (d.bill > held)
        d.settlement.anomaly = proven_above_booked(d.bill, held);
    return d;
}

void apply_bill(
    budget_store& store,
    const bill_check& check,
    const ledger_data& data,
    std::span<const swept_reservation> swept,
    bill_decision d,
    reconcile_result& out)
{
    switch (d.verdict) {
    case bill_verdict::rejected:
        out.rejected.push_back(std::move(d.rejection));
        out.open_left += is_reservation(check) ? 1 : 0;
        return;
    case bill_verdict::unverified:
        out.unverified.push_back(check.generation_id);
        out.open_left += is_reservation(check) ? 1 : 0;
        return;
    case bill_verdict::matched:
        ++out.checked;
        ++out.matched;
        return;
    case bill_verdict::differs:
        ++out.checked;
        out.differences.push_back(std::move(d.difference));
        return;
    case bill_verdict::correct: {
        ++out.checked;
        correction c;
        if (store.correct(data.records.at(check.index).record_id, d.bill, c))
            out.differences.push_back(std::move(d.difference));
        else
            out.corrected.push_back(std::move(d.difference));
        return;
    }
    case bill_verdict::settle: {
        ++out.checked;
        boost::system::error_code ec;
        if (check.what == bill_check::entry::swept_reservation) {
            ec = store.settle_swept(swept[check.index], d.settlement);
        } else {
            std::vector<budget_charge_view> charges;
            for (const auto& c : d.charges)
                charges.push_back({c.budget, c.window, c.amount, money(), 0});
            ec = store.settle(data.state.open.at(check.index).id, charges, d.settlement);
        }
        if (ec) {
            ++out.open_left;
        } else {
            d.difference.record_id = d.settlement.record_id;
            out.settled.push_back(std::move(d.difference));
        }
        return;
    }
    }
}

} // namespace frugal
