#ifndef FRUGAL_TESTS_CLIENT_FIXTURE_HPP
#define FRUGAL_TESTS_CLIENT_FIXTURE_HPP

// A simulator on its own thread and a client on the test's io_context, with helpers that run
// one client operation to completion.

#include "http_client.hpp"
#include "printers.hpp"

#include <frugal/chat_client.hpp>
#include <frugal/sim.hpp>

#include <boost/asio/as_tuple.hpp>
#include <boost/asio/bind_cancellation_slot.hpp>
#include <boost/asio/co_spawn.hpp>
#include <boost/asio/detached.hpp>
#include <boost/asio/experimental/awaitable_operators.hpp>
#include <boost/asio/io_context.hpp>
#include <boost/asio/steady_timer.hpp>
#include <boost/asio/use_awaitable.hpp>
#include <boost/asio/use_future.hpp>
#include <boost/json.hpp>

#include <chrono>
#include <optional>
#include <string>
#include <vector>

namespace frugal::test {

namespace asio = boost::asio;
using namespace std::chrono_literals;
inline constexpr auto tuple_awaitable = asio::as_tuple(asio::use_awaitable);
inline const std::string test_key = "sk-or-v1-0123456789abcdef-test-secret";

inline sim_config fixed()
{
    sim_config c;
    c.fixed_time = 1795000000;
    return c;
}

inline sim_config paced(std::chrono::milliseconds per_token)
{
    auto c = fixed();
    c.models = standard_sim_models();
    for (auto& m : c.models)
        m.time_per_token = per_token;
    return c;
}

inline client_params fast_retries()
{
    client_params p;
    p.api_key = test_key;
    p.retry.initial_backoff = 10ms;
    p.retry.max_backoff = 50ms;
    return p;
}

inline chat_request request(std::string model, std::string prompt)
{
    chat_request r;
    r.model = std::move(model);
    r.messages.push_back({.role = "user", .content = std::move(prompt)});
    return r;
}

template <class T>
T run(asio::io_context& io, asio::awaitable<T> op)
{
    auto f = asio::co_spawn(io, std::move(op), asio::use_future);
    io.restart();
    io.run();
    return f.get();
}

struct chat_result {
    boost::system::error_code ec;
    chat_response response;
    diagnostics diag;
};

inline asio::awaitable<chat_result> chat_once(chat_client& c, chat_request req)
{
    chat_result r;
    auto [ec, response] = co_await c.async_chat(std::move(req), r.diag, tuple_awaitable);
    r.ec = ec;
    r.response = std::move(response);
    co_return r;
}

inline asio::awaitable<std::tuple<boost::system::error_code>>
start_stream(chat_client& c, chat_request req, chat_stream& s)
{
    auto [ec] = co_await c.async_start_stream(std::move(req), s, tuple_awaitable);
    co_return std::tuple{ec};
}

inline asio::awaitable<std::tuple<boost::system::error_code, chat_delta>> read_delta(chat_stream& s)
{
    auto [ec, d] = co_await s.async_read_delta(tuple_awaitable);
    co_return std::tuple{ec, std::move(d)};
}

// Starts a read, then a second one while the first is outstanding.
inline asio::awaitable<std::tuple<boost::system::error_code, boost::system::error_code>>
two_reads(chat_stream& s)
{
    std::optional<boost::system::error_code> first;
    s.async_read_delta([&first](boost::system::error_code ec, const chat_delta&) { first = ec; });
    auto [second, d] = co_await s.async_read_delta(tuple_awaitable);
    asio::steady_timer t(co_await asio::this_coro::executor);
    while (!first) {
        t.expires_after(1ms);
        co_await t.async_wait(tuple_awaitable);
    }
    co_return std::tuple{*first, second};
}

struct stream_result {
    boost::system::error_code start_ec;
    boost::system::error_code ec;
    bool started = false;
    bool done = false;
    std::string text;
    int deltas = 0; // stream events with text
    int reads = 0;
    chat_response response;
    diagnostics diag;
};

// Reads a whole stream; with `cancel_after` >= 0, cancels the read after that many deltas.
inline asio::awaitable<stream_result> stream_all(chat_client& c, chat_request req, int cancel_after)
{
    stream_result r;
    chat_stream s;
    auto [ec] = co_await c.async_start_stream(std::move(req), s, tuple_awaitable);
    r.start_ec = ec;
    r.ec = ec;
    r.started = !ec;
    while (!ec && !s.done()) {
        asio::cancellation_signal cancel;
        if (r.deltas == cancel_after) {
            // The read is pending (the next token is 30 ms away) when the cancel arrives.
            asio::steady_timer t(co_await asio::this_coro::executor);
            t.expires_after(5ms);
            t.async_wait([&cancel](boost::system::error_code tec) {
                if (!tec)
                    cancel.emit(asio::cancellation_type::terminal);
            });
            auto [rec, d] = co_await s.async_read_delta(
                asio::bind_cancellation_slot(cancel.slot(), tuple_awaitable));
            ec = rec;
            break;
        }
        auto [rec, d] = co_await s.async_read_delta(tuple_awaitable);
        ec = rec;
        r.deltas += static_cast<int>(d.events);
        ++r.reads;
        r.text += d.content;
    }
    r.ec = ec;
    r.done = s.done();
    r.response = s.response();
    r.diag = s.diagnostics();
    co_return r;
}

inline asio::awaitable<std::tuple<boost::system::error_code, std::vector<model_info>>>
models_once(chat_client& c)
{
    auto [ec, v] = co_await c.async_models(tuple_awaitable);
    co_return std::tuple{ec, std::move(v)};
}

inline asio::awaitable<std::tuple<boost::system::error_code, generation_info>>
generation_once(chat_client& c, std::string id)
{
    auto [ec, v] = co_await c.async_generation(std::move(id), tuple_awaitable);
    co_return std::tuple{ec, std::move(v)};
}

inline asio::awaitable<std::tuple<boost::system::error_code, key_info>> key_once(chat_client& c)
{
    auto [ec, v] = co_await c.async_key_info(tuple_awaitable);
    co_return std::tuple{ec, std::move(v)};
}

// A chat raced against a timer: the loser is cancelled.
inline asio::awaitable<chat_result>
race_once(chat_client& c, chat_request req, std::chrono::milliseconds limit)
{
    using namespace asio::experimental::awaitable_operators;
    chat_result r;
    asio::steady_timer timer(co_await asio::this_coro::executor);
    timer.expires_after(limit);
    auto chat = c.async_chat(std::move(req), r.diag, tuple_awaitable);
    auto wait = timer.async_wait(tuple_awaitable);
    auto winner = co_await (std::move(chat) || std::move(wait));
    if (winner.index() == 0) {
        auto [ec, response] = std::get<0>(std::move(winner));
        r.ec = ec;
        r.response = std::move(response);
    } else {
        r.ec = asio::error::operation_aborted;
    }
    co_return r;
}

struct client_fixture {
    explicit client_fixture(sim_config cfg = fixed(), client_params params = fast_retries())
        : sim(std::move(cfg)), client(io.get_executor(), with_url(std::move(params)))
    {
    }

    client_params with_url(client_params p) const
    {
        p.base_url = sim.base_url();
        if (p.api_key.empty())
            p.api_key = test_key;
        return p;
    }

    chat_result chat(chat_request req) { return run(io, chat_once(client, std::move(req))); }
    stream_result stream(chat_request req, int cancel_after = -1)
    {
        return run(io, stream_all(client, std::move(req), cancel_after));
    }
    chat_result race(chat_request req, std::chrono::milliseconds limit)
    {
        return run(io, race_once(client, std::move(req), limit));
    }

    // `n` chats at once on the client's one thread.
    std::vector<chat_result> many(const chat_request& req, int n)
    {
        std::vector<std::future<chat_result>> futures;
        for (int i = 0; i < n; ++i)
            futures.push_back(asio::co_spawn(io, chat_once(client, req), asio::use_future));
        io.restart();
        io.run();
        std::vector<chat_result> out;
        for (auto& f : futures)
            out.push_back(f.get());
        return out;
    }

    boost::json::object bill() const
    {
        http_client c(sim.port());
        return boost::json::parse(c.request(boost::beast::http::verb::get, "/__sim/bill").body())
            .as_object();
    }
    std::string billed_usd(const std::string& model)
    {
        return std::string(bill().at("models").at(model).at("cost_usd").as_string());
    }
    const std::string& key() const { return test_key; }

    sim_thread sim;
    asio::io_context io;
    chat_client client;
};

} // namespace frugal::test

#endif // FRUGAL_TESTS_CLIENT_FIXTURE_HPP
