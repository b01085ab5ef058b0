// The Redis budget store against a real redis-server of each test's own (on a free port of
// 127.0.0.1): exact sums past 2^53, failing closed (and open) with Redis gone, leases running
// out into spend, a lost reply resent and counted once, and a fleet cap held by concurrent
// async reservations through two guards. Skipped where redis-server is not installed.
#include <frugal/budget.hpp>
#include <frugal/error.hpp>

#include "printers.hpp"

#include <boost/asio/as_tuple.hpp>
#include <boost/asio/co_spawn.hpp>
#include <boost/asio/detached.hpp>
#include <boost/asio/io_context.hpp>
#include <boost/asio/use_awaitable.hpp>
#include <boost/test/unit_test.hpp>

#include <hiredis/hiredis.h>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <cstdlib>
#include <future>
#include <map>
#include <mutex>
#include <optional>
#include <string>
#include <thread>
#include <vector>

#include <arpa/inet.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <poll.h>
#include <signal.h>
#include <spawn.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

extern char** environ;

namespace {

namespace asio = boost::asio;
using namespace std::chrono_literals;
using frugal::money;

bool redis_installed()
{
    const char* path = std::getenv("PATH");
    std::string p = path != nullptr ? path : "/usr/bin:/bin";
    std::size_t start = 0;
    while (start <= p.size()) {
        auto end = p.find(':', start);
        if (end == std::string::npos)
            end = p.size();
        const std::string exe = p.substr(start, end - start) + "/redis-server";
        if (::access(exe.c_str(), X_OK) == 0)
            return true;
        start = end + 1;
    }
    return false;
}

boost::test_tools::assertion_result have_redis(boost::unit_test::test_unit_id)
{
    boost::test_tools::assertion_result r(redis_installed());
    if (!r)
        r.message() << "redis-server is not installed: skipped";
    return r;
}

int free_port()
{
    const int fd = ::socket(AF_INET, SOCK_STREAM, 0);
    sockaddr_in a{};
    a.sin_family = AF_INET;
    a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    (void)::bind(fd, reinterpret_cast<sockaddr*>(&a), sizeof a);
    socklen_t len = sizeof a;
    ::getsockname(fd, reinterpret_cast<sockaddr*>(&a), &len);
    ::close(fd);
    return ntohs(a.sin_port);
}

bool port_open(int port)
{
    const int fd = ::socket(AF_INET, SOCK_STREAM, 0);
    sockaddr_in a{};
    a.sin_family = AF_INET;
    a.sin_port = htons(static_cast<std::uint16_t>(port));
    a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    const bool ok = ::connect(fd, reinterpret_cast<sockaddr*>(&a), sizeof a) == 0;
    ::close(fd);
    return ok;
}

// A redis-server of the test's own on a free port (or a given one, to restart it), without
// persistence, killed with the test.
class redis_server {
public:
    explicit redis_server(int port = 0) : port_(port != 0 ? port : free_port()) { start(); }
    ~redis_server() { stop(); }
    redis_server(const redis_server&) = delete;
    redis_server& operator=(const redis_server&) = delete;

    void start()
    {
        const std::string port = std::to_string(port_);
        const char* argv[] = {"redis-server", "--port", port.c_str(), "--bind", "127.0.0.1",
                              "--save", "", "--appendonly", "no", "--dir", "/tmp", nullptr};
        posix_spawn_file_actions_t fa;
        posix_spawn_file_actions_init(&fa);
        posix_spawn_file_actions_addopen(&fa, 1, "/dev/null", O_WRONLY, 0);
        const int rc =
            posix_spawnp(&pid_, "redis-server", &fa, nullptr, const_cast<char**>(argv), environ);
        posix_spawn_file_actions_destroy(&fa);
        if (rc != 0) {
            pid_ = -1;
            return;
        }
        for (int i = 0; i < 500 && !port_open(port_); ++i)
            std::this_thread::sleep_for(10ms);
    }
    // Gone at once, as a crash would leave it.
    void stop()
    {
        if (pid_ > 0) {
            ::kill(pid_, SIGKILL);
            ::waitpid(pid_, nullptr, 0);
            pid_ = -1;
        }
    }
    bool running() const { return pid_ > 0 && port_open(port_); }
    int port() const { return port_; }
    std::string url() const { return "redis://127.0.0.1:" + std::to_string(port_) + "/0"; }

private:
    int port_;
    pid_t pid_ = -1;
};

// A plain hiredis connection, to read what the store wrote.
class raw_redis {
public:
    explicit raw_redis(int port) : c_(redisConnect("127.0.0.1", port)) {}
    ~raw_redis()
    {
        if (c_ != nullptr)
            redisFree(c_);
    }
    bool ok() const { return c_ != nullptr && c_->err == 0; }
    // The hash field as Redis keeps it ("" when it is not there).
    std::string hget(const std::string& key, const std::string& field)
    {
        auto* r = static_cast<redisReply*>(
            redisCommand(c_, "HGET %b %b", key.data(), key.size(), field.data(), field.size()));
        std::string out = "<error>";
        if (r != nullptr && r->type == REDIS_REPLY_STRING)
            out.assign(r->str, r->len);
        else if (r != nullptr && r->type == REDIS_REPLY_NIL)
            out.clear();
        if (r != nullptr)
            freeReplyObject(r);
        return out;
    }
    // How many connections Redis has open (this one included).
    int clients()
    {
        auto* r = static_cast<redisReply*>(redisCommand(c_, "CLIENT LIST"));
        int n = -1;
        if (r != nullptr && r->type == REDIS_REPLY_STRING)
            n = static_cast<int>(std::count(r->str, r->str + r->len, '\n'));
        if (r != nullptr)
            freeReplyObject(r);
        return n;
    }
    // The field as an integer: 0 when absent.
    std::int64_t hint(const std::string& key, const std::string& field)
    {
        const auto s = hget(key, field);
        return s.empty() ? 0 : std::stoll(s);
    }

private:
    redisContext* c_;
};

std::shared_ptr<frugal::budget_store> open_store(const frugal::redis_store_params& p)
{
    frugal::diagnostics diag;
    auto s = frugal::open_redis_store(p, nullptr, &diag);
    BOOST_TEST_REQUIRE(s.has_value(), diag.message);
    BOOST_TEST_REQUIRE(*s != nullptr);
    return *s;
}

frugal::redis_store_params params_for(const redis_server& r, const std::string& prefix)
{
    frugal::redis_store_params p;
    p.url = r.url();
    p.prefix = prefix;
    p.timeout = 500ms;
    return p;
}

boost::system::error_code
reserve(frugal::budget_store& s, std::uint64_t id, std::vector<frugal::budget_charge_view> charges)
{
    frugal::reservation_view v;
    v.id = id;
    v.time_ms = 1795000000000;
    v.request_id = id;
    v.model = "m";
    v.charges = charges;
    return s.reserve(v);
}

boost::system::error_code settle(
    frugal::budget_store& s, std::uint64_t id, std::vector<frugal::budget_charge_view> charges,
    money cost)
{
    frugal::attempt_record rec;
    rec.time_ms = 1795000000000;
    rec.request_id = id;
    rec.model_asked = "m";
    rec.cost = cost;
    for (auto& c : charges)
        c.amount = cost;
    return s.settle(id, charges, rec);
}

std::int64_t loaded_committed(frugal::budget_store& s, const std::string& budget)
{
    frugal::budget_store_state st;
    BOOST_TEST_REQUIRE(!s.load(st));
    std::int64_t sum = 0;
    int seen = 0;
    for (const auto& c : st.committed)
        if (c.budget == budget && c.window == 0) {
            sum += c.amount.units();
            ++seen;
        }
    BOOST_TEST(seen <= 1);
    return sum;
}

constexpr const char* model = "anthropic/claude-fable-5";

frugal::price_catalog catalog()
{
    frugal::model_info m;
    m.id = model;
    m.prompt_price = *money::parse("0.000003");
    m.completion_price = *money::parse("0.000015");
    m.max_completion_tokens = 32000;
    return frugal::price_catalog({m});
}

frugal::budget_guard open_guard(std::shared_ptr<frugal::budget_store> store, money cap)
{
    frugal::budget_params p;
    p.budgets = {{"global", cap}};
    p.max_wait = 0ms;
    frugal::diagnostics diag;
    auto g = frugal::budget_guard::open(p, catalog(), std::move(store), &diag);
    BOOST_TEST_REQUIRE(g.has_value(), diag.message);
    return std::move(*g);
}

frugal::reserve_request request(std::uint64_t id)
{
    frugal::reserve_request r;
    r.model = model;
    r.prompt_bytes = 900;
    r.max_tokens = 512;
    r.allow_clamp = false;
    r.request_id = id;
    return r;
}

money snapshot_committed(const frugal::budget_guard& g)
{
    for (const auto& s : g.snapshot())
        if (s.name == "global")
            return s.committed;
    BOOST_FAIL("no global budget in the snapshot");
    return {};
}

// A TCP relay between the store and Redis that, once armed, loses the reply to the first
// command carrying `needle`: Redis applies it, the store never hears back, the connection is cut.
class lossy_proxy {
public:
    explicit lossy_proxy(int upstream) : upstream_(upstream)
    {
        lfd_ = ::socket(AF_INET, SOCK_STREAM, 0);
        sockaddr_in a{};
        a.sin_family = AF_INET;
        a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
        ::bind(lfd_, reinterpret_cast<sockaddr*>(&a), sizeof a);
        socklen_t len = sizeof a;
        ::getsockname(lfd_, reinterpret_cast<sockaddr*>(&a), &len);
        port_ = ntohs(a.sin_port);
        ::listen(lfd_, 16);
        acceptor_ = std::thread([this] { accept_loop(); });
    }
    ~lossy_proxy()
    {
        stop_ = true;
        acceptor_.join();
        std::vector<std::thread> ts;
        {
            const std::lock_guard lock(mu_);
            ts.swap(threads_);
        }
        for (auto& t : ts)
            t.join();
        ::close(lfd_);
    }
    int port() const { return port_; }
    void arm(std::string needle)
    {
        const std::lock_guard lock(mu_);
        needle_ = std::move(needle);
    }
    int drops() const { return drops_; }
    int accepted() const { return accepted_; }

private:
    void accept_loop()
    {
        while (!stop_) {
            pollfd p{lfd_, POLLIN, 0};
            if (::poll(&p, 1, 20) <= 0)
                continue;
            const int c = ::accept(lfd_, nullptr, nullptr);
            if (c < 0)
                continue;
            const int s = ::socket(AF_INET, SOCK_STREAM, 0);
            sockaddr_in a{};
            a.sin_family = AF_INET;
            a.sin_port = htons(static_cast<std::uint16_t>(upstream_));
            a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
            if (::connect(s, reinterpret_cast<sockaddr*>(&a), sizeof a) != 0) {
                ::close(s);
                ::close(c);
                continue;
            }
            ++accepted_;
            const std::lock_guard lock(mu_);
            threads_.emplace_back([this, c, s] { relay(c, s); });
        }
    }
    void relay(int c, int s)
    {
        bool doomed = false;
        char buf[65536];
        while (!stop_) {
            pollfd p[2] = {{c, POLLIN, 0}, {s, POLLIN, 0}};
            if (::poll(p, 2, 20) <= 0)
                continue;
            if (p[0].revents != 0) {
                const auto n = ::read(c, buf, sizeof buf);
                if (n <= 0)
                    break;
                {
                    const std::lock_guard lock(mu_);
                    if (!needle_.empty() &&
                        std::string_view(buf, static_cast<std::size_t>(n)).find(needle_) !=
                            std::string_view::npos) {
                        doomed = true;
                        needle_.clear();
                    }
                }
                if (::write(s, buf, static_cast<std::size_t>(n)) != n)
                    break;
            }
            if (p[1].revents != 0) {
                const auto n = ::read(s, buf, sizeof buf);
                if (n <= 0)
                    break;
                if (doomed) {
                    ++drops_; // the reply is lost with the connection
                    break;
                }
                if (::write(c, buf, static_cast<std::size_t>(n)) != n)
                    break;
            }
        }
        ::close(c);
        ::close(s);
    }

    int upstream_;
    int lfd_ = -1;
    int port_ = 0;
    std::atomic<bool> stop_{false};
    std::atomic<int> drops_{0}, accepted_{0};
    std::mutex mu_;
    std::string needle_;
    std::vector<std::thread> threads_;
    std::thread acceptor_;
};

} // namespace

BOOST_AUTO_TEST_SUITE(redis_store, *boost::unit_test::precondition(have_redis))

// Amounts past 2^53 (9,007,199,254,740,992 units) with odd low digits: Redis keeps the exact
// integer sums, a cap is checked to the unit, and another process reads the same sums.
// A rate shared by two processes' stores (a gateway key's rpm in a fleet): three a minute
// between them, refilled one every 20 s, each limiter on its own; a rate whose step is no
// whole number of microseconds gives its whole burst; the asynchronous form answers the same;
// the memory store keeps none.
BOOST_AUTO_TEST_CASE(a_rate_is_shared_by_the_stores_of_a_fleet)
{
    redis_server server;
    BOOST_TEST_REQUIRE(server.running());
    const auto p = params_for(server, "rated");
    auto a = open_store(p);
    auto b = open_store(p);
    std::vector<std::int64_t> waits;
    for (int i = 0; i < 5; ++i) {
        std::int64_t wait = -1;
        BOOST_TEST_REQUIRE(!(i % 2 == 0 ? a : b)->take_rated_request("key:k1", 3, wait));
        waits.push_back(wait);
    }
    BOOST_TEST(waits[0] == 0);
    BOOST_TEST(waits[1] == 0);
    BOOST_TEST(waits[2] == 0);
    // The fourth is due when the first of the minute's three has refilled: 20 s, less the
    // few milliseconds since.
    BOOST_TEST(waits[3] > 19'000);
    BOOST_TEST(waits[3] <= 20'000);
    BOOST_TEST(waits[4] > 19'000); // a refusal takes nothing
    std::int64_t other = -1;
    BOOST_TEST(!b->take_rated_request("key:k2", 3, other));
    BOOST_TEST(other == 0);

    // 60 s / 9 is no whole number: all nine at once are taken, the tenth waits about 6.7 s.
    for (int i = 0; i < 9; ++i) {
        std::int64_t wait = -1;
        BOOST_TEST(!a->take_rated_request("key:k9", 9, wait));
        BOOST_TEST(wait == 0, "request " << i + 1 << " of 9 waits " << wait << " ms");
    }
    std::int64_t tenth = -1;
    BOOST_TEST(!a->take_rated_request("key:k9", 9, tenth));
    BOOST_TEST(tenth > 6'000);
    BOOST_TEST(tenth <= 6'667);

    // Asynchronously, on the store's thread: the same count.
    auto ask = [&](const std::string& limiter) {
        std::promise<std::pair<boost::system::error_code, std::int64_t>> answer;
        b->async_take_rated_request(limiter, 2, [&](boost::system::error_code ec, std::int64_t w) {
            answer.set_value({ec, w});
        });
        return answer.get_future().get();
    };
    const auto first = ask("key:async");
    const auto second = ask("key:async");
    const auto third = ask("key:async");
    BOOST_TEST(!first.first);
    BOOST_TEST(first.second == 0);
    BOOST_TEST(!second.first);
    BOOST_TEST(second.second == 0);
    BOOST_TEST(!third.first);
    BOOST_TEST(third.second > 29'000);

    auto memory = frugal::make_memory_store();
    std::int64_t w = -1;
    BOOST_TEST((memory->take_rated_request("key:k1", 3, w) == frugal::error::not_found));

    // Through guards, awaited on an io_context (as the gateway asks): the fleet's answer over
    // Redis, completing on the awaiting thread; not_found over the memory store.
    auto shared = open_guard(a, money::from_units(1'000'000'000'000));
    auto local = open_guard(memory, money::from_units(1'000'000'000'000));
    asio::io_context io;
    std::vector<std::pair<boost::system::error_code, std::int64_t>> got;
    bool on_io_thread = true;
    asio::co_spawn(
        io,
        [&]() -> asio::awaitable<void> {
            const auto me = std::this_thread::get_id();
            for (auto* g : {&shared, &shared, &local}) {
                auto [ec, wait] = co_await g->async_take_rated_request(
                    "key:guarded", 1, asio::as_tuple(asio::use_awaitable));
                on_io_thread = on_io_thread && std::this_thread::get_id() == me;
                got.emplace_back(ec, wait);
            }
        },
        asio::detached);
    io.run();
    BOOST_TEST_REQUIRE(got.size() == 3u);
    BOOST_TEST(!got[0].first);
    BOOST_TEST(got[0].second == 0);
    BOOST_TEST(!got[1].first);
    BOOST_TEST(got[1].second > 59'000);
    BOOST_TEST((got[2].first == frugal::error::not_found));
    BOOST_TEST(on_io_thread);
}

BOOST_AUTO_TEST_CASE(exact_sums_past_2_53)
{
    redis_server server;
    BOOST_TEST_REQUIRE(server.running());
    const auto p = params_for(server, "exact");
    // 10^16 + 3 is no double: it rounds to 10^16 + 4, so a sum done in doubles would let one
    // unit past it.
    const money cap = money::from_units(10'000'000'000'000'003);
    const money team_cap = money::from_units(100'000'000'000'000'007);
    auto charges = [&](money amount) {
        return std::vector<frugal::budget_charge_view>{
            {"global", 0, amount, cap, 0}, {"team:a", 0, amount, team_cap, 1}};
    };
    const std::int64_t a1 = 4'900'000'000'000'001, c1 = 4'899'999'999'999'999;
    const std::int64_t a2 = 4'900'000'000'000'003, c2 = 4'800'000'000'000'007;
    const std::int64_t committed = c1 + c2; // 9,700,000,000,000,006 > 2^53
    BOOST_TEST_REQUIRE(committed > (std::int64_t{1} << 53));
    {
        auto a = open_store(p);
        frugal::budget_store_state st;
        BOOST_TEST_REQUIRE(!a->load(st));
        BOOST_TEST(!reserve(*a, 1, charges(money::from_units(a1))));
        BOOST_TEST(!reserve(*a, 2, charges(money::from_units(a2))));
        raw_redis raw(server.port());
        BOOST_TEST_REQUIRE(raw.ok());
        BOOST_TEST(raw.hget("exact:spend", "r:0:global") == std::to_string(a1 + a2));
        BOOST_TEST(!settle(*a, 1, charges({}), money::from_units(c1)));
        BOOST_TEST(!settle(*a, 2, charges({}), money::from_units(c2)));
        BOOST_TEST_REQUIRE(!a->sync(5s));
        BOOST_TEST(raw.hget("exact:spend", "c:0:global") == std::to_string(committed));
        BOOST_TEST(raw.hget("exact:spend", "c:0:team:a") == std::to_string(committed));
        BOOST_TEST(raw.hint("exact:spend", "r:0:global") == 0);
        BOOST_TEST(raw.hint("exact:spend", "r:0:team:a") == 0);
    }
    // Another process: the same sums, and the cap to the unit.
    auto b = open_store(p);
    BOOST_TEST(loaded_committed(*b, "global") == committed);
    BOOST_TEST(loaded_committed(*b, "team:a") == committed);
    const std::int64_t headroom = cap.units() - committed; // 299,999,999,999,997
    BOOST_TEST(
        reserve(*b, 1, charges(money::from_units(headroom + 1))) ==
        frugal::error::budget_exhausted);
    BOOST_TEST(!reserve(*b, 2, charges(money::from_units(headroom))));
    BOOST_TEST(reserve(*b, 3, charges(money::from_units(1))) == frugal::error::budget_exhausted);
    BOOST_TEST(!settle(*b, 2, charges({}), money::from_units(headroom)));
    BOOST_TEST(!b->release(1)); // the refused one: releasing it must give back nothing
    BOOST_TEST(!b->release(3));
    BOOST_TEST_REQUIRE(!b->sync(5s));
    raw_redis raw(server.port());
    BOOST_TEST(raw.hget("exact:spend", "c:0:global") == "10000000000000003");
    BOOST_TEST(raw.hint("exact:spend", "r:0:global") == 0);
    BOOST_TEST(raw.hint("exact:spend", "c:0:team:a") == cap.units());
    // A guard opened over the fleet's spend sees it exactly.
    auto g = open_guard(open_store(p), cap);
    BOOST_TEST(snapshot_committed(g).units() == cap.units());
    auto r = g.try_reserve(request(1));
    BOOST_TEST(!r);
    BOOST_TEST(r.error() == frugal::error::budget_exhausted);
}

// Redis gone: a paid reservation is refused with budget_store_failed; with fail_open it is
// granted within the process's own cap, and its settlement lands once Redis is back.
BOOST_AUTO_TEST_CASE(fail_closed_and_fail_open)
{
    redis_server server;
    BOOST_TEST_REQUIRE(server.running());
    const money cap = *money::parse("1");
    auto closed_store = open_store(params_for(server, "closed"));
    auto closed = open_guard(closed_store, cap);
    auto open_params = params_for(server, "open");
    open_params.fail_open = true;
    auto open_store_ = open_store(open_params);
    auto open = open_guard(open_store_, cap);
    frugal::diagnostics diag;
    {
        // Both reach Redis while it is up.
        auto r1 = closed.try_reserve(request(1), &diag);
        BOOST_TEST_REQUIRE(r1.has_value(), diag.message);
        auto r2 = open.try_reserve(request(2), &diag);
        BOOST_TEST_REQUIRE(r2.has_value(), diag.message);
        raw_redis raw(server.port());
        BOOST_TEST(raw.hint("closed:spend", "r:0:global") == r1->amount().units());
        BOOST_TEST(raw.hint("open:spend", "r:0:global") == r2->amount().units());
    }
    BOOST_TEST_REQUIRE(!closed_store->sync(5s));
    BOOST_TEST_REQUIRE(!open_store_->sync(5s));
    server.stop();

    auto denied = closed.try_reserve(request(3));
    BOOST_TEST(!denied);
    BOOST_TEST(denied.error() == frugal::error::budget_store_failed, denied.error().message());
    // Refused again, not only the first time after the loss.
    auto denied2 = closed.try_reserve(request(4));
    BOOST_TEST(!denied2);
    BOOST_TEST(denied2.error() == frugal::error::budget_store_failed, denied2.error().message());

    auto granted = open.try_reserve(request(5), &diag);
    BOOST_TEST_REQUIRE(granted.has_value(), diag.message);
    BOOST_TEST_REQUIRE(granted->active());
    const money amount = granted->amount();
    BOOST_TEST(amount > money());
    // The process's own cap still holds while failing open: 1 USD fits this few of them.
    const std::int64_t fit = cap.units() / amount.units();
    std::vector<frugal::reservation> more;
    for (std::int64_t i = 1; i < fit; ++i) {
        auto got = open.try_reserve(request(10 + static_cast<std::uint64_t>(i)), &diag);
        BOOST_TEST_REQUIRE(got.has_value(), diag.message);
        more.push_back(std::move(*got));
    }
    auto over = open.try_reserve(request(99));
    BOOST_TEST(!over);
    BOOST_TEST(over.error() == frugal::error::budget_exhausted, over.error().message());
    for (auto& m : more)
        m.release();

    // Settled while Redis is down, then Redis is back (empty: no persistence): the
    // settlement owed lands there, once.
    const money cost = money::from_units(amount.units() - 12'345);
    granted->mark_sent();
    frugal::attempt_record rec;
    rec.cost = cost;
    BOOST_TEST(!granted->settle(rec));
    redis_server again(server.port());
    BOOST_TEST_REQUIRE(again.running());
    BOOST_TEST_REQUIRE(!open_store_->sync(10s));
    raw_redis raw(again.port());
    BOOST_TEST(raw.hint("open:spend", "c:0:global") == cost.units());
    BOOST_TEST(raw.hint("open:spend", "r:0:global") == 0);
    // And the fail-closed guard reserves again once Redis is back.
    frugal::reservation back;
    for (int i = 0; i < 100 && !back.active(); ++i) {
        auto got = closed.try_reserve(request(200), &diag);
        if (got)
            back = std::move(*got);
        else
            std::this_thread::sleep_for(100ms);
    }
    BOOST_TEST(back.active(), diag.message);
}

// A process dies holding a reservation: after its lease the fleet counts it as spend
// (read_swept, another process's load), and a proven bill replaces it once.
BOOST_AUTO_TEST_CASE(lease_expiry)
{
    redis_server server;
    BOOST_TEST_REQUIRE(server.running());
    auto p = params_for(server, "lease");
    p.lease = 1500ms; // long enough that a slow (sanitizer) run still checks inside it
    const money cap = money::from_units(10'000'000'000'000);
    const std::int64_t held = 1'234'567'890'123;
    const std::vector<frugal::budget_charge_view> charges{
        {"global", 0, money::from_units(held), cap, 0}};
    {
        auto dying = open_store(p);
        frugal::budget_store_state st;
        BOOST_TEST_REQUIRE(!dying->load(st));
        BOOST_TEST_REQUIRE(!reserve(*dying, 1, charges));
        BOOST_TEST(!dying->note_generation(1, "gen-crashed-1"));
        BOOST_TEST_REQUIRE(!dying->sync(5s));
        // Dropped without settling: the crash.
    }
    auto other = open_store(p);
    raw_redis raw(server.port());
    std::vector<frugal::swept_reservation> swept;
    BOOST_TEST_REQUIRE(!other->read_swept(swept));
    BOOST_TEST(swept.empty()); // still within its lease
    BOOST_TEST(raw.hint("lease:spend", "r:0:global") == held);
    BOOST_TEST(loaded_committed(*other, "global") == 0);

    std::this_thread::sleep_for(2000ms);
    BOOST_TEST_REQUIRE(!other->read_swept(swept));
    BOOST_TEST_REQUIRE(swept.size() == 1u);
    BOOST_TEST(swept[0].generation_id == "gen-crashed-1");
    BOOST_TEST_REQUIRE(swept[0].charges.size() == 1u);
    BOOST_TEST(swept[0].charges[0].budget == "global");
    BOOST_TEST(swept[0].charges[0].amount.units() == held);
    BOOST_TEST(raw.hint("lease:spend", "r:0:global") == 0);
    BOOST_TEST(loaded_committed(*other, "global") == held);
    // Spend, not headroom: what is left is the cap less it.
    const std::vector<frugal::budget_charge_view> rest{
        {"global", 0, money::from_units(cap.units() - held + 1), cap, 0}};
    BOOST_TEST(reserve(*other, 1, rest) == frugal::error::budget_exhausted);

    // Swept less than a lease ago: its process may be slow, not dead.
    frugal::attempt_record rec;
    rec.cost = money::from_units(1'000'000'000'001);
    BOOST_TEST(other->settle_swept(swept[0], rec) == frugal::error::not_found);
    BOOST_TEST(loaded_committed(*other, "global") == held);
    std::this_thread::sleep_for(3200ms);
    BOOST_TEST(!other->settle_swept(swept[0], rec));
    BOOST_TEST(loaded_committed(*other, "global") == rec.cost.units());
    BOOST_TEST(other->settle_swept(swept[0], rec) == frugal::error::not_found);
    BOOST_TEST(loaded_committed(*other, "global") == rec.cost.units());
    BOOST_TEST_REQUIRE(!other->read_swept(swept));
    BOOST_TEST(swept.empty());
}

// The reply to a settlement's batch is lost after Redis applied it: the store reconnects,
// resends the batch, and the settlement counts once.
BOOST_AUTO_TEST_CASE(lost_reply_resent_once)
{
    redis_server server;
    BOOST_TEST_REQUIRE(server.running());
    lossy_proxy proxy(server.port());
    auto p = params_for(server, "lost");
    p.url = "redis://127.0.0.1:" + std::to_string(proxy.port()) + "/0";
    auto s = open_store(p);
    frugal::budget_store_state st;
    BOOST_TEST_REQUIRE(!s->load(st));
    const money cap = money::from_units(100'000'000'000'000);
    const std::vector<frugal::budget_charge_view> charges{
        {"global", 0, money::from_units(9'000'000'000'001), cap, 0}};
    BOOST_TEST_REQUIRE(!reserve(*s, 1, charges));
    BOOST_TEST_REQUIRE(!reserve(*s, 2, charges));
    const int before = proxy.accepted();
    const std::int64_t cost = 7'777'777'777'777;
    proxy.arm(std::to_string(cost));
    BOOST_TEST(!settle(*s, 1, charges, money::from_units(cost)));
    BOOST_TEST_REQUIRE(!s->sync(10s));
    BOOST_TEST(proxy.drops() == 1); // the reply was lost...
    BOOST_TEST(proxy.accepted() > before); // ...and the store came back on a new connection
    raw_redis raw(server.port());
    BOOST_TEST(raw.hint("lost:spend", "c:0:global") == cost);
    BOOST_TEST(raw.hint("lost:spend", "r:0:global") == 9'000'000'000'001); // reservation 2
    // The connection works on: the other reservation settles too, once.
    BOOST_TEST(!settle(*s, 2, charges, money::from_units(5)));
    BOOST_TEST_REQUIRE(!s->sync(10s));
    BOOST_TEST(raw.hint("lost:spend", "c:0:global") == cost + 5);
    BOOST_TEST(raw.hint("lost:spend", "r:0:global") == 0);
    auto other = open_store(params_for(server, "lost"));
    BOOST_TEST(loaded_committed(*other, "global") == cost + 5);
}

// Sixteen async reservations at once through two guards (two processes' stores) on one
// io_context, against a fleet cap that fits exactly five: five granted, the rest refused.
BOOST_AUTO_TEST_CASE(async_reserve_fleet_cap)
{
    redis_server server;
    BOOST_TEST_REQUIRE(server.running());
    // What one request reserves, from a guard of its own.
    money amount;
    {
        auto probe = open_guard(nullptr, *money::parse("1000"));
        auto r = probe.try_reserve(request(1));
        BOOST_TEST_REQUIRE(r.has_value());
        amount = r->amount();
    }
    constexpr int fits = 5, asked = 16;
    const money cap = amount * fits;
    const auto p = params_for(server, "async");
    auto sa = open_store(p);
    auto sb = open_store(p);
    auto ga = open_guard(sa, cap);
    auto gb = open_guard(sb, cap);
    BOOST_TEST_REQUIRE(ga.reserves_async());

    asio::io_context ioc;
    std::vector<frugal::reservation> granted;
    int exhausted = 0, other = 0;
    std::int64_t peak = 0;
    raw_redis raw(server.port());
    for (int i = 0; i < asked; ++i) {
        auto& g = i % 2 == 0 ? ga : gb;
        asio::co_spawn(
            ioc,
            [&, i]() -> asio::awaitable<void> {
                auto [ec, r] = co_await g.async_reserve(
                    request(static_cast<std::uint64_t>(100 + i)),
                    asio::as_tuple(asio::use_awaitable));
                if (!ec && r.active())
                    granted.push_back(std::move(r));
                else if (ec == frugal::error::budget_exhausted)
                    ++exhausted;
                else
                    ++other;
                const auto held = raw.hint("async:spend", "r:0:global") +
                                  raw.hint("async:spend", "c:0:global");
                peak = std::max(peak, held);
            },
            asio::detached);
    }
    ioc.run();
    BOOST_TEST(static_cast<int>(granted.size()) == fits);
    BOOST_TEST(exhausted == asked - fits);
    BOOST_TEST(other == 0);
    BOOST_TEST(peak <= cap.units());
    BOOST_TEST(raw.hint("async:spend", "r:0:global") == amount.units() * fits);
    std::int64_t sum = 0;
    std::int64_t k = 1;
    for (auto& r : granted) {
        r.mark_sent();
        frugal::attempt_record rec;
        rec.cost = money::from_units(amount.units() - 1000 * k + 7);
        sum += rec.cost.units();
        ++k;
        BOOST_TEST(!r.settle(rec));
    }
    BOOST_TEST_REQUIRE(!sa->sync(5s));
    BOOST_TEST_REQUIRE(!sb->sync(5s));
    BOOST_TEST(raw.hint("async:spend", "c:0:global") == sum);
    BOOST_TEST(raw.hint("async:spend", "r:0:global") == 0);
    BOOST_TEST(raw.hint("async:spend", "c:0:global") <= cap.units());
}

// Awaited reservations travel on a link of the caller's own io_context, so a reply wakes the
// caller's thread alone. What must hold: the sums stay exact; `run` still returns once the
// reservations are done (an idle link keeps no work); the link dies with its io_context or its
// store, whichever goes first, without touching the other; and a reply lost on it refuses the
// reservation and gives its hold back, as on the pipe.
namespace {

struct awaited_round {
    int granted = 0, refused = 0;
    std::int64_t cost = 0;
};

// `each` reservations in each of `cascades` coroutines, one after another, each settled at
// its reservation minus a few units; `max_tokens` shapes the amount reserved.
void reserve_and_settle_on(
    asio::io_context& ioc, frugal::budget_guard& g, int cascades, int each, awaited_round& out,
    std::uint64_t first_id, int max_tokens = 512)
{
    for (int c = 0; c < cascades; ++c)
        asio::co_spawn(
            ioc,
            [&g, &out, c, each, first_id, max_tokens]() -> asio::awaitable<void> {
                for (int i = 0; i < each; ++i) {
                    auto req = request(first_id + static_cast<std::uint64_t>(c * each + i));
                    req.max_tokens = max_tokens;
                    auto [ec, r] =
                        co_await g.async_reserve(req, asio::as_tuple(asio::use_awaitable));
                    if (ec || !r.active()) {
                        ++out.refused;
                        continue;
                    }
                    ++out.granted;
                    r.mark_sent();
                    frugal::attempt_record rec;
                    rec.cost = money::from_units(r.amount().units() - 3 - i);
                    out.cost += rec.cost.units();
                    BOOST_TEST(!r.settle(rec));
                }
            },
            asio::detached);
}

} // namespace

BOOST_AUTO_TEST_CASE(reservations_on_the_callers_io_context)
{
    redis_server server;
    BOOST_TEST_REQUIRE(server.running());
    raw_redis raw(server.port());
    const money cap = *money::parse("1000");
    std::int64_t spent = 0;
    {
        auto store = open_store(params_for(server, "near"));
        auto g = open_guard(store, cap);
        for (int round = 0; round < 2; ++round) {
            // A fresh io_context each round: the first's link closed with it.
            asio::io_context ioc;
            awaited_round got;
            reserve_and_settle_on(ioc, g, 4, 60, got, 1000 + 1000 * round);
            ioc.run_for(30s);
            BOOST_TEST(ioc.stopped()); // ran out of work: no link holds it
            BOOST_TEST(got.granted == 240);
            BOOST_TEST(got.refused == 0);
            spent += got.cost;
            if (round == 0)
                BOOST_TEST(raw.clients() == 3); // this one, the pipe, the io_context's link
        }
        BOOST_TEST_REQUIRE(!store->sync(5s));
        BOOST_TEST(raw.hint("near:spend", "c:0:global") == spent);
        BOOST_TEST(raw.hint("near:spend", "r:0:global") == 0);

        // The store (and its guard) goes first, with the link open: the io_context, run
        // again and destroyed, finds nothing of the store.
        asio::io_context ioc;
        {
            auto s2 = open_store(params_for(server, "near"));
            auto g2 = open_guard(s2, cap);
            awaited_round got;
            reserve_and_settle_on(ioc, g2, 2, 20, got, 5000);
            ioc.run_for(30s);
            BOOST_TEST(got.granted == 40);
            spent += got.cost;
            BOOST_TEST_REQUIRE(!s2->sync(5s));
        }
        ioc.restart();
        ioc.run_for(5s);
        BOOST_TEST(ioc.stopped());
    }
    BOOST_TEST(raw.hint("near:spend", "c:0:global") == spent);

    // A reply lost on the link: the reservation is refused, and the hold Redis applied is
    // released through the pipe; the store goes on.
    lossy_proxy proxy(server.port());
    auto p = params_for(server, "near");
    p.url = "redis://127.0.0.1:" + std::to_string(proxy.port()) + "/0";
    auto store = open_store(p);
    auto g = open_guard(store, cap);
    asio::io_context ioc;
    awaited_round warm;
    reserve_and_settle_on(ioc, g, 1, 20, warm, 7000); // the link is open and in use
    ioc.run_for(30s);
    BOOST_TEST_REQUIRE(warm.granted == 20);
    spent += warm.cost;
    money odd;
    {
        auto probe = open_guard(nullptr, cap);
        auto req = request(1);
        req.max_tokens = 777;
        auto r = probe.try_reserve(req);
        BOOST_TEST_REQUIRE(r.has_value());
        odd = r->amount();
    }
    const std::string units = std::to_string(odd.units());
    proxy.arm("$" + std::to_string(units.size()) + "\r\n" + units + "\r\n");
    awaited_round lost;
    reserve_and_settle_on(ioc, g, 1, 1, lost, 8000, 777);
    ioc.restart();
    ioc.run_for(30s);
    BOOST_TEST(proxy.drops() == 1);
    BOOST_TEST(lost.granted == 0);
    BOOST_TEST(lost.refused == 1);
    awaited_round after;
    reserve_and_settle_on(ioc, g, 2, 10, after, 9000);
    ioc.restart();
    ioc.run_for(30s);
    BOOST_TEST(after.granted == 20);
    spent += after.cost;
    BOOST_TEST_REQUIRE(!store->sync(5s));
    BOOST_TEST(raw.hint("near:spend", "c:0:global") == spent);
    BOOST_TEST(raw.hint("near:spend", "r:0:global") == 0);
}

BOOST_AUTO_TEST_SUITE_END()
