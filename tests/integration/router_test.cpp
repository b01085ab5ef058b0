// The cascade against the simulator: what stays free, what escalates and why, what the budget
// denies, and that frugal's books equal the simulator's bill to the unit.

#include <frugal/router.hpp>

#include "cascade/judge.hpp"
#include "cascade_printers.hpp"
#include "client_fixture.hpp"

#include <boost/asio/bind_cancellation_slot.hpp>
#include <boost/asio/co_spawn.hpp>
#include <boost/asio/detached.hpp>
#include <boost/test/unit_test.hpp>

#include <cctype>
#include <map>
#include <ostream>
#include <set>

using namespace frugal::test;
using namespace std::chrono_literals;
using frugal::escalation_reason;
using frugal::money;

namespace {

constexpr const char* cheap = "google/gemma-4-31b-it:free";
constexpr const char* flagship = "anthropic/claude-fable-5";

// The simulator with free-tier limits far above what a test sends (tests of the limits set
// their own).
frugal::sim_config roomy(frugal::sim_config c = fixed())
{
    c.free_requests_per_minute = 1'000'000;
    c.free_requests_per_day = 1'000'000;
    return c;
}

frugal::cascade_policy policy()
{
    frugal::cascade_policy p;
    p.tiers = {cheap, flagship};
    p.escalate_on = {escalation_reason::length,       escalation_reason::empty,
                     escalation_reason::error,        escalation_reason::refusal,
                     escalation_reason::invalid_json, escalation_reason::rate_limited};
    p.max_tokens = 256;
    p.free_tier.per_minute = 1000;
    p.free_tier.per_day = 100000;
    return p;
}

frugal::price_catalog load_catalog(client_fixture& f)
{
    auto [ec, models] = run(f.io, models_once(f.client));
    BOOST_TEST_REQUIRE(!ec);
    return frugal::price_catalog(models);
}

std::optional<frugal::budget_guard>
open_guard(const frugal::price_catalog& cat, const char* cap, frugal::budget_params p = {})
{
    p.budgets = {{"global", *money::parse(cap)}};
    frugal::diagnostics diag;
    auto g = frugal::budget_guard::open(p, cat, nullptr, &diag);
    BOOST_TEST_REQUIRE(g.has_value(), diag.message);
    return *g;
}

// A cascade of one paid tier, the flagship, under a $1 cap: an attempt a test cancels, cuts or
// lets a deadline end.
struct flagship_router {
    explicit flagship_router(client_fixture& f)
        : cat(load_catalog(f)), guard(open_guard(cat, "1")), r(f.client, only_flagship(), cat, guard)
    {
    }
    static frugal::cascade_policy only_flagship()
    {
        auto p = policy();
        p.tiers = {flagship};
        return p;
    }
    frugal::price_catalog cat;
    std::optional<frugal::budget_guard> guard;
    frugal::router r;
};

struct outcome {
    boost::system::error_code ec;
    frugal::cascade_result result;
};

outcome complete(client_fixture& f, frugal::router& r, frugal::chat_request req)
{
    return run(f.io, [&]() -> asio::awaitable<outcome> {
        auto [ec, res] = co_await r.async_complete(std::move(req), tuple_awaitable);
        co_return outcome{ec, std::move(res)};
    }());
}

// Starts a cascade awaited in a coroutine that goes on after a cancellation
// (throw_if_cancelled off), under `cancel`'s slot; its outcome goes to `o` when it ends.
void spawn_cancellable(
    client_fixture& f,
    frugal::router& r,
    frugal::chat_request req,
    asio::cancellation_signal& cancel,
    outcome& o)
{
    asio::co_spawn(
        f.io,
        [&r, &o, req = std::move(req)]() mutable -> asio::awaitable<void> {
            co_await asio::this_coro::throw_if_cancelled(false);
            auto [ec, res] = co_await r.async_complete(std::move(req), tuple_awaitable);
            o = {ec, std::move(res)};
        },
        asio::bind_cancellation_slot(cancel.slot(), asio::detached));
}

// That cascade, whose slot gets `emits` one after another once `after` has passed.
outcome complete_cancelled(
    client_fixture& f,
    frugal::router& r,
    frugal::chat_request req,
    std::chrono::milliseconds after,
    std::initializer_list<asio::cancellation_type> emits)
{
    asio::cancellation_signal cancel;
    outcome o;
    spawn_cancellable(f, r, std::move(req), cancel, o);
    asio::steady_timer t(f.io, after);
    t.async_wait([&](auto) {
        for (const auto type : emits)
            cancel.emit(type);
    });
    f.io.restart();
    f.io.run();
    return o;
}

// How the cheap model fails a prompt, judged here from its own answer, asked directly.
escalation_reason cheap_failure(client_fixture& f, const std::string& prompt, bool json)
{
    auto req = request(cheap, prompt);
    req.max_tokens = 256;
    if (json)
        req.response_format = "json_object";
    const auto r = f.chat(req);
    BOOST_TEST_REQUIRE(!r.ec);
    const auto& c = r.response.content;
    if (r.response.finish_reason == "length")
        return escalation_reason::length;
    if (std::all_of(c.begin(), c.end(), [](unsigned char ch) { return std::isspace(ch) != 0; }))
        return escalation_reason::empty;
    if (c.rfind("I'm sorry", 0) == 0)
        return escalation_reason::refusal;
    if (json && c.back() != '}')
        return escalation_reason::invalid_json;
    return escalation_reason::none;
}

money billed(client_fixture& f)
{
    return *money::parse(std::string(f.bill().at("total").at("cost_usd").as_string()));
}

// A streamed cascade read to its end: the text shown, by tier, and the events that took some
// back.
struct streamed {
    boost::system::error_code ec;
    std::map<std::uint32_t, std::string> shown;
    std::vector<std::string> models; // each delta's `model`
    int escalating = 0;
    std::shared_ptr<const frugal::cascade_result> result;
};

streamed read_all(client_fixture& f, frugal::cascade_stream& s)
{
    streamed out;
    run(f.io, [&]() -> asio::awaitable<void> {
        for (;;) {
            auto [ec, ev] = co_await s.async_next(tuple_awaitable);
            if (ec) {
                out.ec = ec;
                out.result = ev.result;
                co_return;
            }
            if (ev.type == frugal::cascade_event::kind::delta) {
                out.shown[ev.tier] += ev.text;
                out.models.push_back(ev.model);
            } else if (ev.type == frugal::cascade_event::kind::escalating)
                ++out.escalating;
            else {
                out.result = ev.result;
                co_return;
            }
        }
    }());
    return out;
}

// The simulator with `cheap`'s (and `flagship`'s, when asked) first token `ttft` away.
frugal::sim_config slow_first_token(std::chrono::milliseconds ttft, bool flagship_too)
{
    auto cfg = roomy();
    cfg.models = frugal::standard_sim_models();
    for (auto& m : cfg.models)
        if (m.id == cheap || (flagship_too && m.id == flagship))
            m.time_to_first_token = ttft;
    return cfg;
}

} // namespace

BOOST_AUTO_TEST_SUITE(cascade)

BOOST_AUTO_TEST_CASE(easy_prompts_stay_on_the_free_tier)
{
    client_fixture f(roomy());
    const auto cat = load_catalog(f);
    frugal::router r(f.client, policy(), cat, open_guard(cat, "1"));
    for (const char* q : {"What is the capital of France?", "Name a colour.", "Say hello."}) {
        const auto o = complete(f, r, request("", q));
        BOOST_TEST(!o.ec);
        BOOST_TEST(o.result.tier == 0u);
        BOOST_TEST(!o.result.escalated);
        BOOST_TEST_REQUIRE(o.result.attempts.size() == 1u);
        BOOST_TEST(o.result.response.model == cheap);
        BOOST_TEST((o.result.total_cost == money()));
        // The attempt names what served it, as the answer does.
        const auto& a = o.result.attempts[0];
        BOOST_TEST(!o.result.response.id.empty());
        BOOST_TEST(!o.result.response.provider.empty());
        BOOST_TEST(a.model_served == o.result.response.model);
        BOOST_TEST(a.provider == o.result.response.provider);
        BOOST_TEST(a.generation_id == o.result.response.id);
    }
    BOOST_TEST((billed(f) == money()));
}

BOOST_AUTO_TEST_CASE(a_prompt_past_the_cheap_models_context_starts_at_the_next_tier)
{
    // The cheap model listed with room for 300 tokens: a prompt that would not fit (its bytes
    // over four, plus max_tokens 256) skips it, said as "context"; a short one stays.
    client_fixture f(roomy());
    auto [ec, models] = run(f.io, models_once(f.client));
    BOOST_TEST_REQUIRE(!ec);
    bool listed = false;
    for (auto& m : models) {
        if (m.id == cheap) {
            m.context_length = 300;
            listed = true;
        }
    }
    BOOST_TEST_REQUIRE(listed);
    const frugal::price_catalog cat(models);
    frugal::router r(f.client, policy(), cat, open_guard(cat, "1"));
    const auto short_one = complete(f, r, request("", "Name a colour."));
    BOOST_TEST(!short_one.ec);
    BOOST_TEST(short_one.result.tier == 0u);
    const auto long_one = complete(f, r, request("", "Summarise: " + std::string(400, 'x')));
    BOOST_TEST(!long_one.ec, long_one.ec.message());
    BOOST_TEST(long_one.result.tier == 1u);
    BOOST_TEST((long_one.result.reason == escalation_reason::context));
    BOOST_REQUIRE(long_one.result.attempts.size() == 1u); // tier 0 was never asked
    BOOST_TEST(long_one.result.attempts[0].tier == 1u);
    BOOST_TEST(long_one.result.response.model == flagship);
}

BOOST_AUTO_TEST_CASE(hard_prompts_escalate_for_the_reason_the_cheap_model_fails_with)
{
    client_fixture f(roomy());
    const auto cat = load_catalog(f);
    frugal::router r(f.client, policy(), cat, open_guard(cat, "10"));
    std::set<escalation_reason> seen;
    for (int i = 0; i < 24; ++i) {
        const bool json = i % 4 == 3;
        const std::string prompt =
            "Prove the theorem step by step, rigorously, case " + std::to_string(i) + ".";
        const auto expected = cheap_failure(f, prompt, json);
        BOOST_TEST_REQUIRE(expected != escalation_reason::none, prompt);
        auto req = request("", prompt);
        if (json)
            req.response_format = "json_object";
        const auto o = complete(f, r, req);
        BOOST_TEST_REQUIRE(!o.ec, o.ec.message());
        BOOST_TEST(o.result.escalated);
        BOOST_TEST(o.result.tier == 1u);
        BOOST_TEST(o.result.response.model == flagship);
        BOOST_TEST_REQUIRE(o.result.attempts.size() == 2u);
        BOOST_TEST(o.result.attempts[0].moved_on == expected, prompt);
        BOOST_TEST(o.result.reason == expected);
        BOOST_TEST((o.result.total_cost == o.result.attempts[1].cost));
        BOOST_TEST((o.result.attempts[1].cost > money()));
        seen.insert(expected);
    }
    // The prompts exercised every way a free model fails.
    BOOST_TEST(seen.size() == 4u);
}

// `must_match`, live: the simulator replays recorded answers (as `frugal sim --outcomes`
// does), the cheap one without the final-answer line the pattern asks for. The whole cascade
// and both streamed modes escalate for it, show only the flagship's text when buffered, and
// keep an answer that has the line.
BOOST_AUTO_TEST_CASE(must_match_escalates_an_answer_without_its_pattern_whole_and_streamed)
{
    auto cfg = roomy();
    const std::string vague = "How many apples are left?";
    const std::string clear = "How many pears are left?";
    cfg.replays.push_back(
        {.prompt = vague, .model = cheap, .content = "There are some left.",
         .completion_tokens = 5, .prompt_tokens = 7});
    cfg.replays.push_back(
        {.prompt = vague, .model = flagship, .content = "Twelve are left.\n#### 12",
         .completion_tokens = 6, .prompt_tokens = 7});
    cfg.replays.push_back(
        {.prompt = clear, .model = cheap, .content = "Three pears.\n#### 3",
         .completion_tokens = 5, .prompt_tokens = 7});
    client_fixture f(cfg);
    const auto cat = load_catalog(f);
    auto p = policy();
    p.must_match = "(^|\\n)#### \\d+$";
    p.escalate_on.push_back(escalation_reason::must_match);
    frugal::router r(f.client, p, cat, open_guard(cat, "1"));

    const auto o = complete(f, r, request("", vague));
    BOOST_TEST_REQUIRE(!o.ec, o.ec.message());
    BOOST_TEST(o.result.escalated);
    BOOST_TEST(o.result.reason == escalation_reason::must_match);
    BOOST_TEST(o.result.response.content == "Twelve are left.\n#### 12");
    BOOST_TEST_REQUIRE(o.result.attempts.size() == 2u);
    BOOST_TEST(o.result.attempts[0].moved_on == escalation_reason::must_match);

    const auto kept = complete(f, r, request("", clear));
    BOOST_TEST_REQUIRE(!kept.ec, kept.ec.message());
    BOOST_TEST(!kept.result.escalated);
    BOOST_TEST(kept.result.response.content == "Three pears.\n#### 3");

    for (auto mode : {frugal::stream_mode::stream, frugal::stream_mode::buffer}) {
        frugal::cascade_stream s;
        r.start_stream(request("", vague), mode, s);
        const auto got = read_all(f, s);
        BOOST_TEST_REQUIRE(got.result != nullptr);
        BOOST_TEST(got.result->tier == 1u);
        BOOST_TEST(got.result->reason == escalation_reason::must_match);
        BOOST_TEST(got.result->response.content == "Twelve are left.\n#### 12");
        const auto it = got.shown.find(1);
        BOOST_TEST((it != got.shown.end() && it->second == got.result->response.content));
        if (mode == frugal::stream_mode::buffer) {
            BOOST_TEST(got.shown.count(0) == 0u); // the rejected text never reached the reader
            BOOST_TEST(got.escalating == 0);
        } else {
            BOOST_TEST(got.escalating == 1);
        }
    }
    // A replay is billed at its recorded tokens: 7 prompt tokens, one per piece.
    const auto* fp = cat.find(flagship);
    BOOST_TEST_REQUIRE(fp != nullptr);
    BOOST_TEST((o.result.attempts[1].cost == fp->prompt * 7 + fp->completion * 6 + fp->request));
}

// A tier whose answer ends with `finish_reason: "error"` failed: its text is never the
// cascade's answer, whether the next tier answers or fails too. (An attempt's answer is
// decoded where the cascade keeps its own, with a guard on the paid tier and without one.)
BOOST_AUTO_TEST_CASE(a_failed_tiers_text_never_becomes_the_cascades_answer)
{
    auto cfg = roomy();
    const std::string broken = "Tell me about pears; both of you will fall over.";
    const std::string rescued = "Tell me about pears; the flagship will answer.";
    auto replay = [&](const std::string& prompt, const char* model, std::string content,
                      std::string finish) {
        cfg.replays.push_back(
            {.prompt = prompt, .model = model, .content = std::move(content),
             .completion_tokens = 4, .prompt_tokens = 9, .finish_reason = std::move(finish)});
    };
    replay(broken, cheap, "Pears are half of", "error");
    replay(broken, flagship, "Pears, said the flagship, are half of", "error");
    replay(rescued, cheap, "Pears are half of", "error");
    replay(rescued, flagship, "Pears are fruit.", "stop");
    client_fixture f(cfg);
    const auto cat = load_catalog(f);
    for (const bool guarded : {false, true}) {
        BOOST_TEST_CONTEXT("guarded: " << guarded)
        {
            frugal::router r(
                f.client, policy(), cat,
                guarded ? open_guard(cat, "1") : std::optional<frugal::budget_guard>());
            const auto failed = complete(f, r, request("", broken));
            BOOST_TEST(failed.ec == frugal::error::provider_error);
            BOOST_TEST((failed.result.response == frugal::chat_response{}));
            BOOST_TEST(failed.result.attempts.size() == 2u);

            const auto ok = complete(f, r, request("", rescued));
            BOOST_TEST_REQUIRE(!ok.ec, ok.ec.message());
            BOOST_TEST(ok.result.escalated);
            BOOST_TEST(ok.result.reason == escalation_reason::error);
            BOOST_TEST(ok.result.response.content == "Pears are fruit.");
            BOOST_TEST(ok.result.response.model == flagship);
            BOOST_TEST_REQUIRE(ok.result.attempts.size() == 2u);
            BOOST_TEST(ok.result.attempts[0].moved_on == escalation_reason::error);
        }
    }
}

// Once the last tier shows content the producer frees the prompt and keeps only what judging
// reads (the response format). The cheap tier's answer is still judged against JSON, the
// flagship's is accepted as the last, and the ledger names each attempt's model: nothing after
// the release reads the prompt.
BOOST_AUTO_TEST_CASE(a_streamed_cascade_judges_json_after_its_last_tier_lets_the_prompt_go)
{
    auto cfg = roomy();
    const std::string prompt = "List the pears as JSON, please, in one object.";
    // The cheap answer opens like JSON, so it is shown (stream mode) before it is judged whole.
    cfg.replays.push_back(
        {.prompt = prompt, .model = cheap, .content = "{\"pears\": 3,",
         .completion_tokens = 4, .prompt_tokens = 9});
    cfg.replays.push_back(
        {.prompt = prompt, .model = flagship, .content = "pears: three, not JSON either",
         .completion_tokens = 4, .prompt_tokens = 9});
    client_fixture f(cfg);
    const auto cat = load_catalog(f);
    frugal::router r(f.client, policy(), cat, open_guard(cat, "1"));
    for (auto mode : {frugal::stream_mode::stream, frugal::stream_mode::buffer}) {
        auto req = request("", prompt);
        req.response_format = "json_object";
        frugal::cascade_stream s;
        r.start_stream(std::move(req), mode, s);
        const auto got = read_all(f, s);
        BOOST_TEST_REQUIRE(!got.ec, got.ec.message());
        BOOST_TEST_REQUIRE(got.result != nullptr);
        BOOST_TEST(got.result->tier == 1u);
        BOOST_TEST(got.result->reason == escalation_reason::invalid_json);
        BOOST_TEST(got.result->response.content == "pears: three, not JSON either");
        BOOST_TEST_REQUIRE(got.result->attempts.size() == 2u);
        BOOST_TEST(got.result->attempts[0].moved_on == escalation_reason::invalid_json);
        BOOST_TEST(got.result->attempts[1].model_asked == flagship);
        BOOST_TEST(got.result->attempts[1].cost > money());
        const auto it = got.shown.find(1);
        BOOST_TEST((it != got.shown.end() && it->second == got.result->response.content));
        BOOST_TEST(got.escalating == (mode == frugal::stream_mode::stream ? 1 : 0));
    }
}

// The router settles with the attempt itself: the ledger keeps each attempt as the result
// reports it, and the attempt names its record.
BOOST_AUTO_TEST_CASE(the_ledger_keeps_each_attempt_as_the_cascade_reports_it)
{
    client_fixture f(roomy());
    const auto cat = load_catalog(f);
    auto guard = open_guard(cat, "10");
    frugal::router r(f.client, policy(), cat, guard);
    const auto o =
        complete(f, r, request("", "Prove the theorem step by step, rigorously, case 1."));
    BOOST_TEST_REQUIRE(!o.ec, o.ec.message());
    BOOST_TEST_REQUIRE(o.result.attempts.size() == 2u);
    std::vector<frugal::attempt_record> records;
    BOOST_TEST_REQUIRE(!guard->read_ledger(0, records));
    BOOST_TEST_REQUIRE(records.size() == 2u);
    for (std::size_t i = 0; i < records.size(); ++i) {
        const frugal::attempt_record& a = o.result.attempts[i];
        BOOST_TEST(a.record_id != 0u);
        BOOST_TEST((a == records[i]), "attempt " << i);
    }
    BOOST_TEST(records[0].reason.empty());
    BOOST_TEST(records[1].reason == frugal::to_string(o.result.attempts[0].moved_on));
}

BOOST_AUTO_TEST_CASE(the_budget_denies_an_escalation_exactly_when_the_cap_would_be_crossed)
{
    client_fixture f(roomy());
    const auto cat = load_catalog(f);
    frugal::budget_params bp;
    bp.min_max_tokens = 64;
    const money cap = *money::parse("0.004");
    auto guard = open_guard(cat, "0.004", bp);
    frugal::router r(f.client, policy(), cat, guard);
    const auto* price = cat.find(flagship);
    int denied = 0;
    int escalated = 0;
    for (int i = 0; i < 20; ++i) {
        auto req = request("", "Prove the theorem rigorously, part " + std::to_string(i) + ".");
        // The smallest escalation the guard may grant: this prompt's bound and 64 tokens.
        const auto bound = frugal::worst_case(*price, frugal::prompt_bound(req));
        const auto smallest = bound.fixed + bound.per_completion_token * bp.min_max_tokens;
        const auto before = guard->snapshot()[0];
        const auto o = complete(f, r, req);
        BOOST_TEST(!o.ec);
        // Every prompt is too hard for the free tier: escalated, or denied (never both).
        BOOST_TEST_REQUIRE(o.result.escalated != o.result.budget_denied);
        if (o.result.budget_denied) {
            ++denied;
            BOOST_TEST(o.result.tier == 0u); // the cheap answer, marked
            BOOST_TEST(o.result.reason == escalation_reason::none);
            BOOST_TEST(o.result.wanted != escalation_reason::none); // why it wanted to go up
            BOOST_TEST(o.result.response.model == cheap);
            BOOST_TEST((before.cap - before.committed < smallest), "denied with room left");
        } else {
            ++escalated;
            BOOST_TEST((before.cap - before.committed >= smallest), "granted beyond the cap");
        }
        BOOST_TEST((guard->snapshot()[0].committed <= cap));
    }
    BOOST_TEST(escalated > 0);
    BOOST_TEST(denied > 0);
    BOOST_TEST((billed(f) <= cap));
    BOOST_TEST((billed(f) == guard->committed_total()));
}

BOOST_AUTO_TEST_CASE(one_router_charges_each_request_to_the_tenant_it_is_made_for)
{
    client_fixture f(roomy());
    const auto cat = load_catalog(f);
    frugal::budget_params bp;
    bp.budgets = {{"global", *money::parse("1")}, {"tenant:*", *money::parse("0.004")}};
    frugal::diagnostics diag;
    auto guard = frugal::budget_guard::open(bp, cat, nullptr, &diag);
    BOOST_TEST_REQUIRE(guard.has_value(), diag.message);
    frugal::router r(f.client, policy(), cat, *guard);
    // Interleaved on one router: acme's requests exhaust acme's cap, and never globex's.
    int acme_denied = 0, globex_denied = 0;
    const auto rounds = run(f.io, [&]() -> asio::awaitable<int> {
        int n = 0;
        for (int i = 0; i < 12; ++i) {
            const bool acme = i % 3 != 2;
            auto req = request("", "Prove the theorem rigorously, part " + std::to_string(i) + ".");
            frugal::cascade_options options;
            options.budget_keys = {acme ? "tenant:acme" : "tenant:globex"};
            auto [cec, res] = co_await r.async_complete(req, std::move(options), tuple_awaitable);
            BOOST_TEST(!cec);
            (acme ? acme_denied : globex_denied) += res.budget_denied ? 1 : 0;
            ++n;
        }
        co_return n;
    }());
    BOOST_TEST(rounds == 12);
    money acme, globex;
    for (const auto& s : guard->snapshot()) {
        if (s.name == "tenant:acme")
            acme = s.committed;
        if (s.name == "tenant:globex")
            globex = s.committed;
    }
    BOOST_TEST(acme_denied > 0);    // eight hard prompts overrun a $0.004 cap
    BOOST_TEST(globex_denied == 0); // four fit in globex's own
    BOOST_TEST((acme <= *money::parse("0.004")));
    BOOST_TEST((globex > money()));
    BOOST_TEST((acme + globex == guard->committed_total()));
    std::vector<frugal::attempt_record> records;
    BOOST_TEST(!guard->read_ledger(0, records));
    for (const auto& rec : records)
        BOOST_TEST((rec.keys == "tenant:acme" || rec.keys == "tenant:globex"));
}

BOOST_AUTO_TEST_CASE(at_concurrency_32_spend_never_passes_the_cap_and_equals_the_bill)
{
    client_fixture f(roomy(paced(1ms)));
    const auto cat = load_catalog(f);
    frugal::budget_params bp;
    bp.max_wait = 30s;
    auto guard = open_guard(cat, "0.05", bp);
    frugal::router r(f.client, policy(), cat, guard);
    const int total = 160;
    int next = 0;
    int done = 0;
    money reported;
    int escalations = 0;
    int denials = 0;
    for (int w = 0; w < 32; ++w) {
        asio::co_spawn(
            f.io,
            [&]() -> asio::awaitable<void> {
                while (next < total) {
                    const int i = next++;
                    // Most prompts are hard; one in five is easy.
                    auto req = request(
                        "", i % 5 == 0 ? "Name a fruit."
                                       : "Derive the optimal bound rigorously, case " +
                                             std::to_string(i) + ".");
                    auto [ec, res] = co_await r.async_complete(req, tuple_awaitable);
                    BOOST_TEST(!ec);
                    reported += res.total_cost;
                    escalations += res.escalated && !res.budget_denied ? 1 : 0;
                    denials += res.budget_denied ? 1 : 0;
                    ++done;
                }
            },
            asio::detached);
    }
    f.io.restart();
    f.io.run();
    BOOST_TEST(done == total);
    const money bill = billed(f);
    BOOST_TEST_MESSAGE(
        "concurrency 32: " << escalations << " escalations, " << denials << " denied; billed "
                           << bill.to_string() << " of a 0.05 cap");
    BOOST_TEST(escalations > 0);
    BOOST_TEST(denials > 0);
    BOOST_TEST((bill <= *money::parse("0.05")));
    BOOST_TEST((reported == bill)); // to the unit
    BOOST_TEST((guard->committed_total() == bill));
}

BOOST_AUTO_TEST_CASE(streaming_escalation_retracts_the_cheap_text_in_stream_mode)
{
    client_fixture f(roomy(paced(1ms)));
    const auto cat = load_catalog(f);
    frugal::router r(f.client, policy(), cat, open_guard(cat, "1"));
    // A prompt the cheap model answers by rambling to max_tokens.
    std::string prompt;
    for (int i = 0; i < 40 && prompt.empty(); ++i) {
        const auto p = "Analyse the complexity step by step, variant " + std::to_string(i) + ".";
        if (cheap_failure(f, p, false) == escalation_reason::length)
            prompt = p;
    }
    BOOST_TEST_REQUIRE(!prompt.empty());
    for (auto mode : {frugal::stream_mode::stream, frugal::stream_mode::buffer}) {
        frugal::cascade_stream s;
        r.start_stream(request("", prompt), mode, s);
        std::string shown_cheap, shown_flagship;
        bool escalating = false;
        std::shared_ptr<const frugal::cascade_result> result;
        run(f.io, [&]() -> asio::awaitable<void> {
            for (;;) {
                auto [ec, ev] = co_await s.async_next(tuple_awaitable);
                BOOST_TEST_REQUIRE(!ec, ec.message());
                if (ev.type == frugal::cascade_event::kind::delta)
                    (ev.tier == 0 ? shown_cheap : shown_flagship) += ev.text;
                if (ev.type == frugal::cascade_event::kind::escalating) {
                    escalating = true;
                    BOOST_TEST(ev.reason == escalation_reason::length);
                    BOOST_TEST(shown_flagship.empty());
                }
                if (ev.type == frugal::cascade_event::kind::done) {
                    result = ev.result;
                    break;
                }
            }
        }());
        BOOST_TEST_REQUIRE(result != nullptr);
        BOOST_TEST(result->tier == 1u);
        BOOST_TEST(shown_flagship == result->response.content);
        if (mode == frugal::stream_mode::stream) {
            BOOST_TEST(escalating);
            BOOST_TEST(!shown_cheap.empty());
        } else {
            BOOST_TEST(!escalating); // nothing was shown, so nothing is retracted
            BOOST_TEST(shown_cheap.empty());
        }
    }
}

// An alias or a router (openrouter/auto) names the model that served in its chunks: a relay
// (the gateway) shows that model, as a whole answer does, not the tier's id.
BOOST_AUTO_TEST_CASE(a_streamed_tiers_first_delta_names_the_model_that_served_it)
{
    client_fixture f(roomy(paced(1ms)));
    const auto cat = load_catalog(f);
    frugal::router r(f.client, policy(), cat, open_guard(cat, "1"));
    const std::string served = "openai/gpt-5-mini";
    BOOST_TEST_REQUIRE(policy().tiers[0] != served);
    for (auto mode : {frugal::stream_mode::stream, frugal::stream_mode::buffer}) {
        frugal::cascade_stream s;
        r.start_stream(request("", "Name a colour. [sim tokens=12 served=" + served + "]"), mode, s);
        const auto got = read_all(f, s);
        BOOST_TEST_REQUIRE(!got.ec, got.ec.message());
        BOOST_TEST_REQUIRE(got.result != nullptr);
        BOOST_TEST(got.result->tier == 0u);
        BOOST_TEST(got.result->response.model == served);
        const auto& models = got.models;
        BOOST_TEST_REQUIRE(models.size() > 1u);
        BOOST_TEST(models.front() == served);
        BOOST_TEST(std::all_of(models.begin() + 1, models.end(), [](const auto& m) { return m.empty(); }));
    }
}

BOOST_AUTO_TEST_CASE(a_refusal_in_the_first_tokens_escalates_before_the_cheap_stream_ends)
{
    client_fixture f(paced(20ms));
    const auto cat = load_catalog(f);
    frugal::router r(f.client, policy(), cat, open_guard(cat, "1"));
    frugal::cascade_stream s;
    const auto t0 = std::chrono::steady_clock::now();
    r.start_stream(
        request("", "Anything. [sim poor=refusal tokens=12]"), frugal::stream_mode::stream, s);
    std::shared_ptr<const frugal::cascade_result> result;
    run(f.io, [&]() -> asio::awaitable<void> {
        for (;;) {
            auto [ec, ev] = co_await s.async_next(tuple_awaitable);
            if (ec || ev.type == frugal::cascade_event::kind::done) {
                BOOST_TEST(!ec, ec.message());
                result = ev.result;
                co_return;
            }
        }
    }());
    BOOST_TEST_REQUIRE(result != nullptr);
    BOOST_TEST_REQUIRE(result->attempts.size() == 2u);
    const auto& first = result->attempts[0];
    BOOST_TEST(first.moved_on == escalation_reason::refusal);
    BOOST_TEST(first.outcome == frugal::attempt_outcome::cancelled); // abandoned mid-stream
    BOOST_TEST(result->tier == 1u);
    // The refusal is 9 words; the cheap stream was left after the sixth or so.
    BOOST_TEST(first.latency_us < 9 * 20'000);
    (void)t0;
}

BOOST_AUTO_TEST_CASE(hedging_starts_the_flagship_when_the_cheap_tier_is_slow)
{
    auto cfg = fixed();
    cfg.models = frugal::standard_sim_models();
    for (auto& m : cfg.models)
        if (m.id == cheap)
            m.time_to_first_token = 3s;
    client_fixture f(cfg);
    const auto cat = load_catalog(f);
    auto p = policy();
    p.hedge_after = 100ms;
    frugal::router r(f.client, p, cat, open_guard(cat, "1"));
    const auto t0 = std::chrono::steady_clock::now();
    const auto o = complete(f, r, request("", "Name a colour."));
    const auto elapsed = std::chrono::steady_clock::now() - t0;
    BOOST_TEST(!o.ec);
    BOOST_TEST(o.result.tier == 1u);
    BOOST_TEST(o.result.escalated);
    BOOST_TEST((elapsed < 2s)); // it did not wait for the cheap tier
    BOOST_TEST_REQUIRE(o.result.attempts.size() == 2u);
    bool cheap_cancelled = false;
    for (const auto& a : o.result.attempts)
        if (a.tier == 0)
            cheap_cancelled = a.outcome == frugal::attempt_outcome::cancelled;
    BOOST_TEST(cheap_cancelled);
    BOOST_TEST((o.result.total_cost == billed(f)));
}

// `async_complete(req, as_tuple(use_awaitable))` awaits the cascade's coroutine without an
// initiation: the caller's terminal cancellation still stops it (the attempt settled), and a
// caller that goes on after it (throw_if_cancelled off) runs its next cascade to the end: the
// cancellation was the first cascade's, not every later one's.
BOOST_AUTO_TEST_CASE(an_awaited_cascade_takes_its_callers_cancellation_once)
{
    client_fixture f(paced(20ms));
    flagship_router fr(f); // a paid attempt to cancel
    auto& guard = fr.guard;
    auto& r = fr.r;
    asio::cancellation_signal cancel;
    outcome first, second;
    asio::co_spawn(
        f.io,
        [&]() -> asio::awaitable<void> {
            co_await asio::this_coro::throw_if_cancelled(false);
            auto [ec, res] = co_await r.async_complete(
                request("", "Tell a long story. [sim tokens=200]"), tuple_awaitable);
            first = {ec, std::move(res)};
            auto [ec2, res2] = co_await r.async_complete(request("", "Say hello."), tuple_awaitable);
            second = {ec2, std::move(res2)};
        },
        asio::bind_cancellation_slot(cancel.slot(), asio::detached));
    asio::steady_timer t(f.io, 100ms);
    t.async_wait([&](auto) { cancel.emit(asio::cancellation_type::terminal); });
    f.io.restart();
    f.io.run();
    BOOST_TEST(first.ec == asio::error::operation_aborted);
    BOOST_TEST_REQUIRE(first.result.attempts.size() == 1u);
    BOOST_TEST(first.result.attempts[0].outcome == frugal::attempt_outcome::cancelled);
    BOOST_TEST(!second.ec, second.ec.message());
    BOOST_TEST(!second.result.response.content.empty());
    const auto s = guard->snapshot()[0];
    BOOST_TEST((s.reserved == money()));
    BOOST_TEST((s.committed == first.result.attempts[0].cost + second.result.total_cost));
}

// Awaited with `as_tuple(use_awaitable)` from a coroutine on the client's executor, the cascade
// runs inside that coroutine and follows its cancellation state (as the docs say): a coroutine
// that lets total cancellation through has it taken as terminal, the attempt settled, and the
// cascade ends with a code whatever the caller's `throw_if_cancelled`, which is the caller's
// again afterwards (the cascade turns it off for itself). A cascade of its own (co_spawn's
// state lets terminal alone through) would have run to its end.
BOOST_AUTO_TEST_CASE(an_awaited_cascade_runs_in_its_callers_coroutine_and_puts_its_setting_back)
{
    client_fixture f(paced(20ms));
    flagship_router fr(f); // a paid attempt to cancel
    for (const bool throws : {true, false}) {
        asio::cancellation_signal cancel;
        outcome o;
        std::optional<bool> after;
        bool threw = false;
        asio::co_spawn(
            f.io,
            [&]() -> asio::awaitable<void> {
                co_await asio::this_coro::reset_cancellation_state(
                    asio::enable_total_cancellation());
                co_await asio::this_coro::throw_if_cancelled(throws);
                try {
                    auto [ec, res] = co_await fr.r.async_complete(
                        request("", "Tell a long story. [sim tokens=200]"), tuple_awaitable);
                    o = {ec, std::move(res)};
                } catch (const boost::system::system_error&) {
                    threw = true;
                }
                after = co_await asio::this_coro::throw_if_cancelled();
            },
            asio::bind_cancellation_slot(cancel.slot(), asio::detached));
        asio::steady_timer t(f.io, 100ms);
        t.async_wait([&](auto) { cancel.emit(asio::cancellation_type::total); });
        f.io.restart();
        f.io.run();
        BOOST_TEST(!threw, "throws=" << throws);
        BOOST_TEST(o.ec == asio::error::operation_aborted, "throws=" << throws);
        BOOST_TEST((after && *after == throws));
        BOOST_TEST_REQUIRE(o.result.attempts.size() == 1u);
        BOOST_TEST(o.result.attempts[0].outcome == frugal::attempt_outcome::cancelled);
        BOOST_TEST((fr.guard->snapshot()[0].reserved == money()));
    }
}

// A terminal cancellation followed at once by one of a type the caller's filter drops: Asio
// then sets the caller's state back to none, while the attempt the first one stopped reads as
// aborted. The cascade still ends cancelled, without escalating and paying for the next tier:
// from a free first tier (whose exchange shares the caller's state) and from a paid one
// (reached through the guard's signal).
BOOST_AUTO_TEST_CASE(a_cancellation_its_caller_forgets_still_ends_the_cascade)
{
    for (const char* first : {cheap, "openai/gpt-5-mini"}) {
        client_fixture f(paced(20ms));
        const auto cat = load_catalog(f);
        auto p = policy();
        p.tiers = {first, flagship};
        auto guard = open_guard(cat, "1");
        frugal::router r(f.client, p, cat, guard);
        // The second is dropped by the default filter.
        const auto o = complete_cancelled(
            f, r, request("", "Tell a long story. [sim tokens=200]"), 100ms,
            {asio::cancellation_type::terminal, asio::cancellation_type::total});
        BOOST_TEST(o.ec == asio::error::operation_aborted, first);
        BOOST_TEST_REQUIRE(o.result.attempts.size() == 1u, first);
        BOOST_TEST(o.result.attempts[0].outcome == frugal::attempt_outcome::cancelled, first);
        BOOST_TEST((guard->snapshot()[0].reserved == money()));
    }
}

// The same during a wait for the free tier's quota: the wait's timer was stopped by the caller,
// so the cascade ends cancelled, with nothing recorded as skipped and nothing paid, though the
// caller's state reads none again by the time the wait ends.
BOOST_AUTO_TEST_CASE(a_cancellation_its_caller_forgets_ends_a_wait_for_the_free_quota)
{
    client_fixture f(roomy());
    const auto cat = load_catalog(f);
    auto p = policy();
    p.free_tier.per_minute = 1; // the second cascade waits for the quota
    p.free_tier.max_wait = 90s;
    frugal::router r(f.client, p, cat, open_guard(cat, "1"));
    BOOST_TEST_REQUIRE(!complete(f, r, request("", "Say hi.")).ec);
    const auto started = std::chrono::steady_clock::now();
    const auto o = complete_cancelled(
        f, r, request("", "Say hi again."), 100ms,
        {asio::cancellation_type::terminal, asio::cancellation_type::total});
    BOOST_TEST(o.ec == asio::error::operation_aborted, o.ec.message());
    BOOST_TEST(o.result.attempts.empty()); // no tier asked, none skipped
    BOOST_TEST((std::chrono::steady_clock::now() - started < 30s));
    BOOST_TEST(!f.bill().at("models").as_object().contains(flagship));
}

// The same during the guard's wait for headroom: a cascade whose paid tier waits for another's
// reservation to settle, cancelled by its caller (a terminal cancellation, then one the filter
// drops), ends cancelled at once, having reserved nothing and without escalating to a tier it
// would have waited for too.
BOOST_AUTO_TEST_CASE(a_cancellation_its_caller_forgets_ends_a_wait_for_budget_headroom)
{
    client_fixture f(paced(20ms));
    const auto cat = load_catalog(f);
    auto p = policy();
    p.tiers = {"openai/gpt-5-mini", flagship};
    frugal::budget_params bp;
    bp.max_wait = 60s; // the wait ends by the cancellation, not by this
    auto guard = open_guard(cat, "1000", bp);
    frugal::router r(f.client, p, cat, guard);
    const auto story = "Tell a long story. [sim tokens=200]";

    // The first cascade holds its tier's worst case; the cap then leaves less than another.
    asio::cancellation_signal stop_first, stop_second;
    outcome first, second;
    spawn_cancellable(f, r, request("", story), stop_first, first);
    asio::steady_timer hold(f.io, 100ms), cancel_second(f.io, 300ms), cancel_first(f.io, 500ms);
    hold.async_wait([&](auto) {
        const auto held = guard->snapshot()[0].reserved;
        BOOST_TEST_REQUIRE((held > money()));
        BOOST_TEST_REQUIRE(!guard->set_budgets({{"global", held + *money::parse("0.000001")}}));
        spawn_cancellable(f, r, request("", story), stop_second, second);
    });
    cancel_second.async_wait([&](auto) {
        BOOST_TEST(second.result.attempts.empty()); // still waiting
        stop_second.emit(asio::cancellation_type::terminal);
        stop_second.emit(asio::cancellation_type::total); // dropped by the default filter
    });
    cancel_first.async_wait([&](auto) {
        // The second ended before the first let any headroom go.
        BOOST_TEST(second.ec == asio::error::operation_aborted, second.ec.message());
        stop_first.emit(asio::cancellation_type::terminal);
    });
    f.io.restart();
    f.io.run();

    BOOST_TEST(second.ec == asio::error::operation_aborted, second.ec.message());
    BOOST_TEST_REQUIRE(second.result.attempts.size() == 1u); // no escalation
    BOOST_TEST(second.result.attempts[0].tier == 0u);
    // Stopped before it was sent: `not_sent` (`cancelled` is for a request the provider got).
    BOOST_TEST(second.result.attempts[0].outcome == frugal::attempt_outcome::not_sent);
    BOOST_TEST(second.result.attempts[0].error == asio::error::operation_aborted);
    BOOST_TEST((second.result.total_cost == money()));
    BOOST_TEST(first.ec == asio::error::operation_aborted, first.ec.message());
    BOOST_TEST((guard->snapshot()[0].reserved == money()));
    BOOST_TEST(!f.bill().at("models").as_object().contains(flagship));
}

BOOST_AUTO_TEST_CASE(cancelling_the_task_cancels_the_attempt_and_settles_its_reservation)
{
    client_fixture f(paced(20ms));
    flagship_router fr(f); // a paid attempt to cancel
    auto& guard = fr.guard;
    auto& r = fr.r;
    asio::cancellation_signal cancel;
    outcome o;
    asio::co_spawn(
        f.io,
        r.async_complete(
            request("", "Tell a long story. [sim tokens=200]"),
            asio::bind_cancellation_slot(cancel.slot(), asio::as_tuple(asio::use_awaitable))),
        [&](const std::exception_ptr&,
            std::tuple<boost::system::error_code, frugal::cascade_result> t) {
            o.ec = std::get<0>(t);
            o.result = std::move(std::get<1>(t));
        });
    asio::steady_timer t(f.io, 100ms);
    t.async_wait([&](auto) { cancel.emit(asio::cancellation_type::terminal); });
    f.io.restart();
    f.io.run();
    BOOST_TEST(o.ec == asio::error::operation_aborted);
    BOOST_TEST_REQUIRE(o.result.attempts.size() == 1u);
    BOOST_TEST(o.result.attempts[0].outcome == frugal::attempt_outcome::cancelled);
    BOOST_TEST(o.result.attempts[0].estimated);
    const auto s = guard->snapshot()[0];
    BOOST_TEST((s.reserved == money()));
    BOOST_TEST((s.committed == o.result.attempts[0].cost)); // charged whole until proven
    BOOST_TEST((o.result.attempts[0].cost >= billed(f)));
}

// A deadline goes with the call: it ends the cascade with timeout, the attempt it cut settled.
BOOST_AUTO_TEST_CASE(a_cascades_deadline_ends_it_with_timeout_whole_and_streamed)
{
    client_fixture f(slow_first_token(3s, true));
    flagship_router fr(f); // a paid attempt to cut
    auto& guard = fr.guard;
    auto& r = fr.r;
    frugal::cascade_options options;
    options.deadline = 300ms;
    const auto t0 = std::chrono::steady_clock::now();
    const auto o = run(f.io, [&]() -> asio::awaitable<outcome> {
        auto [ec, res] =
            co_await r.async_complete(request("", "Name a colour."), options, tuple_awaitable);
        co_return outcome{ec, std::move(res)};
    }());
    BOOST_TEST(o.ec == frugal::error::timeout);
    BOOST_TEST((std::chrono::steady_clock::now() - t0 < 2s));
    BOOST_TEST_REQUIRE(o.result.attempts.size() == 1u);
    BOOST_TEST((o.result.attempts[0].outcome == frugal::attempt_outcome::cancelled));
    BOOST_TEST((guard->snapshot()[0].reserved == money()));
    BOOST_TEST((guard->snapshot()[0].committed == o.result.total_cost));

    frugal::cascade_stream s;
    r.start_stream(request("", "Name a colour."), frugal::stream_mode::stream, s, options);
    const auto streamed = read_all(f, s);
    BOOST_TEST(streamed.ec == frugal::error::timeout);
    BOOST_TEST_REQUIRE(streamed.result != nullptr);
    BOOST_TEST_REQUIRE(streamed.result->attempts.size() == 1u);
    BOOST_TEST((streamed.result->attempts[0].outcome == frugal::attempt_outcome::cancelled));
    BOOST_TEST((guard->snapshot()[0].reserved == money()));
}

// A deadline that passes while the consumer is slow to read (the channel full, the producer
// handing over text) still ends the stream with its `done` event, never a read left waiting.
BOOST_AUTO_TEST_CASE(a_streams_deadline_reaches_a_slow_reader)
{
    client_fixture f(paced(20ms));
    flagship_router fr(f);
    auto& guard = fr.guard;
    auto& r = fr.r;
    frugal::cascade_options options;
    options.deadline = 300ms;
    frugal::cascade_stream s;
    r.start_stream(
        request("", "Tell a long story. [sim tokens=200]"), frugal::stream_mode::stream, s,
        options);
    boost::system::error_code last;
    std::shared_ptr<const frugal::cascade_result> result;
    run(f.io, [&]() -> asio::awaitable<void> {
        bool paused = false;
        for (;;) {
            auto [ec, ev] = co_await s.async_next(tuple_awaitable);
            if (ec || ev.type == frugal::cascade_event::kind::done) {
                last = ec;
                result = ev.result;
                co_return;
            }
            if (!paused) { // the producer fills the channel and waits; the deadline passes
                paused = true;
                asio::steady_timer t(co_await asio::this_coro::executor, 600ms);
                co_await t.async_wait(tuple_awaitable);
            }
        }
    }());
    BOOST_TEST(last == frugal::error::timeout);
    BOOST_TEST_REQUIRE(result != nullptr);
    BOOST_TEST((guard->snapshot()[0].reserved == money()));
}

// The caller's cancellation reaches both attempts of a hedge, not only the hedge's own timer.
BOOST_AUTO_TEST_CASE(cancelling_a_hedged_cascade_stops_both_attempts_at_once)
{
    client_fixture f(slow_first_token(3s, true));
    const auto cat = load_catalog(f);
    auto guard = open_guard(cat, "1");
    auto p = policy();
    p.hedge_after = 50ms;
    frugal::router r(f.client, p, cat, guard);
    asio::cancellation_signal cancel;
    outcome o;
    const auto t0 = std::chrono::steady_clock::now();
    asio::co_spawn(
        f.io,
        r.async_complete(
            request("", "Name a colour."),
            asio::bind_cancellation_slot(cancel.slot(), asio::as_tuple(asio::use_awaitable))),
        [&](const std::exception_ptr&,
            std::tuple<boost::system::error_code, frugal::cascade_result> t) {
            o.ec = std::get<0>(t);
            o.result = std::move(std::get<1>(t));
        });
    asio::steady_timer t(f.io, 500ms); // both attempts are waiting for their first byte
    t.async_wait([&](auto) { cancel.emit(asio::cancellation_type::terminal); });
    f.io.restart();
    f.io.run();
    BOOST_TEST(o.ec == asio::error::operation_aborted);
    BOOST_TEST((std::chrono::steady_clock::now() - t0 < 2s)); // neither ran to its answer
    BOOST_TEST_REQUIRE(o.result.attempts.size() == 2u);
    for (const auto& a : o.result.attempts)
        BOOST_TEST((a.outcome == frugal::attempt_outcome::cancelled), a.model_asked);
    const auto s = guard->snapshot()[0];
    BOOST_TEST((s.reserved == money()));
    BOOST_TEST((s.committed == o.result.total_cost));
}

BOOST_AUTO_TEST_CASE(the_free_tier_limiter_escalates_or_waits_by_policy)
{
    client_fixture f;
    const auto cat = load_catalog(f);
    auto p = policy();
    p.free_tier.per_minute = 2;
    p.free_tier.when_empty = frugal::on_free_tier_empty::escalate; // the opt-in
    frugal::router r(f.client, p, cat, open_guard(cat, "1"));
    for (int i = 0; i < 2; ++i)
        BOOST_TEST(complete(f, r, request("", "Say hi.")).result.tier == 0u);
    auto o = complete(f, r, request("", "Say hi."));
    BOOST_TEST(!o.ec);
    BOOST_TEST(o.result.tier == 1u);
    BOOST_TEST(o.result.reason == escalation_reason::rate_limited);
    BOOST_TEST(o.result.attempts[0].outcome == frugal::attempt_outcome::not_sent);
    BOOST_TEST(f.bill().at("models").as_object().contains(cheap)); // the free calls were made

    // Waiting, the default: a limit that frees a slot after a minute, bounded at 50 ms, gives
    // up with rate_limited, and the flagship is never asked.
    auto w = policy();
    w.free_tier.per_minute = 1;
    w.free_tier.max_wait = 50ms;
    frugal::router rw(f.client, w, cat, open_guard(cat, "1"));
    BOOST_TEST(!complete(f, rw, request("", "Say hi.")).ec);
    const auto t0 = std::chrono::steady_clock::now();
    o = complete(f, rw, request("", "Say hi."));
    BOOST_TEST(o.ec == frugal::error::rate_limited);
    BOOST_TEST((std::chrono::steady_clock::now() - t0 < 1s));
    BOOST_TEST(!o.result.escalated);
    for (const auto& a : o.result.attempts)
        BOOST_TEST(a.model_asked == cheap); // never quietly paid
}

// An account has one free quota: routers over one guard (a server's per policy and per model
// passed through) draw from one count, in the memory store as in Redis.
BOOST_AUTO_TEST_CASE(routers_over_one_guard_share_the_free_tier_quota)
{
    client_fixture f;
    const auto cat = load_catalog(f);
    auto p = policy();
    p.free_tier.per_minute = 2;
    p.free_tier.max_wait = 50ms;
    auto one = p;
    one.tiers = {cheap};
    const auto guard = open_guard(cat, "1");
    frugal::router a(f.client, p, cat, guard);
    frugal::router b(f.client, one, cat, guard);
    BOOST_TEST(!complete(f, a, request("", "Say hi.")).ec);
    BOOST_TEST(!complete(f, b, request("", "Say hi.")).ec);
    for (auto* r : {&a, &b}) {
        const auto o = complete(f, *r, request("", "Say hi."));
        BOOST_TEST(o.ec == frugal::error::rate_limited);
        for (const auto& at : o.result.attempts)
            BOOST_TEST(at.model_asked == cheap); // never quietly paid
    }
}

BOOST_AUTO_TEST_CASE(a_429_from_the_free_tier_waits_for_its_reset_or_fails_never_paid)
{
    auto cfg = fixed();
    cfg.free_requests_per_minute = 1;
    frugal::client_params params = fast_retries();
    params.retry.max_attempts = 1;
    client_fixture f(cfg, params);
    const auto cat = load_catalog(f);
    auto p = policy();
    p.free_tier.max_wait = 200ms;
    frugal::router r(f.client, p, cat, open_guard(cat, "1"));
    BOOST_TEST(complete(f, r, request("", "Say hi.")).result.tier == 0u);
    // The server's quota is smaller than the client's guess: its 429 (reset a minute away,
    // past the wait) fails the request as rate_limited; it never becomes paid or "error".
    auto o = complete(f, r, request("", "Say hi."));
    BOOST_TEST(o.ec == frugal::error::rate_limited);
    BOOST_TEST_REQUIRE(!o.result.attempts.empty());
    BOOST_TEST(o.result.attempts[0].error == frugal::error::rate_limited);
    for (const auto& a : o.result.attempts)
        BOOST_TEST(a.model_asked == cheap);
    BOOST_TEST(!f.bill().at("models").as_object().contains(flagship));
    // The limiter learnt the reset: the next request does not even ask.
    o = complete(f, r, request("", "Say hi."));
    BOOST_TEST(o.ec == frugal::error::rate_limited);
    BOOST_TEST_REQUIRE(o.result.attempts.size() == 1u);
    BOOST_TEST(o.result.attempts[0].outcome == frugal::attempt_outcome::not_sent);

    // The escalate opt-in moves on instead, with reason rate_limited (never "error").
    auto e = policy();
    e.free_tier.when_empty = frugal::on_free_tier_empty::escalate;
    e.escalate_on = {escalation_reason::length}; // rate_limited not even named
    frugal::router re(f.client, e, cat, open_guard(cat, "1"));
    o = complete(f, re, request("", "Say hi."));
    BOOST_TEST(!o.ec);
    BOOST_TEST(o.result.tier == 1u);
    BOOST_TEST(o.result.escalated);
    BOOST_TEST(o.result.reason == escalation_reason::rate_limited);
}

BOOST_AUTO_TEST_CASE(a_429_with_a_near_reset_is_retried_on_the_free_tier)
{
    auto cfg = fixed();
    cfg.faults = {{cheap, "429", 1, 1.0}}; // the first request: 429 with Retry-After 1 s
    frugal::client_params params = fast_retries();
    params.retry.max_attempts = 1; // the router's own wait, not the client's retry
    client_fixture f(cfg, params);
    const auto cat = load_catalog(f);
    frugal::router r(f.client, policy(), cat, open_guard(cat, "1"));
    const auto t0 = std::chrono::steady_clock::now();
    const auto o = complete(f, r, request("", "Say hi."));
    BOOST_TEST(!o.ec);
    BOOST_TEST(o.result.tier == 0u);
    BOOST_TEST(!o.result.escalated);
    BOOST_TEST_REQUIRE(o.result.attempts.size() == 2u);
    BOOST_TEST(o.result.attempts[0].error == frugal::error::rate_limited);
    BOOST_TEST(o.result.attempts[1].outcome == frugal::attempt_outcome::ok);
    BOOST_TEST((std::chrono::steady_clock::now() - t0 >= 900ms)); // it waited for the reset
    BOOST_TEST(!f.bill().at("models").as_object().contains(flagship));
}

BOOST_AUTO_TEST_CASE(a_hedged_cascade_does_not_pay_around_a_free_429)
{
    auto cfg = fixed();
    cfg.faults = {{cheap, "429", 1, 1.0}}; // the free tier's 429 comes before the hedge starts
    frugal::client_params params = fast_retries();
    params.retry.max_attempts = 1;
    client_fixture f(cfg, params);
    const auto cat = load_catalog(f);
    auto p = policy();
    p.hedge_after = 20s;
    frugal::router r(f.client, p, cat, open_guard(cat, "1"));
    const auto o = complete(f, r, request("", "Say hi."));
    BOOST_TEST(!o.ec);
    BOOST_TEST(o.result.tier == 0u);
    BOOST_TEST(!o.result.escalated);
    BOOST_TEST(!f.bill().at("models").as_object().contains(flagship));
}

// The streamed hedge: a tier is slow when its first content is, the first stream to yield
// content is the one shown, and the other is cancelled and settled at once.
BOOST_AUTO_TEST_CASE(a_streamed_hedge_shows_only_the_winner_and_settles_the_loser)
{
    client_fixture f(slow_first_token(3s, false));
    const auto cat = load_catalog(f);
    auto guard = open_guard(cat, "1");
    auto p = policy();
    p.hedge_after = 100ms;
    frugal::router r(f.client, p, cat, guard);
    money spent;
    for (auto mode : {frugal::stream_mode::stream, frugal::stream_mode::buffer}) {
        BOOST_TEST_CONTEXT("mode " << (mode == frugal::stream_mode::stream ? "stream" : "buffer"))
        {
            frugal::cascade_stream s;
            const auto t0 = std::chrono::steady_clock::now();
            r.start_stream(request("", "Name a colour."), mode, s);
            const auto o = read_all(f, s);
            const auto elapsed = std::chrono::steady_clock::now() - t0;
            BOOST_TEST(!o.ec, o.ec.message());
            BOOST_TEST_REQUIRE(o.result != nullptr);
            const auto& res = *o.result;
            BOOST_TEST(res.tier == 1u);
            BOOST_TEST(res.escalated);
            BOOST_TEST(res.reason == escalation_reason::timeout);
            BOOST_TEST((elapsed < 2s)); // it did not wait for the cheap tier's first token
            // Only the flagship's text was shown, and nothing was taken back.
            BOOST_TEST(!o.shown.contains(0));
            BOOST_TEST_REQUIRE(o.shown.contains(1));
            BOOST_TEST(o.shown.at(1) == res.response.content);
            BOOST_TEST(!res.response.content.empty());
            BOOST_TEST(o.escalating == 0);
            BOOST_TEST_REQUIRE(res.attempts.size() == 2u);
            money sum;
            for (const auto& a : res.attempts) {
                sum += a.cost;
                if (a.tier == 0) {
                    BOOST_TEST(a.outcome == frugal::attempt_outcome::cancelled);
                    BOOST_TEST(a.moved_on == escalation_reason::timeout);
                    BOOST_TEST((a.cost == money())); // a free model
                } else {
                    BOOST_TEST(a.outcome == frugal::attempt_outcome::ok);
                    BOOST_TEST(a.model_asked == flagship);
                }
            }
            BOOST_TEST((res.total_cost == sum));
            spent += res.total_cost;
            // Both settled: nothing is left reserved, and what was settled is what it cost.
            const auto snap = guard->snapshot()[0];
            BOOST_TEST((snap.reserved == money()));
            BOOST_TEST((snap.committed == spent));
        }
    }
    // The loser's ledger record says it was cancelled, once for each cascade.
    std::vector<frugal::attempt_record> records;
    BOOST_TEST_REQUIRE(!guard->read_ledger(0, records));
    int cheap_cancelled = 0;
    for (const auto& rec : records)
        if (rec.model_asked == cheap && rec.outcome == frugal::attempt_outcome::cancelled)
            ++cheap_cancelled;
    BOOST_TEST(cheap_cancelled == 2);
    BOOST_TEST((spent == billed(f)));
}

BOOST_AUTO_TEST_CASE(a_streamed_cascade_whose_first_token_is_quick_does_not_hedge)
{
    // The first token at once, the next ones 50 ms apart: the whole answer takes longer than
    // hedge_after, its first content does not.
    client_fixture f(roomy(paced(50ms)));
    const auto cat = load_catalog(f);
    auto p = policy();
    p.hedge_after = 200ms;
    frugal::router r(f.client, p, cat, open_guard(cat, "1"));
    frugal::cascade_stream s;
    const auto t0 = std::chrono::steady_clock::now();
    r.start_stream(request("", "Say hi. [sim tokens=10]"), frugal::stream_mode::stream, s);
    auto o = read_all(f, s);
    BOOST_TEST(!o.ec, o.ec.message());
    BOOST_TEST_REQUIRE(o.result != nullptr);
    BOOST_TEST(o.result->tier == 0u);
    BOOST_TEST(!o.result->escalated);
    BOOST_TEST_REQUIRE(o.result->attempts.size() == 1u);
    BOOST_TEST(o.result->attempts[0].outcome == frugal::attempt_outcome::ok);
    BOOST_TEST(o.shown[0] == o.result->response.content);
    BOOST_TEST((std::chrono::steady_clock::now() - t0 >= 400ms)); // it outlasted hedge_after
    BOOST_TEST(!f.bill().at("models").as_object().contains(flagship));
}

BOOST_AUTO_TEST_CASE(cancelling_a_streamed_hedge_stops_both_streams_and_settles_both)
{
    client_fixture f(slow_first_token(3s, true));
    const auto cat = load_catalog(f);
    auto guard = open_guard(cat, "1");
    auto p = policy();
    p.hedge_after = 50ms;
    frugal::router r(f.client, p, cat, guard);
    frugal::cascade_stream s;
    const auto t0 = std::chrono::steady_clock::now();
    r.start_stream(request("", "Name a colour."), frugal::stream_mode::stream, s);
    // Both streams are waiting for their first token when the read is cancelled.
    asio::cancellation_signal cancel;
    asio::steady_timer t(f.io, 500ms);
    t.async_wait([&](auto) { cancel.emit(asio::cancellation_type::terminal); });
    boost::system::error_code last;
    std::string shown;
    run(f.io, [&]() -> asio::awaitable<void> {
        for (;;) {
            auto [ec, ev] =
                co_await s.async_next(asio::bind_cancellation_slot(cancel.slot(), tuple_awaitable));
            if (ec) {
                last = ec;
                co_return;
            }
            shown += ev.text;
            if (ev.type == frugal::cascade_event::kind::done)
                co_return;
        }
    }());
    // run() returns once the io_context has nothing left: the producer and both streams ended.
    BOOST_TEST(last == asio::error::operation_aborted);
    BOOST_TEST(shown.empty());
    BOOST_TEST((std::chrono::steady_clock::now() - t0 < 2s)); // no stream met its first token
    const auto snap = guard->snapshot()[0];
    BOOST_TEST((snap.reserved == money()));
    std::vector<frugal::attempt_record> records;
    BOOST_TEST_REQUIRE(!guard->read_ledger(0, records));
    BOOST_TEST_REQUIRE(records.size() == 2u); // the hedge had started
    for (const auto& rec : records)
        BOOST_TEST(rec.outcome == frugal::attempt_outcome::cancelled, rec.model_asked);
    // The paid stream is charged its whole reservation until its bill is proven.
    money committed;
    for (const auto& rec : records)
        committed += rec.cost;
    BOOST_TEST((snap.committed == committed));
}

BOOST_AUTO_TEST_CASE(a_streamed_hedge_does_not_pay_around_a_free_429)
{
    auto cfg = fixed();
    cfg.faults = {{cheap, "429", 1, 1.0}}; // the free tier's 429 comes before the hedge starts
    frugal::client_params params = fast_retries();
    params.retry.max_attempts = 1;
    client_fixture f(cfg, params);
    const auto cat = load_catalog(f);
    auto p = policy();
    p.hedge_after = 20s;
    frugal::router r(f.client, p, cat, open_guard(cat, "1"));
    frugal::cascade_stream s;
    r.start_stream(request("", "Say hi."), frugal::stream_mode::stream, s);
    auto o = read_all(f, s);
    BOOST_TEST(!o.ec, o.ec.message());
    BOOST_TEST_REQUIRE(o.result != nullptr);
    BOOST_TEST(o.result->tier == 0u);
    BOOST_TEST(!o.result->escalated);
    BOOST_TEST_REQUIRE(o.result->attempts.size() == 2u);
    BOOST_TEST(o.result->attempts[0].error == frugal::error::rate_limited);
    BOOST_TEST(o.shown[0] == o.result->response.content);
    BOOST_TEST(o.escalating == 0);
    BOOST_TEST(!f.bill().at("models").as_object().contains(flagship));
}

BOOST_AUTO_TEST_CASE(a_streamed_cascade_waits_for_the_free_tier_too)
{
    auto cfg = fixed();
    cfg.faults = {{cheap, "429", 1, 1.0}};
    frugal::client_params params = fast_retries();
    params.retry.max_attempts = 1;
    client_fixture f(cfg, params);
    const auto cat = load_catalog(f);
    frugal::router r(f.client, policy(), cat, open_guard(cat, "1"));
    frugal::cascade_stream s;
    r.start_stream(request("", "Say hi."), frugal::stream_mode::stream, s);
    std::shared_ptr<const frugal::cascade_result> result;
    std::string shown;
    run(f.io, [&]() -> asio::awaitable<void> {
        for (;;) {
            auto [ec, ev] = co_await s.async_next(tuple_awaitable);
            if (ec) {
                BOOST_TEST(!ec, ec.message());
                co_return;
            }
            if (ev.type == frugal::cascade_event::kind::delta)
                shown += ev.text;
            BOOST_TEST((ev.type != frugal::cascade_event::kind::escalating));
            if (ev.type == frugal::cascade_event::kind::done) {
                result = ev.result;
                break;
            }
        }
    }());
    BOOST_TEST_REQUIRE(result != nullptr);
    BOOST_TEST(result->tier == 0u);
    BOOST_TEST(!result->escalated);
    BOOST_TEST_REQUIRE(result->attempts.size() == 2u);
    BOOST_TEST(result->attempts[0].error == frugal::error::rate_limited);
    BOOST_TEST(shown == result->response.content);
    BOOST_TEST(!f.bill().at("models").as_object().contains(flagship));

    // And fails rate_limited when the quota does not come back within the wait.
    auto p = policy();
    p.free_tier.max_wait = 100ms;
    auto cfg2 = fixed();
    cfg2.free_requests_per_minute = 0;
    client_fixture g(cfg2, params);
    frugal::router r2(g.client, p, cat, open_guard(cat, "1"));
    frugal::cascade_stream s2;
    r2.start_stream(request("", "Say hi."), frugal::stream_mode::stream, s2);
    boost::system::error_code last;
    run(g.io, [&]() -> asio::awaitable<void> {
        for (;;) {
            auto [ec, ev] = co_await s2.async_next(tuple_awaitable);
            if (ec) {
                last = ec;
                break;
            }
            if (ev.type == frugal::cascade_event::kind::done)
                break;
        }
    }());
    BOOST_TEST(last == frugal::error::rate_limited);
    BOOST_TEST(!g.bill().at("models").as_object().contains(flagship));
}

BOOST_AUTO_TEST_SUITE_END()

BOOST_AUTO_TEST_SUITE(cascade_scale)

// One io_context thread drives thousands of cascades at once; each completes once, exactly.
BOOST_AUTO_TEST_CASE(two_thousand_concurrent_cascades_on_one_thread)
{
    client_fixture f(roomy());
    const auto cat = load_catalog(f);
    auto p = policy();
    p.free_tier.per_minute = 1'000'000; // this test is about concurrency, not the limiter
    frugal::router r(f.client, p, cat, open_guard(cat, "10"));
    const int n = 2000;
    int completed = 0;
    int failed = 0;
    int escalated = 0;
    for (int i = 0; i < n; ++i) {
        asio::co_spawn(
            f.io,
            [&, i]() -> asio::awaitable<void> {
                auto req = request(
                    "", i % 10 == 0 ? "Prove it rigorously, step by step." : "Name a colour.");
                auto [ec, res] = co_await r.async_complete(req, tuple_awaitable);
                ++completed;
                failed += ec ? 1 : 0;
                escalated += res.escalated ? 1 : 0;
            },
            asio::detached);
    }
    f.io.restart();
    f.io.run();
    BOOST_TEST(completed == n);
    BOOST_TEST(failed == 0);
    BOOST_TEST(escalated == n / 10);
}

BOOST_AUTO_TEST_SUITE_END()
