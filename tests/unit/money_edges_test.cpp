// The cap at every edge: one test per defect that outside checks found (issue 14), named
// after it, each written as the hostile provider or the new user who found it.
#include <frugal/budget.hpp>
#include <frugal/error.hpp>
#include <frugal/prices.hpp>

#include "cli/alarm.hpp"
#include "cli/report.hpp"
#include "openrouter/codec.hpp"
#include "openrouter/scrub.hpp"
#include "printers.hpp"

#include <boost/test/unit_test.hpp>

#include <algorithm>
#include <cctype>
#include <random>
#include <string>
#include <vector>

using frugal::money;
namespace openrouter = frugal::openrouter;

namespace {

money usd(const char* s)
{
    return *money::parse(s);
}

// The catalog as OpenRouter may list it: the :free twin first, sharing the paid model's
// canonical slug (the shape that priced the paid model as free).
std::vector<frugal::model_info> twin_catalog()
{
    std::vector<frugal::model_info> rows;
    std::string error;
    const auto ec = openrouter::decode_models(
        R"({"data":[
 {"id":"google/gemma-4-31b-it:free","canonical_slug":"google/gemma-4-31b-it","pricing":
   {"prompt":"0","completion":"0","request":"0","image":"0","web_search":"0","internal_reasoning":"0"},
   "top_provider":{"max_completion_tokens":8192,"is_moderated":false}},
 {"id":"google/gemma-4-31b-it","canonical_slug":"google/gemma-4-31b-it","pricing":
   {"prompt":"0.00000004","completion":"0.00000015","request":"0"},
   "top_provider":{"max_completion_tokens":8192,"is_moderated":false}},
 {"id":"liquid/lfm-2.5-2.6b:free","canonical_slug":"liquid/lfm-2.5-2.6b-20260811","pricing":
   {"prompt":"0","completion":"0"}},
 {"id":"anthropic/claude-fable-5","canonical_slug":"anthropic/claude-fable-5","pricing":
   {"prompt":"0.000003","completion":"0.000015","request":"0"},
   "top_provider":{"max_completion_tokens":8192,"is_moderated":false}}
 ]})",
        rows);
    BOOST_REQUIRE(!ec);
    return rows;
}

struct guarded {
    explicit guarded(std::vector<frugal::budget_spec> specs)
    {
        frugal::budget_params p;
        p.budgets = std::move(specs);
        guard.emplace(frugal::budget_guard::open(p, frugal::price_catalog(twin_catalog())).value());
    }
    frugal::reservation
    reserve(const char* model, std::span<const std::string> keys = {}, std::string_view extra = {})
    {
        frugal::reserve_request r;
        r.model = model;
        r.prompt_bytes = 100;
        r.max_tokens = 100;
        r.keys = keys;
        r.extra_body = extra;
        auto got = guard->try_reserve(r, &diag);
        ec = got.error(); // success when granted
        return got ? std::move(*got) : frugal::reservation();
    }
    const frugal::budget_snapshot& budget(const std::string& name)
    {
        snapshots = guard->snapshot();
        const auto it = std::find_if(
            snapshots.begin(), snapshots.end(), [&](const auto& s) { return s.name == name; });
        BOOST_REQUIRE(it != snapshots.end());
        return *it;
    }
    std::optional<frugal::budget_guard> guard;
    boost::system::error_code ec;
    frugal::diagnostics diag;
    std::vector<frugal::budget_snapshot> snapshots;
};

frugal::attempt_record billed(const char* model, money cost)
{
    frugal::attempt_record r;
    r.model_asked = model;
    r.model_served = model;
    r.cost = cost;
    return r;
}

frugal::usage decoded_usage(const std::string& usage_json)
{
    openrouter::chat_decoder d;
    openrouter::chat_chunk c;
    const auto ec = d.decode(
        R"({"id":"gen-1","model":"m","choices":[{"index":0,"message":{"role":"assistant","content":"x"},"finish_reason":"stop"}],"usage":)" +
            usage_json + "}",
        c);
    BOOST_REQUIRE(!ec);
    BOOST_REQUIRE(c.usage.has_value());
    return *c.usage;
}

} // namespace

BOOST_AUTO_TEST_SUITE(money_edges)

BOOST_AUTO_TEST_CASE(defect_1_a_paid_model_is_never_priced_as_its_free_twin)
{
    const frugal::price_catalog c(twin_catalog());
    const auto* paid = c.find("google/gemma-4-31b-it");
    BOOST_TEST_REQUIRE(paid != nullptr);
    BOOST_TEST(!paid->free());
    BOOST_TEST((paid->completion == usd("0.00000015")));
    BOOST_TEST(c.find("google/gemma-4-31b-it:free")->free());
    // The canonical slug is a fallback among rows of one kind only: a paid name never reaches
    // the :free row by it, and a :free name never reaches a paid one.
    BOOST_TEST(c.find("liquid/lfm-2.5-2.6b-20260811") == nullptr);
    BOOST_TEST(c.find("google/gemma-4-31b-it-20260101") == nullptr);

    // Under a cap of $0.000001 the paid twin is refused, not waved through as free.
    guarded g({{"global", usd("0.000001")}});
    auto r = g.reserve("google/gemma-4-31b-it");
    BOOST_TEST(!r.active());
    BOOST_TEST(g.ec == frugal::error::budget_exhausted);
    BOOST_TEST(g.reserve("google/gemma-4-31b-it:free").free());
}

BOOST_AUTO_TEST_CASE(defect_2_a_free_model_that_bills_stops_every_budget_it_touched)
{
    guarded g({{"global", usd("0.005")}, {"tenant:acme", usd("0.004")}});
    const std::vector<std::string> acme{"tenant:acme"};
    auto r = g.reserve("google/gemma-4-31b-it:free", acme);
    BOOST_TEST_REQUIRE(r.active());
    BOOST_TEST(r.free());
    r.mark_sent();
    auto rec = billed("google/gemma-4-31b-it:free", usd("0.01"));
    BOOST_TEST(!r.settle(rec));
    BOOST_TEST(!rec.anomaly.empty());
    // Charged to the tenant's cap as well as the global one, and both are stopped.
    BOOST_TEST((g.budget("tenant:acme").committed == usd("0.01")));
    BOOST_TEST(g.budget("tenant:acme").stopped);
    BOOST_TEST(g.budget("global").stopped);
    BOOST_TEST(g.guard->price_anomalies() == 1u);
    const auto anomalies = g.guard->anomalies();
    BOOST_TEST_REQUIRE(anomalies.size() == 1u);
    BOOST_TEST(anomalies[0].surprise);
    BOOST_TEST((anomalies[0].booked == usd("0.01")));
    // No request of any price is granted under them now, free ones included...
    BOOST_TEST(!g.reserve("liquid/lfm-2.5-2.6b:free").active());
    BOOST_TEST(g.ec == frugal::error::budget_exhausted);
    BOOST_TEST(g.diag.message.find("stopped") != std::string::npos);
    BOOST_TEST(!g.reserve("anthropic/claude-fable-5").active());
    // ...and the model that billed is price_unknown for the rest of the process.
    BOOST_TEST(!g.guard->reset("global"));
    BOOST_TEST(!g.guard->reset("tenant:acme"));
    BOOST_TEST(g.reserve("liquid/lfm-2.5-2.6b:free").active());
    BOOST_TEST(!g.reserve("google/gemma-4-31b-it:free").active());
    BOOST_TEST(g.ec == frugal::error::price_unknown);
    BOOST_TEST(g.guard->reset("tenant:nobody") == frugal::error::not_found);
}

BOOST_AUTO_TEST_CASE(defect_2_a_paid_bill_above_its_worst_case_stops_its_budgets_too)
{
    guarded g({{"global", usd("1")}, {"user:*", usd("0.5")}});
    const std::vector<std::string> u7{"user:7"};
    const std::vector<std::string> u8{"user:8"};
    auto r = g.reserve("anthropic/claude-fable-5", u7);
    BOOST_TEST_REQUIRE(r.active());
    r.mark_sent();
    auto rec = billed("anthropic/claude-fable-5", r.amount() + usd("0.000001"));
    BOOST_TEST(!r.settle(rec));
    BOOST_TEST(rec.anomaly.find("where its prices allowed at most") != std::string::npos);
    BOOST_TEST(g.budget("user:7").stopped);
    BOOST_TEST(g.budget("global").stopped);
    BOOST_TEST(!g.reserve("google/gemma-4-31b-it:free", u8).active()); // global is stopped
}

BOOST_AUTO_TEST_CASE(defect_2_a_proven_bill_above_the_books_is_a_surprise_too)
{
    guarded g({{"tenant:acme", usd("1")}});
    const std::vector<std::string> acme{"tenant:acme"};
    auto r = g.reserve("anthropic/claude-fable-5", acme);
    BOOST_TEST_REQUIRE(r.active());
    r.mark_sent();
    auto rec = billed("anthropic/claude-fable-5", usd("0.001"));
    BOOST_TEST(!r.settle(rec));
    // The provider's generation record says more: the books follow it, and it is a surprise.
    BOOST_TEST(!g.guard->correct(rec.record_id, usd("0.5")));
    BOOST_TEST((g.guard->committed_total() == usd("0.5")));
    BOOST_TEST((g.budget("tenant:acme").committed == usd("0.5")));
    BOOST_TEST(g.budget("tenant:acme").stopped);
    BOOST_TEST(g.guard->anomalies().back().surprise);
    std::vector<frugal::attempt_record> ledger;
    BOOST_TEST(!g.guard->read_ledger(0, ledger));
    BOOST_TEST(ledger.back().anomaly.find("proves a bill of $0.5") != std::string::npos);
    BOOST_TEST(!g.reserve("anthropic/claude-fable-5").active()); // price_unknown now
    BOOST_TEST(g.ec == frugal::error::price_unknown);
    // A record charged to no budget still moves the total; a negative bill proves nothing.
    guarded none({});
    auto f = none.reserve("google/gemma-4-31b-it:free");
    f.mark_sent();
    auto frec = billed("google/gemma-4-31b-it:free", money());
    BOOST_TEST(!f.settle(frec));
    BOOST_TEST(!none.guard->correct(frec.record_id, usd("0.02")));
    BOOST_TEST((none.guard->committed_total() == usd("0.02")));
    BOOST_TEST(none.guard->correct(frec.record_id, usd("-1")) ==
               boost::system::errc::invalid_argument);
}

BOOST_AUTO_TEST_CASE(defect_3_a_negative_cost_never_gives_headroom_back)
{
    const auto u = decoded_usage(
        R"({"prompt_tokens":10,"completion_tokens":5,"total_tokens":15,"cost":-0.99})");
    BOOST_TEST(!u.cost.has_value());
    BOOST_TEST(u.cost_rejected == "negative (-0.99)");
    // Too small for a picodollar, and negative all the same.
    BOOST_TEST(decoded_usage(R"({"prompt_tokens":1,"completion_tokens":1,"total_tokens":2,"cost":-1e-13})")
                   .cost_rejected == "negative (-1e-13)");

    // The router books such a report at no less than the tokens at catalog prices; the guard
    // at no less than the reservation.
    guarded g({{"global", usd("1")}});
    auto r = g.reserve("anthropic/claude-fable-5");
    BOOST_TEST_REQUIRE(r.active());
    const money held = r.amount();
    r.mark_sent();
    auto rec = billed("anthropic/claude-fable-5", usd("0.000045"));
    rec.anomaly = "usage.cost was " + u.cost_rejected;
    BOOST_TEST(!r.settle(rec));
    BOOST_TEST((rec.cost == held));
    BOOST_TEST((g.budget("global").committed == held));
    BOOST_TEST(!g.budget("global").stopped); // an unreadable report is not a surprise bill
    BOOST_TEST(g.guard->anomalies().size() == 1u);

    // The same for a generation lookup's total_cost.
    frugal::generation_info gen;
    BOOST_TEST(!openrouter::decode_generation(R"({"data":{"id":"gen-1","total_cost":-0.5}})", gen));
    BOOST_TEST(!gen.total_cost.has_value());
    BOOST_TEST(gen.total_cost_rejected == "negative (-0.5)");
}

BOOST_AUTO_TEST_CASE(defect_4_an_unreadable_cost_is_rejected_never_priced_from_the_catalog)
{
    BOOST_TEST(
        decoded_usage(R"({"prompt_tokens":1,"completion_tokens":1,"total_tokens":2,"cost":"0.5"})")
            .cost_rejected == "a string");
    BOOST_TEST(
        decoded_usage(R"({"prompt_tokens":1,"completion_tokens":1,"total_tokens":2,"cost":1e300})")
            .cost_rejected.starts_with("out of range"));
    BOOST_TEST(
        decoded_usage(R"({"prompt_tokens":1,"completion_tokens":1,"total_tokens":2,"cost":5000})")
            .cost_rejected == "above $1000 (5000)");
    BOOST_TEST(
        decoded_usage(R"({"prompt_tokens":1,"completion_tokens":1,"total_tokens":2,"cost":true})")
            .cost_rejected == "a boolean");
    BOOST_TEST(
        decoded_usage(
            R"({"prompt_tokens":1,"completion_tokens":1,"total_tokens":2,"cost":{"usd":1}})")
            .cost_rejected == "an object");
    // A bill written by floating point is rounded up, never refused or rounded down.
    const auto f = decoded_usage(
        R"({"prompt_tokens":1,"completion_tokens":1,"total_tokens":2,"cost":0.30000000000000004})");
    BOOST_TEST(f.cost_rejected.empty());
    BOOST_TEST((f.cost.value() == usd("0.300000000001")));
    // null or absent: no report (the tokens are priced), not an anomaly.
    const auto n =
        decoded_usage(R"({"prompt_tokens":1,"completion_tokens":1,"total_tokens":2,"cost":null})");
    BOOST_TEST(!n.cost.has_value());
    BOOST_TEST(n.cost_rejected.empty());

    // An unparseable per-request price makes the model price_unknown, not $0.
    std::vector<frugal::model_info> rows;
    BOOST_TEST(!openrouter::decode_models(
        R"({"data":[{"id":"a/b","pricing":{"prompt":"0.000001","completion":"0.000002","request":"five cents"}}]})",
        rows));
    const frugal::price_catalog c(rows);
    BOOST_TEST_REQUIRE(c.find("a/b") != nullptr);
    BOOST_TEST(!c.find("a/b")->known());
    BOOST_TEST(c.find("a/b")->unknown.find("pricing.request") != std::string::npos);
}

BOOST_AUTO_TEST_CASE(defect_4_token_counts_that_are_no_count_price_nothing)
{
    // Read as 0, a negative or unreadable count would price a bill without cost below what
    // was served. Each is named, and the counts then price nothing.
    const std::pair<const char*, const char*> cases[] = {
        {R"({"prompt_tokens":-1000000,"completion_tokens":5})",
         "usage.prompt_tokens was negative (-1000000)"},
        {R"({"prompt_tokens":10,"completion_tokens":-5})",
         "usage.completion_tokens was negative (-5)"},
        {R"({"prompt_tokens":10.5,"completion_tokens":5})",
         "usage.prompt_tokens was not a whole number (10.5)"},
        {R"({"prompt_tokens":1e300,"completion_tokens":5})",
         "usage.prompt_tokens was not a whole number (1e300)"},
        {R"({"prompt_tokens":"10","completion_tokens":5})", "usage.prompt_tokens was a string"},
        {R"({"prompt_tokens":10,"completion_tokens":true})",
         "usage.completion_tokens was a boolean"},
        {R"({"prompt_tokens":[10],"completion_tokens":5})", "usage.prompt_tokens was an array"},
        {R"({"prompt_tokens":10,"completion_tokens":{"n":5}})",
         "usage.completion_tokens was an object"},
        {R"({"completion_tokens":5,"cost":null})", "usage.prompt_tokens was missing or null"},
        {R"({"prompt_tokens":10,"completion_tokens":null})",
         "usage.completion_tokens was missing or null"},
        {R"({"prompt_tokens":10,"completion_tokens":5,"prompt_tokens_details":{"cache_write_tokens":-3}})",
         "usage.prompt_tokens_details.cache_write_tokens was negative (-3)"},
    };
    for (const auto& [json, why] : cases) {
        const auto u = decoded_usage(json);
        BOOST_TEST(u.tokens_rejected == why, json);
    }
    const auto fine = decoded_usage(
        R"({"prompt_tokens":10,"completion_tokens":5.0,"total_tokens":15,"prompt_tokens_details":{"cached_tokens":0}})");
    BOOST_TEST(fine.tokens_rejected.empty());
    BOOST_TEST(fine.completion_tokens == 5u);

    // Such counts never price a paid model's bill: without a cost it is unknown, so the guard
    // books the reservation. With a cost, the cost is the bill; a $0 one is refused as well.
    const frugal::price_catalog c(twin_catalog());
    const auto lie = decoded_usage(R"({"prompt_tokens":-1000000,"completion_tokens":5})");
    BOOST_TEST(!c.token_cost("anthropic/claude-fable-5", lie).has_value());
    frugal::chat_response r;
    r.model = "anthropic/claude-fable-5";
    r.usage = lie;
    std::string anomaly;
    BOOST_TEST(!c.booked_cost("anthropic/claude-fable-5", r, anomaly).has_value());
    BOOST_TEST(anomaly == "usage.prompt_tokens was negative (-1000000)");
    // Beside such counts a cost cannot be checked against them either: the bill is unknown
    // (held at the reservation, never below the cost: budget_test).
    r.usage->cost = usd("0.25");
    anomaly.clear();
    BOOST_TEST(!c.booked_cost("anthropic/claude-fable-5", r, anomaly).has_value());
    BOOST_TEST(anomaly == "usage.cost was 0.25 beside usage.prompt_tokens was negative (-1000000)");
    r.usage->cost = money();
    BOOST_TEST(!c.booked_cost("anthropic/claude-fable-5", r, anomaly).has_value());
    BOOST_TEST(!anomaly.empty());
    // A free model asked stays free: there is nothing to price.
    r.model = "google/gemma-4-31b-it:free";
    r.usage->cost.reset();
    anomaly.clear();
    BOOST_TEST((c.booked_cost("google/gemma-4-31b-it:free", r, anomaly).value() == money()));

    guarded g({{"global", usd("1")}});
    auto res = g.reserve("anthropic/claude-fable-5");
    BOOST_TEST_REQUIRE(res.active());
    const money held = res.amount();
    frugal::chat_response answer;
    answer.model = "anthropic/claude-fable-5";
    answer.usage = lie;
    frugal::diagnostics sent;
    sent.request_sent = true;
    sent.http_status = 200;
    frugal::attempt_record rec;
    BOOST_TEST(!frugal::settle(res, {}, &answer, sent, rec));
    BOOST_TEST((rec.cost == held));
    BOOST_TEST(rec.estimated);
    BOOST_TEST(rec.anomaly == "usage.prompt_tokens was negative (-1000000)");
    BOOST_TEST((g.budget("global").committed == held));
    BOOST_TEST_REQUIRE(g.guard->anomalies().size() == 1u); // kept, as the CLI shows them
}

BOOST_AUTO_TEST_CASE(defect_4_a_second_report_in_one_answer_never_lowers_the_bill)
{
    // A member written twice (JSON allows it) keeps the larger value, for the cost and for the
    // counts; so does a usage object written twice.
    const auto twice = decoded_usage(
        R"({"prompt_tokens":10,"completion_tokens":500,"cost":0.00101,"completion_tokens":1,"cost":0.000003})");
    BOOST_TEST((twice.cost.value() == usd("0.00101")));
    BOOST_TEST(twice.completion_tokens == 500u);
    BOOST_TEST(twice.cost_rejected.empty());
    const auto lie_after =
        decoded_usage(R"({"prompt_tokens":10,"completion_tokens":5,"cost":0.5,"cost":-1})");
    BOOST_TEST((lie_after.cost.value() == usd("0.5")));
    BOOST_TEST(lie_after.cost_rejected == "negative (-1)");

    openrouter::chat_decoder d;
    openrouter::chat_chunk c;
    BOOST_TEST(!d.decode(
        R"({"id":"gen-1","model":"m","choices":[{"index":0,"message":{"role":"assistant","content":"x"},"finish_reason":"stop"}],)"
        R"("usage":{"prompt_tokens":10,"completion_tokens":500,"cost":0.00101},)"
        R"("usage":{"prompt_tokens":1,"completion_tokens":1,"cost":0.000003}})",
        c));
    BOOST_TEST_REQUIRE(c.usage.has_value());
    BOOST_TEST((c.usage->cost.value() == usd("0.00101")));
    BOOST_TEST(c.usage->prompt_tokens == 10u);
    BOOST_TEST(c.usage->completion_tokens == 500u);

    // An answer that names two models names none its tokens can be priced at.
    BOOST_TEST(!d.decode(
        R"({"id":"gen-2","model":"x/dear","choices":[{"index":0,"message":{"role":"assistant","content":"x"}}],)"
        R"("model":"a/cheap","usage":{"prompt_tokens":10,"completion_tokens":400}})",
        c));
    BOOST_TEST_REQUIRE(c.usage.has_value());
    BOOST_TEST(c.usage->tokens_rejected == "the answer named two models");
    BOOST_TEST(!d.decode(
        R"({"id":"gen-3","model":"a/cheap","choices":[],"model":"a/cheap","usage":{"prompt_tokens":1,"completion_tokens":1}})",
        c));
    BOOST_TEST(c.usage->tokens_rejected.empty()); // the same one twice is one
    // Decoded again by the same decoder (its prefix memo primed by the first): the same verdict.
    const std::string doubled =
        R"({"id":"g","model":"x/dear","model":"a/cheap","choices":[],"usage":{"prompt_tokens":10,"completion_tokens":400}})";
    for (int i = 0; i < 2; ++i) {
        BOOST_TEST(!d.decode(doubled, c));
        BOOST_TEST(c.usage->tokens_rejected == "the answer named two models", "pass " << i);
    }

    // A cost that is no number after a valid one leaves the valid one standing.
    const auto kept =
        decoded_usage(R"({"prompt_tokens":1,"completion_tokens":1,"cost":0.5,"cost":"x"})");
    BOOST_TEST((kept.cost.value() == usd("0.5")));
    BOOST_TEST(kept.cost_rejected == "a string");
    BOOST_TEST(
        decoded_usage(
            R"({"prompt_tokens":1,"completion_tokens":1,"prompt_tokens_details":{"cache_write_tokens":{"n":5}}})")
            .tokens_rejected == "usage.prompt_tokens_details.cache_write_tokens was an object");

    // Counts that price nothing never price a paid model's bill at a :free name the answer
    // gives: it is unknown.
    const frugal::price_catalog cat(twin_catalog());
    frugal::chat_response r;
    r.model = "google/gemma-4-31b-it:free";
    r.usage = decoded_usage(R"({"prompt_tokens":-1,"completion_tokens":1000})");
    std::string anomaly;
    BOOST_TEST(!cat.booked_cost("anthropic/claude-fable-5", r, anomaly).has_value());
    BOOST_TEST(anomaly == "usage.prompt_tokens was negative (-1)");
}

BOOST_AUTO_TEST_CASE(defect_5_every_price_field_is_read_and_bounded)
{
    std::vector<frugal::model_info> rows;
    BOOST_TEST(!openrouter::decode_models(
        R"({"data":[
 {"id":"think/r1","pricing":{"prompt":"0.000001","completion":"0.000002","internal_reasoning":"0.00001",
   "input_cache_write":"0.0000015","input_cache_read":"0.0000001"}},
 {"id":"img/only","pricing":{"prompt":"0","completion":"0","image":"0.001"}},
 {"id":"new/fee","pricing":{"prompt":"0","completion":"0","video_second":"0.01"}},
 {"id":"new/zero","pricing":{"prompt":"0","completion":"0","video_second":"0"}},
 {"id":"long/ctx","pricing":{"prompt":"0.000001","completion":"0.000002",
   "overrides":[{"min_prompt_tokens":200000,"prompt":"0.000003","completion":"0.000004"}]}},
 {"id":"var/auto","pricing":{"prompt":"-1","completion":"-1"}}]})",
        rows));
    const frugal::price_catalog c(rows);
    const auto* r1 = c.find("think/r1");
    // A reasoning model billed above its completion rate is reserved at the reasoning rate,
    // and a prompt at its dearest (a cache write).
    BOOST_TEST((r1->output_rate() == usd("0.00001")));
    BOOST_TEST((r1->input_rate() == usd("0.0000015")));
    const auto b = frugal::worst_case(*r1, 1000);
    BOOST_TEST((b.per_completion_token == usd("0.00001")));
    BOOST_TEST((b.fixed == usd("0.0015")));
    // Free only when every price is zero.
    BOOST_TEST(!c.find("img/only")->free());
    BOOST_TEST(c.find("img/only")->known());
    BOOST_TEST(!c.find("new/fee")->known()); // a fee frugal cannot bound
    BOOST_TEST(c.find("new/zero")->free());
    // A conditional price is bounded at its dearest.
    BOOST_TEST((c.find("long/ctx")->output_rate() == usd("0.000004")));
    BOOST_TEST(!c.find("var/auto")->known());
    // An :online id searches the web on every request: fees the bound cannot hold.
    std::vector<frugal::model_info> online;
    BOOST_TEST(!openrouter::decode_models(
        R"({"data":[{"id":"a/b:online","pricing":{"prompt":"0.000001","completion":"0.000002","web_search":"0.004"}}]})",
        online));
    BOOST_TEST(!frugal::price_catalog(online).find("a/b:online")->known());
    // Tokens at catalog prices: output at the dearest output rate (usage does not say which
    // tokens were reasoning).
    frugal::usage u;
    u.prompt_tokens = 100;
    u.completion_tokens = 50;
    u.reasoning_tokens = 40;
    BOOST_TEST((c.token_cost("think/r1", u).value() == usd("0.0006"))); // 100e-6 + 50×1e-5
}

BOOST_AUTO_TEST_CASE(defect_6_passing_the_cap_is_never_silent)
{
    frugal::cli::money_alarm quiet;
    quiet.budget("global", usd("0.01"), usd("0.01")); // at the cap is within it
    BOOST_TEST(!quiet.raised());
    BOOST_TEST(quiet.line("batch").empty());

    frugal::cli::money_alarm passed;
    passed.anomaly(
        "anthropic/claude-fable-5",
        "anthropic/claude-fable-5 billed $0.05 where its prices allowed at most $0.008",
        usd("0.05"));
    passed.budget("global", usd("0.05"), usd("0.01"));
    BOOST_TEST(passed.raised());
    const auto line = passed.line("batch", usd("0.01"));
    BOOST_TEST(line.starts_with("frugal batch: the bill passed a cap"));
    BOOST_TEST(
        line.find("anthropic/claude-fable-5 billed $0.05") != std::string::npos); // model, amount
    BOOST_TEST(line.find("its $0.01 cap") != std::string::npos);                  // the cap
    BOOST_TEST(line.find('\n') == std::string::npos);                             // one line

    frugal::cli::money_alarm anomalous; // no cap passed, but a report frugal could not book
    anomalous.anomaly("m/x", "usage.cost was negative (-0.99)", usd("0.002"));
    BOOST_TEST(anomalous.raised());
    BOOST_TEST(
        anomalous.line("chat").find("m/x: usage.cost was negative (-0.99); booked $0.002") !=
        std::string::npos);
}

BOOST_AUTO_TEST_CASE(defect_7_extra_body_cannot_undo_the_guard)
{
    frugal::chat_request req;
    req.model = "anthropic/claude-fable-5";
    req.messages.push_back({.role = "user", .content = "hi"});
    req.max_tokens = 100;
    std::string body, detail;
    for (const char* owned :
         {R"({"max_tokens":100000})", R"({"models":["x/y"]})", R"({"max_completion_tokens":5})",
          R"({"stream":true})", R"({"model":"x/y"})", R"({"n":4})", R"({"usage":{"include":true}})",
          R"({"messages":[]})"}) {
        req.extra_body = owned;
        BOOST_TEST(
            openrouter::encode_chat_request(req, false, body, &detail) ==
            frugal::error::bad_request_body);
        BOOST_TEST(detail.find("may not set") != std::string::npos);
    }
    req.temperature = 0.5;
    req.extra_body = R"({"temperature":1.5})"; // a typed field set twice
    BOOST_TEST(
        openrouter::encode_chat_request(req, false, body, &detail) ==
        frugal::error::bad_request_body);
    req.extra_body = R"({"top_k":40,"plugins":[{"id":"response-healing"}]})";
    BOOST_TEST(!openrouter::encode_chat_request(req, false, body, &detail));

    // Fees: priced into the bound, or refused under a cap.
    guarded g({{"global", usd("10")}});
    BOOST_TEST(
        !g.reserve("anthropic/claude-fable-5", {}, R"({"plugins":[{"id":"web"}]})").active());
    BOOST_TEST(g.ec == frugal::error::price_unknown);
    BOOST_TEST(g.diag.message.find("\"web\"") != std::string::npos);
    BOOST_TEST(
        !g.reserve("google/gemma-4-31b-it:free", {}, R"({"web_search_options":{}})").active());
    BOOST_TEST(
        !g.reserve(
              "anthropic/claude-fable-5", {}, R"({"tools":[{"type":"openrouter:web_search"}]})")
             .active());
    BOOST_TEST(
        !g.reserve("anthropic/claude-fable-5", {}, R"({"service_tier":"priority"})").active());
    BOOST_TEST(
        g.reserve("anthropic/claude-fable-5", {}, R"({"plugins":[{"id":"web","enabled":false}]})")
            .active());
    const auto plain = g.reserve("anthropic/claude-fable-5").amount();
    const auto reasoning =
        g.reserve("anthropic/claude-fable-5", {}, R"({"reasoning":{"max_tokens":1000}})").amount();
    BOOST_TEST((reasoning == plain + usd("0.015"))); // 1000 more output tokens at $0.000015
}

BOOST_AUTO_TEST_CASE(defect_9_the_key_is_scrubbed_from_provider_text_in_any_form)
{
    const std::string key =
        "sk-or-v1-0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef";
    const openrouter::key_scrubber k(key);
    auto scrubbed = [&](std::string text) {
        k.scrub(text);
        return text;
    };
    BOOST_TEST(
        scrubbed("echo: Authorization: Bearer " + key + ".") ==
        "echo: Authorization: Bearer [redacted].");
    std::string upper = key;
    std::transform(upper.begin(), upper.end(), upper.begin(), ::toupper);
    BOOST_TEST(scrubbed(upper) == "[redacted]");
    BOOST_TEST(scrubbed("key=" + key.substr(0, 30) + "...") == "key=[redacted]...");
    BOOST_TEST(scrubbed("sk%2Dor%2Dv1%2D0123456789abcdef") == "[redacted]");
    BOOST_TEST(
        scrubbed("sk-or-v1%2D0123456789abcdef").find("0123456789abcdef") == std::string::npos);
    // base64 of an echoed header, at each alignment
    static constexpr char b64[] =
        "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    for (const std::string prefix : {"Bearer ", "Bearer  ", "x"}) {
        const std::string in = prefix + key;
        std::string enc;
        for (std::size_t i = 0; i + 2 < in.size(); i += 3) {
            const unsigned v = static_cast<unsigned char>(in[i]) << 16 |
                               static_cast<unsigned char>(in[i + 1]) << 8 |
                               static_cast<unsigned char>(in[i + 2]);
            for (int s : {18, 12, 6, 0})
                enc += b64[v >> s & 63];
        }
        const auto out = scrubbed("header: " + enc);
        BOOST_TEST(out.find("[redacted]") != std::string::npos, prefix);
        BOOST_TEST(out.size() < enc.size() / 2, prefix);
    }
    BOOST_TEST(
        scrubbed("an ordinary message about sk-or-v1 keys") ==
        "an ordinary message about sk-or-v1 keys");
    // At random: pieces of the key (12 characters or more, any case) in random text are all
    // gone, wherever they fall against the scrubber's sampling, and nothing else changes.
    std::mt19937 rng(7);
    for (int run = 0; run < 2000; ++run) {
        std::string text;
        const int pieces = 1 + static_cast<int>(rng() % 3);
        for (int p = 0; p < pieces; ++p) {
            for (std::size_t n = rng() % 40; n > 0; --n)
                text += static_cast<char>(' ' + rng() % 90);
            const std::size_t len = 12 + rng() % (key.size() - 11);
            const std::size_t from = rng() % (key.size() - len + 1);
            std::string piece = key.substr(from, len);
            for (auto& c : piece)
                if (rng() % 2 == 0)
                    c = static_cast<char>(std::toupper(static_cast<unsigned char>(c)));
            text += piece;
        }
        std::string out = text;
        k.scrub(out);
        std::string folded = out;
        std::transform(folded.begin(), folded.end(), folded.begin(), ::tolower);
        bool left = false;
        for (std::size_t i = 0; i + 12 <= key.size() && !left; ++i)
            left = folded.find(key.substr(i, 12)) != std::string::npos;
        BOOST_TEST(!left, "run " << run << ": " << out);
    }
    const std::string plain = "The quick brown fox jumps over the lazy dog, 0123456789 times.";
    BOOST_TEST(scrubbed(plain) == plain);

    // A stream's pieces, each scrubbed after the 11 characters the provider sent before it:
    // however the key is cut (one character a piece, up to seven), at most 11 of it show, and
    // the text around it is untouched.
    for (int run = 0; run < 300; ++run) {
        const std::string text = "before " + key + " after, and " + key.substr(9, 20) + " end";
        std::string shown, tail;
        for (std::size_t at = 0; at < text.size();) {
            const std::size_t n = std::min<std::size_t>(1 + rng() % 7, text.size() - at);
            std::string piece = text.substr(at, n);
            std::string next =
                (tail + piece)
                    .substr(tail.size() + piece.size() > 11 ? tail.size() + piece.size() - 11 : 0);
            k.scrub_after(piece, tail);
            tail = next;
            shown += piece;
            at += n;
        }
        bool left = false;
        for (std::size_t i = 0; i + 12 <= key.size() && !left; ++i)
            left = shown.find(key.substr(i, 12)) != std::string::npos;
        BOOST_TEST(!left, "run " << run << ": " << shown);
        BOOST_TEST(shown.starts_with("before "), shown);
        BOOST_TEST(shown.ends_with(" end"), shown);
        BOOST_TEST(shown.find(" after, and ") != std::string::npos, shown);
    }

    // CSV cells a spreadsheet would run as formulas are neutralised.
    BOOST_TEST(
        frugal::cli::csv_field("=HYPERLINK(\"http://x\")") == "\"'=HYPERLINK(\"\"http://x\"\")\"");
    BOOST_TEST(frugal::cli::csv_field("+1") == "'+1");
    BOOST_TEST(frugal::cli::csv_field("-2") == "'-2");
    BOOST_TEST(frugal::cli::csv_field("@SUM(A1)") == "'@SUM(A1)");
    BOOST_TEST(frugal::cli::csv_field("\tx") == "'\tx");
    BOOST_TEST(frugal::cli::csv_field("google/gemma") == "google/gemma");
}

BOOST_AUTO_TEST_SUITE_END()
