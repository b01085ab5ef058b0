// An HTTP service: POST /ask {"tenant":"acme","prompt":"..."} runs a cheap-first cascade with a
// hard daily budget per tenant. It listens on 127.0.0.1 only.
//
//   example_service [PORT] [--self-test]
//
// PORT 0 (the default) picks a free port. --self-test sends the service a few requests (two
// tenants, one of which spends its cap) and exits 0 when every answer is the expected one.
#include <frugal/router.hpp>
#include <frugal/sim.hpp>

#include <boost/asio/as_tuple.hpp>
#include <boost/asio/co_spawn.hpp>
#include <boost/asio/deferred.hpp>
#include <boost/asio/detached.hpp>
#include <boost/asio/experimental/awaitable_operators.hpp>
#include <boost/asio/io_context.hpp>
#include <boost/asio/ip/tcp.hpp>
#include <boost/asio/steady_timer.hpp>
#include <boost/asio/this_coro.hpp>
#include <boost/asio/use_awaitable.hpp>
#include <boost/beast/core/flat_buffer.hpp>
#include <boost/beast/core/tcp_stream.hpp>
#include <boost/beast/http/read.hpp>
#include <boost/beast/http/string_body.hpp>
#include <boost/beast/http/write.hpp>
#include <boost/json/parse.hpp>
#include <boost/json/serialize.hpp>
#include <boost/json/value.hpp>

#include <charconv>
#include <cstdlib>
#include <iostream>
#include <memory>
#include <optional>
#include <string>
#include <string_view>

namespace asio = boost::asio;
namespace beast = boost::beast;
namespace http = beast::http;
namespace json = boost::json;
using tcp = asio::ip::tcp;
using namespace std::chrono_literals;
using namespace asio::experimental::awaitable_operators;

constexpr auto no_throw = asio::as_tuple(asio::use_awaitable);

// What every request shares: one router (so one free-tier limiter for the key) over one guard;
// each request is charged to its own tenant's cap by the budget keys it is run under.
struct service {
    frugal::router router;
    std::chrono::milliseconds deadline; ///< for one whole cascade
};

// Budget keys are space-separated in the ledger and `kind:value` in the guard.
bool valid_tenant(std::string_view name)
{
    return !name.empty() && name.size() <= 64 &&
           name.find_first_not_of("abcdefghijklmnopqrstuvwxyz0123456789-_") == name.npos;
}

http::response<http::string_body>
reply(const http::request<http::string_body>& req, http::status status, const json::value& body)
{
    http::response<http::string_body> res(status, req.version());
    res.set(http::field::content_type, "application/json");
    res.keep_alive(req.keep_alive());
    res.body() = json::serialize(body);
    res.prepare_payload();
    return res;
}

http::response<http::string_body> error_reply(
    const http::request<http::string_body>& req, http::status status, std::string_view message)
{
    return reply(req, status, json::object{{"error", message}});
}

asio::awaitable<http::response<http::string_body>>
handle(service& svc, http::request<http::string_body> req)
{
    if (req.target() != "/ask")
        co_return error_reply(req, http::status::not_found, "the only endpoint is POST /ask");
    if (req.method() != http::verb::post)
        co_return error_reply(req, http::status::method_not_allowed, "use POST");

    boost::system::error_code jec;
    const json::value body = json::parse(req.body(), jec);
    const json::object* obj = jec ? nullptr : body.if_object();
    const json::string* tenant = nullptr;
    const json::string* prompt = nullptr;
    if (obj != nullptr) {
        if (const auto* t = obj->if_contains("tenant"))
            tenant = t->if_string();
        if (const auto* p = obj->if_contains("prompt"))
            prompt = p->if_string();
    }
    if (tenant == nullptr || prompt == nullptr || !valid_tenant(*tenant)) {
        co_return error_reply(
            req, http::status::bad_request,
            R"(expected {"tenant":"name","prompt":"text"}, the name in [a-z0-9_-])");
    }

    frugal::chat_request request;
    request.messages.push_back({.role = "user", .content = std::string(*prompt)});
    // A real service takes the tenant from authentication, not from the body.
    std::vector<std::string> keys = {"tenant:" + std::string(*tenant)};

    // The keys and the deadline go with the call. A deadline that passes abandons the attempt
    // in flight: a paid one is charged its whole reservation, since the provider may have
    // billed it.
    frugal::cascade_options options;
    options.budget_keys = std::move(keys);
    options.deadline = svc.deadline;
    auto [ec, result] = co_await svc.router.async_complete(
        std::move(request), std::move(options), asio::as_tuple(asio::use_awaitable));

    if (ec == frugal::error::timeout)
        co_return error_reply(req, http::status::gateway_timeout, "no answer within the deadline");
    if (ec == frugal::error::budget_exhausted || ec == frugal::error::budget_closed) {
        co_return error_reply(
            req, http::status::payment_required,
            "the tenant's budget cannot pay for the escalation, and there is no cheaper answer");
    }
    if (ec)
        co_return error_reply(req, http::status::bad_gateway, ec.message());

    // The cost as an exact decimal string: a JSON number would pass through a double.
    co_return reply(
        req, http::status::ok,
        json::object{
            {"model", result.response.model},
            {"escalated", result.escalated},
            {"budget_denied", result.budget_denied},
            {"cost", result.total_cost.to_string()},
            {"answer", result.response.content}});
}

asio::awaitable<void> session(std::shared_ptr<service> svc, tcp::socket socket)
{
    beast::tcp_stream stream(std::move(socket));
    beast::flat_buffer buffer;
    for (;;) {
        // An idle or slow client is dropped, reading or writing; a prompt is small.
        http::request_parser<http::string_body> parser;
        parser.body_limit(std::uint64_t{64} * 1024);
        stream.expires_after(30s);
        auto [ec, n] = co_await http::async_read(stream, buffer, parser, no_throw);
        if (ec == http::error::body_limit) {
            auto res = error_reply(parser.get(), http::status::payload_too_large, "body too large");
            res.keep_alive(false);
            co_await http::async_write(stream, res, no_throw);
        }
        if (ec)
            break;

        // The cascade has its own deadline; the stream's would cut a long answer short.
        stream.expires_never();
        auto req = parser.release();
        auto res = co_await handle(*svc, std::move(req));
        stream.expires_after(30s);
        auto [wec, wn] = co_await http::async_write(stream, res, no_throw);
        if (wec || !res.keep_alive())
            break;
    }
    boost::system::error_code ignored;
    stream.socket().shutdown(tcp::socket::shutdown_send, ignored);
}

// Runs until cancelled (the self-test is over) or the listener fails.
asio::awaitable<void> accept_loop(tcp::acceptor& acceptor, std::shared_ptr<service> svc)
{
    for (;;) {
        auto [ec, socket] = co_await acceptor.async_accept(no_throw);
        if (ec)
            co_return;
        asio::co_spawn(acceptor.get_executor(), session(svc, std::move(socket)), asio::detached);
    }
}

// One POST /ask over a keep-alive connection, as any HTTP client would send it.
asio::awaitable<std::pair<int, json::value>>
post(beast::tcp_stream& stream, beast::flat_buffer& buffer, std::string body)
{
    http::request<http::string_body> req(http::verb::post, "/ask", 11);
    req.set(http::field::host, "127.0.0.1");
    req.set(http::field::content_type, "application/json");
    req.body() = std::move(body);
    req.prepare_payload();
    co_await http::async_write(stream, req, asio::use_awaitable);
    http::response<http::string_body> res;
    co_await http::async_read(stream, buffer, res, asio::use_awaitable);
    boost::system::error_code ec;
    json::value answer = json::parse(res.body(), ec);
    co_return std::pair(res.result_int(), std::move(answer));
}

bool field_is(const json::value& v, std::string_view key, bool want)
{
    const auto* o = v.if_object();
    const auto* f = o != nullptr ? o->if_contains(key) : nullptr;
    return f != nullptr && f->is_bool() && f->get_bool() == want;
}

// The requests a deployment would smoke-test, each with the reply it must get.
asio::awaitable<bool> self_test(std::uint16_t port)
{
    const auto ex = co_await asio::this_coro::executor;
    const tcp::endpoint server(asio::ip::address_v4::loopback(), port);
    beast::tcp_stream stream(ex);
    co_await stream.async_connect(server, asio::use_awaitable);
    beast::flat_buffer buffer;
    bool ok = true;
    auto expect = [&ok](const char* what, int status, const json::value& body, bool good) {
        std::cout << (good ? "ok   " : "FAIL ") << what << ": " << status << ' '
                  << json::serialize(body) << '\n';
        ok = ok && good;
    };
    const std::string acme_easy = R"({"tenant":"acme","prompt":"What is the capital of France?"})";
    const std::string acme_hard =
        R"({"tenant":"acme","prompt":"Prove the theorem step by step, rigorously."})";
    const std::string globex_hard =
        R"({"tenant":"globex","prompt":"Prove the theorem step by step, rigorously."})";
    const std::string globex_failing = R"({"tenant":"globex","prompt":"Hello [sim fault=500]"})";
    const std::string acme_hanging = R"({"tenant":"acme","prompt":"Hello [sim fault=hang]"})";
    const std::string not_json = R"({"tenant":"acme","prompt":)";

    auto [s1, r1] = co_await post(stream, buffer, acme_easy);
    expect("acme, easy: the free model", s1, r1, s1 == 200 && field_is(r1, "escalated", false));

    auto [s2, r2] = co_await post(stream, buffer, globex_hard);
    expect("globex, hard: escalated", s2, r2, s2 == 200 && field_is(r2, "escalated", true));

    auto [s3, r3] = co_await post(stream, buffer, globex_hard);
    expect(
        "globex, hard again: its cap is spent, the free answer stands", s3, r3,
        s3 == 200 && field_is(r3, "budget_denied", true));

    auto [s4, r4] = co_await post(stream, buffer, globex_failing);
    expect("globex, the free model fails: nothing to return", s4, r4, s4 == 402);

    auto [s5, r5] = co_await post(stream, buffer, acme_hard);
    expect(
        "acme, hard: its own cap is untouched", s5, r5,
        s5 == 200 && field_is(r5, "escalated", true) && field_is(r5, "budget_denied", false));

    auto [s6, r6] = co_await post(stream, buffer, not_json);
    expect("bad JSON", s6, r6, s6 == 400);

    auto [s7, r7] = co_await post(stream, buffer, acme_hanging);
    expect("a model that never answers: the deadline", s7, r7, s7 == 504);
    co_return ok;
}

asio::awaitable<int> serve(frugal::chat_client& client, std::uint16_t port, bool run_self_test)
{
    frugal::cascade_policy policy;
    policy.tiers = {"google/gemma-4-31b-it:free", "anthropic/claude-fable-5"};

    // Every tenant gets a daily cap of its own (small here, so the self-test can spend one),
    // under a global cap on the whole service.
    frugal::price_catalog prices(co_await client.async_models());
    frugal::budget_params budget;
    budget.budgets = {
        {"global", *frugal::money::parse("1.00"), frugal::budget_period::daily},
        {"tenant:*", *frugal::money::parse("0.002"), frugal::budget_period::daily}};
    frugal::diagnostics diag;
    auto guard = frugal::budget_guard::open(budget, prices, nullptr, &diag);
    if (!guard)
        throw boost::system::system_error(guard.error(), diag.message);
    auto svc = std::make_shared<service>(
        frugal::router(client, std::move(policy), std::move(prices), std::move(*guard)),
        run_self_test ? 2s : 60s);

    // Loopback only: the service spends money on behalf of whoever can reach it.
    const auto ex = co_await asio::this_coro::executor;
    const tcp::endpoint loopback(asio::ip::address_v4::loopback(), port);
    tcp::acceptor acceptor(ex, loopback);
    port = acceptor.local_endpoint().port();
    std::cout << "listening on http://127.0.0.1:" << port << "/ask" << std::endl;

    if (!run_self_test) {
        co_await accept_loop(acceptor, svc);
        co_return 0;
    }
    // The self-test ends the race, which cancels the accept loop.
    auto race = accept_loop(acceptor, svc) || self_test(port);
    auto outcome = co_await std::move(race);
    co_return std::get<1>(outcome) ? 0 : 1;
}

int main(int argc, char* argv[])
{
    std::uint16_t port = 0;
    bool run_self_test = false;
    for (int i = 1; i < argc; ++i) {
        const std::string_view arg = argv[i];
        const auto [end, err] = std::from_chars(arg.data(), arg.data() + arg.size(), port);
        if (arg == "--self-test") {
            run_self_test = true;
        } else if (err != std::errc() || end != arg.data() + arg.size()) {
            std::cerr << "usage: " << argv[0] << " [PORT] [--self-test]\n";
            return 2;
        }
    }

    // The simulator unless a real endpoint is configured (its catalog names the tiers above).
    // The self-test always uses it: its expectations rest on the simulator's prompt directives,
    // and a test must not reach the network.
    const bool configured =
        !run_self_test &&
        // NOLINTNEXTLINE(concurrency-mt-unsafe): read once, before any thread starts
        (std::getenv("OPENROUTER_BASE_URL") || std::getenv("OPENROUTER_API_KEY"));
    std::optional<frugal::sim_thread> sim;
    frugal::client_params params;
    if (!configured) {
        sim.emplace();
        params.base_url = sim->base_url();
        params.api_key = "sk-or-v1-example";
    }

    asio::io_context io;
    frugal::chat_client client(io.get_executor(), params);
    int status = 1;
    asio::co_spawn(
        io, serve(client, port, run_self_test), [&status](const std::exception_ptr& e, int s) {
            if (e)
                std::rethrow_exception(e);
            status = s;
        });
    try {
        io.run();
    } catch (const std::exception& e) {
        std::cerr << "example_service: " << e.what() << '\n';
        return 1;
    }
    return status;
}
