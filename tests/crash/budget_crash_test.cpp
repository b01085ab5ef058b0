// A process spending through an SQLite budget store is killed (SIGKILL) mid-run; the store,
// reopened, must hold every settlement the process reported, count its open reservations as
// spent, and add up.

#define BOOST_TEST_MODULE frugal budget crash tests
#include <frugal/budget.hpp>

#include "printers.hpp"

#include <boost/test/unit_test.hpp>

#include <csignal>
#include <cstdio>
#include <filesystem>
#include <map>
#include <set>
#include <spawn.h>
#include <sys/wait.h>
#include <unistd.h>

extern char** environ;

using frugal::money;

namespace {

struct child_log {
    std::map<std::uint64_t, money> reserved; // id → amount, reported reserved
    std::set<std::uint64_t> settled;
    money last_total;
    int settlements = 0;
};

// Runs the child until it has reported `settlements` settlements, then kills it.
child_log run_and_kill(const std::string& child, const std::string& db, int settlements)
{
    int fds[2];
    BOOST_TEST_REQUIRE(::pipe(fds) == 0);
    posix_spawn_file_actions_t fa;
    posix_spawn_file_actions_init(&fa);
    posix_spawn_file_actions_adddup2(&fa, fds[1], 1);
    posix_spawn_file_actions_addclose(&fa, fds[0]);
    std::vector<char*> argv{
        const_cast<char*>(child.c_str()), const_cast<char*>(db.c_str()), nullptr};
    pid_t pid = 0;
    BOOST_TEST_REQUIRE(posix_spawn(&pid, child.c_str(), &fa, nullptr, argv.data(), environ) == 0);
    posix_spawn_file_actions_destroy(&fa);
    ::close(fds[1]);
    FILE* in = ::fdopen(fds[0], "r");
    child_log log;
    char line[256];
    while (log.settlements < settlements && std::fgets(line, sizeof line, in) != nullptr) {
        unsigned long long id = 0;
        long long units = 0;
        if (std::sscanf(line, "reserved %llu %lld", &id, &units) == 2) {
            log.reserved[id] = money::from_units(units);
        } else if (std::sscanf(line, "settled %llu %lld", &id, &units) == 2) {
            log.settled.insert(id);
            log.last_total = money::from_units(units);
            ++log.settlements;
        }
    }
    ::kill(pid, SIGKILL); // mid-run: it is still reserving and settling
    int status = 0;
    ::waitpid(pid, &status, 0);
    std::fclose(in);
    BOOST_TEST_REQUIRE(WIFSIGNALED(status));
    BOOST_TEST_REQUIRE(log.settlements == settlements);
    return log;
}

} // namespace

BOOST_AUTO_TEST_CASE(a_killed_process_loses_no_spend_and_its_open_reservations_count)
{
    const auto& suite = boost::unit_test::framework::master_test_suite();
    BOOST_TEST_REQUIRE(suite.argc == 2, "usage: frugal_budget_crash_test CHILD");
    const std::string child = suite.argv[1];
    const auto db = (std::filesystem::temp_directory_path() /
                     ("frugal-crash-" + std::to_string(::getpid()) + ".db"))
                        .string();
    for (const char* ext : {"", "-wal", "-shm", ".lock"})
        std::filesystem::remove(db + ext);

    frugal::model_info m;
    m.id = "anthropic/claude-fable-5";
    m.prompt_price = *money::parse("0.000003");
    m.completion_price = *money::parse("0.000015");
    frugal::budget_params p;
    p.budgets = {{"global", *money::parse("1000000")}};

    money before;
    for (int round = 0; round < 3; ++round) {
        const auto log = run_and_kill(child, db, 150);
        frugal::diagnostics diag;
        auto store = frugal::open_sqlite_store({db}, &diag); // the lock died with it
        BOOST_TEST_REQUIRE(store.has_value(), diag.message);
        auto g = frugal::budget_guard::open(p, frugal::price_catalog({m}), *store, &diag);
        BOOST_TEST_REQUIRE(g.has_value(), diag.message);

        // Every settlement it reported is there, and the ledger adds up to the spend.
        BOOST_TEST((g->committed_total() >= log.last_total));
        std::vector<frugal::attempt_record> ledger;
        BOOST_TEST(!g->read_ledger(0, ledger));
        money sum;
        std::set<std::string> recorded;
        for (const auto& r : ledger) {
            sum += r.cost;
            recorded.insert(r.generation_id);
        }
        BOOST_TEST((sum == g->committed_total()));

        // Every reservation it reported and did not report settled is either still open or
        // was settled in the instant before the kill.
        const auto open = g->open_reservations();
        std::map<std::uint64_t, money> open_by_id;
        money open_sum;
        for (const auto& o : open) {
            BOOST_TEST_REQUIRE(!o.charges.empty());
            open_by_id[o.id] = o.charges.front().amount;
            open_sum += o.charges.front().amount;
        }
        int unsettled = 0;
        for (const auto& [id, amount] : log.reserved) {
            if (log.settled.contains(id))
                continue;
            ++unsettled;
            const bool still_open = open_by_id.contains(id);
            const bool settled_late = recorded.contains("gen-" + std::to_string(id));
            BOOST_TEST((still_open || settled_late), "reservation " << id << " was lost");
            if (still_open) {
                BOOST_TEST((open_by_id[id] == amount));
            }
        }
        BOOST_TEST(unsettled >= 3); // the child always holds reservations open
        BOOST_TEST(!open.empty());
        BOOST_TEST_MESSAGE(
            "round " << round << ": " << ledger.size() << " records, " << open.size()
                     << " open reservations counted as spent");

        // Open reservations count as spent: they hold headroom until settled.
        const auto snap = g->snapshot();
        BOOST_TEST_REQUIRE(snap.size() == 1u);
        BOOST_TEST((snap[0].reserved == open_sum));
        BOOST_TEST((snap[0].committed == g->committed_total()));
        BOOST_TEST((g->committed_total() >= before));

        // A reconciliation settles them with what the provider billed.
        for (const auto& o : open) {
            frugal::attempt_record r;
            r.generation_id = o.generation_id;
            r.cost = money::from_units(o.charges.front().amount.units() / 2);
            BOOST_TEST(!g->settle_open(o.id, r));
        }
        BOOST_TEST(g->open_reservations().empty());
        BOOST_TEST((g->snapshot()[0].reserved == money()));
        before = g->committed_total();
    }
    for (const char* ext : {"", "-wal", "-shm", ".lock"})
        std::filesystem::remove(db + ext);
}
