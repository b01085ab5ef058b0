// The budget guard driving real requests to the simulator: what the simulator bills is the
// truth the guard's books are checked against.

#include <frugal/budget.hpp>

#include "client_fixture.hpp"
#include "openrouter/codec.hpp"

#include <boost/asio/bind_cancellation_slot.hpp>
#include <boost/asio/co_spawn.hpp>
#include <boost/asio/detached.hpp>
#include <boost/test/unit_test.hpp>

using namespace frugal::test;
using namespace std::chrono_literals;
using frugal::money;

namespace {

constexpr const char* flagship = "anthropic/claude-fable-5";

struct burst_state {
    int granted = 0;
    int clamped = 0;
    int denied = 0;
    std::optional<money> committed_at_first_denial;
    std::vector<boost::system::error_code> chat_errors;
};

frugal::price_catalog load_catalog(client_fixture& f)
{
    auto [ec, models] = run(f.io, models_once(f.client));
    BOOST_TEST_REQUIRE(!ec);
    return frugal::price_catalog(models);
}

frugal::budget_guard open_guard(frugal::budget_params p, frugal::price_catalog cat)
{
    frugal::diagnostics diag;
    auto g = frugal::budget_guard::open(std::move(p), std::move(cat), nullptr, &diag);
    BOOST_TEST_REQUIRE(g.has_value(), diag.message);
    return *g;
}

std::uint64_t body_size(const frugal::chat_request& req, bool stream)
{
    std::string body;
    BOOST_TEST_REQUIRE(!frugal::openrouter::encode_chat_request(req, stream, body));
    return body.size();
}

frugal::attempt_record record_of(const frugal::chat_request& req, const frugal::chat_response& r)
{
    frugal::attempt_record rec;
    rec.model_asked = req.model;
    rec.model_served = r.model;
    rec.generation_id = r.id;
    rec.provider = r.provider;
    if (r.usage) {
        rec.prompt_tokens = r.usage->prompt_tokens;
        rec.completion_tokens = r.usage->completion_tokens;
    }
    return rec;
}

// One paid request under the guard: reserve (waiting if need be), send, settle.
asio::awaitable<void> guarded_chat(
    frugal::budget_guard& g,
    const frugal::price_catalog& cat,
    frugal::chat_client& c,
    frugal::chat_request req,
    burst_state& st)
{
    frugal::reserve_request rr;
    rr.model = req.model;
    rr.prompt_bytes = body_size(req, false);
    rr.max_tokens = req.max_tokens.value_or(0);
    auto [ec, res] = co_await g.async_reserve(rr, tuple_awaitable);
    if (ec) {
        BOOST_TEST(ec == frugal::error::budget_exhausted);
        if (!st.committed_at_first_denial)
            st.committed_at_first_denial = g.committed_total();
        ++st.denied;
        co_return;
    }
    ++st.granted;
    st.clamped += res.clamped() ? 1 : 0;
    req.max_tokens = res.max_tokens();
    res.mark_sent();
    auto [cec, resp] = co_await c.async_chat(req, tuple_awaitable);
    auto rec = record_of(req, resp);
    if (cec) {
        st.chat_errors.push_back(cec);
        (void)res.settle_unknown(rec);
        co_return;
    }
    const auto cost = cat.cost_of(resp.model, resp.usage);
    BOOST_TEST_REQUIRE(cost.has_value());
    rec.cost = *cost;
    BOOST_TEST(!res.settle(rec));
}

money ledger_sum(frugal::budget_guard& g)
{
    std::vector<frugal::attempt_record> ledger;
    BOOST_TEST(!g.read_ledger(0, ledger));
    money sum;
    for (const auto& r : ledger)
        sum += r.cost;
    return sum;
}

} // namespace

BOOST_AUTO_TEST_SUITE(budget_with_the_simulator)

// The over-blocking failure: worst-case reservations that refuse traffic long before the cap
// is spent. Waiting for settlements and clamping max_tokens let a burst use the cap.
BOOST_AUTO_TEST_CASE(a_burst_spends_95_percent_of_a_small_cap_before_the_first_denial)
{
    client_fixture f(paced(1ms));
    const auto cat = load_catalog(f);
    frugal::budget_params p;
    p.budgets = {{"global", *money::parse("0.05")}};
    p.max_wait = 20s;
    auto g = open_guard(p, cat);
    burst_state st;
    frugal::chat_request req = request(flagship, "Summarise the history of Rome. [sim tokens=300]");
    req.max_tokens = 1000; // worst case 0.015 + prompt; the answers cost about 0.0045
    for (int i = 0; i < 40; ++i)
        asio::co_spawn(f.io, guarded_chat(g, cat, f.client, req, st), asio::detached);
    f.io.restart();
    f.io.run();

    const money cap = *money::parse("0.05");
    const money billed = *money::parse(f.billed_usd(flagship));
    BOOST_TEST_MESSAGE(
        "granted " << st.granted << " (clamped " << st.clamped << "), denied " << st.denied
                   << "; spent " << g.committed_total().to_string() << " of " << cap.to_string()
                   << " before the first denial; billed " << billed.to_string());
    BOOST_TEST(st.chat_errors.empty());
    BOOST_TEST_REQUIRE(st.committed_at_first_denial.has_value());
    BOOST_TEST(st.committed_at_first_denial->units() * 100 >= cap.units() * 95);
    BOOST_TEST((billed <= cap)); // zero overshoot
    BOOST_TEST((billed == g.committed_total()));
    BOOST_TEST((ledger_sum(g) == billed));
    BOOST_TEST(st.denied > 0);
}

// Metered mode lets more requests run at once and stops them all when the cap is reached;
// the overshoot is what the streams produce between the trip and their cancellation.
BOOST_AUTO_TEST_CASE(metered_streams_are_cancelled_together_when_the_cap_is_reached)
{
    auto cfg = paced(3ms);
    client_fixture f(cfg);
    const auto cat = load_catalog(f);
    frugal::budget_params p;
    p.mode = frugal::budget_mode::metered;
    p.expected_completion_tokens = 50;
    const money cap = *money::parse("0.02");
    p.budgets = {{"global", cap}};
    auto g = open_guard(p, cat);

    frugal::chat_request req = request(flagship, "Write a long story. [sim tokens=400]");
    req.max_tokens = 1000;
    const int streams = 8;
    int cancelled = 0;
    int finished = 0;
    std::vector<std::uint64_t> tokens_seen(streams);
    for (int i = 0; i < streams; ++i) {
        asio::co_spawn(
            f.io,
            [&, i]() -> asio::awaitable<void> {
                frugal::reserve_request rr;
                rr.model = req.model;
                rr.prompt_bytes = body_size(req, true);
                rr.max_tokens = *req.max_tokens;
                auto [ec, res] = co_await g.async_reserve(rr, tuple_awaitable);
                BOOST_TEST_REQUIRE(!ec);
                frugal::chat_stream s;
                res.mark_sent();
                auto [sec] = co_await f.client.async_start_stream(req, s, tuple_awaitable);
                BOOST_TEST_REQUIRE(!sec);
                std::uint64_t tokens = 0;
                boost::system::error_code rec;
                while (!s.done()) {
                    auto [e, d] = co_await s.async_read_delta(
                        asio::bind_cancellation_slot(res.cancellation_slot(), tuple_awaitable));
                    if (e) {
                        rec = e;
                        break;
                    }
                    tokens += d.events;
                    res.meter(tokens);
                    // A read that completed before the guard's signal landed: the reason stays.
                    if (res.cancel_reason()) {
                        rec = asio::error::operation_aborted;
                        break;
                    }
                }
                tokens_seen[static_cast<std::size_t>(i)] = tokens;
                auto r = record_of(req, s.response());
                if (r.generation_id.empty())
                    r.generation_id = s.diagnostics().generation_id;
                if (rec) {
                    BOOST_TEST(rec == asio::error::operation_aborted);
                    BOOST_TEST(res.cancel_reason() == frugal::error::budget_exhausted);
                    ++cancelled;
                    r.outcome = frugal::attempt_outcome::cancelled;
                    (void)res.settle_unknown(r);
                } else {
                    ++finished;
                    r.cost = cat.cost_of(s.response().model, s.response().usage).value();
                    (void)res.settle(r);
                }
            },
            asio::detached);
    }
    f.io.restart();
    f.io.run();
    BOOST_TEST(cancelled == streams);

    // The generation lookups prove what each cancelled stream was billed.
    std::vector<frugal::attempt_record> ledger;
    BOOST_TEST(!g.read_ledger(0, ledger));
    for (const auto& r : ledger) {
        BOOST_TEST_REQUIRE(!r.generation_id.empty());
        auto info = run(f.io, [&]() -> asio::awaitable<frugal::generation_info> {
            auto [ec, gi] = co_await f.client.async_generation(r.generation_id, tuple_awaitable);
            BOOST_TEST(!ec);
            co_return gi;
        }());
        BOOST_TEST_REQUIRE(info.total_cost.has_value());
        BOOST_TEST(!g.correct(r.record_id, *info.total_cost));
    }
    const money billed = *money::parse(f.billed_usd(flagship));
    BOOST_TEST((ledger_sum(g) == billed));
    BOOST_TEST((g.committed_total() == billed));
    // The bound: each stream in flight may add the tokens of one read plus what the server
    // writes before the cancellation reaches it; at 3 ms a token that is a few tokens each.
    const auto price = cat.find(flagship)->completion;
    const money overshoot = billed > cap ? billed - cap : money();
    BOOST_TEST_MESSAGE(
        "metered: cap " << cap.to_string() << ", billed " << billed.to_string() << ", overshoot "
                        << overshoot.to_string() << " (" << overshoot.units() / price.units()
                        << " tokens over " << streams << " streams)");
    BOOST_TEST((overshoot <= price * (std::int64_t{streams} * 10)));
}

BOOST_AUTO_TEST_SUITE_END()
