// Every public async operation with every completion token users reach for: a plain callback,
// the default token (deferred, so `co_await op()` works), use_awaitable, as_tuple(use_awaitable),
// use_future, and inside an `||` race, where the losing operation must complete promptly with
// operation_aborted (which proves the caller's cancellation slot reaches the operation).
#include "client_fixture.hpp"

#include <frugal/budget.hpp>
#include <frugal/router.hpp>

#include <boost/asio/as_tuple.hpp>
#include <boost/asio/bind_executor.hpp>
#include <boost/asio/deferred.hpp>
#include <boost/asio/dispatch.hpp>
#include <boost/asio/strand.hpp>
#include <boost/asio/experimental/awaitable_operators.hpp>
#include <boost/asio/use_future.hpp>
#include <boost/test/unit_test.hpp>

#include <functional>
#include <future>
#include <thread>
#include <atomic>

using namespace frugal::test;
using namespace boost::asio::experimental::awaitable_operators;
using boost::system::error_code;
namespace asio = boost::asio;

namespace {

// One async operation of the public API, started with any token.
struct chat_op {
    static constexpr const char* name = "async_chat";
    frugal::chat_client& c;
    const char* prompt = "Hi";
    template <class Token = asio::deferred_t>
    auto operator()(Token&& t = {}) const
    {
        return c.async_chat(request("openai/gpt-5-mini", prompt), std::forward<Token>(t));
    }
};
struct models_op {
    static constexpr const char* name = "async_models";
    frugal::chat_client& c;
    template <class Token = asio::deferred_t>
    auto operator()(Token&& t = {}) const
    {
        return c.async_models(std::forward<Token>(t));
    }
};
struct generation_op {
    static constexpr const char* name = "async_generation";
    frugal::chat_client& c;
    std::string id;
    template <class Token = asio::deferred_t>
    auto operator()(Token&& t = {}) const
    {
        return c.async_generation(id, std::forward<Token>(t));
    }
};
struct key_op {
    static constexpr const char* name = "async_key_info";
    frugal::chat_client& c;
    template <class Token = asio::deferred_t>
    auto operator()(Token&& t = {}) const
    {
        return c.async_key_info(std::forward<Token>(t));
    }
};
struct start_stream_op {
    static constexpr const char* name = "async_start_stream";
    frugal::chat_client& c;
    frugal::chat_stream& s;
    // Long enough that five reads find text however much each read takes in.
    const char* prompt = "Hi [sim tokens=2000]";
    template <class Token = asio::deferred_t>
    auto operator()(Token&& t = {}) const
    {
        return c.async_start_stream(
            request("openai/gpt-5-mini", prompt), s, std::forward<Token>(t));
    }
};
struct read_delta_op {
    static constexpr const char* name = "async_read_delta";
    frugal::chat_stream& s;
    template <class Token = asio::deferred_t>
    auto operator()(Token&& t = {}) const
    {
        return s.async_read_delta(std::forward<Token>(t));
    }
};

struct read_delta_into_op {
    static constexpr const char* name = "async_read_delta into a delta";
    frugal::chat_stream& s;
    frugal::chat_delta& d; // outlives every read
    template <class Token = asio::deferred_t>
    auto operator()(Token&& t = {}) const
    {
        return s.async_read_delta(d, std::forward<Token>(t));
    }
};

struct reserve_op {
    static constexpr const char* name = "async_reserve";
    frugal::budget_guard& g;
    template <class Token = asio::deferred_t>
    auto operator()(Token&& t = {}) const
    {
        frugal::reserve_request r;
        r.model = "openai/gpt-5-mini";
        r.prompt_bytes = 100;
        r.max_tokens = 64;
        return g.async_reserve(r, std::forward<Token>(t));
    }
};
struct complete_op {
    static constexpr const char* name = "async_complete";
    frugal::router& r;
    const char* prompt = "Name a colour.";
    template <class Token = asio::deferred_t>
    auto operator()(Token&& t = {}) const
    {
        return r.async_complete(request("google/gemma-4-31b-it:free", prompt), std::forward<Token>(t));
    }
};

// A cascade of the simulator's free model and a paid flagship, priced from its catalog.
frugal::cascade_policy two_tiers()
{
    frugal::cascade_policy p;
    p.tiers = {"google/gemma-4-31b-it:free", "anthropic/claude-fable-5"};
    p.free_tier.per_minute = 100000;
    p.free_tier.per_day = 100000;
    return p;
}

frugal::price_catalog catalog_of(client_fixture& f)
{
    std::vector<frugal::model_info> models;
    bool done = false;
    f.client.async_models([&](error_code ec, std::vector<frugal::model_info> m) {
        BOOST_TEST_REQUIRE(!ec);
        models = std::move(m);
        done = true;
    });
    f.io.restart();
    f.io.run();
    BOOST_TEST_REQUIRE(done);
    return frugal::price_catalog(models);
}

frugal::budget_guard guard_of(const frugal::price_catalog& cat, const char* cap)
{
    frugal::budget_params p;
    p.budgets = {{"global", *frugal::money::parse(cap)}};
    p.max_wait = std::chrono::seconds(10);
    frugal::diagnostics diag;
    auto g = frugal::budget_guard::open(p, cat, nullptr, &diag);
    BOOST_TEST_REQUIRE(g.has_value(), diag.message);
    return std::move(*g);
}

// The error of a completion (error first, whatever follows).
template <class... Values>
error_code first(const std::tuple<error_code, Values...>& t)
{
    return std::get<0>(t);
}

template <class Op>
asio::awaitable<error_code> with_default_token(Op op)
{
    try {
        co_await op(); // deferred: co_await works without naming a token
        co_return error_code{};
    } catch (const boost::system::system_error& e) {
        co_return e.code();
    }
}

template <class Op>
asio::awaitable<error_code> with_use_awaitable(Op op)
{
    try {
        co_await op(asio::use_awaitable);
        co_return error_code{};
    } catch (const boost::system::system_error& e) {
        co_return e.code();
    }
}

template <class Op>
asio::awaitable<error_code> with_as_tuple(Op op)
{
    auto result = co_await op(asio::as_tuple(asio::use_awaitable));
    co_return first(result);
}

// Both completions of a race, so the loser's error can be checked too.
template <class Op>
asio::awaitable<std::pair<error_code, std::chrono::milliseconds>>
race(Op op, std::chrono::milliseconds limit)
{
    asio::steady_timer timer(co_await asio::this_coro::executor);
    timer.expires_after(limit);
    const auto t0 = std::chrono::steady_clock::now();
    auto a = op(asio::as_tuple(asio::use_awaitable));
    auto b = timer.async_wait(asio::as_tuple(asio::use_awaitable));
    auto winner = co_await (std::move(a) || std::move(b));
    const auto took = std::chrono::duration_cast<std::chrono::milliseconds>(
        std::chrono::steady_clock::now() - t0);
    co_return std::pair{
        winner.index() == 0 ? first(std::get<0>(winner))
                            : error_code(asio::error::operation_aborted),
        took};
}

// Runs `make()`'s operation with every token; each must succeed.
template <class Make>
void every_token_succeeds(client_fixture& f, Make make)
{
    const char* name = decltype(make())::name;
    {
        std::optional<error_code> got;
        // Bound to the test's io_context: an operation of an object with no executor of its
        // own (the budget guard) completes a plain callback on the system executor.
        make()(asio::bind_executor(f.io, [&got](error_code ec, auto&&...) { got = ec; }));
        f.io.restart();
        f.io.run();
        BOOST_TEST((got && !*got), name << " with a callback");
    }
    BOOST_TEST(!run(f.io, with_default_token(make())), name << " with the default token");
    BOOST_TEST(!run(f.io, with_use_awaitable(make())), name << " with use_awaitable");
    {
        const auto ec = run(f.io, with_as_tuple(make()));
        BOOST_TEST(!ec, name << " with as_tuple: " << ec.message());
    }
    {
        auto future = make()(asio::use_future);
        f.io.restart();
        f.io.run();
        BOOST_CHECK_NO_THROW(future.get());
    }
}

} // namespace

BOOST_AUTO_TEST_SUITE(token_matrix)

BOOST_AUTO_TEST_CASE(chat_models_generation_and_key_with_every_token)
{
    client_fixture f;
    every_token_succeeds(f, [&] { return chat_op{f.client}; });
    every_token_succeeds(f, [&] { return models_op{f.client}; });
    const auto r = f.chat(request("openai/gpt-5-mini", "Hi"));
    every_token_succeeds(f, [&] { return generation_op{f.client, r.response.id}; });
    every_token_succeeds(f, [&] { return key_op{f.client}; });
}

BOOST_AUTO_TEST_CASE(streams_with_every_token)
{
    client_fixture f;
    std::vector<std::unique_ptr<frugal::chat_stream>> streams;
    every_token_succeeds(f, [&] {
        streams.push_back(std::make_unique<frugal::chat_stream>());
        return start_stream_op{f.client, *streams.back()};
    });
    // Each started stream serves one read per token, in both forms.
    frugal::chat_delta d;
    for (auto& s : streams) {
        every_token_succeeds(f, [&] { return read_delta_op{*s}; });
        every_token_succeeds(f, [&] { return read_delta_into_op{*s, d}; });
    }
}

BOOST_AUTO_TEST_CASE(the_guard_and_the_router_with_every_token)
{
    client_fixture f;
    const auto cat = catalog_of(f);
    auto g = guard_of(cat, "10");
    every_token_succeeds(f, [&] { return reserve_op{g}; });
    frugal::router r(f.client, two_tiers(), cat, guard_of(cat, "10"));
    every_token_succeeds(f, [&] { return complete_op{r}; });
    // A cascade stream read to its end, each event with another awaitable token (callbacks
    // and futures would leave a reader behind the channel's next send).
    frugal::cascade_stream s;
    r.start_stream(
        request("google/gemma-4-31b-it:free", "Name a colour."), frugal::stream_mode::stream, s);
    const auto events = run(f.io, [&]() -> asio::awaitable<int> {
        int n = 0;
        for (;;) {
            frugal::cascade_event ev;
            error_code ec;
            switch (n++ % 3) {
            case 0: ev = co_await s.async_next(); break; // deferred: throws on error
            case 1: ev = co_await s.async_next(asio::use_awaitable); break;
            default: std::tie(ec, ev) = co_await s.async_next(asio::as_tuple(asio::use_awaitable));
            }
            BOOST_TEST(!ec);
            if (ec || ev.type == frugal::cascade_event::kind::done)
                co_return n;
        }
    }());
    BOOST_TEST(events >= 2); // some text, then done
}

// async_next with the tokens a coroutine does not use: a chain of plain callbacks, and futures
// waited for while the io_context runs one handler at a time (a blocked `get()` on the io
// thread would never see its value).
BOOST_AUTO_TEST_CASE(a_cascade_stream_reads_with_callbacks_and_futures)
{
    client_fixture f;
    const auto cat = catalog_of(f);
    frugal::router r(f.client, two_tiers(), cat, guard_of(cat, "10"));

    frugal::cascade_stream s;
    r.start_stream(
        request("google/gemma-4-31b-it:free", "Name a colour."), frugal::stream_mode::stream, s);
    std::string text;
    int events = 0;
    bool done = false;
    std::function<void(error_code, frugal::cascade_event)> on_event;
    on_event = [&](error_code ec, frugal::cascade_event ev) {
        BOOST_TEST(!ec);
        ++events;
        text += ev.text;
        if (ec || ev.type == frugal::cascade_event::kind::done) {
            done = true;
            return;
        }
        s.async_next(asio::bind_executor(f.io, on_event));
    };
    s.async_next(asio::bind_executor(f.io, on_event));
    f.io.restart();
    f.io.run();
    BOOST_TEST(done);
    BOOST_TEST(events >= 2);
    BOOST_TEST(!text.empty());

    frugal::cascade_stream s2;
    r.start_stream(
        request("google/gemma-4-31b-it:free", "Name a colour."), frugal::stream_mode::stream,
        s2);
    f.io.restart();
    std::string text2;
    for (int n = 0; n < 10'000; ++n) {
        auto fut = s2.async_next(asio::use_future);
        while (fut.wait_for(std::chrono::seconds(0)) != std::future_status::ready)
            f.io.run_one();
        const auto ev = fut.get(); // throws on error
        text2 += ev.text;
        if (ev.type == frugal::cascade_event::kind::done) {
            BOOST_TEST_REQUIRE(ev.result != nullptr);
            BOOST_TEST(ev.result->response.content == text2);
            break;
        }
    }
    BOOST_TEST(!text2.empty());
    // After done: the next read fails through the future.
    auto after = s2.async_next(asio::use_future);
    while (after.wait_for(std::chrono::seconds(0)) != std::future_status::ready)
        f.io.run_one();
    BOOST_CHECK_THROW(after.get(), boost::system::system_error);
}

BOOST_AUTO_TEST_CASE(completions_run_on_the_handlers_own_executor)
{
    // A client on a strand of an io_context run by two threads. A handler that runs where the
    // client runs (its strand) may be called directly when an operation ends; one on another
    // strand, behind any_io_executor as a coroutine's executor is, is completed there. A handler
    // called off its strand would show.
    client_fixture f;
    for (const bool same : {true, false}) {
        const auto client_strand = asio::make_strand(f.io);
        const auto handler_strand = same ? client_strand : asio::make_strand(f.io);
        const asio::any_io_executor on = handler_strand;
        frugal::chat_client client(asio::any_io_executor(client_strand), f.with_url(fast_retries()));
        std::atomic<int> calls{0}, elsewhere{0};
        const auto seen = [&] {
            ++calls;
            if (!handler_strand.running_in_this_thread())
                ++elsewhere;
        };
        frugal::chat_stream s;
        std::string text;
        std::function<void(error_code, frugal::chat_delta)> on_delta;
        // The next read is started from the client's strand too.
        const auto read_next = [&] {
            asio::dispatch(client_strand, [&] {
                if (!s.done())
                    s.async_read_delta(asio::bind_executor(on, on_delta));
            });
        };
        on_delta = [&](error_code ec, frugal::chat_delta d) {
            seen();
            text += d.content;
            if (!ec)
                read_next();
        };
        // Started from the client's strand, as the client must be used.
        asio::dispatch(client_strand, [&] {
            client.async_chat(
                request("openai/gpt-5-mini", "Hi"),
                asio::bind_executor(on, [&](error_code ec, const frugal::chat_response&) {
                    BOOST_CHECK(!ec);
                    seen();
                }));
            client.async_start_stream(
                request("openai/gpt-5-mini", "Stream [sim tokens=20]"), s,
                asio::bind_executor(on, [&](error_code ec) {
                    seen();
                    if (!ec)
                        read_next();
                }));
        });
        f.io.restart();
        std::thread second([&] { f.io.run(); });
        f.io.run();
        second.join();
        BOOST_TEST(calls.load() >= 4, same); // the chat, the start, deltas and the end
        BOOST_TEST(elsewhere.load() == 0, same);
        BOOST_TEST(s.done(), same);
        BOOST_TEST(text == s.response().content, same);
    }
}

BOOST_AUTO_TEST_CASE(errors_arrive_through_every_token)
{
    client_fixture f;
    const auto e = make_error_code(frugal::error::insufficient_credits);
    auto make = [&] { return chat_op{f.client, "Hi [sim fault=402]"}; };
    BOOST_TEST(run(f.io, with_default_token(make())) == e); // thrown by co_await, caught
    BOOST_TEST(run(f.io, with_use_awaitable(make())) == e);
    BOOST_TEST(run(f.io, with_as_tuple(make())) == e);
    auto future = make()(asio::use_future);
    f.io.restart();
    f.io.run();
    BOOST_CHECK_THROW(future.get(), boost::system::system_error);
}

// `as_tuple(use_awaitable)` starts a stream inside the awaiting coroutine (no coroutine of
// its own). Cancelled while it waits for the response head, it ends with an error code, not an
// exception, whether or not the caller's coroutine throws when cancelled; that choice is the
// caller's again after (the restore is what this checks: the start turns throwing off for
// itself), and the same coroutine then starts another stream as usual.
BOOST_AUTO_TEST_CASE(a_stream_start_in_the_awaiting_coroutine_ends_cancelled_with_a_code)
{
    client_fixture f(paced(200ms));
    for (const bool throws : {true, false}) {
        asio::cancellation_signal cancel;
        asio::steady_timer timer(f.io, 50ms);
        timer.async_wait([&](error_code) { cancel.emit(asio::cancellation_type::terminal); });
        std::optional<error_code> got;
        std::optional<bool> after;
        bool threw = false;
        frugal::chat_stream s, next;
        std::optional<error_code> next_ec;
        asio::co_spawn(
            f.io,
            [&]() -> asio::awaitable<void> {
                co_await asio::this_coro::throw_if_cancelled(throws);
                try {
                    auto [ec] = co_await f.client.async_start_stream(
                        request("openai/gpt-5-mini", "Hi [sim fault=hang]"), s,
                        asio::as_tuple(asio::use_awaitable));
                    got = ec;
                } catch (const boost::system::system_error&) {
                    threw = true;
                }
                after = co_await asio::this_coro::throw_if_cancelled();
                if (!throws) {
                    // Cancelled once, the same coroutine starts the next stream as any other.
                    auto [ec] = co_await f.client.async_start_stream(
                        request("openai/gpt-5-mini", "Hi [sim tokens=3]"), next,
                        asio::as_tuple(asio::use_awaitable));
                    next_ec = ec;
                }
            },
            asio::bind_cancellation_slot(cancel.slot(), asio::detached));
        const auto t0 = std::chrono::steady_clock::now();
        f.io.restart();
        f.io.run();
        BOOST_TEST(!threw, "throws=" << throws);
        BOOST_TEST((got && *got == asio::error::operation_aborted), "throws=" << throws);
        BOOST_TEST((after && *after == throws));
        BOOST_TEST((std::chrono::steady_clock::now() - t0 < 1000ms));
        BOOST_TEST(s.done()); // a start that failed: nothing to read
        BOOST_TEST(s.error() == asio::error::operation_aborted);
        if (!throws)
            BOOST_TEST((next_ec && !*next_ec), (next_ec ? next_ec->message() : "not completed"));
    }
}

BOOST_AUTO_TEST_CASE(losing_a_race_cancels_promptly)
{
    client_fixture f(paced(200ms)); // every token takes 200 ms: the timer always wins
    for (const auto& [name, result] :
         {std::pair{"async_chat", run(f.io, race(chat_op{f.client, "Hi [sim fault=hang]"}, 50ms))},
          std::pair{
              "async_start_stream", [&] {
                  frugal::chat_stream s;
                  return run(f.io, race(start_stream_op{f.client, s, "Hi [sim fault=hang]"}, 50ms));
              }()}}) {
        BOOST_TEST(result.first == asio::error::operation_aborted, name);
        BOOST_TEST((result.second < std::chrono::milliseconds(1000)), name);
    }
    {
        // A cascade whose attempt hangs, and a reservation waiting for headroom: the timer wins,
        // and each gives up at once.
        const auto cat = catalog_of(f);
        frugal::router r(f.client, two_tiers(), cat, guard_of(cat, "10"));
        const auto lost_cascade = run(f.io, race(complete_op{r, "Hi [sim fault=hang]"}, 50ms));
        BOOST_TEST(lost_cascade.first == asio::error::operation_aborted);
        BOOST_TEST((lost_cascade.second < std::chrono::milliseconds(1000)));
        // Room for one reservation, not two.
        const auto* p = cat.find("openai/gpt-5-mini");
        BOOST_TEST_REQUIRE(p != nullptr);
        const auto one = p->input_rate() * 100 + p->output_rate() * 64 + p->request;
        const auto cap = one + frugal::money::from_units(one.units() / 2);
        auto g = guard_of(cat, cap.to_string().c_str());
        auto held = run(f.io, [&]() -> asio::awaitable<frugal::reservation> {
            auto [ec, res] = co_await reserve_op{g}(asio::as_tuple(asio::use_awaitable));
            BOOST_TEST(!ec);
            co_return std::move(res);
        }());
        BOOST_TEST_REQUIRE(held.active());
        const auto lost_reserve = run(f.io, race(reserve_op{g}, 50ms));
        BOOST_TEST(lost_reserve.first == asio::error::operation_aborted);
        BOOST_TEST((lost_reserve.second < std::chrono::milliseconds(1000)));
    }
    frugal::chat_stream s;
    BOOST_TEST(!run(f.io, with_as_tuple(start_stream_op{f.client, s, "Hi [sim tokens=20]"})));
    run(f.io, with_as_tuple(read_delta_op{s})); // the first token
    const auto lost = run(f.io, race(read_delta_op{s}, 50ms));
    BOOST_TEST(lost.first == asio::error::operation_aborted);
    BOOST_TEST((lost.second < std::chrono::milliseconds(1000)));
    BOOST_TEST(s.done());
    BOOST_TEST(s.error() == asio::error::operation_aborted);
    // The same for a read into a delta: cancelled while it waits, it leaves the delta empty.
    frugal::chat_stream s2;
    frugal::chat_delta d;
    BOOST_TEST(!run(f.io, with_as_tuple(start_stream_op{f.client, s2, "Hi [sim tokens=20]"})));
    run(f.io, with_as_tuple(read_delta_into_op{s2, d})); // the first token
    d.content = "not cleared";
    const auto lost_into = run(f.io, race(read_delta_into_op{s2, d}, 50ms));
    BOOST_TEST(lost_into.first == asio::error::operation_aborted);
    BOOST_TEST((lost_into.second < std::chrono::milliseconds(1000)));
    BOOST_TEST(d.content.empty());
    BOOST_TEST(s2.error() == asio::error::operation_aborted);
    BOOST_TEST(f.client.open_connections() == 0u);
}

BOOST_AUTO_TEST_SUITE_END()
