// The ledger layer without sockets: the notes' text form both ways, a report built from
// hand-made records (sums, per-model and per-tier rows, caps in their windows, escalations,
// the flagship-only figure), and reconciliation's decisions.

#include <frugal/ledger.hpp>

#include "openrouter/codec.hpp"
#include "printers.hpp"
#include "scratch_file.hpp"

#include <boost/test/unit_test.hpp>

#include <unistd.h>

#include <filesystem>

using frugal::money;

namespace {

money usd(const char* s)
{
    return *money::parse(s);
}

constexpr const char* cheap = "google/gemma-4-31b-it:free";
constexpr const char* flagship = "anthropic/claude-fable-5";
// Thursday 2026-11-26 12:00:00 UTC: its week began on Monday the 23rd.
constexpr std::int64_t now_ms = 1795694400000;

frugal::ledger_notes notes()
{
    frugal::ledger_notes n;
    n.tiers = {cheap, flagship};
    n.prices[cheap] = {};
    n.prices[flagship] = {usd("0.001"), usd("0.002"), usd("0.01")};
    n.caps = {
        {"global", usd("1"), frugal::budget_period::none},
        {"user:*", usd("0.5"), frugal::budget_period::daily},
        {"user:vip", usd("2"), frugal::budget_period::daily},
        {"team", usd("3"), frugal::budget_period::weekly},
        {"org", usd("4"), frugal::budget_period::monthly}};
    return n;
}

frugal::attempt_record attempt(
    std::uint64_t id,
    std::uint64_t request,
    std::uint32_t tier,
    const char* model,
    std::uint64_t prompt,
    std::uint64_t completion,
    const char* cost,
    std::int64_t ago_ms)
{
    frugal::attempt_record r;
    r.record_id = id;
    r.request_id = request;
    r.tier = tier;
    r.model_asked = model;
    r.model_served = model;
    r.prompt_tokens = prompt;
    r.completion_tokens = completion;
    r.cost = usd(cost);
    r.time_ms = now_ms - ago_ms;
    r.generation_id = "gen-" + std::to_string(id);
    return r;
}

// Six requests: one answered by the free tier; one escalated for length and answered by the
// flagship; one whose escalation the budget denied; one routed to the flagship and cut (its
// bill unknown); one refused at its first tier; one written through the guard alone (request
// id 0) by a "free" model that billed.
frugal::ledger_data sample_ledger()
{
    using frugal::attempt_outcome;
    frugal::ledger_data d;
    d.notes = notes();
    d.records.push_back(attempt(1, 1, 0, cheap, 10, 20, "0", 5000));
    d.records.push_back(attempt(2, 2, 0, cheap, 100, 5, "0", 4000));
    auto escalated = attempt(3, 2, 1, flagship, 100, 50, "0.3", 3900);
    escalated.reason = "length";
    d.records.push_back(escalated);
    d.records.push_back(attempt(4, 3, 0, cheap, 40, 60, "0", 3000));
    auto denied = attempt(5, 3, 1, flagship, 0, 0, "0", 2999);
    denied.model_served.clear();
    denied.generation_id.clear();
    denied.outcome = attempt_outcome::denied;
    denied.reason = "refusal";
    d.records.push_back(denied);
    auto cut = attempt(6, 4, 1, flagship, 200, 0, "0.05", 2000);
    cut.outcome = attempt_outcome::unknown;
    cut.estimated = true;
    cut.reason = "context";
    d.records.push_back(cut);
    auto refused = attempt(7, 5, 1, flagship, 0, 0, "0", 2500);
    refused.outcome = attempt_outcome::denied;
    refused.generation_id.clear();
    d.records.push_back(refused);
    auto surprise = attempt(8, 0, 0, "other/model:free", 7, 9, "0.02", 1000);
    surprise.anomaly = "a free model billed 0.02";
    d.records.push_back(surprise);

    using frugal::budget_period;
    const auto day = frugal::period_window(budget_period::daily, now_ms);
    const auto week = frugal::period_window(budget_period::weekly, now_ms);
    const auto month = frugal::period_window(budget_period::monthly, now_ms);
    d.state.committed = {{"global", 0, usd("0.37")},      {"user:a", day, usd("0.1")},
                         {"user:b", day - 1, usd("0.4")}, // yesterday's window: not in today's row
                         {"user:vip", day, usd("0.2")},   // its own cap, not one of `user:*`
                         {"team", week, usd("0.3")},      {"org", month, usd("0.37")}};
    frugal::reservation_entry open;
    open.id = 99;
    open.time_ms = now_ms - 500;
    open.request_id = 6;
    open.model = flagship;
    open.generation_id = "gen-open";
    open.charges = {
        {"global", 0, usd("0.05")}, {"user:a", day, usd("0.05")}, {"team", week, usd("0.05")}};
    d.state.open.push_back(open);
    return d;
}

using frugal::test::scratch_file;

} // namespace

BOOST_AUTO_TEST_SUITE(ledger)

BOOST_AUTO_TEST_CASE(notes_come_back_as_they_were_written)
{
    auto n = notes();
    // A model id with a space, a line break, a tab, a percent sign that looks like an escape
    // and one that does not; a cap name with a space; a cap of one microdollar.
    const std::string odd = "vendor/odd model%41\nline\t100%";
    n.tiers.insert(n.tiers.begin() + 1, odd);
    n.prices[odd] = {usd("0.000001"), usd("0"), usd("0.5")};
    n.prices["earlier/policy-model"] = {usd("0.1"), usd("0.2"), usd("0")};
    n.caps.push_back({"tenant:big spender", usd("0.000001"), frugal::budget_period::daily});
    n.base_url = "http://127.0.0.1:8080/api/v1";
    n.other = {{"zz-something-else", "kept as it is"}};

    const auto text = n.format();
    const auto back = frugal::ledger_notes::parse(text);
    BOOST_TEST((back == n));
    BOOST_TEST_REQUIRE(back.tiers.size() == 3u);
    BOOST_TEST(back.tiers[1] == odd);
    BOOST_TEST_REQUIRE(back.caps.size() == 6u);
    BOOST_TEST(back.caps[5].cap == money::from_units(1'000'000));
    BOOST_TEST(back.caps[5].name == "tenant:big spender");

    // The text itself: the guard's caps note is what reports have always read.
    const auto caps = n.format_caps();
    BOOST_TEST(caps.first == "budgets");
    BOOST_TEST(
        caps.second == "global 1 none\nuser:* 0.5 daily\nuser:vip 2 daily\nteam 3 weekly\n"
                       "org 4 monthly\ntenant:big%20spender 0.000001 daily\n");
    // The router's notes: each tier's price in tier order, then the tiers.
    const auto tiers = n.format_tiers();
    BOOST_TEST_REQUIRE(tiers.size() == 4u);
    BOOST_TEST(tiers[0].first == std::string("price:") + cheap);
    BOOST_TEST(tiers[0].second == "0 0 0");
    BOOST_TEST(tiers[1].first == "price:" + odd);
    BOOST_TEST(tiers[1].second == "0.000001 0 0.5");
    BOOST_TEST(tiers[2].second == "0.001 0.002 0.01");
    BOOST_TEST(tiers[3].first == "tiers");
    BOOST_TEST(
        tiers[3].second ==
        std::string(cheap) + " vendor/odd%20model%2541%0Aline%09100%25 " + flagship);
    BOOST_TEST((frugal::ledger_notes::parse(tiers).tiers == n.tiers));
}

BOOST_AUTO_TEST_CASE(notes_written_before_the_encoding_read_as_they_did)
{
    const std::vector<frugal::ledger_note> old = {
        {"budgets", "global 1 none\nbroken line\nuser:* 0.25 daily\nx notmoney none\n"},
        {"price:a", "0 0 0"},
        {"price:b", "1 2"}, // unreadable: left out
        {"tiers", "a  b%zz 100%"}};
    const auto n = frugal::ledger_notes::parse(old);
    BOOST_TEST_REQUIRE(n.caps.size() == 2u);
    BOOST_TEST(n.caps[1].name == "user:*");
    BOOST_TEST(n.caps[1].cap == usd("0.25"));
    BOOST_TEST((n.caps[1].period == frugal::budget_period::daily));
    const std::vector<std::string> tiers = {"a", "b%zz", "100%"};
    BOOST_TEST((n.tiers == tiers));
    BOOST_TEST(n.prices.size() == 1u);
    BOOST_TEST(n.price_of("a") != nullptr);
    BOOST_TEST(n.price_of("b") == nullptr);
    BOOST_TEST(!n.base_url.has_value());
}

BOOST_AUTO_TEST_CASE(a_report_adds_up_by_model_tier_and_request)
{
    const auto r = frugal::build_report(sample_ledger(), now_ms);
    BOOST_TEST(r.records == 8u);
    BOOST_TEST(r.tasks == 6u);
    BOOST_TEST(r.first_ms == now_ms - 5000);
    BOOST_TEST(r.last_ms == now_ms - 1000);
    BOOST_TEST(r.total == usd("0.37"));
    BOOST_TEST(r.estimated == 1u);
    BOOST_TEST(r.estimated_cost == usd("0.05"));
    BOOST_TEST(r.escalated_tasks == 1u); // only the flagship's accepted answer counts
    BOOST_TEST(r.denied == 1u);
    BOOST_TEST(r.refused == 1u);
    const std::vector<std::pair<std::string, std::size_t>> reasons = {
        {"context", 1}, {"length", 1}, {"refusal", 1}};
    BOOST_TEST((r.reasons == reasons));

    // Served models, costliest first; the denied ones count nowhere.
    BOOST_TEST_REQUIRE(r.models.size() == 3u);
    BOOST_TEST(r.models[0].name == flagship);
    BOOST_TEST(r.models[0].requests == 2u);
    BOOST_TEST(r.models[0].prompt_tokens == 300u);
    BOOST_TEST(r.models[0].completion_tokens == 50u);
    BOOST_TEST(r.models[0].cost == usd("0.35"));
    BOOST_TEST(!r.models[0].free_model);
    BOOST_TEST(r.models[1].name == "other/model:free");
    BOOST_TEST(r.models[1].cost == usd("0.02"));
    BOOST_TEST(r.models[1].free_model); // no noted price: judged by its id
    BOOST_TEST(r.models[2].name == cheap);
    BOOST_TEST(r.models[2].requests == 3u);
    BOOST_TEST(r.models[2].prompt_tokens == 150u);
    BOOST_TEST(r.models[2].completion_tokens == 85u);
    BOOST_TEST(r.models[2].cost == money());
    BOOST_TEST(r.models[2].free_model); // its noted prices are zero

    // Tiers by index and model asked: the record written through the guard alone is at index
    // 0 too, but it is not the noted policy's cheap tier, and is not counted as it (a
    // gateway's pass-through to a paid model was reported as the free tier's spend).
    BOOST_TEST_REQUIRE(r.tiers.size() == 3u);
    BOOST_TEST(r.tiers[0].tier == 0u);
    BOOST_TEST(r.tiers[0].name == cheap);
    BOOST_TEST(r.tiers[0].requests == 3u);
    BOOST_TEST(r.tiers[0].prompt_tokens == 150u);
    BOOST_TEST(r.tiers[0].completion_tokens == 85u);
    BOOST_TEST(r.tiers[0].cost == money());
    BOOST_TEST(r.tiers[0].free_model);
    BOOST_TEST(r.tiers[1].tier == 0u);
    BOOST_TEST(r.tiers[1].name == "other/model:free");
    BOOST_TEST(r.tiers[1].requests == 1u);
    BOOST_TEST(r.tiers[1].cost == usd("0.02"));
    BOOST_TEST(r.tiers[2].tier == 1u);
    BOOST_TEST(r.tiers[2].name == flagship);
    BOOST_TEST(r.tiers[2].requests == 2u);
    BOOST_TEST(r.tiers[2].cost == usd("0.35"));
    BOOST_TEST(!r.tiers[2].free_model);
    money by_model, by_tier;
    for (const auto& m : r.models)
        by_model += m.cost;
    for (const auto& t : r.tiers)
        by_tier += t.cost;
    BOOST_TEST(by_model == r.total);
    BOOST_TEST(by_tier == r.total);

    // The flagship alone: its own attempts as billed (0.3, 0.05); the others' accepted answers
    // at its prices: 10×0.001 + 20×0.002 + 0.01 and 40×0.001 + 60×0.002 + 0.01; the refused
    // request had no answer, and the one that asked a model of no tier has no flagship.
    BOOST_TEST(r.flagship == flagship);
    BOOST_TEST(r.flagship_priced);
    BOOST_TEST(r.flagship_only == usd("0.58"));
    BOOST_TEST(r.flagship_estimated == 2u);
    // ... compared with what those five requests cost, not with the total.
    BOOST_TEST(r.compared_tasks == 5u);
    BOOST_TEST(r.compared_total == usd("0.35"));

    BOOST_TEST_REQUIRE(r.anomalies.size() == 1u);
    BOOST_TEST(r.anomalies[0].record_id == 8u);
    BOOST_TEST(r.anomalies[0].cost == usd("0.02"));
    BOOST_TEST(r.anomalies[0].what == "a free model billed 0.02");

    const std::vector<std::pair<std::int64_t, money>> timeline = {
        {now_ms - 3900, usd("0.3")}, {now_ms - 2000, usd("0.35")}, {now_ms - 1000, usd("0.37")}};
    BOOST_TEST((r.timeline == timeline));
    BOOST_TEST(r.open_reservations == 1u);
    BOOST_TEST(r.open_amount == usd("0.05"));
    BOOST_TEST(!r.reconcile.ran);
}

BOOST_AUTO_TEST_CASE(caps_show_their_current_window_with_open_reservations)
{
    const auto r = frugal::build_report(sample_ledger(), now_ms);
    const std::vector<frugal::cap_row> caps = {
        {"global", "none", "all time", usd("0.42"), usd("1")},
        {"user:a", "daily", "2026-11-26", usd("0.15"), usd("0.5")},
        {"user:vip", "daily", "2026-11-26", usd("0.2"), usd("2")},
        {"team", "weekly", "week of 2026-11-23", usd("0.35"), usd("3")},
        {"org", "monthly", "2026-11", usd("0.37"), usd("4")}};
    BOOST_TEST_REQUIRE(r.caps.size() == caps.size());
    for (std::size_t i = 0; i < caps.size(); ++i) {
        BOOST_TEST_CONTEXT("cap " << caps[i].budget)
        {
            BOOST_TEST(r.caps[i].budget == caps[i].budget);
            BOOST_TEST(r.caps[i].period == caps[i].period);
            BOOST_TEST(r.caps[i].window == caps[i].window);
            BOOST_TEST(r.caps[i].spent == caps[i].spent);
            BOOST_TEST(r.caps[i].cap == caps[i].cap);
        }
    }
    // A day later the daily caps start again (yesterday's spend is not today's).
    const auto next_day = frugal::build_report(sample_ledger(), now_ms + 86'400'000);
    BOOST_TEST_REQUIRE(next_day.caps.size() == 4u); // no key of `user:*` spent that day
    BOOST_TEST(next_day.caps[1].budget == "user:vip");
    BOOST_TEST(next_day.caps[1].window == "2026-11-27");
    BOOST_TEST(next_day.caps[1].spent == money());
}

BOOST_AUTO_TEST_CASE(an_empty_ledger_reports_nothing_and_no_flagship)
{
    frugal::ledger_data d;
    const auto r = frugal::build_report(d, now_ms);
    BOOST_TEST(r.records == 0u);
    BOOST_TEST(r.tasks == 0u);
    BOOST_TEST(r.total == money());
    BOOST_TEST(r.flagship.empty());
    BOOST_TEST(!r.flagship_priced);
    BOOST_TEST(r.caps.empty());
}

BOOST_AUTO_TEST_CASE(a_ledger_file_loads_with_its_typed_notes)
{
    scratch_file file("ledger-test");
    {
        frugal::diagnostics opening;
        auto opened = frugal::open_sqlite_store({file.path.string()}, &opening);
        BOOST_TEST_REQUIRE(opened.has_value(), opening.message);
        auto store = *opened;
        for (const auto& [k, v] : notes().format())
            BOOST_TEST(!store->put_note(k, v));
        auto rec = attempt(0, 1, 0, cheap, 1, 2, "0", 10);
        BOOST_TEST(!store->settle(0, {}, rec));
    }
    frugal::diagnostics diag;
    auto data = frugal::load_ledger(file.path.string(), 0, &diag);
    BOOST_TEST_REQUIRE(data.has_value(), diag.message);
    BOOST_TEST((data->notes == notes()));
    BOOST_TEST(data->records.size() == 1u);

    auto missing = frugal::load_ledger((file.path / "nowhere.db").string(), 0, &diag);
    BOOST_TEST(!missing.has_value());
    BOOST_TEST(!diag.message.empty());
}

BOOST_AUTO_TEST_CASE(reconciliation_decides_each_generation_from_its_bill)
{
    using frugal::bill_check;
    using frugal::bill_verdict;
    auto d = sample_ledger();
    d.records[0].generation_id.clear(); // a billed record without an id
    const auto plan = frugal::plan_reconcile(d);
    BOOST_TEST(plan.without_id == 1u);
    BOOST_TEST(plan.open_left == 0u);
    // Records 2, 3, 4, 6 and 8 (the denied ones are not billed), then the open reservation.
    BOOST_TEST_REQUIRE(plan.checks.size() == 6u);
    BOOST_TEST(plan.checks[1].generation_id == "gen-3");
    BOOST_TEST(plan.checks[1].ended_ms == now_ms - 3900);
    BOOST_TEST((plan.checks[5].what == bill_check::entry::open_reservation));

    auto bill = [](const char* cost) {
        frugal::generation_info g;
        g.model = flagship;
        g.provider = "Fable";
        g.tokens_prompt = 100;
        g.tokens_completion = 50;
        g.total_cost = usd(cost);
        return g;
    };
    auto decide = [&](std::size_t i, const frugal::generation_info* g) {
        return frugal::decide_bill(plan.checks[i], d, {}, g, now_ms);
    };
    const auto same = bill("0.3"), less = bill("0.25"), more = bill("0.4");
    BOOST_TEST((decide(1, &same).verdict == bill_verdict::matched));
    BOOST_TEST((decide(1, &less).verdict == bill_verdict::differs));
    BOOST_TEST((decide(1, &more).verdict == bill_verdict::correct)); // never left below a bill
    const auto cut = bill("0.05");
    BOOST_TEST((decide(3, &cut).verdict == bill_verdict::correct)); // estimated: proven
    BOOST_TEST((decide(1, nullptr).verdict == bill_verdict::unverified));
    auto negative = bill("0");
    negative.total_cost.reset();
    negative.total_cost_rejected = "negative (-0.5)";
    const auto rejected = decide(1, &negative);
    BOOST_TEST((rejected.verdict == bill_verdict::rejected));
    BOOST_TEST(rejected.rejection.reason == "total_cost was negative (-0.5)");
    BOOST_TEST(rejected.rejection.recorded == usd("0.3"));
    // A bill of exactly 0 for tokens served proves nothing about an estimate or a reservation
    // of a paid model (the answer's own cost of 0 is refused the same way); it is not taken.
    const auto zero = bill("0");
    const auto zero_estimate = decide(3, &zero);
    BOOST_TEST((zero_estimate.verdict == bill_verdict::rejected));
    BOOST_TEST(zero_estimate.rejection.reason == "total_cost was 0 for tokens a paid model served");
    BOOST_TEST((decide(5, &zero).verdict == bill_verdict::rejected));
    BOOST_TEST((decide(1, &zero).verdict == bill_verdict::differs)); // a settled bill: reported
    auto nothing_served = bill("0");
    nothing_served.tokens_prompt = nothing_served.tokens_completion = 0;
    BOOST_TEST((decide(3, &nothing_served).verdict == bill_verdict::correct));
    // Counts that say nothing prove no zero; a BYOK generation's fee may be 0.
    auto no_counts = nothing_served;
    no_counts.tokens_rejected = "tokens_prompt was missing or not a whole number";
    const auto unproven = decide(3, &no_counts);
    BOOST_TEST((unproven.verdict == bill_verdict::rejected));
    BOOST_TEST(
        unproven.rejection.reason ==
        "total_cost was 0 and tokens_prompt was missing or not a whole number");
    auto byok = bill("0");
    byok.is_byok = true;
    BOOST_TEST((decide(3, &byok).verdict == bill_verdict::correct));
    frugal::generation_info g;
    BOOST_TEST(!frugal::openrouter::decode_generation(
        R"({"data":{"id":"gen-1","total_cost":0,"tokens_prompt":-5,"tokens_completion":"900","is_byok":false}})",
        g));
    BOOST_TEST(g.tokens_rejected == "tokens_prompt was missing or not a whole number");
    BOOST_TEST(g.is_byok == std::optional<bool>(false));

    // The open reservation held 0.05; a bill of 0.4 settles it above its hold, in its windows.
    const auto settle = decide(5, &more);
    BOOST_TEST((settle.verdict == bill_verdict::settle));
    BOOST_TEST(settle.settlement.request_id == 6u);
    BOOST_TEST(settle.settlement.model_asked == flagship);
    BOOST_TEST(settle.settlement.tier == 1u);
    BOOST_TEST(settle.settlement.cost == usd("0.4"));
    BOOST_TEST(!settle.settlement.anomaly.empty());
    BOOST_TEST_REQUIRE(settle.charges.size() == 3u);
    BOOST_TEST(settle.charges[1].budget == "user:a");
    BOOST_TEST(settle.charges[1].amount == usd("0.4"));
    BOOST_TEST(settle.difference.recorded == usd("0.05"));
}

BOOST_AUTO_TEST_SUITE_END()
