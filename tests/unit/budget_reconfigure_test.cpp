// Budgets that change while a guard runs (`budget_guard::set_budgets`, a gateway's reload) and
// budgets that come or change period between two openings of one store: what each starts
// with, and what stays of the spend already made.

#include <frugal/budget.hpp>
#include <frugal/ledger_notes.hpp>

#include "printers.hpp"
#include "scratch_file.hpp"

#include <boost/asio/bind_executor.hpp>
#include <boost/asio/io_context.hpp>
#include <boost/asio/steady_timer.hpp>
#include <boost/test/unit_test.hpp>

#include <atomic>
#include <chrono>
#include <optional>
#include <string>
#include <thread>
#include <vector>

using frugal::money;
using frugal::budget_period;
using namespace std::chrono_literals;

namespace {

money usd(const char* s)
{
    return *money::parse(s);
}

constexpr const char* paid = "anthropic/claude-fable-5";

// What a request under `keys` cost, as a router records it (its keys in the record).
frugal::attempt_record billed(const char* cost, std::string keys = {})
{
    frugal::attempt_record rec;
    rec.cost = usd(cost);
    rec.model_asked = paid;
    rec.model_served = paid;
    rec.keys = std::move(keys);
    return rec;
}

// $1 per 1,000 prompt tokens and $2 per 1,000 completion tokens: a reservation of 100 prompt
// bytes and 100 completion tokens holds $0.30.
frugal::price_catalog catalog()
{
    frugal::model_info m;
    m.id = paid;
    m.prompt_price = usd("0.001");
    m.completion_price = usd("0.002");
    m.max_completion_tokens = 4096;
    m.context_length = 200000;
    return frugal::price_catalog({m});
}

constexpr std::int64_t day_ms = 86'400'000;
// 2026-11-24 12:00 UTC: mid-month, so the day before is in the same month.
constexpr std::int64_t noon_ms = 1'795'521'600'000;

struct fixture {
    explicit fixture(
        std::vector<frugal::budget_spec> specs,
        std::shared_ptr<frugal::budget_store> store = nullptr,
        frugal::budget_params p = {})
    {
        p.budgets = std::move(specs);
        p.clock = [this] { return now; };
        frugal::diagnostics diag;
        auto g = frugal::budget_guard::open(p, catalog(), std::move(store), &diag);
        BOOST_TEST_REQUIRE(g.has_value(), diag.message);
        guard.emplace(std::move(*g));
    }

    // A paid request under `key` that holds $0.30 (100 completion tokens).
    frugal::reservation reserve(const std::string& key, std::uint32_t max_tokens = 100)
    {
        const std::vector<std::string> keys{key};
        frugal::reserve_request r;
        r.model = paid;
        r.prompt_bytes = 100;
        r.max_tokens = max_tokens;
        r.keys = keys;
        auto got = guard->try_reserve(r, &diag);
        last_ec = got.error();
        return got ? std::move(*got) : frugal::reservation();
    }

    // A paid request under `key`, granted and sent: in flight until it is settled.
    frugal::reservation sent(const std::string& key, std::uint32_t max_tokens = 100)
    {
        auto res = reserve(key, max_tokens);
        BOOST_TEST_REQUIRE(res.active(), diag.message);
        res.mark_sent();
        return res;
    }

    // A request under `key` that costs `cost` (at most $1, what it may hold before a cap
    // clamps it), settled as a router settles it (its keys in the record).
    void spend(const std::string& key, const char* cost)
    {
        BOOST_TEST_REQUIRE(!sent(key, 450).settle(billed(cost, key)));
    }

    std::optional<frugal::budget_snapshot> budget(const std::string& name) const
    {
        return guard->snapshot(name);
    }

    std::chrono::system_clock::time_point now{std::chrono::milliseconds(noon_ms)};
    std::optional<frugal::budget_guard> guard;
    boost::system::error_code last_ec;
    frugal::diagnostics diag;
};

std::shared_ptr<frugal::budget_store> sqlite_store(const frugal::test::scratch_file& file)
{
    frugal::diagnostics diag;
    auto s = frugal::open_sqlite_store({file.path.string()}, &diag);
    BOOST_TEST_REQUIRE(s.has_value(), diag.message);
    return *s;
}

// The memory store, whose ledger reads fail while `fail_reads` is set.
class unreadable_store final : public frugal::budget_store {
public:
    boost::system::error_code load(frugal::budget_store_state& out) override
    {
        return inner->load(out);
    }
    bool keeps_reservations() const noexcept override { return inner->keeps_reservations(); }
    boost::system::error_code reserve(const frugal::reservation_view& r) override
    {
        return inner->reserve(r);
    }
    boost::system::error_code settle(
        std::uint64_t id, std::span<const frugal::budget_charge_view> c, frugal::attempt_record& r) override
    {
        return inner->settle(id, c, r);
    }
    boost::system::error_code release(std::uint64_t id) override { return inner->release(id); }
    boost::system::error_code correct(std::uint64_t id, money proven, frugal::correction& out) override
    {
        return inner->correct(id, proven, out);
    }
    boost::system::error_code
    read_ledger(std::int64_t since, std::vector<frugal::attempt_record>& out) override
    {
        if (fail_reads)
            return frugal::error::budget_store_failed;
        return inner->read_ledger(since, out);
    }
    void dropped_since(
        std::int64_t since, std::vector<std::pair<std::string, std::int64_t>>& out) const override
    {
        inner->dropped_since(since, out);
    }

    std::shared_ptr<frugal::budget_store> inner = frugal::make_memory_store();
    bool fail_reads = false;
};

} // namespace

BOOST_AUTO_TEST_SUITE(budgets_replaced)

BOOST_AUTO_TEST_CASE(a_raised_cap_grants_at_once_and_a_lowered_one_grants_nothing_until_spend_fits)
{
    fixture f({{"tenant:a", usd("1"), budget_period::daily}});
    f.spend("tenant:a", "0.3");
    f.spend("tenant:a", "0.3");
    f.spend("tenant:a", "0.3");
    BOOST_TEST(!f.reserve("tenant:a").active()); // $0.10 left, the request holds $0.30
    BOOST_TEST(f.last_ec == frugal::error::budget_exhausted);

    BOOST_TEST(!f.guard->set_budgets({{"tenant:a", usd("2"), budget_period::daily}}, &f.diag),
               f.diag.message);
    BOOST_TEST((f.budget("tenant:a")->cap == usd("2")));
    BOOST_TEST((f.budget("tenant:a")->committed == usd("0.9"))); // the spend stays
    auto in_flight = f.sent("tenant:a");

    // Lowered under what is committed and reserved: the request in flight goes on and settles;
    // nothing new is granted.
    BOOST_TEST(!f.guard->set_budgets({{"tenant:a", usd("1"), budget_period::daily}}));
    BOOST_TEST(!f.reserve("tenant:a").active());
    BOOST_TEST(f.last_ec == frugal::error::budget_exhausted);
    BOOST_TEST(!in_flight.settle(billed("0.05", "tenant:a")));
    BOOST_TEST((f.budget("tenant:a")->committed == usd("0.95")));
    BOOST_TEST((f.budget("tenant:a")->reserved == money()));
    BOOST_TEST(!f.reserve("tenant:a").active()); // $0.05 left
    f.now += std::chrono::milliseconds(day_ms); // the next day: the new cap, from zero
    BOOST_TEST(f.reserve("tenant:a").active());
}

BOOST_AUTO_TEST_CASE(a_cap_lowered_under_the_requests_in_flight_is_not_passed_by_their_settling)
{
    fixture f({{"tenant:a", usd("1"), budget_period::daily}});
    auto one = f.sent("tenant:a");
    auto two = f.sent("tenant:a");
    BOOST_TEST(!f.guard->set_budgets({{"tenant:a", usd("0.35"), budget_period::daily}}));
    BOOST_TEST(!one.settle(billed("0.25"))); // 0.25 committed + 0.30 held > 0.35: within what it held
    const auto b = f.budget("tenant:a");
    BOOST_TEST(!b->tripped);
    BOOST_TEST((b->overshoot == money()));
    BOOST_TEST(!two.cancel_reason()); // the other request goes on
    BOOST_TEST(!two.settle(billed("0.05")));
    BOOST_TEST((f.budget("tenant:a")->committed == usd("0.3")));
    BOOST_TEST(!f.reserve("tenant:a").active()); // $0.05 left under the new cap
}

BOOST_AUTO_TEST_CASE(a_raised_cap_serves_a_request_waiting_for_headroom)
{
    boost::asio::io_context io;
    frugal::budget_params p;
    p.max_wait = 10s;
    fixture f({{"tenant:a", usd("0.5"), budget_period::daily}}, nullptr, p);
    auto held = f.reserve("tenant:a"); // $0.30 of $0.50: a second one waits
    BOOST_TEST_REQUIRE(held.active());
    const std::vector<std::string> keys{"tenant:a"};
    frugal::reserve_request req;
    req.model = paid;
    req.prompt_bytes = 100;
    req.max_tokens = 100;
    req.keys = keys;
    std::optional<boost::system::error_code> got;
    frugal::reservation granted;
    const auto began = std::chrono::steady_clock::now();
    f.guard->async_reserve(
        req, boost::asio::bind_executor(io, [&](boost::system::error_code ec, frugal::reservation r) {
            got = ec;
            granted = std::move(r);
        }));
    boost::asio::steady_timer t(io, 50ms);
    t.async_wait([&](auto) {
        BOOST_TEST(!got.has_value()); // still waiting: the raise is what serves it
        BOOST_TEST(!f.guard->set_budgets({{"tenant:a", usd("5"), budget_period::daily}}));
    });
    io.run();
    BOOST_TEST_REQUIRE(got.has_value());
    BOOST_TEST(!*got);
    BOOST_TEST(granted.active());
    BOOST_TEST((std::chrono::steady_clock::now() - began < 5s)); // not the wait's end
}

BOOST_AUTO_TEST_CASE(a_budget_that_comes_starts_with_what_its_key_spent_in_its_period)
{
    fixture f({});
    f.now -= std::chrono::milliseconds(day_ms); // yesterday: not today's
    f.spend("tenant:a", "0.7");
    f.now += std::chrono::milliseconds(day_ms);
    f.spend("tenant:a", "0.3");
    f.spend("tenant:a", "0.25");
    f.spend("tenant:b", "0.4"); // another key
    f.spend("user:7", "0.45");
    BOOST_TEST(!f.budget("tenant:a").has_value());

    BOOST_TEST_REQUIRE(
        !f.guard->set_budgets(
            {{"tenant:a", usd("1"), budget_period::daily},
             {"total", usd("10"), budget_period::monthly},
             {"user:*", usd("0.5"), budget_period::daily}},
            &f.diag),
        f.diag.message);
    const auto a = f.budget("tenant:a");
    BOOST_TEST_REQUIRE(a.has_value());
    BOOST_TEST((a->committed == usd("0.55")));
    BOOST_TEST((f.budget("total")->committed == usd("2.1"))); // every key, the whole month
    BOOST_TEST((f.budget("user:7")->committed == usd("0.45"))); // a template's instance
    BOOST_TEST(!f.reserve("user:7").active()); // $0.05 left of its $0.50
    BOOST_TEST(f.reserve("tenant:a").active()); // $0.45 left
    BOOST_TEST(!f.budget("tenant:b").has_value());
}

BOOST_AUTO_TEST_CASE(a_budget_that_goes_stops_limiting_and_its_reservations_still_settle)
{
    fixture f({{"tenant:a", usd("0.5"), budget_period::daily}, {"tenant:b", usd("1")}});
    auto in_flight = f.sent("tenant:a");
    BOOST_TEST(!f.reserve("tenant:a").active());

    BOOST_TEST(!f.guard->set_budgets({{"tenant:b", usd("1")}}));
    BOOST_TEST(!in_flight.cancel_reason());
    BOOST_TEST(!f.budget("tenant:a").has_value());
    BOOST_TEST(f.guard->snapshot().size() == 1u);
    auto more = f.reserve("tenant:a");
    BOOST_TEST(more.active()); // no cap any more
    BOOST_TEST(!in_flight.settle(billed("0.3", "tenant:a")));
    BOOST_TEST((f.guard->committed_total() == usd("0.3")));

    // Back later: it starts with what it spent today, its time without a cap included.
    more.mark_sent();
    BOOST_TEST(!more.settle(billed("0.1", "tenant:a")));
    BOOST_TEST(!f.guard->set_budgets(
        {{"tenant:a", usd("0.5"), budget_period::daily}, {"tenant:b", usd("1")}}));
    BOOST_TEST_REQUIRE(f.budget("tenant:a").has_value());
    BOOST_TEST((f.budget("tenant:a")->committed == usd("0.4")));
    BOOST_TEST(!f.reserve("tenant:a").active()); // $0.10 left of $0.50
}

BOOST_AUTO_TEST_CASE(a_budget_dropped_and_back_keeps_its_requests_in_flight)
{
    fixture f({{"tenant:a", usd("1"), budget_period::daily}});
    auto in_flight = f.sent("tenant:a");
    BOOST_TEST(!f.guard->set_budgets({}));
    BOOST_TEST(!f.guard->set_budgets({{"tenant:a", usd("0.5"), budget_period::daily}}));
    BOOST_TEST((f.budget("tenant:a")->reserved == usd("0.3"))); // still held
    BOOST_TEST(!f.reserve("tenant:a").active());                 // 0.3 + 0.3 > 0.5
    // Back with another period while it holds a request: refused.
    BOOST_TEST(!f.guard->set_budgets({}));
    BOOST_TEST(f.guard->set_budgets({{"tenant:a", usd("5"), budget_period::monthly}}, &f.diag) ==
               frugal::error::bad_budget_config);
    BOOST_TEST(f.diag.message.find("in flight") != std::string::npos, f.diag.message);
    BOOST_TEST(!in_flight.settle(billed("0.2", "tenant:a")));
    BOOST_TEST(!f.guard->set_budgets({{"tenant:a", usd("5"), budget_period::monthly}}, &f.diag),
               f.diag.message);
    BOOST_TEST((f.budget("tenant:a")->committed == usd("0.2"))); // the month so far, from the ledger
}

BOOST_AUTO_TEST_CASE(a_request_in_flight_when_its_budget_comes_counts_at_its_worst_case)
{
    fixture f({});
    auto in_flight = f.sent("tenant:a"); // no cap yet: holds nothing anywhere
    BOOST_TEST(!f.guard->set_budgets({{"tenant:a", usd("0.5"), budget_period::daily}}));
    BOOST_TEST((f.budget("tenant:a")->committed == usd("0.3")));
    BOOST_TEST(!f.reserve("tenant:a").active()); // 0.3 + 0.3 > 0.5
    BOOST_TEST(!in_flight.settle(billed("0.1", "tenant:a")));
    // Counted at its worst case until the period ends, never below what it cost.
    BOOST_TEST((f.budget("tenant:a")->committed == usd("0.3")));
}


// A budget that comes, goes and comes back while one request of its key is in flight counts
// that request at its worst case once, not once per coming.
BOOST_AUTO_TEST_CASE(a_request_in_flight_across_two_comings_of_its_budget_counts_once)
{
    for (const bool sqlite : {false, true}) {
        frugal::test::scratch_file file("twice");
        fixture f({}, sqlite ? sqlite_store(file) : nullptr);
        const auto committed = [&](const char* want) {
            const auto got = f.budget("tenant:a")->committed;
            BOOST_TEST((got == usd(want)),
                       got.to_string() << " where " << want << (sqlite ? " (sqlite)" : " (memory)"));
        };
        f.spend("tenant:a", "0.05");
        auto in_flight = f.sent("tenant:a"); // no cap: holds nothing anywhere
        const std::vector<frugal::budget_spec> capped{{"tenant:a", usd("5"), budget_period::daily}};
        BOOST_TEST(!f.guard->set_budgets(capped));
        committed("0.35"); // its spend and the request at its worst case
        BOOST_TEST(!f.guard->set_budgets({}));
        BOOST_TEST(!f.guard->set_budgets(capped));
        committed("0.35"); // the same request: not counted again
        BOOST_TEST(!f.guard->set_budgets({}));
        f.spend("tenant:a", "0.1"); // while dropped: the ledger's, counted when it comes back
        BOOST_TEST(!f.guard->set_budgets(capped));
        committed("0.45"); // not hidden by the worst case it counts already
        BOOST_TEST(!in_flight.settle(billed("0.01", "tenant:a")));
        committed("0.45");
    }
}

// A request counted at its worst case when its budget came, that then bills more than that
// worst case (a surprise): the budget counts the bill and is stopped, as one charged with it.
BOOST_AUTO_TEST_CASE(a_request_counted_when_its_budget_came_that_bills_above_its_worst_case_counts_its_bill)
{
    fixture f({});
    auto in_flight = f.sent("tenant:a"); // no cap yet; its worst case is $0.30
    BOOST_TEST(!f.guard->set_budgets({{"tenant:a", usd("5"), budget_period::daily}}));
    BOOST_TEST((f.budget("tenant:a")->committed == usd("0.3")));
    BOOST_TEST(!in_flight.settle(billed("2", "tenant:a")));
    const auto b = f.budget("tenant:a");
    BOOST_TEST((b->committed == usd("2")), b->committed.to_string());
    BOOST_TEST(b->stopped);
    BOOST_TEST(!f.reserve("tenant:a").active());
}

// An explicit budget dropped as its kind's template comes in the same change: the instance
// goes on under the template with the spend it has, not that spend twice.
BOOST_AUTO_TEST_CASE(a_name_that_becomes_its_templates_instance_keeps_its_spend_once)
{
    fixture f({{"user:1", usd("1"), budget_period::daily}});
    f.spend("user:1", "0.6");
    BOOST_TEST(!f.guard->set_budgets({{"user:*", usd("1"), budget_period::daily}}));
    const auto b = f.budget("user:1");
    BOOST_TEST_REQUIRE(b.has_value());
    BOOST_TEST((b->cap == usd("1")));
    BOOST_TEST((b->committed == usd("0.6")), b->committed.to_string());
    BOOST_TEST(f.reserve("user:1").active()); // 0.6 + 0.3 fits under $1
}

// A budget that came when its earlier spend could not be read stays stopped through `reset`
// (which cannot know that spend either) until it is brought back once the ledger reads.
BOOST_AUTO_TEST_CASE(a_budget_whose_earlier_spend_was_not_read_is_not_lifted_by_reset)
{
    auto store = std::make_shared<unreadable_store>();
    fixture f({}, store);
    f.spend("tenant:a", "0.8");
    store->fail_reads = true;
    BOOST_TEST(!f.guard->set_budgets({{"tenant:a", usd("1"), budget_period::daily}}));
    BOOST_TEST(!f.reserve("tenant:a").active()); // its spend is unknown: nothing granted
    BOOST_TEST(f.guard->reset("tenant:a") == frugal::error::budget_store_failed);
    BOOST_TEST(!f.reserve("tenant:a").active());
    store->fail_reads = false;
    BOOST_TEST(!f.guard->set_budgets({}));
    BOOST_TEST(!f.guard->set_budgets({{"tenant:a", usd("1"), budget_period::daily}}));
    BOOST_TEST((f.budget("tenant:a")->committed == usd("0.8")));
    BOOST_TEST(!f.budget("tenant:a")->stopped);
    BOOST_TEST(!f.reserve("tenant:a").active()); // 0.8 + 0.3 > 1: denied by the cap, not the stop
    BOOST_TEST(f.last_ec == frugal::error::budget_exhausted);
}

// The memory store keeps only its newest records. A budget that comes after records of its
// period have left the ring cannot know what it spent: it is stopped, saying so, rather than
// started from the records left.
BOOST_AUTO_TEST_CASE(a_budget_that_comes_after_the_memory_ledger_dropped_its_period_is_stopped)
{
    frugal::memory_store_params mp;
    mp.ledger_capacity = 4;
    fixture f({}, frugal::make_memory_store(mp));
    for (int i = 0; i < 6; ++i)
        f.spend("tenant:a", "0.1"); // $0.60, of which the ring keeps $0.40
    BOOST_TEST(!f.guard->set_budgets({{"tenant:a", usd("0.8"), budget_period::daily}}));
    BOOST_TEST(!f.reserve("tenant:a").active()); // 0.4 + 0.3 would fit; 0.6 + 0.3 does not
    BOOST_TEST(f.budget("tenant:a")->stopped);
    BOOST_TEST(f.diag.message.find("ledger_capacity") != std::string::npos, f.diag.message);
    // Another key, none of whose records were dropped, comes as usual; so does a template
    // whose instances' records were kept. An instance whose were not is made, stopped.
    f.spend("user:7", "0.1");
    BOOST_TEST(!f.guard->set_budgets(
        {{"tenant:a", usd("0.8"), budget_period::daily},
         {"tenant:b", usd("0.8"), budget_period::daily},
         {"user:*", usd("0.8"), budget_period::daily}}));
    BOOST_TEST(f.reserve("tenant:b").active());
    BOOST_TEST(f.reserve("user:7").active());
    BOOST_TEST(!f.reserve("tenant:a").active());
    // A template's instance whose records were dropped, made by no request yet.
    fixture h({}, frugal::make_memory_store(mp));
    for (int i = 0; i < 5; ++i)
        h.spend("user:9", "0.1");
    BOOST_TEST(!h.guard->set_budgets({{"user:*", usd("0.8"), budget_period::daily}}));
    BOOST_TEST(!h.reserve("user:9").active());
    BOOST_TEST(h.budget("user:9")->stopped);
    BOOST_TEST(h.reserve("user:8").active());
    // A budget whose period the ring still holds whole comes as usual.
    fixture g({}, frugal::make_memory_store(mp));
    for (int i = 0; i < 3; ++i)
        g.spend("tenant:a", "0.1");
    BOOST_TEST(!g.guard->set_budgets({{"tenant:a", usd("0.8"), budget_period::daily}}));
    BOOST_TEST((g.budget("tenant:a")->committed == usd("0.3")));
    BOOST_TEST(g.reserve("tenant:a").active());
}

BOOST_AUTO_TEST_CASE(a_changed_period_or_a_bad_budget_is_refused_and_nothing_changes)
{
    fixture f({{"tenant:a", usd("1"), budget_period::daily}, {"user:*", usd("1"), budget_period::daily}});
    auto state = [&] {
        std::vector<std::string> out;
        for (const auto& b : f.guard->snapshot())
            out.push_back(b.name + " " + b.cap.to_string() + " " + frugal::to_string(b.period));
        return out;
    };
    const auto before = state();
    auto refused = [&](std::vector<frugal::budget_spec> specs, const char* says) {
        const auto ec = f.guard->set_budgets(std::move(specs), &f.diag);
        BOOST_TEST(ec == frugal::error::bad_budget_config);
        BOOST_TEST(f.diag.message.find(says) != std::string::npos, f.diag.message);
        BOOST_TEST(state() == before, boost::test_tools::per_element());
    };
    refused(
        {{"tenant:a", usd("5"), budget_period::monthly}, {"tenant:b", usd("1")}},
        "'tenant:a' would change its period from daily to monthly");
    refused({{"user:*", usd("1"), budget_period::weekly}}, "'user:*' would change its period");
    refused({{"tenant:a", usd("-1"), budget_period::daily}}, "negative cap");
    refused(
        {{"tenant:a", usd("1"), budget_period::daily}, {"tenant:a", usd("2"), budget_period::daily}},
        "given twice");
    refused({{"", usd("1")}}, "no name");
    BOOST_TEST(!f.budget("tenant:b").has_value());
    BOOST_TEST((f.budget("tenant:a")->cap == usd("1")));
    // The note of the caps, written before the check, is put back.
    std::vector<std::pair<std::string, std::string>> notes;
    BOOST_TEST(!f.guard->read_notes(notes));
    const auto noted = frugal::ledger_notes::parse(notes);
    BOOST_TEST(noted.caps.size() == 2u);
    BOOST_TEST(noted.caps.front().name == "tenant:a");
    BOOST_TEST((noted.caps.front().cap == usd("1")));
    BOOST_TEST(noted.arrived.empty());
}

BOOST_AUTO_TEST_CASE(a_template_instance_whose_only_request_is_in_flight_is_made_when_its_template_comes)
{
    fixture f({});
    auto in_flight = f.sent("user:9");
    BOOST_TEST(!f.guard->set_budgets({{"user:*", usd("0.5"), budget_period::daily}}));
    const auto b = f.budget("user:9");
    BOOST_TEST_REQUIRE(b.has_value());
    BOOST_TEST((b->committed == usd("0.3")));
    BOOST_TEST(!f.reserve("user:9").active());
    BOOST_TEST(f.reserve("user:10").active());
}

BOOST_AUTO_TEST_CASE(a_budget_that_came_while_a_guard_ran_keeps_its_earlier_spend_when_reopened)
{
    frugal::test::scratch_file file("arrived");
    {
        fixture f({}, sqlite_store(file));
        f.spend("tenant:b", "0.2");
        BOOST_TEST_REQUIRE(
            !f.guard->set_budgets({{"tenant:b", usd("1"), budget_period::daily}}, &f.diag),
            f.diag.message);
        BOOST_TEST((f.budget("tenant:b")->committed == usd("0.2")));
        f.spend("tenant:b", "0.1");
        BOOST_TEST((f.budget("tenant:b")->committed == usd("0.3")));
    }
    for (int reopening = 0; reopening < 2; ++reopening) {
        // The store holds $0.10 for it (spent after it came); the ledger says $0.30 today.
        fixture f({{"tenant:b", usd("1"), budget_period::daily}}, sqlite_store(file));
        BOOST_TEST((f.budget("tenant:b")->committed == usd("0.3")));
    }
    // The next day it is a budget like any other: its store's spend of that day.
    fixture f({{"tenant:b", usd("1"), budget_period::daily}}, sqlite_store(file));
    f.now += std::chrono::milliseconds(day_ms);
    BOOST_TEST(f.reserve("tenant:b").active());
    BOOST_TEST((f.budget("tenant:b")->committed == money()));
}

BOOST_AUTO_TEST_CASE(a_template_back_brings_back_its_instances_with_their_spend_counted_once)
{
    fixture f({{"user:*", usd("5"), budget_period::daily}});
    f.spend("user:bob", "0.4");
    auto in_flight = f.sent("user:bob"); // charged to user:bob before the template goes
    BOOST_TEST(!f.guard->set_budgets({}));
    f.spend("user:bob", "0.1"); // no cap meanwhile
    BOOST_TEST(!in_flight.settle(billed("0.2", "user:bob")));
    BOOST_TEST(!f.guard->set_budgets({{"user:*", usd("5"), budget_period::daily}}, &f.diag),
               f.diag.message);
    const auto bob = f.budget("user:bob");
    BOOST_TEST_REQUIRE(bob.has_value());
    BOOST_TEST((bob->committed == usd("0.7"))); // 0.4 + 0.2 it kept, and the 0.1 without a cap
}

BOOST_AUTO_TEST_CASE(a_template_cap_changed_reaches_every_instance)
{
    fixture f({{"user:*", usd("0.5"), budget_period::daily}});
    f.spend("user:1", "0.3");
    f.spend("user:2", "0.1");
    BOOST_TEST(!f.reserve("user:1").active());
    BOOST_TEST(!f.guard->set_budgets({{"user:*", usd("2"), budget_period::daily}}));
    BOOST_TEST((f.budget("user:1")->cap == usd("2")));
    BOOST_TEST((f.budget("user:2")->cap == usd("2")));
    BOOST_TEST((f.budget("user:1")->committed == usd("0.3")));
    BOOST_TEST(f.reserve("user:1").active());
    f.spend("user:3", "0.2"); // a new instance takes the new cap
    BOOST_TEST((f.budget("user:3")->cap == usd("2")));
}

BOOST_AUTO_TEST_CASE(a_store_opened_with_another_period_sums_the_new_period_from_its_ledger)
{
    frugal::test::scratch_file file("reperiod");
    auto open_store = [&] { return sqlite_store(file); };
    {
        fixture f({{"tenant:a", usd("10"), budget_period::monthly}}, open_store());
        f.now -= std::chrono::milliseconds(day_ms);
        f.spend("tenant:a", "0.7");
        f.spend("tenant:b", "0.2");
        f.now += std::chrono::milliseconds(day_ms);
        f.spend("tenant:a", "0.3");
        f.spend("tenant:b", "0.05");
        BOOST_TEST((f.budget("tenant:a")->committed == usd("1")));
    }
    {
        // Monthly to daily, and tenant:b capped for the first time: today's spend, each.
        fixture f(
            {{"tenant:a", usd("1"), budget_period::daily}, {"tenant:b", usd("1"), budget_period::daily}},
            open_store());
        const auto a = f.budget("tenant:a");
        BOOST_TEST_REQUIRE(a.has_value());
        BOOST_TEST((a->committed == usd("0.3")));
        BOOST_TEST(a->window == frugal::period_window(budget_period::daily, noon_ms));
        BOOST_TEST((f.budget("tenant:b")->committed == usd("0.05")));
        f.spend("tenant:a", "0.1");
        // The next day starts afresh: the window is today's, not one of the months' indices.
        f.now += std::chrono::milliseconds(day_ms);
        BOOST_TEST(f.reserve("tenant:a").active());
        BOOST_TEST((f.budget("tenant:a")->committed == money()));
    }
    {
        // Daily again, the same day: what the ledger says of today, not the store's $0.10.
        fixture f(
            {{"tenant:a", usd("1"), budget_period::daily}, {"tenant:b", usd("1"), budget_period::daily}},
            sqlite_store(file));
        BOOST_TEST((f.budget("tenant:a")->committed == usd("0.4")));
        BOOST_TEST((f.budget("tenant:b")->committed == usd("0.05")));
    }
    {
        // Daily back to monthly, on the next day: the month's whole spend.
        fixture f({{"tenant:a", usd("10"), budget_period::monthly}}, open_store());
        f.now += std::chrono::milliseconds(day_ms);
        BOOST_TEST(f.reserve("tenant:a").active());
        BOOST_TEST((f.budget("tenant:a")->committed == usd("1.1")));
    }
}

BOOST_AUTO_TEST_CASE(a_name_of_its_own_keeps_its_period_when_its_kind_changes_period)
{
    frugal::test::scratch_file file("kindperiod");
    auto open_store = [&] { return sqlite_store(file); };
    {
        fixture f(
            {{"user:*", usd("1"), budget_period::daily}, {"user:bob", usd("10"), budget_period::monthly}},
            open_store());
        f.now -= std::chrono::milliseconds(day_ms); // Monday 2026-11-23
        f.spend("user:bob", "0.5");
        f.spend("user:7", "0.4");
        f.now += std::chrono::milliseconds(day_ms);
        f.spend("user:bob", "0.2");
        f.spend("user:7", "0.3");
    }
    fixture f(
        {{"user:*", usd("1"), budget_period::weekly}, {"user:bob", usd("10"), budget_period::monthly}},
        open_store());
    BOOST_TEST((f.budget("user:bob")->committed == usd("0.7"))); // its month, as kept
    BOOST_TEST(f.reserve("user:7").active());
    BOOST_TEST((f.budget("user:7")->committed == usd("0.7"))); // the week, from the ledger
}

BOOST_AUTO_TEST_SUITE_END()

BOOST_AUTO_TEST_SUITE(budgets_replaced_under_load)

// Two threads spend under tenant:a while its cap is dropped and brought back, and another
// tenant's cap comes for the first time: whatever settles before, while or after each change
// is read, the budget counts every cent the ledger holds for its key, and no request twice
// beyond its worst case.
BOOST_AUTO_TEST_CASE(a_budget_that_comes_while_requests_settle_counts_each_of_them)
{
    for (const bool sqlite : {false, true}) {
        frugal::test::scratch_file file("reload-load");
        fixture f({{"tenant:a", usd("1000"), budget_period::none}},
                  sqlite ? sqlite_store(file) : nullptr);
        std::atomic<bool> stop{false};
        std::atomic<int> spent{0};
        // A round ahead of the changes, no further: the memory store's ring keeps every
        // record, so the budgets that come can read all they spent.
        std::atomic<int> allowed{40};
        auto spender = [&](const std::string& key) {
            const std::vector<std::string> keys{key};
            while (!stop.load()) {
                if (spent.load() >= allowed.load()) {
                    std::this_thread::yield();
                    continue;
                }
                frugal::reserve_request r;
                r.model = paid;
                r.prompt_bytes = 100;
                r.max_tokens = 100;
                r.keys = keys;
                auto got = f.guard->try_reserve(r);
                if (!got || !got->active())
                    continue;
                got->mark_sent();
                auto rec = billed("0.01", key);
                rec.time_ms = noon_ms - 7; // a router stamps its own clock, before reserving
                BOOST_REQUIRE(!got->settle(rec));
                ++spent;
            }
        };
        std::thread one(spender, "tenant:a");
        std::thread two(spender, "tenant:b");
        int changes = 0;
        for (; changes < 20; ++changes) {
            const auto deadline = std::chrono::steady_clock::now() + 60s;
            while (spent.load() < 20 * (changes + 1)) {
                if (std::chrono::steady_clock::now() > deadline) {
                    stop = true;
                    one.join();
                    two.join();
                    BOOST_FAIL("the spenders stopped spending at change " << changes);
                }
                std::this_thread::yield();
            }
            const bool with = changes % 2 == 1;
            std::vector<frugal::budget_spec> specs;
            if (with)
                specs = {{"tenant:a", usd("1000")}, {"tenant:b", usd("1000")}};
            BOOST_TEST_REQUIRE(!f.guard->set_budgets(specs, &f.diag), f.diag.message);
            allowed = 20 * (changes + 3);
        }
        stop = true;
        one.join();
        two.join();
        std::vector<frugal::attempt_record> records;
        BOOST_TEST_REQUIRE(!f.guard->read_ledger(0, records));
        money a, b;
        for (const auto& r : records)
            (r.keys == "tenant:a" ? a : b) += r.cost;
        // The last change brought both back. Each time a budget comes it may count the one
        // request its key has in flight at its worst case ($0.30) for one that cost $0.01:
        // the books may exceed the ledger by $0.29 per coming (a later coming absorbs an
        // earlier excess when the key spent more meanwhile), and never fall short of it.
        for (const auto& [name, ledger] : {std::pair{"tenant:a", a}, std::pair{"tenant:b", b}}) {
            const auto books = f.budget(name)->committed;
            BOOST_TEST((books >= ledger), name << ": " << books.to_string() << " < "
                                                << ledger.to_string() << (sqlite ? " (sqlite)" : ""));
            BOOST_TEST((books <= ledger + usd("0.29") * (changes / 2)),
                       name << ": " << books.to_string() << " vs " << ledger.to_string());
        }
    }
}

BOOST_AUTO_TEST_SUITE_END()
