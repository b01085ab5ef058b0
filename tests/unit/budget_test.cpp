// The budget guard's decisions, without sockets: prices, worst cases, clamping, nesting,
// periods, settlement, cancellation and waiting.

#include <frugal/budget.hpp>

#include "printers.hpp"
#include "scratch_file.hpp"

#include "budget/book.hpp"

#include <boost/asio/bind_cancellation_slot.hpp>
#include <boost/asio/bind_executor.hpp>
#include <boost/asio/io_context.hpp>
#include <boost/asio/steady_timer.hpp>
#include <boost/test/unit_test.hpp>

#include <sqlite3.h>
#include <unistd.h>

#include <chrono>
#include <condition_variable>
#include <mutex>
#include <thread>
#include <filesystem>
#include <future>
#include <optional>

using frugal::money;
using namespace std::chrono_literals;

namespace {

money usd(const char* s)
{
    return *money::parse(s);
}

frugal::model_info
row(std::string id, const char* prompt, const char* completion, const char* request = "0")
{
    frugal::model_info m;
    m.id = std::move(id);
    m.prompt_price = usd(prompt);
    m.completion_price = usd(completion);
    m.request_price = usd(request);
    m.max_completion_tokens = 4096;
    m.context_length = 200000;
    return m;
}

// One paid model at $1 per 1,000 prompt tokens and $2 per 1,000 completion tokens (round
// numbers keep the arithmetic in the tests readable), and a free one.
frugal::price_catalog catalog()
{
    auto alias = row("~anthropic/claude-fable-latest", "0", "0");
    alias.alias_target = "anthropic/claude-fable-5";
    auto variable = row("openrouter/auto", "-1", "-1");
    return frugal::price_catalog(
        {row("anthropic/claude-fable-5", "0.001", "0.002"),
         row("google/gemma-4-31b-it:free", "0", "0"), alias, variable});
}

constexpr const char* paid = "anthropic/claude-fable-5";
constexpr const char* free_model = "google/gemma-4-31b-it:free";

struct fixture {
    explicit fixture(std::vector<frugal::budget_spec> specs, frugal::budget_params p = {})
    {
        p.budgets = std::move(specs);
        if (!p.clock)
            p.clock = [this] { return now; };
        guard.emplace(frugal::budget_guard::open(p, catalog()).value());
    }

    frugal::reservation reserve(
        std::uint32_t max_tokens,
        std::uint64_t bytes = 100,
        std::span<const std::string> keys = {},
        const char* model = paid)
    {
        frugal::reserve_request r;
        r.model = model;
        r.prompt_bytes = bytes;
        r.max_tokens = max_tokens;
        r.keys = keys;
        auto got = guard->try_reserve(r, &last_diag);
        last_ec = got.error(); // success when granted
        return got ? std::move(*got) : frugal::reservation();
    }

    frugal::budget_snapshot budget(const std::string& name) const
    {
        for (auto& s : guard->snapshot())
            if (s.name == name)
                return s;
        BOOST_FAIL("no budget " << name);
        return {};
    }

    std::chrono::system_clock::time_point now =
        std::chrono::system_clock::time_point(std::chrono::milliseconds(1795000000000));
    std::optional<frugal::budget_guard> guard;
    boost::system::error_code last_ec;
    frugal::diagnostics last_diag;
};

frugal::attempt_record record(money cost)
{
    frugal::attempt_record r;
    r.cost = cost;
    r.model_asked = paid;
    r.model_served = paid;
    return r;
}

} // namespace

BOOST_AUTO_TEST_SUITE(prices)

BOOST_AUTO_TEST_CASE(catalog_prices_free_rows_aliases_and_refuses_variable_prices)
{
    const auto c = catalog();
    const auto* p = c.find(paid);
    BOOST_TEST_REQUIRE(p != nullptr);
    BOOST_TEST(p->prompt.units() == 1'000'000'000);
    BOOST_TEST(!p->free());
    BOOST_TEST(c.find(free_model)->free());
    const auto* alias = c.find("~anthropic/claude-fable-latest");
    BOOST_TEST_REQUIRE(alias != nullptr);
    BOOST_TEST(alias->id == paid);
    BOOST_TEST((alias->completion == p->completion));
    // "-1": variable, never $0
    BOOST_TEST_REQUIRE(c.find("openrouter/auto") != nullptr);
    BOOST_TEST(!c.find("openrouter/auto")->known());
    BOOST_TEST(!c.find("openrouter/auto")->free());
    BOOST_TEST(c.find("nobody/nothing") == nullptr);
}

BOOST_AUTO_TEST_CASE(cost_is_the_reported_cost_else_tokens_at_the_served_models_price)
{
    const auto c = catalog();
    frugal::usage u;
    u.prompt_tokens = 1000;
    u.completion_tokens = 500;
    BOOST_TEST((c.cost_of(paid, u).value() == usd("2")));
    u.cost = usd("0.0123");
    BOOST_TEST((c.cost_of("anything", u).value() == usd("0.0123")));
    u.cost.reset();
    BOOST_TEST(c.cost_of("nobody/nothing", u).error() == frugal::error::price_unknown);
    BOOST_TEST(c.cost_of(paid, std::nullopt).error() == frugal::error::price_unknown);
    BOOST_TEST((c.cost_of(free_model, std::nullopt).value() == money()));
}

// Without a reported cost an answer is booked at the dearer of the model asked and the model
// that served it, each at its own price: whichever is listed, whichever is dearer.
BOOST_AUTO_TEST_CASE(a_booked_cost_without_a_report_is_the_dearer_of_asked_and_served)
{
    auto cheap = row("openai/cheap", "0.0001", "0.0002");
    const frugal::price_catalog c(
        {row(paid, "0.001", "0.002"), row(free_model, "0", "0"), cheap});
    frugal::chat_response r;
    r.usage.emplace();
    r.usage->prompt_tokens = 1000;
    r.usage->completion_tokens = 500;
    auto booked = [&](const char* asked, const char* served) {
        r.model = served;
        std::string anomaly;
        return c.booked_cost(asked, r, anomaly);
    };
    BOOST_TEST((booked(paid, paid).value() == usd("2")));
    BOOST_TEST((booked(paid, "").value() == usd("2"))); // no model named: the one asked
    BOOST_TEST((booked("openai/cheap", paid).value() == usd("2")));      // served dearer
    BOOST_TEST((booked(paid, "openai/cheap").value() == usd("2")));      // served cheaper
    BOOST_TEST((booked("openai/cheap", "openai/cheap").value() == usd("0.2")));
    BOOST_TEST((booked(paid, "nobody/nothing").value() == usd("2")));    // served unlisted
    BOOST_TEST((booked(free_model, paid).value() == usd("2")));          // a free twin's lie
    BOOST_TEST((booked(free_model, "nobody/nothing").value() == money()));
    BOOST_TEST(!booked("nobody/nothing", "nobody/else").has_value());
}

BOOST_AUTO_TEST_CASE(worst_case_bounds_prompt_tokens_by_bytes)
{
    const auto b = frugal::worst_case(*catalog().find(paid), 1500);
    BOOST_TEST((b.fixed == usd("1.5")));
    BOOST_TEST((b.per_completion_token == usd("0.002")));
}

BOOST_AUTO_TEST_SUITE_END()

BOOST_AUTO_TEST_SUITE(budget_periods)

BOOST_AUTO_TEST_CASE(windows_follow_utc_days_monday_weeks_and_calendar_months)
{
    using frugal::budget_period;
    using frugal::detail::window_of;
    const std::int64_t day = 86'400'000;
    // 2026-11-29 is a Sunday, 2026-11-30 a Monday; 2026-12-01 starts a month.
    const std::int64_t nov29 = 20'786 * day;
    BOOST_TEST(window_of(budget_period::daily, nov29 + day - 1) == 20'786);
    BOOST_TEST(window_of(budget_period::daily, nov29 + day) == 20'787);
    BOOST_TEST(
        window_of(budget_period::weekly, nov29 + day - 1) !=
        window_of(budget_period::weekly, nov29 + day));
    BOOST_TEST(
        window_of(budget_period::weekly, nov29 + day) ==
        window_of(budget_period::weekly, nov29 + 7 * day - 1));
    BOOST_TEST(window_of(budget_period::monthly, nov29 + 2 * day - 1) == 2026 * 12 + 10);
    BOOST_TEST(window_of(budget_period::monthly, nov29 + 2 * day) == 2026 * 12 + 11);
    // 2028-02-29 belongs to February; 1969-12-31 to the last month before the epoch.
    BOOST_TEST(window_of(budget_period::monthly, 21'243 * day) == 2028 * 12 + 1);
    BOOST_TEST(window_of(budget_period::monthly, -1) == 1969 * 12 + 11);
    BOOST_TEST(window_of(budget_period::none, nov29) == 0);
    // Each period ends where the next begins.
    using frugal::detail::window_end_ms;
    for (const auto p : {budget_period::daily, budget_period::weekly, budget_period::monthly}) {
        for (std::int64_t t = -40 * day; t < 800 * day; t += day / 3) {
            const auto end = window_end_ms(p, window_of(p, t));
            BOOST_TEST(end > t);
            BOOST_TEST(window_of(p, end - 1) == window_of(p, t));
            BOOST_TEST(window_of(p, end) == window_of(p, t) + 1);
        }
    }
}

BOOST_AUTO_TEST_CASE(a_daily_cap_starts_again_and_a_straddling_reservation_stays_in_its_day)
{
    fixture f({{"daily", usd("1"), frugal::budget_period::daily}});
    auto r = f.reserve(400); // 0.1 + 0.8
    BOOST_TEST_REQUIRE(r.active());
    r.mark_sent();
    BOOST_TEST(!f.reserve(400).active()); // 0.9 of 1 is held
    f.now += 24h;                         // the next day: the cap is whole again
    auto r2 = f.reserve(400);
    BOOST_TEST(r2.active());
    BOOST_TEST((f.budget("daily").reserved == r2.amount()));
    BOOST_TEST(!r.settle(record(usd("0.5")))); // lands in the day it began in
    BOOST_TEST((f.budget("daily").committed == money()));
    BOOST_TEST((f.guard->committed_total() == usd("0.5")));
}

BOOST_AUTO_TEST_SUITE_END()

BOOST_AUTO_TEST_SUITE(budget_guard)

BOOST_AUTO_TEST_CASE(reserves_the_worst_case_and_settles_the_actual_cost)
{
    fixture f({{"global", usd("10")}});
    auto r = f.reserve(500, 1000);
    BOOST_TEST_REQUIRE(r.active());
    BOOST_TEST((r.amount() == usd("2"))); // 1000 bytes × 0.001 + 500 × 0.002
    BOOST_TEST(r.max_tokens() == 500u);
    BOOST_TEST(!r.clamped());
    BOOST_TEST((f.budget("global").reserved == usd("2")));
    r.mark_sent();
    BOOST_TEST(!r.settle(record(usd("0.75"))));
    BOOST_TEST(!r.active());
    BOOST_TEST((f.budget("global").reserved == money()));
    BOOST_TEST((f.budget("global").committed == usd("0.75")));
    std::vector<frugal::attempt_record> ledger;
    BOOST_TEST(!f.guard->read_ledger(0, ledger));
    BOOST_TEST_REQUIRE(ledger.size() == 1u);
    BOOST_TEST((ledger[0].cost == usd("0.75")));
    BOOST_TEST(ledger[0].record_id != 0u);
    BOOST_TEST(r.settle(record(money())) == frugal::error::reservation_inactive);
}

BOOST_AUTO_TEST_CASE(a_request_never_sent_gives_its_reservation_back)
{
    fixture f({{"global", usd("1")}});
    {
        auto r = f.reserve(400);
        BOOST_TEST((f.budget("global").reserved == r.amount()));
    }
    BOOST_TEST((f.budget("global").reserved == money()));
    BOOST_TEST((f.budget("global").committed == money()));
}

BOOST_AUTO_TEST_CASE(a_sent_request_with_unknown_outcome_is_charged_its_whole_reservation)
{
    fixture f({{"global", usd("10")}});
    money amount;
    {
        auto r = f.reserve(500, 1000);
        amount = r.amount();
        r.mark_sent();
        r.release(); // too late: it was sent
    }
    BOOST_TEST((f.budget("global").committed == amount));
    std::vector<frugal::attempt_record> ledger;
    BOOST_TEST(!f.guard->read_ledger(0, ledger));
    BOOST_TEST_REQUIRE(ledger.size() == 1u);
    BOOST_TEST(ledger[0].estimated);
    BOOST_TEST(std::string(to_string(ledger[0].outcome)) == "unknown");
    BOOST_TEST(ledger[0].model_asked == paid);
    // A generation lookup proves a smaller bill.
    BOOST_TEST(!f.guard->correct(ledger[0].record_id, usd("0.25")));
    BOOST_TEST((f.budget("global").committed == usd("0.25")));
    BOOST_TEST((f.guard->committed_total() == usd("0.25")));
    BOOST_TEST(f.guard->correct(12345, usd("1")) == frugal::error::not_found);
}

BOOST_AUTO_TEST_CASE(clamps_max_tokens_to_the_headroom_down_to_the_minimum)
{
    frugal::budget_params p;
    p.min_max_tokens = 100;
    fixture f({{"global", usd("1")}}, p);
    // 0.1 fixed leaves 0.9: 450 tokens of the 1,000 asked.
    auto r = f.reserve(1000);
    BOOST_TEST_REQUIRE(r.active());
    BOOST_TEST(r.clamped());
    BOOST_TEST(r.max_tokens() == 450u);
    BOOST_TEST((r.amount() == usd("1")));
    // Nothing is left, and nothing in flight would settle below its reservation for sure:
    // the next request waits (async) or is denied (try).
    auto d = f.reserve(1000);
    BOOST_TEST(!d.active());
    BOOST_TEST(f.last_ec == frugal::error::budget_exhausted);
    BOOST_TEST(f.last_diag.message.find("budget 'global'") != std::string::npos);
    BOOST_TEST(f.last_diag.message.find("for 100 completion tokens") != std::string::npos,
               f.last_diag.message);
    // A request for fewer tokens than the minimum is told of its own size, not the minimum's.
    BOOST_TEST(!f.reserve(20).active());
    BOOST_TEST(f.last_diag.message.find("($0.14 for 20 completion tokens)") != std::string::npos,
               f.last_diag.message);
    r.mark_sent();
    BOOST_TEST(!r.settle(record(usd("0.65"))));
    // 0.35 left: 0.1 fixed + 125 tokens fits the minimum of 100; 0.1 + 50 would not.
    auto c = f.reserve(1000);
    BOOST_TEST(c.max_tokens() == 125u);
    c.release();
    BOOST_TEST(!f.reserve(1000, 300).active()); // 0.3 fixed leaves 25 tokens < 100
    frugal::reserve_request exact;
    exact.model = paid;
    exact.prompt_bytes = 100;
    exact.max_tokens = 1000;
    exact.allow_clamp = false;
    BOOST_TEST(!f.guard->try_reserve(exact));
}

BOOST_AUTO_TEST_CASE(free_calls_never_touch_the_budget)
{
    fixture f({{"global", money()}});
    auto r = f.reserve(1000, 100, {}, free_model);
    BOOST_TEST(r.active());
    BOOST_TEST(r.free());
    BOOST_TEST(r.max_tokens() == 1000u);
    BOOST_TEST(!f.reserve(1).active()); // the paid model cannot pass a zero cap
    r.mark_sent();
    BOOST_TEST(!r.settle(record(money())));
    std::vector<frugal::attempt_record> ledger;
    BOOST_TEST(!f.guard->read_ledger(0, ledger));
    BOOST_TEST(ledger.size() == 1u); // recorded at $0
    BOOST_TEST((f.budget("global").committed == money()));
}

BOOST_AUTO_TEST_CASE(an_unknown_price_is_refused)
{
    fixture f({{"global", usd("10")}});
    BOOST_TEST(!f.reserve(10, 10, {}, "openrouter/auto").active());
    BOOST_TEST(f.last_ec == frugal::error::price_unknown);
    BOOST_TEST(f.last_diag.message.find("openrouter/auto") != std::string::npos);
}

BOOST_AUTO_TEST_CASE(a_request_must_fit_every_budget_it_falls_under)
{
    fixture f({{"global", usd("10")}, {"tenant:acme", usd("1")}, {"user:*", usd("0.5")}});
    const std::vector<std::string> alice{"tenant:acme", "user:alice"};
    const std::vector<std::string> bob{"tenant:acme", "user:bob"};
    const std::vector<std::string> other{"tenant:other", "user:carol"};
    auto a = f.reserve(200, 100, alice); // 0.1 + 0.4 = 0.5: all of alice's cap
    BOOST_TEST_REQUIRE(a.active());
    BOOST_TEST(!f.reserve(200, 100, alice).active());
    BOOST_TEST(f.last_diag.message.find("user:alice") != std::string::npos);
    auto b = f.reserve(200, 100, bob); // bob has his own 0.5; acme now holds 1.0
    BOOST_TEST_REQUIRE(b.active());
    auto b2 = f.reserve(200, 100, bob);
    BOOST_TEST(!b2.active());
    auto c = f.reserve(200, 100, other); // another tenant: only global and carol's cap
    BOOST_TEST(c.active());
    BOOST_TEST((f.budget("global").reserved == usd("1.5")));
    BOOST_TEST((f.budget("tenant:acme").reserved == usd("1")));
    BOOST_TEST((f.budget("user:carol").reserved == usd("0.5")));
    BOOST_TEST(!f.reserve(1, 100, std::vector<std::string>{"nocolon"}).active());
    BOOST_TEST(f.last_ec == frugal::error::bad_budget_config);
}

BOOST_AUTO_TEST_CASE(bad_configurations_are_refused_with_the_field_named)
{
    auto open = [](std::vector<frugal::budget_spec> specs, frugal::diagnostics& diag) {
        frugal::budget_params p;
        p.budgets = std::move(specs);
        auto g = frugal::budget_guard::open(p, catalog(), nullptr, &diag);
        BOOST_TEST(!g.has_value());
        return g.error();
    };
    frugal::diagnostics d;
    BOOST_TEST(open({{"", usd("1")}}, d) == frugal::error::bad_budget_config);
    BOOST_TEST(open({{"a", usd("-1")}}, d) == frugal::error::bad_budget_config);
    BOOST_TEST(d.message.find("'a'") != std::string::npos);
    BOOST_TEST(open({{"a", usd("1")}, {"a", usd("2")}}, d) == frugal::error::bad_budget_config);
    BOOST_TEST(open({{"user:", usd("1")}}, d) == frugal::error::bad_budget_config);
}

BOOST_AUTO_TEST_CASE(billing_above_the_price_list_is_an_overshoot_that_trips_the_guard)
{
    boost::asio::io_context io;
    fixture f({{"global", usd("1")}});
    frugal::reserve_request req;
    req.model = paid;
    req.prompt_bytes = 100;
    req.max_tokens = 200; // 0.5
    auto a = f.guard->try_reserve(req, nullptr, io.get_executor()).value();
    auto b = f.guard->try_reserve(req, nullptr, io.get_executor()).value();
    BOOST_TEST_REQUIRE((a.active() && b.active()));
    bool b_cancelled = false;
    b.cancellation_slot().assign([&](boost::asio::cancellation_type) { b_cancelled = true; });
    a.mark_sent();
    b.mark_sent();
    BOOST_TEST(!a.settle(record(usd("0.8")))); // 0.3 more than its worst case
    io.run();
    BOOST_TEST(b_cancelled);
    BOOST_TEST(b.cancel_reason() == frugal::error::budget_exhausted);
    BOOST_TEST(f.guard->price_anomalies() == 1u);
    const auto s = f.budget("global");
    BOOST_TEST(s.tripped);
    BOOST_TEST((s.overshoot == usd("0.3")));
    BOOST_TEST(!f.reserve(1).active()); // tripped: denied without waiting
}

BOOST_AUTO_TEST_CASE(closing_denies_new_paid_requests_and_cancels_those_in_flight)
{
    boost::asio::io_context io;
    fixture f({{"global", usd("10")}});
    frugal::reserve_request req;
    req.model = paid;
    req.max_tokens = 10;
    auto a = f.guard->try_reserve(req, nullptr, io.get_executor()).value();
    int cancelled = 0;
    a.cancellation_slot().assign([&](boost::asio::cancellation_type) { ++cancelled; });
    f.guard->close();
    io.run();
    BOOST_TEST(cancelled == 1);
    BOOST_TEST(a.cancel_reason() == frugal::error::budget_closed);
    BOOST_TEST(!f.reserve(10).active());
    BOOST_TEST(f.last_ec == frugal::error::budget_closed);
    BOOST_TEST(f.reserve(10, 10, {}, free_model).active()); // free calls go on
}

BOOST_AUTO_TEST_CASE(metered_mode_reserves_the_expected_cost_and_cancels_all_at_the_cap)
{
    boost::asio::io_context io;
    frugal::budget_params p;
    p.mode = frugal::budget_mode::metered;
    p.expected_completion_tokens = 50;
    fixture f({{"global", usd("1")}}, p);
    frugal::reserve_request req;
    req.model = paid;
    req.prompt_bytes = 100;
    req.max_tokens = 1000; // strict would hold 2.1; metered holds 0.1 + 50 × 0.002 = 0.2
    std::vector<frugal::reservation> rs;
    int cancelled = 0;
    for (int i = 0; i < 4; ++i) {
        rs.push_back(f.guard->try_reserve(req, nullptr, io.get_executor()).value());
        BOOST_TEST_REQUIRE(rs.back().active());
        BOOST_TEST(rs.back().max_tokens() == 1000u);
        rs.back().cancellation_slot().assign([&](boost::asio::cancellation_type) { ++cancelled; });
        rs.back().mark_sent();
    }
    BOOST_TEST((f.budget("global").reserved == usd("0.8")));
    rs[0].meter(100); // 0.3 live
    BOOST_TEST((f.budget("global").reserved == usd("0.9")));
    io.run();
    BOOST_TEST(cancelled == 0);
    rs[1].meter(100); // 1.0: the cap
    io.restart();
    io.run();
    BOOST_TEST(cancelled == 4);
    for (auto& r : rs)
        BOOST_TEST(!r.settle(record(usd("0.25"))));
    BOOST_TEST((f.budget("global").committed == usd("1")));
}

BOOST_AUTO_TEST_CASE(async_reserve_waits_for_a_settlement_then_is_granted)
{
    boost::asio::io_context io;
    fixture f({{"global", usd("1")}});
    auto held = f.reserve(450); // 0.1 + 0.9: everything
    held.mark_sent();
    frugal::reserve_request req;
    req.model = paid;
    req.prompt_bytes = 100;
    req.max_tokens = 400;
    std::optional<boost::system::error_code> got;
    frugal::reservation granted;
    f.guard->async_reserve(
        req,
        boost::asio::bind_executor(io, [&](boost::system::error_code ec, frugal::reservation r) {
            got = ec;
            granted = std::move(r);
        }));
    boost::asio::steady_timer t(io, 50ms);
    t.async_wait([&](auto) { BOOST_TEST(!held.settle(record(usd("0.1")))); });
    io.run();
    BOOST_TEST_REQUIRE(got.has_value());
    BOOST_TEST(!*got);
    BOOST_TEST(granted.active());
    BOOST_TEST(granted.max_tokens() == 400u);
}

BOOST_AUTO_TEST_CASE(
    async_reserve_denies_after_the_bounded_wait_or_at_once_when_nothing_is_in_flight)
{
    boost::asio::io_context io;
    frugal::budget_params p;
    p.max_wait = 100ms;
    fixture f({{"global", usd("1")}}, p);
    frugal::reserve_request req;
    req.model = paid;
    req.prompt_bytes = 100;
    req.max_tokens = 450;
    // Nothing in flight: no settlement can help.
    auto big = req;
    big.prompt_bytes = 2000;
    std::optional<boost::system::error_code> first;
    f.guard->async_reserve(big, boost::asio::bind_executor(io, [&](auto ec, auto) { first = ec; }));
    io.run();
    BOOST_TEST((first == boost::system::error_code(frugal::error::budget_exhausted)));
    auto held = f.reserve(450);
    held.mark_sent();
    std::optional<boost::system::error_code> second;
    const auto t0 = std::chrono::steady_clock::now();
    f.guard->async_reserve(
        req, boost::asio::bind_executor(io, [&](auto ec, auto) { second = ec; }));
    io.restart();
    io.run();
    BOOST_TEST((second == boost::system::error_code(frugal::error::budget_exhausted)));
    BOOST_TEST((std::chrono::steady_clock::now() - t0 >= 100ms));
}

BOOST_AUTO_TEST_CASE(cancelling_async_reserve_ends_the_wait_and_reserves_nothing)
{
    boost::asio::io_context io;
    fixture f({{"global", usd("1")}});
    auto held = f.reserve(450);
    held.mark_sent();
    frugal::reserve_request req;
    req.model = paid;
    req.max_tokens = 10;
    boost::asio::cancellation_signal sig;
    std::optional<boost::system::error_code> got;
    f.guard->async_reserve(
        req, boost::asio::bind_cancellation_slot(
                 sig.slot(), boost::asio::bind_executor(io, [&](auto ec, frugal::reservation r) {
                     got = ec;
                     BOOST_TEST(!r.active());
                 })));
    boost::asio::steady_timer t(io, 20ms);
    t.async_wait([&](auto) { sig.emit(boost::asio::cancellation_type::terminal); });
    io.run();
    BOOST_TEST((got == boost::system::error_code(boost::asio::error::operation_aborted)));
    BOOST_TEST((f.budget("global").reserved == held.amount()));
}

BOOST_AUTO_TEST_SUITE_END()

BOOST_AUTO_TEST_SUITE(ledger_facts)

namespace {

using frugal::test::scratch_file;

} // namespace

BOOST_AUTO_TEST_CASE(the_sqlite_ledger_keeps_caps_notes_reasons_and_denials_across_runs)
{
    scratch_file file("ledger");
    frugal::budget_params p;
    p.budgets = {
        {"global", usd("1"), frugal::budget_period::none},
        {"tenant:*", usd("0.25"), frugal::budget_period::daily}};
    frugal::diagnostics diag;
    std::uint64_t first_ids[2] = {};
    {
        auto store = frugal::open_sqlite_store({file.path.string()}, &diag);
        BOOST_TEST_REQUIRE(store.has_value(), diag.message);
        auto g = frugal::budget_guard::open(p, catalog(), *store, &diag);
        BOOST_TEST_REQUIRE(g.has_value(), diag.message);
        first_ids[0] = g->new_request_id();
        first_ids[1] = g->new_request_id();
        BOOST_TEST(first_ids[1] == first_ids[0] + 1);
        BOOST_TEST(!g->annotate("tiers", "a b"));
        BOOST_TEST(!g->annotate("tiers", "cheap flagship")); // a later value replaces it

        frugal::reserve_request rr;
        rr.model = paid;
        rr.prompt_bytes = 100;
        rr.max_tokens = 100;
        rr.request_id = first_ids[1];
        auto res = g->try_reserve(rr);
        BOOST_TEST_REQUIRE(res.has_value());
        BOOST_TEST_REQUIRE(res->active());
        res->mark_sent();
        auto rec = record(usd("0.01"));
        rec.reason = "refusal";
        rec.tier = 1;
        BOOST_TEST(!res->settle(rec));

        auto denied = record(usd("0.5")); // a denial charges nothing, whatever it says
        denied.outcome = frugal::attempt_outcome::denied;
        denied.reason = "length";
        denied.request_id = first_ids[0];
        BOOST_TEST(!g->record(denied));
        BOOST_TEST(denied.cost == money());
        BOOST_TEST(g->committed_total() == usd("0.01"));
    }
    // A reader needs no lock: it works while the owner has the file open.
    auto owner = frugal::open_sqlite_store({file.path.string()}, &diag);
    BOOST_TEST_REQUIRE(owner.has_value(), diag.message);
    frugal::sqlite_store_params ro;
    ro.path = file.path.string();
    ro.read_only = true;
    auto opened = frugal::open_sqlite_store(ro, &diag);
    BOOST_TEST_REQUIRE(opened.has_value(), diag.message);
    auto reader = std::move(*opened);
    std::vector<frugal::attempt_record> records;
    BOOST_TEST(!reader->read_ledger(0, records));
    BOOST_TEST_REQUIRE(records.size() == 2u);
    BOOST_TEST(records[0].reason == "refusal");
    BOOST_TEST(records[0].request_id == first_ids[1]);
    BOOST_TEST((records[1].outcome == frugal::attempt_outcome::denied));
    BOOST_TEST(records[1].reason == "length");
    BOOST_TEST(records[1].cost == money());
    std::vector<std::pair<std::string, std::string>> notes;
    BOOST_TEST(!reader->read_notes(notes));
    const std::vector<std::pair<std::string, std::string>> want = {
        {"budgets", "global 1 none\ntenant:* 0.25 daily\n"}, {"tiers", "cheap flagship"}};
    BOOST_TEST((notes == want));
    BOOST_TEST(reader->reserve({1, 0, 0, paid, {}})); // a reader cannot write
    reader.reset();
    // A second run continues the request ids: a cascade's attempts stay grouped in the ledger.
    auto g = frugal::budget_guard::open(p, catalog(), *owner, &diag);
    BOOST_TEST_REQUIRE(g.has_value(), diag.message);
    BOOST_TEST(g->new_request_id() > first_ids[1]);
}

BOOST_AUTO_TEST_CASE(a_ledger_written_before_reasons_were_kept_is_upgraded_in_place)
{
    scratch_file file("ledger");
    {
        sqlite3* db = nullptr;
        BOOST_TEST_REQUIRE(sqlite3_open(file.path.string().c_str(), &db) == SQLITE_OK);
        const char* old_schema = R"sql(
CREATE TABLE spend(budget TEXT NOT NULL, window INTEGER NOT NULL, committed INTEGER NOT NULL,
    PRIMARY KEY(budget, window)) WITHOUT ROWID;
CREATE TABLE reservations(id INTEGER PRIMARY KEY, time_ms INTEGER NOT NULL,
    request_id INTEGER NOT NULL, model TEXT NOT NULL, generation_id TEXT NOT NULL,
    amount INTEGER NOT NULL, charges TEXT NOT NULL);
CREATE TABLE ledger(id INTEGER PRIMARY KEY, time_ms INTEGER NOT NULL,
    request_id INTEGER NOT NULL, generation_id TEXT NOT NULL, tier INTEGER NOT NULL,
    model_asked TEXT NOT NULL, model_served TEXT NOT NULL, provider TEXT NOT NULL,
    prompt_tokens INTEGER NOT NULL, completion_tokens INTEGER NOT NULL, cost INTEGER NOT NULL,
    outcome TEXT NOT NULL, estimated INTEGER NOT NULL, latency_us INTEGER NOT NULL,
    keys TEXT NOT NULL, reservation_id INTEGER NOT NULL, charges TEXT NOT NULL);
INSERT INTO ledger VALUES(1, 5, 41, 'gen-1', 0, 'm', 'm', 'p', 1, 2, 3000, 'ok', 0, 9, '', 0, '');
)sql";
        BOOST_TEST_REQUIRE(sqlite3_exec(db, old_schema, nullptr, nullptr, nullptr) == SQLITE_OK);
        sqlite3_close(db);
    }
    frugal::diagnostics diag;
    frugal::sqlite_store_params ro{file.path.string()};
    ro.read_only = true;
    {
        auto opened = frugal::open_sqlite_store(ro, &diag); // reads the old form as it is
        BOOST_TEST_REQUIRE(opened.has_value(), diag.message);
        const auto& reader = *opened;
        std::vector<frugal::attempt_record> records;
        BOOST_TEST(!reader->read_ledger(0, records));
        BOOST_TEST_REQUIRE(records.size() == 1u);
        BOOST_TEST(records[0].reason.empty());
    }
    auto opened = frugal::open_sqlite_store({file.path.string()}, &diag);
    BOOST_TEST_REQUIRE(opened.has_value(), diag.message);
    const auto& store = *opened;
    frugal::budget_store_state st;
    BOOST_TEST(!store->load(st));
    BOOST_TEST(st.next_request_id == 42u);
    auto rec = record(usd("0.5"));
    rec.reason = "empty";
    BOOST_TEST(!store->settle(0, {}, rec));
    std::vector<frugal::attempt_record> records;
    BOOST_TEST(!store->read_ledger(0, records));
    BOOST_TEST_REQUIRE(records.size() == 2u);
    BOOST_TEST(records[0].cost == money::from_units(3000));
    BOOST_TEST(records[1].reason == "empty");
}

BOOST_AUTO_TEST_CASE(the_memory_store_keeps_notes_and_reasons_too)
{
    fixture f({{"global", usd("1")}});
    BOOST_TEST(!f.guard->annotate("tiers", "x y"));
    std::vector<std::pair<std::string, std::string>> notes;
    BOOST_TEST(!f.guard->read_notes(notes));
    BOOST_TEST(notes.size() == 2u); // the cap, then the tiers
    auto denied = record(money());
    denied.outcome = frugal::attempt_outcome::denied;
    denied.reason = "refusal";
    BOOST_TEST(!f.guard->record(denied));
    std::vector<frugal::attempt_record> records;
    BOOST_TEST(!f.guard->read_ledger(0, records));
    BOOST_TEST_REQUIRE(records.size() == 1u);
    BOOST_TEST(records[0].reason == "refusal");
    BOOST_TEST(std::string(frugal::to_string(records[0].outcome)) == "denied");
}

// The ring grows in blocks of 512 entries: a capacity that is not a multiple of it, filled
// several times over, still keeps exactly the newest records, oldest first, and finds each one
// by id across block edges and the wrap-around.
BOOST_AUTO_TEST_CASE(the_memory_store_keeps_the_newest_records_across_blocks_and_wraps)
{
    for (const std::size_t capacity : {std::size_t{1}, std::size_t{1300}}) {
        frugal::memory_store_params mp;
        mp.ledger_capacity = capacity;
        const auto store = frugal::make_memory_store(mp);
        const std::uint64_t total = 3001;
        for (std::uint64_t i = 1; i <= total; ++i) {
            auto r = record(usd("0.001"));
            r.time_ms = static_cast<std::int64_t>(i);
            r.generation_id = "gen-a-long-generation-id-" + std::to_string(i);
            BOOST_TEST_REQUIRE(!store->settle(0, {}, r));
            BOOST_TEST_REQUIRE(r.record_id == i);
        }
        std::vector<frugal::attempt_record> records;
        BOOST_TEST_REQUIRE(!store->read_ledger(0, records));
        BOOST_TEST_REQUIRE(records.size() == capacity);
        for (std::size_t k = 0; k < records.size(); ++k) {
            const auto id = total - capacity + 1 + k;
            BOOST_TEST(records[k].record_id == id);
            BOOST_TEST(records[k].generation_id == "gen-a-long-generation-id-" + std::to_string(id));
        }
        frugal::correction out;
        BOOST_TEST(store->correct(total - capacity, usd("0.002"), out) == frugal::error::not_found);
        BOOST_TEST(!store->correct(total, usd("0.002"), out));
        BOOST_TEST(out.previous == usd("0.001"));
        if (capacity > 512) {
            BOOST_TEST(!store->correct(total - 511, usd("0.003"), out)); // another block
            BOOST_TEST(out.previous == usd("0.001"));
        }
    }
}

BOOST_AUTO_TEST_SUITE_END()

// `frugal::settle`: what a request that ended is booked at, as the router books it, for code
// that calls the client itself.
BOOST_AUTO_TEST_SUITE(settlement)

namespace {

frugal::chat_response answer(std::optional<money> cost, std::uint64_t in = 1000, std::uint64_t out = 500)
{
    frugal::chat_response r;
    r.id = "gen-1";
    r.model = paid;
    frugal::usage u;
    u.prompt_tokens = in;
    u.completion_tokens = out;
    u.cost = cost;
    r.usage = u;
    return r;
}

frugal::diagnostics sent(int status = 200)
{
    frugal::diagnostics d;
    d.request_sent = true;
    d.http_status = status;
    return d;
}

} // namespace

BOOST_AUTO_TEST_CASE(an_answer_is_booked_at_the_providers_cost_and_written_to_the_ledger)
{
    fixture f({{"global", usd("100")}});
    auto res = f.reserve(1000);
    BOOST_TEST_REQUIRE(res.active());
    const auto resp = answer(usd("0.0123"), 10, 5);
    frugal::attempt_record rec;
    rec.tier = 1;
    rec.reason = "length";
    BOOST_TEST(!frugal::settle(res, {}, &resp, sent(), rec));
    BOOST_TEST(!res.active());
    BOOST_TEST((rec.cost == usd("0.0123")));
    BOOST_TEST((rec.outcome == frugal::attempt_outcome::ok));
    BOOST_TEST(!rec.estimated);
    BOOST_TEST(rec.prompt_tokens == 10u);
    BOOST_TEST(rec.record_id != 0u);
    BOOST_TEST((f.budget("global").committed == usd("0.0123")));
    BOOST_TEST((f.budget("global").reserved == money()));
    std::vector<frugal::attempt_record> ledger;
    BOOST_TEST(!f.guard->read_ledger(0, ledger));
    BOOST_TEST_REQUIRE(ledger.size() == 1u);
    BOOST_TEST(ledger[0].model_asked == paid); // from the reservation
    BOOST_TEST(ledger[0].generation_id == "gen-1");
    BOOST_TEST(ledger[0].tier == 1u);
    BOOST_TEST(ledger[0].reason == "length");
}

BOOST_AUTO_TEST_CASE(no_reported_cost_is_priced_at_the_catalog_and_a_zero_from_a_paid_model_is_not_taken)
{
    fixture f({{"global", usd("100")}});
    auto res = f.reserve(1000, 2000);
    const auto by_tokens = answer(std::nullopt);
    frugal::attempt_record rec;
    BOOST_TEST(!frugal::settle(res, {}, &by_tokens, sent(), rec));
    BOOST_TEST((rec.cost == usd("2"))); // 1,000 x $0.001 + 500 x $0.002
    BOOST_TEST(rec.anomaly.empty());

    auto res2 = f.reserve(1000, 2000);
    const auto amount = res2.amount();
    const auto zero = answer(money());
    frugal::attempt_record rec2;
    BOOST_TEST(!frugal::settle(res2, {}, &zero, sent(), rec2));
    BOOST_TEST(!rec2.anomaly.empty());
    BOOST_TEST((rec2.cost >= amount)); // never below the reservation when the report is refused
}

BOOST_AUTO_TEST_CASE(a_report_that_prices_nothing_is_held_at_the_worst_case_even_when_metered)
{
    // Metered, the reservation holds the expected cost (0.1 + 50 x 0.002); counts that price
    // nothing would have the answer booked at that, a fifteenth of what 1,000 tokens cost.
    frugal::budget_params p;
    p.mode = frugal::budget_mode::metered;
    p.expected_completion_tokens = 50;
    fixture f({{"global", usd("100")}}, p);
    auto res = f.reserve(1000);
    BOOST_TEST_REQUIRE(res.active());
    BOOST_TEST((res.amount() == usd("0.2")));
    auto lie = answer(std::nullopt, 0, 1000);
    lie.usage->tokens_rejected = "usage.prompt_tokens was negative (-1)";
    frugal::attempt_record rec;
    BOOST_TEST(!frugal::settle(res, {}, &lie, sent(), rec));
    BOOST_TEST((rec.cost == usd("2.1"))); // 0.1 + 1,000 x 0.002: the worst case
    BOOST_TEST(rec.estimated);
    BOOST_TEST(rec.anomaly == "usage.prompt_tokens was negative (-1)");
    // An unknown bill with nothing wrong in the report (no usage at all) keeps the metered hold.
    auto res2 = f.reserve(1000);
    auto bare = answer(std::nullopt);
    bare.usage.reset();
    frugal::attempt_record rec2;
    BOOST_TEST(!frugal::settle(res2, {}, &bare, sent(), rec2));
    BOOST_TEST((rec2.cost == usd("0.2")));
}

BOOST_AUTO_TEST_CASE(more_completion_tokens_than_allowed_is_an_anomaly_never_booked_below_the_reservation)
{
    fixture f({{"global", usd("100")}});
    auto res = f.reserve(40, 2000);
    BOOST_TEST_REQUIRE(res.active());
    const auto amount = res.amount();
    const auto lie = answer(usd("0.000075"), 1000, 1'000'000'000'000'000ULL);
    frugal::attempt_record rec;
    BOOST_TEST(!frugal::settle(res, {}, &lie, sent(), rec));
    BOOST_TEST(rec.anomaly.find("1000000000000000 completion tokens where at most 40") !=
                   std::string::npos,
               rec.anomaly);
    BOOST_TEST((rec.cost >= amount));
    BOOST_TEST((f.budget("global").committed == rec.cost));

    // Within what was allowed: taken as reported.
    auto fine = f.reserve(40, 2000);
    const auto honest = answer(usd("0.09"), 10, 40);
    frugal::attempt_record rec2;
    BOOST_TEST(!frugal::settle(fine, {}, &honest, sent(), rec2));
    BOOST_TEST(rec2.anomaly.empty());
    BOOST_TEST((rec2.cost == usd("0.09")));
}

BOOST_AUTO_TEST_CASE(
    a_refused_cost_is_still_the_least_of_the_bill_and_above_the_worst_case_a_surprise)
{
    // A count far past max_tokens puts the cost under its floor, so the report is refused; the
    // cost it gave ($5, above the $2.08 worst case) is still booked, and is a surprise.
    fixture f({{"global", usd("100")}});
    auto res = f.reserve(40, 2000);
    BOOST_TEST_REQUIRE(res.active());
    const auto big = answer(usd("5"), 10, 1'000'000);
    frugal::attempt_record rec;
    BOOST_TEST(!frugal::settle(res, {}, &big, sent(), rec));
    BOOST_TEST((rec.cost == usd("5")));
    BOOST_TEST_REQUIRE(!f.guard->anomalies().empty());
    BOOST_TEST(f.guard->anomalies().back().surprise);
    BOOST_TEST(f.budget("global").stopped);
}

BOOST_AUTO_TEST_CASE(a_cost_under_a_tenth_of_the_completion_tokens_listed_price_is_refused)
{
    // 0 is refused for a paid model; a picodollar must be too. 10 prompt tokens at $0.001 and
    // 500 completion tokens at $0.002 are $1.01: a bill under a tenth of it is no bill.
    fixture f({{"global", usd("100")}});
    auto res = f.reserve(1000, 2000);
    const auto amount = res.amount();
    const auto pico = answer(usd("0.000000000001"), 10, 500);
    frugal::attempt_record rec;
    BOOST_TEST(!frugal::settle(res, {}, &pico, sent(), rec));
    BOOST_TEST(
        rec.anomaly == "usage.cost was 0.000000000001 for 10 prompt and 500 completion "
                       "tokens, under a tenth of their listed price");
    BOOST_TEST((rec.cost >= amount)); // never below the reservation when the report is refused
    // A tenth exactly (a deep discount) is still taken; BYOK's fee and a free model's $0 are too.
    auto res2 = f.reserve(1000, 2000);
    const auto tenth = answer(usd("0.101"), 10, 500); // a tenth of 10 x 0.001 + 500 x 0.002
    frugal::attempt_record rec2;
    BOOST_TEST(!frugal::settle(res2, {}, &tenth, sent(), rec2));
    BOOST_TEST(rec2.anomaly.empty());
    BOOST_TEST((rec2.cost == usd("0.101")));
    // The prompt counts too: 100,000 prompt tokens at $0.001 are $100.
    auto res4 = f.reserve(1000, 2000);
    const auto long_prompt = answer(usd("0.000000000001"), 100000, 0);
    frugal::attempt_record rec4;
    BOOST_TEST(!frugal::settle(res4, {}, &long_prompt, sent(), rec4));
    BOOST_TEST(!rec4.anomaly.empty());
    // Counts that say nothing cannot vouch for a cost either: unknown, never below it.
    auto res5 = f.reserve(1000, 2000);
    auto no_counts = answer(usd("0.000000000001"), 10, 500);
    no_counts.usage->tokens_rejected = "usage.completion_tokens was missing or null";
    frugal::attempt_record rec5;
    BOOST_TEST(!frugal::settle(res5, {}, &no_counts, sent(), rec5));
    BOOST_TEST(
        rec5.anomaly == "usage.cost was 0.000000000001 beside usage.completion_tokens was "
                        "missing or null");
    BOOST_TEST((rec5.cost >= amount));
    auto res3 = f.reserve(1000, 2000);
    auto byok = answer(usd("0.000000000001"), 10, 500);
    byok.usage->is_byok = true;
    frugal::attempt_record rec3;
    BOOST_TEST(!frugal::settle(res3, {}, &byok, sent(), rec3));
    BOOST_TEST(rec3.anomaly.empty());
}

BOOST_AUTO_TEST_CASE(a_request_never_sent_is_released_and_costs_nothing)
{
    fixture f({{"global", usd("100")}});
    auto res = f.reserve(1000);
    frugal::diagnostics d; // a failed connect: nothing written
    frugal::attempt_record rec;
    BOOST_TEST(!frugal::settle(res, frugal::error::timeout, nullptr, d, rec));
    BOOST_TEST((rec.outcome == frugal::attempt_outcome::not_sent));
    BOOST_TEST(!res.active());
    BOOST_TEST((f.budget("global").committed == money()));
    BOOST_TEST((f.budget("global").reserved == money()));
}

BOOST_AUTO_TEST_CASE(a_refused_request_costs_nothing_and_a_cut_one_its_whole_reservation)
{
    fixture f({{"global", usd("100")}});
    auto refused = f.reserve(1000);
    frugal::attempt_record rec;
    BOOST_TEST(!frugal::settle(refused, frugal::error::rate_limited, nullptr, sent(429), rec));
    BOOST_TEST((rec.outcome == frugal::attempt_outcome::error));
    BOOST_TEST((rec.cost == money()));

    auto cut = f.reserve(1000);
    const auto amount = cut.amount();
    frugal::attempt_record rec2;
    BOOST_TEST(!frugal::settle(cut, frugal::error::stream_truncated, nullptr, sent(), rec2));
    BOOST_TEST((rec2.outcome == frugal::attempt_outcome::unknown));
    BOOST_TEST(rec2.estimated);
    BOOST_TEST((rec2.cost == amount));

    auto stopped = f.reserve(1000);
    frugal::attempt_record rec3;
    BOOST_TEST(!frugal::settle(
        stopped, boost::asio::error::operation_aborted, nullptr, sent(), rec3));
    BOOST_TEST((rec3.outcome == frugal::attempt_outcome::cancelled));
    BOOST_TEST(rec3.estimated);
    BOOST_TEST((f.budget("global").committed == amount + rec3.cost));
}

BOOST_AUTO_TEST_CASE(settlements_price_at_the_catalog_in_force)
{
    fixture f({{"global", usd("100")}});
    auto dearer = row(paid, "0.002", "0.004");
    f.guard->update_prices(frugal::price_catalog({dearer}));
    BOOST_TEST((f.guard->prices().find(paid)->prompt == usd("0.002")));
    auto res = f.reserve(1000, 2000);
    const auto by_tokens = answer(std::nullopt);
    frugal::attempt_record rec;
    BOOST_TEST(!frugal::settle(res, {}, &by_tokens, sent(), rec));
    BOOST_TEST((rec.cost == usd("4")));
}

BOOST_AUTO_TEST_CASE(the_prompt_bound_covers_every_byte_a_prompt_can_tokenize)
{
    frugal::chat_request req;
    req.messages.push_back({.role = "user", .content = std::string(1000, 'x')});
    req.messages.push_back({.role = "assistant", .content = "ok", .name = "bot"});
    BOOST_TEST(frugal::prompt_bound(req) >= 1000u + 4u + 9u + 2u + 3u);
}

BOOST_AUTO_TEST_SUITE_END()

// The guard's decisions do not wait for its store's writes: a settlement whose store write is
// stuck (a slow disk) leaves other requests free to be decided meanwhile.
BOOST_AUTO_TEST_SUITE(store_off_the_lock)

namespace {

// A store that writes each change through (as SQLite) and whose settlements wait for a gate.
class gated_store final : public frugal::budget_store {
public:
    boost::system::error_code load(frugal::budget_store_state&) override { return {}; }
    boost::system::error_code reserve(const frugal::reservation_view&) override { return {}; }
    boost::system::error_code settle(
        std::uint64_t, std::span<const frugal::budget_charge_view>, frugal::attempt_record& r) override
    {
        std::unique_lock lock(mu);
        entered = true;
        cv.notify_all();
        cv.wait(lock, [&] { return open; });
        r.record_id = ++records;
        return {};
    }
    boost::system::error_code release(std::uint64_t) override { return {}; }
    boost::system::error_code correct(std::uint64_t, money, frugal::correction&) override
    {
        return frugal::error::not_found;
    }
    boost::system::error_code
    read_ledger(std::int64_t, std::vector<frugal::attempt_record>&) override
    {
        return {};
    }

    std::mutex mu;
    std::condition_variable cv;
    bool entered = false, open = false;
    std::uint64_t records = 0;
};

} // namespace

BOOST_AUTO_TEST_CASE(a_stuck_store_write_blocks_no_decision)
{
    auto store = std::make_shared<gated_store>();
    frugal::budget_params p;
    p.budgets = {{"global", usd("100")}};
    auto guard = frugal::budget_guard::open(p, catalog(), store).value();
    frugal::reserve_request r;
    r.model = paid;
    r.prompt_bytes = 100;
    r.max_tokens = 100;
    auto first = guard.try_reserve(r).value();
    first.mark_sent();
    std::thread settler([&] {
        frugal::attempt_record rec;
        rec.cost = usd("0.01");
        (void)first.settle(rec);
    });
    {
        std::unique_lock lock(store->mu);
        store->cv.wait(lock, [&] { return store->entered; });
    }
    // The settlement is inside the store now: the book already has it, and decides on what
    // needs no store write (a paid reservation is written through, so it waits its turn). With
    // the store written under the decisions' lock, these would wait for the gate.
    auto decided = std::async(std::launch::async, [&] {
        auto free_call = r;
        free_call.model = free_model;
        auto second = guard.try_reserve(free_call);
        const bool granted = second.has_value();
        if (granted)
            second->release();
        return std::pair{granted, guard.snapshot()[0].committed};
    });
    const bool in_time = decided.wait_for(std::chrono::seconds(10)) == std::future_status::ready;
    {
        const std::lock_guard lock(store->mu);
        store->open = true;
    }
    store->cv.notify_all();
    settler.join();
    BOOST_TEST_REQUIRE(in_time);
    const auto [granted, committed] = decided.get();
    BOOST_TEST(granted);
    BOOST_TEST((committed == usd("0.01")));
    BOOST_TEST(store->records == 1u);
}

BOOST_AUTO_TEST_SUITE_END()
