// Property tests of the budget guard: many threads reserving, clamping, cancelling, failing
// and settling at random against nested caps; the invariant committed + reserved ≤ cap must
// hold at every observed instant, and the ledger must add up to the committed spend exactly.

#include <frugal/budget.hpp>

#include "printers.hpp"

#include <boost/test/unit_test.hpp>

#include <atomic>
#include <filesystem>
#include <random>
#include <thread>
#include <unistd.h>

using frugal::money;

namespace {

money usd(const char* s)
{
    return *money::parse(s);
}

frugal::price_catalog catalog()
{
    frugal::model_info m;
    m.id = "anthropic/claude-fable-5";
    m.prompt_price = usd("0.000003");
    m.completion_price = usd("0.000015");
    m.request_price = usd("0.0001");
    m.max_completion_tokens = 8192;
    return frugal::price_catalog({m});
}

struct run_result {
    std::uint64_t granted = 0;
    std::uint64_t clamped = 0;
    std::uint64_t denied = 0;
    std::uint64_t violations = 0;
    std::uint64_t checks = 0;
};

// Every budget's committed + reserved against its cap, in one consistent snapshot.
bool invariant_holds(const frugal::budget_guard& g)
{
    for (const auto& s : g.snapshot())
        if (s.committed + s.reserved > s.cap)
            return false;
    return true;
}

run_result hammer(frugal::budget_guard& g, int threads, int ops_per_thread)
{
    std::atomic<std::uint64_t> granted{0}, clamped{0}, denied{0}, violations{0}, checks{0};
    std::atomic<bool> done{false};
    std::thread observer([&] {
        while (!done.load()) {
            if (!invariant_holds(g))
                ++violations;
            ++checks;
        }
    });
    std::vector<std::thread> workers;
    for (int t = 0; t < threads; ++t) {
        workers.emplace_back([&, t] {
            std::mt19937_64 rng(1234 + static_cast<unsigned>(t));
            auto pick = [&](std::uint64_t n) { return rng() % n; };
            const std::vector<std::string> tenants{"tenant:a", "tenant:b"};
            std::vector<frugal::reservation> open;
            std::vector<std::vector<std::string>> keys_of;
            for (int i = 0; i < ops_per_thread; ++i) {
                if (open.size() < 8 && pick(3) != 0) {
                    std::vector<std::string> keys{
                        tenants[pick(2)], "user:" + std::to_string(pick(6))};
                    frugal::reserve_request r;
                    r.model = "anthropic/claude-fable-5";
                    r.prompt_bytes = 10 + pick(4000);
                    r.max_tokens = 1 + static_cast<std::uint32_t>(pick(4000));
                    r.allow_clamp = pick(4) != 0;
                    r.keys = keys;
                    auto res = g.try_reserve(r);
                    if (res) {
                        ++granted;
                        clamped += res->clamped() ? 1 : 0;
                        open.push_back(std::move(*res));
                    } else {
                        ++denied;
                    }
                } else if (!open.empty()) {
                    const auto k = pick(open.size());
                    auto res = std::move(open[k]);
                    open.erase(open.begin() + static_cast<std::ptrdiff_t>(k));
                    frugal::attempt_record rec;
                    rec.model_asked = "anthropic/claude-fable-5";
                    switch (pick(10)) {
                    case 0: res.release(); break;   // never sent
                    case 1: res.mark_sent(); break; // outcome unknown: destroyed
                    case 2:                         // failed: the provider billed 0
                        res.mark_sent();
                        rec.outcome = frugal::attempt_outcome::error;
                        (void)res.settle(rec);
                        break;
                    default: {
                        res.mark_sent();
                        const auto a = res.amount().units();
                        rec.cost = money::from_units(
                            static_cast<money::rep>(pick(static_cast<std::uint64_t>(a) / 2 + 1)));
                        (void)res.settle(rec);
                    }
                    }
                }
                if (!invariant_holds(g))
                    ++violations;
            }
            for (auto& r : open)
                r.mark_sent(); // destroyed sent: charged whole
        });
    }
    for (auto& w : workers)
        w.join();
    done = true;
    observer.join();
    return {granted.load(), clamped.load(), denied.load(), violations.load(), checks.load()};
}

std::vector<frugal::budget_spec> specs(money::rep divisor = 1)
{
    auto usd = [divisor](const char* s) { return money::from_units(::usd(s).units() / divisor); };
    // Sized so that the caps are reached part-way through a run: both the granting and the
    // denying sides get exercised.
    return {
        {"global", usd("150")},
        {"tenant:a", usd("60")},
        {"tenant:b", usd("100")},
        {"user:*", usd("25")},
        {"daily", usd("140"), frugal::budget_period::daily}};
}

void check_books(frugal::budget_guard& g)
{
    std::vector<frugal::attempt_record> ledger;
    BOOST_TEST(!g.read_ledger(0, ledger));
    money sum;
    for (const auto& r : ledger)
        sum += r.cost;
    BOOST_TEST((sum == g.committed_total()));
    for (const auto& s : g.snapshot()) {
        BOOST_TEST((s.reserved == money()), s.name << " still holds " << s.reserved.to_string());
        if (s.name == "global") {
            BOOST_TEST((s.committed == sum));
        }
        BOOST_TEST(!s.tripped);
        BOOST_TEST((s.overshoot == money()));
    }
}

} // namespace

BOOST_AUTO_TEST_SUITE(budget_properties)

BOOST_AUTO_TEST_CASE(the_invariant_holds_under_four_threads_on_the_memory_store)
{
    frugal::budget_params p;
    p.budgets = specs();
    p.min_max_tokens = 16;
    frugal::diagnostics diag;
    auto g = frugal::budget_guard::open(p, catalog(), nullptr, &diag);
    BOOST_TEST_REQUIRE(g.has_value(), diag.message);
    const auto r = hammer(*g, 4, 20'000);
    BOOST_TEST_MESSAGE(
        "granted " << r.granted << " (clamped " << r.clamped << "), denied " << r.denied
                   << ", invariant checked " << r.checks << " times by the observer");
    BOOST_TEST(r.violations == 0u);
    BOOST_TEST(r.granted > 1000u);
    BOOST_TEST(r.clamped > 0u);
    BOOST_TEST(r.denied > 0u); // the caps were reached, so the run tested something
    check_books(*g);
}

BOOST_AUTO_TEST_CASE(the_invariant_holds_under_two_threads_on_the_sqlite_store)
{
    const auto path = std::filesystem::temp_directory_path() /
                      ("frugal-prop-" + std::to_string(::getpid()) + ".db");
    std::filesystem::remove(path);
    frugal::budget_params p;
    p.budgets = specs(10);
    p.min_max_tokens = 16;
    frugal::diagnostics diag;
    {
        auto store = frugal::open_sqlite_store(
            {path.string(), frugal::sqlite_durability::process_crash}, &diag);
        BOOST_TEST_REQUIRE(store.has_value(), diag.message);
        auto g = frugal::budget_guard::open(p, catalog(), *store, &diag);
        BOOST_TEST_REQUIRE(g.has_value(), diag.message);
        const auto r = hammer(*g, 2, 2'000);
        BOOST_TEST(r.violations == 0u);
        BOOST_TEST(r.denied > 0u);
        check_books(*g);
    }
    // Reopened, the file gives back the same committed spend.
    auto store = frugal::open_sqlite_store({path.string()}, &diag);
    BOOST_TEST_REQUIRE(store.has_value(), diag.message);
    auto g = frugal::budget_guard::open(p, catalog(), *store, &diag);
    BOOST_TEST_REQUIRE(g.has_value(), diag.message);
    check_books(*g);
    std::filesystem::remove(path);
    std::filesystem::remove(path.string() + "-wal");
    std::filesystem::remove(path.string() + "-shm");
    std::filesystem::remove(path.string() + ".lock");
}

BOOST_AUTO_TEST_SUITE_END()
