// The process a crash test kills: it reserves, sends (pretends to) and settles against an
// SQLite budget store as fast as it can, always holding a few reservations open, and prints
// each step only after the store has it:
//   reserved <id> <amount units>
//   settled <id> <committed total units>

#include <frugal/budget.hpp>

#include <cstdio>
#include <deque>
#include <random>

int main(int argc, char** argv)
{
    if (argc != 2) {
        std::fprintf(stderr, "usage: %s DB\n", argv[0]);
        return 2;
    }
    frugal::model_info m;
    m.id = "anthropic/claude-fable-5";
    m.prompt_price = *frugal::money::parse("0.000003");
    m.completion_price = *frugal::money::parse("0.000015");
    frugal::budget_params p;
    p.budgets = {{"global", *frugal::money::parse("1000000")}};
    frugal::diagnostics diag;
    auto store = frugal::open_sqlite_store({argv[1]}, &diag);
    if (!store) {
        std::fprintf(stderr, "%s\n", diag.message.c_str());
        return 1;
    }
    auto guard = frugal::budget_guard::open(p, frugal::price_catalog({m}), *store, &diag);
    if (!guard) {
        std::fprintf(stderr, "%s\n", diag.message.c_str());
        return 1;
    }
    std::mt19937_64 rng(std::random_device{}());
    std::deque<frugal::reservation> open;
    for (;;) {
        frugal::reserve_request r;
        r.model = m.id;
        r.prompt_bytes = 100 + rng() % 2000;
        r.max_tokens = 1 + static_cast<std::uint32_t>(rng() % 1000);
        auto got = guard->try_reserve(r);
        if (!got) {
            std::fprintf(stderr, "denied: %s\n", got.error().message().c_str());
            return 1;
        }
        auto res = std::move(*got);
        res.mark_sent();
        res.note_generation("gen-" + std::to_string(res.id()));
        std::printf(
            "reserved %llu %lld\n", static_cast<unsigned long long>(res.id()),
            static_cast<long long>(res.amount().units()));
        std::fflush(stdout);
        open.push_back(std::move(res));
        if (open.size() < 4)
            continue;
        auto done = std::move(open.front());
        open.pop_front();
        frugal::attempt_record rec;
        rec.generation_id = "gen-" + std::to_string(done.id());
        rec.cost = frugal::money::from_units(static_cast<frugal::money::rep>(
            rng() % static_cast<std::uint64_t>(done.amount().units())));
        const auto id = done.id();
        if (done.settle(rec)) {
            std::fprintf(stderr, "settle failed\n");
            return 1;
        }
        std::printf(
            "settled %llu %lld\n", static_cast<unsigned long long>(id),
            static_cast<long long>(guard->committed_total().units()));
        std::fflush(stdout);
    }
}
