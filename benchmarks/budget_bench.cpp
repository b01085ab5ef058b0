// The budget guard's cost per paid request: one reservation and one settlement (with its
// ledger record), on the memory store from one and two threads, and on the SQLite store.
#include "figures.hpp"

#include <frugal/budget.hpp>

#include <benchmark/benchmark.h>

#include <filesystem>
#include <optional>
#include <unistd.h>

namespace {

const bool figures =
    frugal::bench::register_figure("budget_reserve_settle_per_s", "reservations/s") &&
    frugal::bench::register_figure("budget_reserve_settle_2threads_per_s", "reservations/s") &&
    frugal::bench::register_figure("budget_sqlite_settle_per_s", "reservations/s") &&
    frugal::bench::register_figure("budget_sqlite_normal_settle_per_s", "reservations/s");

constexpr const char* model = "anthropic/claude-fable-5";

frugal::price_catalog catalog()
{
    frugal::model_info m;
    m.id = model;
    m.prompt_price = *frugal::money::parse("0.000003");
    m.completion_price = *frugal::money::parse("0.000015");
    m.max_completion_tokens = 32000;
    return frugal::price_catalog({m});
}

// A server's configuration: a global cap and a daily one, far from being reached.
frugal::budget_guard make_guard(std::shared_ptr<frugal::budget_store> store)
{
    frugal::budget_params p;
    p.budgets = {
        {"global", *frugal::money::parse("1000000")},
        {"daily", *frugal::money::parse("100000"), frugal::budget_period::daily}};
    boost::system::error_code ec;
    std::string detail;
    return *frugal::budget_guard::open(p, catalog(), std::move(store), ec, detail);
}

// What a router does per paid attempt: reserve, send, settle with the attempt's record (a
// record the caller reuses, as a router's attempt state would be).
void reserve_and_settle(frugal::budget_guard& g, frugal::attempt_record& rec, std::uint64_t i)
{
    frugal::reserve_request r;
    r.model = model;
    r.prompt_bytes = 900;
    r.max_tokens = 512;
    r.request_id = i;
    boost::system::error_code ec;
    auto res = g.try_reserve(r, ec);
    if (!res.active())
        std::abort();
    res.mark_sent();
    rec.request_id = i;
    rec.generation_id.replace(
        rec.generation_id.size() - 8, 8, std::to_string(10'000'000 + i % 89'999'999));
    if (res.settle(rec))
        std::abort();
}

frugal::attempt_record sample_record()
{
    frugal::attempt_record rec;
    rec.time_ms = 1795000000000;
    rec.generation_id = "gen-1795000000-UD7bR0I1JNCsPvVzlXat";
    rec.model_asked = model;
    rec.model_served = model;
    rec.provider = "Anthropic";
    rec.prompt_tokens = 212;
    rec.completion_tokens = 187;
    rec.cost = frugal::money::from_units(3'441'000'000);
    rec.latency_us = 850'000;
    return rec;
}

void budget_reserve_settle(benchmark::State& state)
{
    static std::optional<frugal::budget_guard> shared;
    if (state.thread_index() == 0)
        shared.emplace(make_guard(nullptr));
    auto rec = sample_record();
    std::uint64_t n = 0;
    for (auto _ : state)
        reserve_and_settle(*shared, rec, ++n);
    const char* name = state.threads() == 1 ? "budget_reserve_settle_per_s"
                                            : "budget_reserve_settle_2threads_per_s";
    state.counters[name] = benchmark::Counter(static_cast<double>(n), benchmark::Counter::kIsRate);
}
BENCHMARK(budget_reserve_settle)->UseRealTime()->Threads(1)->Threads(2);

void budget_sqlite_settle(benchmark::State& state)
{
    const bool full = state.range(0) == 1;
    const auto path = std::filesystem::temp_directory_path() /
                      ("frugal-bench-" + std::to_string(::getpid()) + ".db");
    for (const char* ext : {"", "-wal", "-shm", ".lock"})
        std::filesystem::remove(path.string() + ext);
    {
        boost::system::error_code ec;
        std::string detail;
        auto store = frugal::open_sqlite_store(
            {path.string(), full ? frugal::sqlite_durability::power_loss
                                 : frugal::sqlite_durability::process_crash},
            ec, detail);
        if (!store) {
            state.SkipWithError(detail.c_str());
            return;
        }
        auto g = make_guard(store);
        auto rec = sample_record();
        std::uint64_t n = 0;
        for (auto _ : state)
            reserve_and_settle(g, rec, ++n);
        state.counters[full ? "budget_sqlite_settle_per_s" : "budget_sqlite_normal_settle_per_s"] =
            benchmark::Counter(static_cast<double>(n), benchmark::Counter::kIsRate);
    }
    for (const char* ext : {"", "-wal", "-shm", ".lock"})
        std::filesystem::remove(path.string() + ext);
}
BENCHMARK(budget_sqlite_settle)->Arg(1)->Arg(0)->UseRealTime();

} // namespace
