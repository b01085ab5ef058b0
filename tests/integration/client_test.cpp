// frugal's client against the simulator on 127.0.0.1: every fault the simulator can inject,
// every usage-chunk shape, whitespace-prefixed bodies, retries, pool reuse and discard,
// deadlines, limits and cancellation.
#include "client_fixture.hpp"
#include "tls_servers.hpp"

#include <frugal/prices.hpp>

#include <boost/asio/experimental/awaitable_operators.hpp>
#include <boost/json.hpp>
#include <boost/test/unit_test.hpp>

#include <thread>

using namespace frugal::test;
using namespace std::chrono_literals;
using namespace boost::asio::experimental::awaitable_operators;
namespace json = boost::json;

namespace {

// The API base of a test server: where a client under test points.
std::string api_url(const loopback_server& server)
{
    return "http://127.0.0.1:" + std::to_string(server.port()) + "/api/v1";
}

} // namespace

BOOST_AUTO_TEST_SUITE(client)

BOOST_AUTO_TEST_CASE(whole_chat_reports_exactly_what_the_simulator_billed)
{
    client_fixture f;
    const auto r = f.chat(request("anthropic/claude-fable-5", "What is a budget?"));
    BOOST_REQUIRE_MESSAGE(!r.ec, r.ec.message() << ": " << r.diag.to_string());
    BOOST_TEST(r.response.id.starts_with("gen-"));
    BOOST_TEST(r.response.model == "anthropic/claude-fable-5");
    BOOST_TEST(r.response.provider == "Anthropic");
    BOOST_TEST(r.response.finish_reason == "stop");
    BOOST_TEST(!r.response.content.empty());
    BOOST_REQUIRE(r.response.usage && r.response.usage->cost);
    BOOST_TEST(r.response.usage->cost->to_string() == f.billed_usd("anthropic/claude-fable-5"));
    BOOST_TEST(r.diag.attempts == 1);
}

// `chat(req, into, ...)` decodes into the caller's response: the same answer as the form that
// hands one over, with nothing left of what `into` held before, and nothing at all after an
// error before any answer (a refused status, a request that cannot be encoded).
BOOST_AUTO_TEST_CASE(chat_into_gives_the_same_answer_in_the_callers_response_cleared_first)
{
    client_fixture f;
    const auto req = request("anthropic/claude-fable-5", "What is a budget?");
    const auto whole = f.chat(req);
    BOOST_REQUIRE_MESSAGE(!whole.ec, whole.diag.to_string());

    frugal::chat_response into;
    into.id = "gen-stale";
    into.content = std::string(300, 's');
    into.reasoning = "stale reasoning";
    into.refusal = "stale refusal";
    into.tool_calls.push_back({"call_1", "function", "f", "{}"});
    into.usage = frugal::usage{};
    into.usage->cost_rejected = "a string";
    auto into_once = [&](frugal::chat_request r, frugal::diagnostics& d) {
        return run(f.io, [&]() -> asio::awaitable<boost::system::error_code> {
            auto [ec] = co_await f.client.chat(r, into, &d);
            co_return ec;
        }());
    };
    frugal::diagnostics diag;
    const auto ec = into_once(req, diag);
    BOOST_REQUIRE_MESSAGE(!ec, diag.to_string());
    BOOST_TEST(into.id.starts_with("gen-"));
    BOOST_TEST(into.id != whole.response.id); // a generation of its own
    auto same = whole.response;
    same.id = into.id;
    same.created = into.created;
    BOOST_TEST((into.usage && same.usage && into.usage->cost && same.usage->cost));
    // The same answer and bill to the picodollar; nothing of what `into` held is left.
    BOOST_TEST((into == same));
    BOOST_TEST(into.tool_calls.empty());
    BOOST_TEST(diag.generation_id == into.id);

    frugal::diagnostics failed;
    BOOST_TEST((into_once(request("openai/gpt-5-mini", "Hi [sim fault=502]"), failed) ==
                frugal::error::upstream_unavailable));
    BOOST_TEST((into == frugal::chat_response{}));
    BOOST_TEST(!failed.message.empty());

    into.content = "stale again";
    auto bad = request("openai/gpt-5-mini", "Hi");
    bad.extra_body = "not an object";
    frugal::diagnostics refused;
    BOOST_TEST((into_once(bad, refused) == frugal::error::bad_request_body));
    BOOST_TEST((into == frugal::chat_response{}));
    BOOST_TEST(!refused.message.empty());
}

BOOST_AUTO_TEST_CASE(streamed_chat_adds_up_to_the_whole_answer)
{
    client_fixture f;
    const auto whole = f.chat(request("anthropic/claude-fable-5", "Stream me [sim tokens=12]"));
    const auto s = f.stream(request("anthropic/claude-fable-5", "Stream me [sim tokens=12]"));
    BOOST_REQUIRE_MESSAGE(!s.ec, s.ec.message() << ": " << s.diag.to_string());
    BOOST_TEST(s.done);
    BOOST_TEST(s.text == whole.response.content);
    BOOST_TEST(s.response.content == whole.response.content);
    BOOST_TEST(s.deltas == 13); // one per token: twelve words and a full stop
    BOOST_TEST(s.response.finish_reason == "stop");
    BOOST_REQUIRE(s.response.usage && s.response.usage->cost);
    BOOST_TEST(s.response.usage->completion_tokens == 13u);
    BOOST_TEST(*s.response.usage->cost == *whole.response.usage->cost);
    BOOST_TEST(s.response.id.starts_with("gen-"));
    BOOST_TEST(s.response.id != whole.response.id);
}

BOOST_AUTO_TEST_CASE(a_reader_that_keeps_up_gets_one_event_per_read)
{
    client_fixture f(paced(20ms));
    const auto s = f.stream(request("anthropic/claude-fable-5", "Hi [sim tokens=5]"));
    BOOST_TEST(!s.ec);
    BOOST_TEST(s.deltas == 6);
    BOOST_TEST(s.reads == 7); // six tokens, then [DONE]
}

BOOST_AUTO_TEST_CASE(tokens_reach_a_single_threaded_reader_as_they_arrive)
{
    // As `frugal chat --stream` and the demo read: an io_context told it has one thread, and
    // tokens paced like a real model's. A completion delivered out of turn once held a stream's
    // deltas back until the end (the demo's refusal was then never seen mid-stream).
    client_fixture f(paced(12ms));
    asio::io_context io{1};
    frugal::chat_client client(io.get_executor(), f.with_url(fast_retries()));
    const auto s =
        run(io, stream_all(client, request("anthropic/claude-fable-5", "Hi [sim tokens=30]"), -1));
    BOOST_TEST(!s.ec);
    BOOST_TEST(s.deltas == 31);
    BOOST_TEST(s.reads >= 28); // one event per read, give or take a scheduling hiccup
}

BOOST_AUTO_TEST_CASE(every_usage_chunk_shape_gives_the_usage_once)
{
    client_fixture f;
    for (const char* shape : {"2026", "empty_choices", "null_finish"}) {
        const auto s = f.stream(request(
            "deepseek/deepseek-v3.2", std::string("Hi [sim tokens=4 usage=") + shape + "]"));
        BOOST_TEST(!s.ec, shape);
        BOOST_TEST(s.response.finish_reason == "stop", shape);
        BOOST_REQUIRE_MESSAGE(s.response.usage && s.response.usage->cost, shape);
        BOOST_TEST(s.response.usage->completion_tokens == 5u, shape);
    }
    // The bill agrees with the three usage chunks.
    const auto bill = f.bill();
    BOOST_TEST(
        bill.at("models").at("deepseek/deepseek-v3.2").at("completion_tokens").as_int64() == 15);
}

BOOST_AUTO_TEST_CASE(reasoning_only_answers_stream_as_reasoning)
{
    client_fixture f;
    const auto s = f.stream(request("google/gemma-4-31b-it:free", "Hi [sim poor=empty]"));
    BOOST_TEST(!s.ec);
    BOOST_TEST(s.response.content.empty());
    BOOST_TEST(s.response.reasoning == "Let me think about this...");
    BOOST_TEST(s.deltas == 6);
}

BOOST_AUTO_TEST_CASE(whitespace_before_a_whole_body_is_accepted)
{
    auto cfg = fixed();
    cfg.whitespace_keepalive = true;
    cfg.keepalive_interval = 20ms;
    cfg.models = frugal::standard_sim_models();
    for (auto& m : cfg.models)
        m.time_to_first_token = 100ms;
    client_fixture f(cfg);
    const auto r = f.chat(request("openai/gpt-5-mini", "Hi"));
    BOOST_REQUIRE_MESSAGE(!r.ec, r.diag.to_string());
    BOOST_TEST(!r.response.content.empty());
}

BOOST_AUTO_TEST_CASE(status_faults_map_to_their_errors_with_the_servers_message)
{
    struct expectation {
        const char* fault;
        frugal::error error;
        int status;
        int attempts;
    };
    client_fixture f;
    for (const auto& e :
         {expectation{"429 retry_after=0", frugal::error::rate_limited, 429, 3},
          expectation{"429-no-retry-after", frugal::error::rate_limited, 429, 3},
          expectation{"402", frugal::error::insufficient_credits, 402, 1},
          expectation{"403", frugal::error::moderation, 403, 1},
          expectation{"408", frugal::error::upstream_timeout, 408, 3},
          expectation{"500", frugal::error::server_error, 500, 1},
          expectation{"502", frugal::error::upstream_unavailable, 502, 3},
          expectation{"503", frugal::error::upstream_unavailable, 503, 3},
          expectation{"524", frugal::error::upstream_timeout, 524, 3},
          expectation{"529", frugal::error::upstream_overloaded, 529, 3},
          expectation{"context-length", frugal::error::context_length_exceeded, 400, 1}}) {
        const auto r =
            f.chat(request("openai/gpt-5-mini", std::string("Hi [sim fault=") + e.fault + "]"));
        BOOST_TEST(r.ec == e.error, e.fault << ": " << r.ec.message());
        BOOST_TEST(r.diag.http_status == e.status, e.fault);
        BOOST_TEST(r.diag.attempts == e.attempts, e.fault);
        BOOST_TEST(!r.diag.message.empty(), e.fault);
        BOOST_TEST(r.diag.to_string().find(f.key()) == std::string::npos);
    }
    const auto moderation = f.chat(request("openai/gpt-5-mini", "nasty [sim fault=403]"));
    BOOST_TEST(moderation.diag.message.find("flagged") != std::string::npos);
    BOOST_TEST(moderation.diag.error_type == "content_policy_violation");
    const auto upstream = f.chat(request("openai/gpt-5-mini", "Hi [sim fault=502]"));
    BOOST_TEST(upstream.diag.raw == "upstream connect error");
    BOOST_TEST(upstream.diag.provider == "OpenAI");
    BOOST_TEST(upstream.diag.code == "502");
    // None of them was billed.
    BOOST_TEST(f.bill().at("total").at("requests").as_int64() == 0);
}

BOOST_AUTO_TEST_CASE(an_error_inside_a_200_body_is_an_error)
{
    client_fixture f;
    const auto r = f.chat(request("openai/gpt-5-mini", "Hi [sim fault=error-200]"));
    BOOST_TEST(r.ec == frugal::error::upstream_unavailable); // its code, 502
    BOOST_TEST(r.diag.http_status == 200);
    BOOST_TEST(r.diag.message == "Provider returned error");
    BOOST_TEST(r.diag.attempts == 1); // a response had begun: never retried
}

// A server that reads each request's body only after a pause: the client's first, non-blocking
// write fills what the socket buffers take and stops partway, and the rest follows
// asynchronously. What arrives must be the request, byte for byte, for every request on the
// connection (the second one reuses it).
BOOST_AUTO_TEST_CASE(a_request_larger_than_the_socket_takes_at_once_arrives_whole)
{
    const auto answer = canned_server::ok(
        R"({"id":"gen-l","model":"m/x","choices":[{"message":)"
        R"({"role":"assistant","content":"read"},"finish_reason":"stop"}]})");
    canned_server server({answer}, 300ms);
    asio::io_context io;
    auto p = fast_retries();
    p.timeouts.total = 30s; // a request that lost bytes fails here instead of waiting on
    p.base_url = api_url(server);
    frugal::chat_client client(io.get_executor(), p);
    std::vector<std::string> prompts;
    for (const char c : {'a', 'b'}) {
        std::string prompt(8 * 1024 * 1024, c);
        prompt.back() = '!';
        prompts.push_back(prompt);
        const auto r = run(io, chat_once(client, request("m/x", std::move(prompt))));
        BOOST_REQUIRE_MESSAGE(!r.ec, r.ec.message() << ": " << r.diag.to_string());
        BOOST_TEST(r.response.content == "read");
    }
    BOOST_TEST(server.connections() == 1); // the second request reused the connection
    const auto bodies = server.received();
    BOOST_REQUIRE(bodies.size() == 2u);
    for (std::size_t i = 0; i < 2; ++i) {
        const auto body = json::parse(bodies[i]);
        const auto& content = body.at("messages").at(0).at("content").as_string();
        BOOST_TEST((content == prompts[i]), "request " << i << " arrived changed");
    }
}

namespace {

// Reads each request's head, sends `reply` (possibly nothing) and closes the connection.
class closing_server : public loopback_server {
public:
    explicit closing_server(std::string reply) : reply_(std::move(reply)) { start(); }
    ~closing_server() override { stop(); }

private:
    asio::awaitable<void> serve(tcp::socket socket) override
    {
        asio::streambuf in;
        if (!co_await frugal::test::detail::read_head(socket, in))
            co_return;
        co_await asio::async_write(
            socket, asio::buffer(reply_), asio::as_tuple(asio::use_awaitable));
        boost::system::error_code ignored;
        socket.shutdown(tcp::socket::shutdown_both, ignored);
    }
    std::string reply_;
};

} // namespace

// A server that closes before its head is whole: the head cut short is a partial message, no
// head at all is the end of the stream; either after the request was sent, so not retried.
BOOST_AUTO_TEST_CASE(a_head_cut_short_or_never_sent_fails_and_says_so)
{
    for (const auto& [reply, expected] :
         {std::pair{
              std::string("HTTP/1.1 200 OK\r\nContent-Type: appl"),
              boost::beast::http::error::partial_message},
          std::pair{std::string("HTTP/1.1 200 OK\r\n"), boost::beast::http::error::partial_message},
          std::pair{std::string(), boost::beast::http::error::end_of_stream}}) {
        closing_server server(reply);
        asio::io_context io;
        auto p = fast_retries();
        p.base_url = api_url(server);
        frugal::chat_client client(io.get_executor(), p);
        const auto r = run(io, chat_once(client, request("m/x", "Hi")));
        BOOST_TEST(r.ec == make_error_code(expected), r.ec.message() << " for " << reply.size());
        BOOST_TEST(
            r.diag.message.find("reading the response head failed") != std::string::npos,
            r.diag.message);
        BOOST_TEST(r.diag.attempts == 1);
        BOOST_TEST(server.connections() == 1);
    }
}

BOOST_AUTO_TEST_CASE(whole_answers_are_decoded_each_from_its_own_body)
{
    // Bytes no simulator decides. A large body comes first: a body buffer kept between requests
    // and not emptied would show in the answers after it. A body that is not a chat completion
    // is a protocol error that says so, with the key scrubbed from what it quotes.
    const std::string big(70'000, 'x');
    const auto answer = [](std::string_view id, std::string_view content) {
        return R"({"id":")" + std::string(id) + R"(","model":"m/x","choices":[{"message":)" +
               R"({"role":"assistant","content":")" + std::string(content) +
               R"("},"finish_reason":"stop"}]})";
    };
    canned_server server({
        canned_server::ok(answer("gen-a", big), "X-Generation-Id: gen-a\r\n"),
        canned_server::ok(answer("gen-b", "short")),
        canned_server::ok(R"({"id":"gen-c","object":"chat.completion"})",
                          "X-Generation-Id: gen-c\r\n"),
        canned_server::ok(std::string("not json ") + test_key),
        canned_server::ok(answer("gen-e", "last")),
        canned_server::ok("[]"),
    });
    asio::io_context io;
    auto p = fast_retries();
    p.base_url = api_url(server);
    frugal::chat_client client(io.get_executor(), p);
    const auto chat = [&] { return run(io, chat_once(client, request("m/x", "Hi"))); };

    const auto a = chat();
    BOOST_REQUIRE_MESSAGE(!a.ec, a.ec.message() << ": " << a.diag.to_string());
    BOOST_TEST((a.response.content == big));
    BOOST_TEST(a.diag.generation_id == "gen-a");
    const auto b = chat();
    BOOST_REQUIRE(!b.ec);
    BOOST_TEST(b.response.content == "short");
    BOOST_TEST(b.diag.generation_id == "gen-b"); // no header: the body's id
    const auto c = chat();
    BOOST_TEST(c.ec == frugal::error::protocol_error);
    BOOST_TEST(c.diag.message.find("has no choices") != std::string::npos, c.diag.message);
    BOOST_TEST(c.diag.generation_id == "gen-c");
    BOOST_TEST(c.diag.http_status == 200);
    const auto d = chat();
    BOOST_TEST(d.ec == frugal::error::protocol_error);
    BOOST_TEST(d.diag.message.find("not a chat completion") != std::string::npos, d.diag.message);
    BOOST_TEST(d.diag.to_string().find(test_key) == std::string::npos);
    const auto e = chat();
    BOOST_REQUIRE(!e.ec);
    BOOST_TEST(e.response.content == "last");
    // Without diagnostics asked for, the same verdicts.
    const auto quiet = [&]() -> asio::awaitable<std::tuple<boost::system::error_code, frugal::chat_response>> {
        co_return co_await client.async_chat(request("m/x", "Hi"), tuple_awaitable);
    };
    const auto [fec, fresponse] = run(io, quiet());
    BOOST_TEST(fec == frugal::error::protocol_error);
    BOOST_TEST(fresponse.content.empty());
}

BOOST_AUTO_TEST_CASE(a_stream_error_keeps_its_message_when_broken_framing_follows)
{
    // The provider's error event and, in the same bytes, a chunk size that is not hex: the
    // stream fails with the provider's error and message, not the framing's.
    const auto chunk = [](const std::string& data) {
        char size[16];
        std::snprintf(size, sizeof size, "%zx", data.size());
        return std::string(size) + "\r\n" + data + "\r\n";
    };
    const std::string text = "data: {\"id\":\"gen-x\",\"choices\":[{\"index\":0,"
                             "\"delta\":{\"content\":\"Hi\"}}]}\n\n";
    const std::string error =
        "data: {\"id\":\"gen-x\",\"error\":{\"code\":502,\"message\":\"Provider exploded\"}}\n\n";
    canned_server server({"HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\n"
                          "Transfer-Encoding: chunked\r\n\r\n" +
                          chunk(text) + chunk(error) + "zz\r\n"});
    asio::io_context io;
    auto p = fast_retries();
    p.base_url = api_url(server);
    frugal::chat_client client(io.get_executor(), p);
    const auto s = run(io, stream_all(client, request("m/x", "Hi"), -1));
    BOOST_TEST(s.ec == frugal::error::midstream_error);
    BOOST_TEST(s.diag.message == "Provider exploded", s.diag.message);
}

BOOST_AUTO_TEST_CASE(retry_after_is_honoured)
{
    client_fixture f;
    const auto t0 = std::chrono::steady_clock::now();
    const auto r = f.chat(request("openai/gpt-5-mini", "Hi [sim fault=429 retry_after=1]"));
    BOOST_TEST(r.ec == frugal::error::rate_limited);
    BOOST_TEST(r.diag.retry_after.value() == std::chrono::milliseconds(1000));
    BOOST_TEST((std::chrono::steady_clock::now() - t0 >= 2s)); // two waits of a second
}

BOOST_AUTO_TEST_CASE(a_transient_failure_is_retried_until_it_passes)
{
    auto cfg = fixed();
    cfg.faults.push_back({.model = "openai/gpt-5-mini", .fault = "503", .first_n = 2});
    client_fixture f(cfg);
    const auto r = f.chat(request("openai/gpt-5-mini", "Hi"));
    BOOST_TEST(!r.ec);
    BOOST_TEST(r.diag.attempts == 3);
    const auto s = f.stream(request("openai/gpt-5-mini", "Hi"));
    BOOST_TEST(!s.ec); // the rule is used up
}

BOOST_AUTO_TEST_CASE(retries_stop_at_the_deadline)
{
    auto params = fast_retries();
    params.retry.max_attempts = 10;
    // Waits are jittered within [bound/2, bound]: the first is 350-700 ms, the second 700-1400 ms,
    // which always crosses the 1 s deadline, so the second failure is the one reported, however
    // slow the machine (a retry started just before the deadline would report a timeout).
    params.retry.initial_backoff = 700ms;
    params.retry.multiplier = 2.0;
    params.retry.max_backoff = 10s;
    params.timeouts.total = 1s;
    client_fixture f(fixed(), params);
    const auto t0 = std::chrono::steady_clock::now();
    const auto r = f.chat(request("openai/gpt-5-mini", "Hi [sim fault=503]"));
    BOOST_TEST(r.ec == frugal::error::upstream_unavailable);
    BOOST_TEST(r.diag.attempts == 2);
    BOOST_TEST((std::chrono::steady_clock::now() - t0 < 1500ms));
}

BOOST_AUTO_TEST_CASE(a_reset_after_the_request_was_sent_is_not_retried_by_default)
{
    client_fixture f;
    auto r = f.chat(request("openai/gpt-5-mini", "Hi [sim fault=reset]"));
    BOOST_TEST(r.ec == boost::asio::error::connection_reset);
    BOOST_TEST(r.diag.attempts == 1);
    // Configured as safe to retry, it is.
    auto params = fast_retries();
    params.retry.after_request_sent = true;
    client_fixture g(fixed(), params);
    r = g.chat(request("openai/gpt-5-mini", "Hi [sim fault=reset]"));
    BOOST_TEST(r.ec == boost::asio::error::connection_reset);
    BOOST_TEST(r.diag.attempts == 3);
}

BOOST_AUTO_TEST_CASE(a_server_that_never_answers_hits_the_first_byte_deadline)
{
    auto params = fast_retries();
    params.timeouts.first_byte = 300ms;
    client_fixture f(fixed(), params);
    const auto t0 = std::chrono::steady_clock::now();
    const auto r = f.chat(request("openai/gpt-5-mini", "Hi [sim fault=hang]"));
    BOOST_TEST(r.ec == frugal::error::timeout);
    BOOST_TEST(r.diag.message.find("first-byte") != std::string::npos);
    BOOST_TEST(r.diag.attempts == 1); // sent, no reply: not retried
    BOOST_TEST((std::chrono::steady_clock::now() - t0 < 1s));
    BOOST_TEST(f.client.open_connections() == 0u);
}

BOOST_AUTO_TEST_CASE(keep_alive_whitespace_cannot_outlast_the_whole_deadline)
{
    auto cfg = fixed();
    cfg.whitespace_keepalive = true;
    cfg.keepalive_interval = 50ms;
    cfg.models = frugal::standard_sim_models();
    for (auto& m : cfg.models)
        m.time_to_first_token = 5s;
    auto params = fast_retries();
    params.timeouts.total = 600ms;
    params.timeouts.stall = 200ms; // never reached: whitespace arrives every 50 ms
    client_fixture f(cfg, params);
    const auto t0 = std::chrono::steady_clock::now();
    const auto r = f.chat(request("openai/gpt-5-mini", "Hi"));
    BOOST_TEST(r.ec == frugal::error::timeout);
    BOOST_TEST(r.diag.message.find("whole-request deadline") != std::string::npos);
    BOOST_TEST((std::chrono::steady_clock::now() - t0 < 1500ms));
}

BOOST_AUTO_TEST_CASE(slow_first_token_within_and_beyond_the_deadlines)
{
    auto params = fast_retries();
    params.timeouts.stall = 300ms;
    client_fixture f(fixed(), params);
    // The keep-alive comment arrives at once, then the first token after 200 ms: within.
    auto s = f.stream(request("openai/gpt-5-mini", "Hi [sim fault=slow-first-token ms=200]"));
    BOOST_TEST(!s.ec);
    // A stall of a second mid-stream is beyond the stall deadline.
    s = f.stream(request("openai/gpt-5-mini", "Hi [sim tokens=6 fault=stall after=2 ms=1000]"));
    BOOST_TEST(s.ec == frugal::error::timeout);
    BOOST_TEST(s.diag.message == "the stream stalled");
    BOOST_TEST(s.deltas == 2);
}

namespace {

std::string sse_chunk(const std::string& data)
{
    char size[16];
    std::snprintf(size, sizeof size, "%zx", data.size());
    return std::string(size) + "\r\n" + data + "\r\n";
}

std::string text_event(const std::string& text)
{
    return "data: {\"id\":\"gen-x\",\"model\":\"m/x\",\"choices\":[{\"index\":0,"
           "\"delta\":{\"content\":\"" +
           text + "\"}}]}\n\n";
}

const std::string stream_head = "HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\n"
                                "Transfer-Encoding: chunked\r\n\r\n";
// [DONE], then the chunked body's end.
const std::string stream_end = sse_chunk("data: [DONE]\n\n") + "0\r\n\r\n";

} // namespace

BOOST_AUTO_TEST_CASE(a_stream_read_into_one_delta_gets_every_delta_and_is_left_empty_at_the_end)
{
    const std::string long_text(300, 'x'); // past the small-string room: a string of its own
    canned_server server(
        {stream_head + sse_chunk(text_event("Hello")) + sse_chunk(text_event(long_text)) +
             sse_chunk(text_event(" world")) + stream_end,
         // then a stream cut short: its failed read leaves the delta empty
         stream_head + sse_chunk(text_event("cut")) + "0\r\n\r\n"});
    asio::io_context io;
    auto p = fast_retries();
    p.base_url = api_url(server);
    frugal::chat_client client(io.get_executor(), p);
    struct seen {
        std::vector<std::string> texts;
        boost::system::error_code end, after;
        std::string left, kept;
        std::size_t events = 0;
        std::string answer;
        boost::system::error_code cut;
        std::string cut_left;
    };
    auto read_all = [&]() -> asio::awaitable<seen> {
        seen r;
        frugal::chat_stream s;
        auto [ec] = co_await client.async_start_stream(request("m/x", "Hi"), s, tuple_awaitable);
        BOOST_REQUIRE(!ec);
        frugal::chat_delta d;
        d.content = "left over from before"; // cleared when a read starts
        while (!s.done()) {
            auto [rec] = co_await s.async_read_delta(d, tuple_awaitable);
            r.end = rec;
            if (rec)
                break;
            r.events += d.events;
            if (!d.content.empty())
                r.texts.push_back(d.content);
        }
        r.left = d.content;
        r.answer = s.response().content;
        // A read refused at once leaves the delta as it was.
        d.content = "kept";
        auto [after] = co_await s.async_read_delta(d, tuple_awaitable);
        r.after = after;
        r.kept = d.content;
        frugal::chat_stream cut;
        auto [cec] = co_await client.async_start_stream(request("m/x", "Hi"), cut, tuple_awaitable);
        BOOST_REQUIRE(!cec);
        while (!cut.done()) {
            auto [rec] = co_await cut.async_read_delta(d, tuple_awaitable);
            r.cut = rec;
            r.cut_left = d.content;
        }
        co_return r;
    };
    const auto r = run(io, read_all());
    BOOST_TEST(!r.end, r.end.message());
    std::string joined;
    for (const auto& t : r.texts)
        joined += t;
    BOOST_TEST(joined == "Hello" + long_text + " world");
    BOOST_TEST(r.answer == joined);
    BOOST_TEST(r.events == 3u);
    BOOST_TEST(r.left.empty()); // the read that met [DONE] alone
    BOOST_TEST(r.after == frugal::error::stream_not_readable);
    BOOST_TEST(r.kept == "kept");
    BOOST_TEST(r.cut == frugal::error::stream_truncated);
    BOOST_TEST(r.cut_left.empty());
}

BOOST_AUTO_TEST_CASE(a_stream_after_one_cut_mid_line_parses_from_a_clean_start)
{
    // The first stream's body ends inside an event: its parser holds half a line when the
    // stream fails. The next stream on the thread (which may start with that parser's room)
    // must see none of it.
    const std::string half = "data: {\"id\":\"gen-x\",\"choices\":[{\"index\":0,\"delta\":";
    canned_server server(
        {stream_head + sse_chunk(text_event("first")) + sse_chunk(half) + "0\r\n\r\n",
         stream_head + sse_chunk(text_event("second")) + stream_end});
    asio::io_context io;
    auto p = fast_retries();
    p.base_url = api_url(server);
    frugal::chat_client client(io.get_executor(), p);
    const auto cut = run(io, stream_all(client, request("m/x", "Hi"), -1));
    BOOST_TEST(cut.ec == frugal::error::stream_truncated, cut.diag.message);
    BOOST_TEST(cut.text == "first");
    const auto next = run(io, stream_all(client, request("m/x", "Hi"), -1));
    BOOST_TEST(!next.ec, next.ec.message() << ": " << next.diag.message);
    BOOST_TEST(next.text == "second");
    BOOST_TEST(next.response.content == "second");
}

BOOST_AUTO_TEST_CASE(a_chunk_size_line_without_end_fails_the_read_instead_of_growing_the_buffer)
{
    // Beast bounds neither a chunk's size line nor the trailers: a provider that sends one
    // without end (here 1 MiB of a chunk extension, then nothing) would have the client read
    // and keep it all, waiting for its line's end. The read buffer stops at max_header_size
    // plus one read, and the request fails at once, saying why.
    const std::string endless(1 << 20, 'a');
    canned_server server({
        "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nTransfer-Encoding: "
        "chunked\r\n\r\n5;" +
            endless,
        stream_head + sse_chunk(text_event("a")) + "5;" + endless,
    });
    asio::io_context io;
    auto p = fast_retries();
    p.base_url = api_url(server);
    p.limits.max_header_size = 8 * 1024;
    frugal::chat_client client(io.get_executor(), p);
    const auto whole = run(io, chat_once(client, request("m/x", "Hi")));
    BOOST_TEST(whole.ec.failed());
    BOOST_TEST(
        whole.diag.message == "a chunk's size line or the trailers of the response body are "
                              "longer than max_header_size allows");
    const auto streamed = run(io, stream_all(client, request("m/x", "Hi"), -1));
    BOOST_TEST(streamed.ec == frugal::error::stream_truncated);
    BOOST_TEST(
        streamed.diag.message == "a chunk's size line or the trailers of the stream are "
                                 "longer than max_header_size allows");
    BOOST_TEST(streamed.text == "a");
}

BOOST_AUTO_TEST_CASE(a_later_smaller_usage_in_a_stream_never_lowers_the_bill)
{
    // The usage reported first (500 completion tokens, $0.00101) stands against a later one
    // that says less; a later one that says more (a server reporting usage as it grows) wins.
    const auto usage_event = [](int in, int out, const char* cost) {
        return "data: "
               "{\"id\":\"gen-x\",\"model\":\"m/x\",\"choices\":[],\"usage\":{\"prompt_tokens\":" +
               std::to_string(in) + ",\"completion_tokens\":" + std::to_string(out) +
               ",\"cost\":" + cost + "}}\n\n";
    };
    canned_server server(
        {stream_head + sse_chunk(text_event("Hel")) + sse_chunk(usage_event(10, 500, "0.00101")) +
             sse_chunk(text_event("lo")) + sse_chunk(usage_event(1, 1, "0.000003")) + stream_end,
         stream_head + sse_chunk(usage_event(10, 1, "0.000001")) + sse_chunk(text_event("a")) +
             sse_chunk(usage_event(10, 2, "0.000002")) + stream_end});
    asio::io_context io;
    auto p = fast_retries();
    p.base_url = api_url(server);
    frugal::chat_client client(io.get_executor(), p);
    const auto lower = run(io, stream_all(client, request("m/x", "Hi"), -1));
    BOOST_TEST(!lower.ec, lower.diag.message);
    BOOST_TEST(lower.text == "Hello");
    BOOST_TEST_REQUIRE(lower.response.usage.has_value());
    BOOST_TEST((lower.response.usage->cost.value() == *frugal::money::parse("0.00101")));
    BOOST_TEST(lower.response.usage->completion_tokens == 500u);
    const auto growing = run(io, stream_all(client, request("m/x", "Hi"), -1));
    BOOST_TEST(!growing.ec, growing.diag.message);
    BOOST_TEST_REQUIRE(growing.response.usage.has_value());
    BOOST_TEST(growing.response.usage->tokens_rejected.empty());
    BOOST_TEST((growing.response.usage->cost.value() == *frugal::money::parse("0.000002")));
    BOOST_TEST(growing.response.usage->completion_tokens == 2u);
}

BOOST_AUTO_TEST_CASE(a_stream_that_changes_its_model_part_way_prices_no_tokens)
{
    // Its text named x/dear, its last chunk a/cheap: priced at the last, its tokens would book
    // a hundredth of what the text's model costs. They price nothing; a cost is still the bill.
    const auto event = [](const char* model, const char* text) {
        return "data: {\"id\":\"gen-x\",\"model\":\"" + std::string(model) +
               "\",\"choices\":[{\"index\":0,\"delta\":{\"content\":\"" + text + "\"}}]}\n\n";
    };
    const std::string usage =
        "data: {\"id\":\"gen-x\",\"model\":\"a/cheap\",\"choices\":[],\"usage\":"
        "{\"prompt_tokens\":10,\"completion_tokens\":400}}\n\n";
    canned_server server(
        {stream_head + sse_chunk(event("x/dear", "Hel")) + sse_chunk(event("x/dear", "lo")) +
         sse_chunk(usage) + stream_end});
    asio::io_context io;
    auto p = fast_retries();
    p.base_url = api_url(server);
    frugal::chat_client client(io.get_executor(), p);
    const auto s = run(io, stream_all(client, request("x/dear", "Hi"), -1));
    BOOST_TEST(!s.ec, s.diag.message);
    BOOST_TEST(s.text == "Hello");
    BOOST_TEST_REQUIRE(s.response.usage.has_value());
    BOOST_TEST(s.response.usage->tokens_rejected == "the stream named another model part-way");
}

BOOST_AUTO_TEST_CASE(the_key_is_scrubbed_from_finish_reasons_generation_ids_and_price_names)
{
    // Fields a provider fills with text: each could echo the key it was sent.
    const std::string whole =
        R"({"id":"gen-w","model":"m/x","choices":[{"message":{"role":"assistant",)"
        R"("content":"hi"},"finish_reason":")" +
        test_key + R"(","native_finish_reason":")" + test_key + R"("}]})";
    const std::string streamed =
        "data: {\"id\":\"gen-s\",\"choices\":[{\"index\":0,\"delta\":{\"content\":\"hi\"},"
        "\"finish_reason\":\"" +
        test_key + "\",\"native_finish_reason\":\"" + test_key + "\"}]}\n\n";
    const std::string models =
        R"({"data":[{"id":"a/m","pricing":{"prompt":"0.000001","completion":"0.000002","x-)" +
        test_key + R"(":"0.1"}}]})";
    canned_server server({
        canned_server::ok(whole, "X-Generation-Id: " + test_key + "\r\n"),
        "HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\nX-Generation-Id: " + test_key +
            "\r\nTransfer-Encoding: chunked\r\n\r\n" + sse_chunk(streamed) + stream_end,
        canned_server::ok(models),
    });
    asio::io_context io;
    auto p = fast_retries();
    p.base_url = api_url(server);
    frugal::chat_client client(io.get_executor(), p);
    const auto w = run(io, chat_once(client, request("m/x", "Hi")));
    BOOST_TEST(!w.ec, w.diag.message);
    BOOST_TEST(w.response.finish_reason.find("[redacted]") != std::string::npos);
    BOOST_TEST(w.response.finish_reason.find(test_key.substr(0, 12)) == std::string::npos);
    BOOST_TEST(w.response.native_finish_reason.find(test_key.substr(0, 12)) == std::string::npos);
    BOOST_TEST(w.diag.generation_id.find(test_key.substr(0, 12)) == std::string::npos);

    struct seen {
        boost::system::error_code ec;
        std::string generation_at_start;
        frugal::chat_response response;
    };
    const auto read = [&]() -> asio::awaitable<seen> {
        seen r;
        frugal::chat_stream s;
        auto [ec] = co_await client.async_start_stream(request("m/x", "Hi"), s, tuple_awaitable);
        r.ec = ec;
        r.generation_at_start = s.diagnostics().generation_id; // what a ledger notes at once
        while (!r.ec && !s.done())
            std::tie(r.ec, std::ignore) = co_await s.async_read_delta(tuple_awaitable);
        r.response = s.response();
        co_return r;
    };
    const auto st = run(io, read());
    BOOST_TEST(!st.ec, st.ec.message());
    BOOST_TEST(
        st.generation_at_start.find(test_key.substr(0, 12)) == std::string::npos,
        st.generation_at_start);
    BOOST_TEST(st.response.finish_reason.find(test_key.substr(0, 12)) == std::string::npos);
    BOOST_TEST(st.response.native_finish_reason.find(test_key.substr(0, 12)) == std::string::npos);

    const auto [mec, rows] = run(io, models_once(client));
    BOOST_TEST(!mec, mec.message());
    BOOST_TEST_REQUIRE(rows.size() == 1u);
    for (const auto& [name, price] : rows[0].other_prices)
        BOOST_TEST(name.find(test_key.substr(0, 12)) == std::string::npos, name);
    BOOST_TEST(rows[0].price_problem.find(test_key.substr(0, 12)) == std::string::npos);
    BOOST_TEST(
        frugal::price_catalog(rows).find("a/m")->unknown.find(test_key.substr(0, 12)) ==
        std::string::npos);
}

BOOST_AUTO_TEST_CASE(interim_responses_are_read_past_and_the_final_one_is_the_answer)
{
    // RFC 9110: 1xx responses come before the final one. Read as final, a good answer was a
    // failure, charged at its reservation. Without end, they stop after a few.
    const std::string interim =
        "HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 103 Early Hints\r\nLink: </x>; rel=preload\r\n\r\n";
    const std::string answer =
        R"({"id":"gen-i","model":"m/x","choices":[{"message":{"role":"assistant",)"
        R"("content":"after hints"},"finish_reason":"stop"}]})";
    std::string endless;
    for (int i = 0; i < 12; ++i)
        endless += "HTTP/1.1 100 Continue\r\n\r\n";
    canned_server server(
        {interim + canned_server::ok(answer), endless + canned_server::ok(answer)});
    asio::io_context io;
    auto p = fast_retries();
    p.base_url = api_url(server);
    frugal::chat_client client(io.get_executor(), p);
    const auto ok = run(io, chat_once(client, request("m/x", "Hi")));
    BOOST_TEST(!ok.ec, ok.diag.message);
    BOOST_TEST(ok.response.content == "after hints");
    BOOST_TEST(ok.diag.http_status == 200);
    const auto many = run(io, chat_once(client, request("m/x", "Hi")));
    BOOST_TEST(many.ec.failed());
}

BOOST_AUTO_TEST_CASE(a_quoted_body_is_utf8_whatever_the_body_held)
{
    // An error page quoted in a message goes into JSON a gateway's clients parse: cut at 160
    // bytes, it must not split a character, and bytes that are no UTF-8 become U+FFFD.
    const std::string page =
        "<html>" + std::string(153, 'a') + "\xc3\xa9\xc3\xa9\xc3\xa9 gateway error</html>";
    const std::string binary = "\x1f\x8b\x08\x00\xff\xfe" + std::string(20, 'b');
    const auto status_502 = [](const std::string& type, const std::string& body) {
        return "HTTP/1.1 502 Bad Gateway\r\nContent-Type: " + type +
               "\r\nContent-Length: " + std::to_string(body.size()) + "\r\n\r\n" + body;
    };
    canned_server server({status_502("text/html", page)});
    asio::io_context io;
    auto p = fast_retries();
    p.base_url = api_url(server);
    frugal::chat_client client(io.get_executor(), p);
    const auto utf8 = [](const std::string& text) {
        boost::system::error_code ec;
        boost::json::parse(boost::json::serialize(boost::json::value(text)), ec);
        return !ec;
    };
    const auto cut = run(io, chat_once(client, request("m/x", "Hi")));
    BOOST_TEST(cut.ec.failed());
    BOOST_TEST(utf8(cut.diag.message), cut.diag.message);
    // The 160th byte is the first half of an é: the character is left out, not split.
    BOOST_TEST(cut.diag.message.find("aaa...") != std::string::npos, cut.diag.message);
    BOOST_TEST(cut.diag.message.find('\xc3') == std::string::npos, cut.diag.message);
    canned_server gz({status_502("text/plain", binary)});
    p.base_url = api_url(gz);
    frugal::chat_client client2(io.get_executor(), p);
    const auto raw = run(io, chat_once(client2, request("m/x", "Hi")));
    BOOST_TEST(raw.ec.failed());
    BOOST_TEST(utf8(raw.diag.message), raw.diag.message);
    BOOST_TEST(raw.diag.message.find("\xef\xbf\xbd") != std::string::npos, raw.diag.message);
}

BOOST_AUTO_TEST_CASE(a_tool_call_index_far_past_any_answer_fails_the_stream_without_growing_it)
{
    // The response keeps a call for every index up to the one named: an index of four billion
    // would have it allocate that many empty calls.
    const std::string call =
        "data: {\"id\":\"gen-x\",\"choices\":[{\"index\":0,\"delta\":{\"tool_calls\":"
        "[{\"index\":4000000000,\"id\":\"c\",\"function\":{\"name\":\"f\",\"arguments\":\"{}\"}}]}}"
        "]}\n\n";
    const std::string fine =
        "data: {\"id\":\"gen-x\",\"choices\":[{\"index\":0,\"delta\":{\"tool_calls\":"
        "[{\"index\":1,\"id\":\"c\",\"function\":{\"name\":\"f\",\"arguments\":\"{}\"}}]}}]}\n\n";
    canned_server server(
        {stream_head + sse_chunk(text_event("a")) + sse_chunk(call) + stream_end,
         stream_head + sse_chunk(fine) + stream_end});
    asio::io_context io;
    auto p = fast_retries();
    p.base_url = api_url(server);
    frugal::chat_client client(io.get_executor(), p);
    const auto far = run(io, stream_all(client, request("m/x", "Hi"), -1));
    BOOST_TEST(far.ec == frugal::error::protocol_error);
    BOOST_TEST(
        far.diag.message == "a stream's tool call index is 4000000000, past the 1024 calls a "
                            "response may hold");
    BOOST_TEST(far.response.tool_calls.empty());
    // An index a little ahead is kept where it says (the calls before it empty).
    const auto near = run(io, stream_all(client, request("m/x", "Hi"), -1));
    BOOST_TEST(!near.ec, near.diag.message);
    BOOST_TEST_REQUIRE(near.response.tool_calls.size() == 2u);
    BOOST_TEST(near.response.tool_calls[1].name == "f");
}

BOOST_AUTO_TEST_CASE(a_stream_cut_without_done_is_an_error_never_a_success)
{
    client_fixture f;
    const auto s = f.stream(request("openai/gpt-5-mini", "Hi [sim tokens=9 fault=cut after=4]"));
    BOOST_TEST(s.ec == frugal::error::stream_truncated);
    BOOST_TEST(s.deltas == 4);
    BOOST_TEST(s.text == s.response.content);
    BOOST_TEST(!s.response.usage);
    const auto w = f.chat(request("openai/gpt-5-mini", "Hi [sim fault=cut]"));
    BOOST_TEST(w.ec.failed()); // the body is cut short
    BOOST_TEST(f.client.open_connections() == 0u);
}

BOOST_AUTO_TEST_CASE(mid_stream_errors_carry_the_servers_message)
{
    client_fixture f;
    auto s =
        f.stream(request("openai/gpt-5-mini", "Hi [sim tokens=6 fault=midstream-error after=3]"));
    BOOST_TEST(s.ec == frugal::error::midstream_error);
    BOOST_TEST(s.deltas == 3);
    BOOST_TEST(s.diag.message == "Provider returned error");
    BOOST_TEST(s.diag.code == "502");
    BOOST_TEST(s.diag.raw == "upstream connect error");
    BOOST_TEST(s.diag.generation_id == s.response.id);
    BOOST_TEST(s.response.finish_reason == "error");
    s = f.stream(
        request("openai/gpt-5-mini", "Hi [sim tokens=6 fault=midstream-error-choice after=2]"));
    BOOST_TEST(s.ec == frugal::error::midstream_error);
    BOOST_TEST(s.diag.message.find("finish_reason \"error\"") != std::string::npos);
    s = f.stream(request("openai/gpt-5-mini", "Hi [sim tokens=6 fault=malformed-chunk after=2]"));
    BOOST_TEST(s.ec == frugal::error::protocol_error);
    BOOST_TEST(s.diag.message.starts_with("a stream event is not JSON"));
}

BOOST_AUTO_TEST_CASE(stream_status_errors_are_reported_at_start)
{
    client_fixture f;
    const auto s = f.stream(request("openai/gpt-5-mini", "Hi [sim fault=402]"));
    BOOST_TEST(s.start_ec == frugal::error::insufficient_credits);
    BOOST_TEST(s.diag.http_status == 402);
    BOOST_TEST(!s.started);
}

BOOST_AUTO_TEST_CASE(the_pool_reuses_connections_and_discards_failed_ones)
{
    client_fixture f;
    for (int i = 0; i < 5; ++i)
        BOOST_TEST(!f.chat(request("openai/gpt-5-mini", "Hi")).ec);
    BOOST_TEST(f.client.open_connections() == 1u);
    BOOST_TEST(f.client.idle_connections() == 1u);
    BOOST_TEST(!f.stream(request("openai/gpt-5-mini", "Hi")).ec);
    BOOST_TEST(f.client.open_connections() == 1u); // the stream ended cleanly: back in the pool
    // A complete error response leaves the connection usable.
    BOOST_TEST(
        f.chat(request("openai/gpt-5-mini", "Hi [sim fault=500]")).ec ==
        frugal::error::server_error);
    BOOST_TEST(f.client.open_connections() == 1u);
    // A failed exchange never goes back.
    BOOST_TEST(
        f.stream(request("openai/gpt-5-mini", "Hi [sim fault=cut]")).ec ==
        frugal::error::stream_truncated);
    BOOST_TEST(f.client.open_connections() == 0u);
    BOOST_TEST(!f.chat(request("openai/gpt-5-mini", "Hi")).ec);
    BOOST_TEST(f.client.open_connections() == 1u);
}

BOOST_AUTO_TEST_CASE(a_pooled_connection_the_server_closed_is_replaced)
{
    auto sim = std::make_unique<frugal::sim_thread>(fixed());
    const auto port = sim->port();
    boost::asio::io_context io;
    auto params = fast_retries();
    params.base_url = sim->base_url();
    frugal::chat_client client(io.get_executor(), params);
    BOOST_TEST(!run(io, chat_once(client, request("openai/gpt-5-mini", "Hi"))).ec);
    BOOST_TEST(client.idle_connections() == 1u);
    sim.reset(); // closes every connection, the idle one too
    sim = std::make_unique<frugal::sim_thread>(fixed(), "127.0.0.1", port);
    const auto r = run(io, chat_once(client, request("openai/gpt-5-mini", "Hi")));
    BOOST_TEST(!r.ec, r.ec.message() << ": " << r.diag.to_string());
    BOOST_TEST(r.diag.attempts == 1);
}

namespace {

// Answers the first request on each connection with a keep-alive 200 (no Connection: close),
// then closes: at once, or after reading the next request whole without answering it. Counts
// the requests it read. Closing at once, the answer is corked, so that it leaves with the
// close (one segment, answer and FIN): the client has the close before it can reuse the
// connection.
class closing_after_an_answer : public loopback_server {
public:
    enum class then { close, read_and_close };
    explicit closing_after_an_answer(then how) : how_(how) { start(); }
    ~closing_after_an_answer() override { stop(); }
    int requests() const { return requests_; }

private:
    asio::awaitable<void> serve(tcp::socket socket) override
    {
        namespace detail = frugal::test::detail;
        asio::streambuf in;
        auto head = co_await detail::read_head(socket, in);
        if (!head || !co_await detail::read_body(socket, in, *head))
            co_return;
        ++requests_;
        const auto answer = canned_server::ok(
            R"({"id":"gen-1","model":"m/x","choices":[{"message":{"role":"assistant",)"
            R"("content":"ok"},"finish_reason":"stop"}]})");
        if (how_ == then::close) {
            const int on = 1;
            ::setsockopt(socket.native_handle(), IPPROTO_TCP, TCP_CORK, &on, sizeof on);
        }
        co_await asio::async_write(
            socket, asio::buffer(answer), asio::as_tuple(asio::use_awaitable));
        if (how_ == then::read_and_close) {
            head = co_await detail::read_head(socket, in);
            if (head && co_await detail::read_body(socket, in, *head))
                ++requests_;
        }
        boost::system::error_code ignored;
        socket.close(ignored);
    }
    then how_;
    std::atomic<int> requests_{0};
};

} // namespace

// The server's close comes with its answer, before the connection is given back: the next
// request, taken straight after, must not go out on it (the pool's peek sees the close), so
// every request is answered and each is read once. Skipping the peek for a connection just
// given back fails this: that request meets the close, and it may not be sent again.
BOOST_AUTO_TEST_CASE(a_server_that_closes_after_each_answer_loses_no_request)
{
    closing_after_an_answer server(closing_after_an_answer::then::close);
    asio::io_context io;
    auto p = fast_retries();
    p.base_url = api_url(server);
    frugal::chat_client client(io.get_executor(), p);
    for (int i = 0; i < 20; ++i) {
        const auto r = run(io, chat_once(client, request("m/x", "Hi")));
        BOOST_TEST(!r.ec, i << ": " << r.ec.message() << ": " << r.diag.to_string());
        BOOST_TEST(r.diag.attempts == 1);
    }
    BOOST_TEST(server.requests() == 20);
    BOOST_TEST(server.connections() == 20);
}

// A server that read the request and then closed may have run it: that request fails (after
// the request was sent, so not retried) and is not sent again on another connection.
BOOST_AUTO_TEST_CASE(a_request_the_server_read_before_closing_is_not_sent_again)
{
    closing_after_an_answer server(closing_after_an_answer::then::read_and_close);
    asio::io_context io;
    auto p = fast_retries();
    p.base_url = api_url(server);
    frugal::chat_client client(io.get_executor(), p);
    BOOST_TEST(!run(io, chat_once(client, request("m/x", "Hi"))).ec);
    const auto r = run(io, chat_once(client, request("m/x", "Hi")));
    BOOST_TEST(r.ec == make_error_code(boost::beast::http::error::end_of_stream), r.ec.message());
    BOOST_TEST(r.diag.request_sent);
    BOOST_TEST(server.requests() == 2);
    BOOST_TEST(server.connections() == 1);
}

BOOST_AUTO_TEST_CASE(concurrent_requests_share_the_pool_up_to_its_limit)
{
    auto params = fast_retries();
    params.max_connections = 4;
    client_fixture f(paced(5ms), params);
    const auto results = f.many(request("openai/gpt-5-mini", "Hi [sim tokens=5]"), 32);
    for (const auto& r : results)
        BOOST_TEST(!r.ec, r.ec.message() << ": " << r.diag.to_string());
    BOOST_TEST(f.client.open_connections() <= 4u);
    BOOST_TEST(f.bill().at("total").at("requests").as_int64() == 32);
}

// A connection given back while others are out keeps its watchdog's pending wake-up, so that
// its next request arms no timer. That request's deadline still holds: it fails when its own
// first-byte deadline passes, neither at the earlier wake-up nor never.
BOOST_AUTO_TEST_CASE(a_connection_reused_while_others_are_out_keeps_its_requests_deadline)
{
    using clock = std::chrono::steady_clock;
    auto params = fast_retries();
    params.timeouts.first_byte = 400ms;
    client_fixture f(paced(20ms), params);
    stream_result slow;
    chat_result quick, hung;
    clock::duration hung_took{};
    asio::co_spawn(
        f.io,
        [&]() -> asio::awaitable<void> { // a stream holds a connection throughout (about 0.8 s)
            slow = co_await stream_all(
                f.client, request("openai/gpt-5-mini", "Hi [sim tokens=40]"), -1);
        },
        asio::detached);
    asio::co_spawn(
        f.io,
        [&]() -> asio::awaitable<void> {
            quick = co_await chat_once(f.client, request("openai/gpt-5-mini", "Hi [sim tokens=1]"));
            asio::steady_timer later(
                f.io, 200ms); // its wake-up is now 200 ms before the next deadline
            co_await later.async_wait(tuple_awaitable);
            const auto t0 = clock::now();
            hung =
                co_await chat_once(f.client, request("openai/gpt-5-mini", "Hi [sim fault=hang]"));
            hung_took = clock::now() - t0;
        },
        asio::detached);
    f.io.restart();
    f.io.run();
    BOOST_TEST(!slow.ec, slow.ec.message());
    BOOST_TEST(slow.done);
    BOOST_TEST(!quick.ec, quick.ec.message());
    BOOST_TEST(hung.ec == frugal::error::timeout, hung.ec.message());
    BOOST_TEST(hung.diag.message.find("first-byte") != std::string::npos, hung.diag.message);
    BOOST_TEST(hung_took >= 380ms);
    BOOST_TEST(hung_took < 2s);
}

namespace {

// Answers a request whose prompt says "fast" or "slow" with its head at once and its body
// 600 or 1,200 ms later; never answers one that says "hang".
class paced_body_server : public loopback_server {
public:
    paced_body_server() { start(); }
    ~paced_body_server() override { stop(); }

private:
    asio::awaitable<void> serve(tcp::socket socket) override
    {
        asio::streambuf in;
        for (;;) {
            const auto head = co_await frugal::test::detail::read_head(socket, in);
            if (!head)
                co_return;
            const auto body = co_await frugal::test::detail::read_body(socket, in, *head);
            if (!body)
                co_return;
            if (body->find("hang") != std::string::npos) {
                co_await asio::async_read(socket, in, asio::as_tuple(asio::use_awaitable));
                co_return; // until the client gives up and closes
            }
            const std::string answer =
                R"({"id":"gen-p","model":"m/x","choices":[{"message":{"role":"assistant",)"
                R"("content":"paced"},"finish_reason":"stop"}]})";
            const std::string reply_head = "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\n"
                                           "Content-Length: " +
                                           std::to_string(answer.size()) + "\r\n\r\n";
            co_await asio::async_write(
                socket, asio::buffer(reply_head), asio::as_tuple(asio::use_awaitable));
            asio::steady_timer pause(
                socket.get_executor(), body->find("slow") != std::string::npos ? 1200ms : 600ms);
            co_await pause.async_wait(asio::as_tuple(asio::use_awaitable));
            auto [wec, wn] = co_await asio::async_write(
                socket, asio::buffer(answer), asio::as_tuple(asio::use_awaitable));
            if (wec)
                co_return;
        }
    }
};

} // namespace

// A kept wake-up later than the next request's deadline (the body's stall deadline, 5 s, against
// a first-byte deadline of 300 ms) does not stand in for it: the request times out at 300 ms.
BOOST_AUTO_TEST_CASE(a_kept_wakeup_later_than_the_next_deadline_is_armed_again)
{
    using clock = std::chrono::steady_clock;
    paced_body_server server;
    asio::io_context io;
    auto p = fast_retries();
    p.base_url = api_url(server);
    p.timeouts.first_byte = 300ms;
    p.timeouts.stall = 5s;
    frugal::chat_client client(io.get_executor(), p);
    chat_result fast, slow, hung;
    clock::duration hung_took{};
    asio::co_spawn(
        io,
        [&]() -> asio::awaitable<void> {
            fast = co_await chat_once(client, request("m/x", "fast"));
            // Its connection went back while the slow one was out: rested, its wake-up at the
            // body's stall deadline. The next request takes it.
            const auto t0 = clock::now();
            hung = co_await chat_once(client, request("m/x", "hang"));
            hung_took = clock::now() - t0;
        },
        asio::detached);
    asio::co_spawn(
        io,
        [&]() -> asio::awaitable<void> {
            slow = co_await chat_once(client, request("m/x", "slow"));
        },
        asio::detached);
    io.run();
    BOOST_TEST(!fast.ec, fast.ec.message());
    BOOST_TEST(!slow.ec, slow.ec.message());
    BOOST_TEST(fast.response.content == "paced");
    BOOST_TEST(hung.ec == frugal::error::timeout, hung.ec.message());
    BOOST_TEST(hung_took >= 280ms);
    BOOST_TEST(hung_took < 3s);
    BOOST_TEST(server.connections() == 2); // the hung request reused the fast one's connection
}

namespace {

// `n` chats at once with `prompt`, each answered, after which the io_context runs out of work
// at once: a wake-up still pending after them would keep it running (10 s at most here).
void chats_leaving_nothing_pending(client_fixture& f, const char* prompt, int n)
{
    std::vector<chat_result> results(static_cast<std::size_t>(n));
    for (auto& r : results) {
        asio::co_spawn(
            f.io,
            [&]() -> asio::awaitable<void> {
                r = co_await chat_once(f.client, request("openai/gpt-5-mini", prompt));
            },
            asio::detached);
    }
    f.io.restart();
    f.io.run_for(10s); // returns at once when no work is left
    BOOST_TEST_REQUIRE(f.io.stopped(), "a wake-up still pending 10 s after the chats");
    for (const auto& r : results) {
        BOOST_TEST(!r.ec, r.ec.message());
        BOOST_TEST(!r.response.content.empty());
    }
}

} // namespace

// The wake-ups kept for idle connections are cancelled once none is out: a program's `run()`
// returns when its last request ends, not when the last wake-up (a deadline a minute away) comes.
BOOST_AUTO_TEST_CASE(idle_connections_keep_no_wakeup_once_every_request_has_ended)
{
    auto params = fast_retries();
    params.timeouts.first_byte = 60s;
    params.timeouts.stall = 60s;
    client_fixture f(paced(5ms), params);
    for (int round = 0; round < 2; ++round) {
        chats_leaving_nothing_pending(f, "Hi [sim tokens=8]", 6);
        BOOST_TEST(f.client.open_connections() > 1u); // they overlapped: some were given back early
        BOOST_TEST(f.client.idle_connections() == f.client.open_connections());
    }
}

// A stream between reads is out of the pool but busy with nothing: its caller runs the
// io_context one read at a time. A chat that ends meanwhile must not leave its connection's
// wake-up pending (a deadline a minute away), or that caller's `run()` would not return.
BOOST_AUTO_TEST_CASE(a_stream_between_reads_leaves_no_other_connection_waking)
{
    auto params = fast_retries();
    params.timeouts.first_byte = 60s;
    params.timeouts.stall = 60s;
    client_fixture f(paced(5ms), params);
    frugal::chat_stream s;
    BOOST_TEST_REQUIRE(!std::get<0>(
        run(f.io, start_stream(f.client, request("openai/gpt-5-mini", "Hi [sim tokens=20]"), s))));
    BOOST_TEST_REQUIRE(!std::get<0>(run(f.io, read_delta(s))));
    for (int round = 0; round < 2; ++round) {
        // Two chats at once, so that the first given back finds another out.
        chats_leaving_nothing_pending(f, "Hi [sim tokens=4]", 2);
    }
    // The stream reads on to its end, its deadlines armed again.
    for (int reads = 0; !s.done() && reads < 100; ++reads)
        BOOST_TEST_REQUIRE(!std::get<0>(run(f.io, read_delta(s))));
    BOOST_TEST(s.done());
}

BOOST_AUTO_TEST_CASE(cancelling_a_chat_closes_its_connection_promptly)
{
    client_fixture f;
    const auto t0 = std::chrono::steady_clock::now();
    const auto r = f.race(request("openai/gpt-5-mini", "Hi [sim fault=hang]"), 100ms);
    BOOST_TEST(r.ec == boost::asio::error::operation_aborted);
    BOOST_TEST((std::chrono::steady_clock::now() - t0 < 1s));
    BOOST_TEST(f.client.open_connections() == 0u);
}

BOOST_AUTO_TEST_CASE(cancelling_a_stream_read_cancels_the_generation)
{
    client_fixture f(paced(30ms));
    const auto s =
        f.stream(request("anthropic/claude-fable-5", "Hi [sim tokens=40]"), /*cancel_after=*/5);
    BOOST_TEST(s.ec == boost::asio::error::operation_aborted);
    BOOST_TEST(s.deltas == 5);
    BOOST_TEST(f.client.open_connections() == 0u);
    std::this_thread::sleep_for(200ms);
    const auto m = f.bill().at("models").at("anthropic/claude-fable-5").as_object();
    BOOST_TEST(m.at("cancelled").as_int64() == 1);
    BOOST_TEST(m.at("completion_tokens").as_int64() <= 8); // billed what was delivered, not 41
}

BOOST_AUTO_TEST_CASE(abandoning_a_stream_discards_its_connection)
{
    client_fixture f(paced(30ms));
    {
        frugal::chat_stream stream;
        auto [ec] = run(
            f.io, start_stream(
                      f.client, request("anthropic/claude-fable-5", "Hi [sim tokens=40]"), stream));
        BOOST_TEST(!ec);
        BOOST_TEST(f.client.open_connections() == 1u);
    } // destroyed mid-stream
    BOOST_TEST(f.client.open_connections() == 0u);
    BOOST_TEST(f.client.idle_connections() == 0u);
}

BOOST_AUTO_TEST_CASE(reads_after_the_end_and_concurrent_reads_are_refused)
{
    client_fixture f;
    frugal::chat_stream stream;
    auto [rec, delta] = run(f.io, read_delta(stream));
    BOOST_TEST(rec == frugal::error::stream_not_readable); // never started
    auto [ec] = run(
        f.io, start_stream(f.client, request("openai/gpt-5-mini", "Hi [sim tokens=2]"), stream));
    BOOST_TEST(!ec);
    const auto both = run(f.io, two_reads(stream));
    BOOST_TEST(std::get<1>(both) == frugal::error::operation_in_progress);
    while (!stream.done())
        run(f.io, read_delta(stream));
    BOOST_TEST(std::get<0>(run(f.io, read_delta(stream))) == frugal::error::stream_not_readable);
}

BOOST_AUTO_TEST_CASE(models_generation_and_key_info)
{
    client_fixture f;
    const auto models = run(f.io, models_once(f.client));
    BOOST_REQUIRE(!std::get<0>(models));
    const auto& list = std::get<1>(models);
    const auto scout = std::find_if(
        list.begin(), list.end(), [](const auto& m) { return m.id == "meta-llama/llama-4-scout"; });
    BOOST_REQUIRE(scout != list.end());
    BOOST_TEST(scout->prompt_price.units() == 37'500); // "0.0000000375", exactly
    const auto alias =
        std::find_if(list.begin(), list.end(), [](const auto& m) { return m.id.starts_with("~"); });
    BOOST_TEST(alias->alias_target == "anthropic/claude-fable-5");

    const auto r = f.chat(request("anthropic/claude-fable-5", "Hi"));
    const auto g = run(f.io, generation_once(f.client, r.response.id));
    BOOST_REQUIRE(!std::get<0>(g));
    BOOST_TEST((std::get<1>(g).total_cost == r.response.usage->cost));
    BOOST_TEST(std::get<1>(g).tokens_completion == r.response.usage->completion_tokens);
    BOOST_TEST(
        std::get<0>(run(f.io, generation_once(f.client, "gen-0-missing"))) ==
        frugal::error::not_found);

    const auto k = run(f.io, key_once(f.client));
    BOOST_REQUIRE(!std::get<0>(k));
    BOOST_TEST((std::get<1>(k).usage == *r.response.usage->cost));
    BOOST_TEST(!std::get<1>(k).limit);
}

BOOST_AUTO_TEST_CASE(limits_fail_cleanly)
{
    auto params = fast_retries();
    params.limits.max_body_size = 200;
    client_fixture f(fixed(), params);
    auto r = f.chat(request("openai/gpt-5-mini", "Hi"));
    BOOST_TEST(r.ec == make_error_code(boost::beast::http::error::body_limit));
    BOOST_TEST(r.diag.message.find("max_body_size") != std::string::npos);
    params = fast_retries();
    params.limits.max_sse_line_size = 100;
    client_fixture g(fixed(), params);
    const auto s = g.stream(request("openai/gpt-5-mini", "Hi"));
    BOOST_TEST(s.ec == frugal::error::sse_line_too_long);
    params = fast_retries();
    params.limits.max_header_size = 40;
    client_fixture h(fixed(), params);
    r = h.chat(request("openai/gpt-5-mini", "Hi"));
    BOOST_TEST(r.ec == make_error_code(boost::beast::http::error::header_limit));
}

BOOST_AUTO_TEST_CASE(configuration_errors_fail_the_request_without_touching_the_network)
{
    boost::asio::io_context io;
    for (const auto& [url, key, expected] :
         {std::tuple{"http://example.com/api/v1", "k", frugal::error::insecure_url},
          std::tuple{"ftp://x", "k", frugal::error::bad_url},
          std::tuple{"http://127.0.0.1:1/api/v1", "", frugal::error::missing_api_key}}) {
        frugal::client_params p;
        p.base_url = url;
        p.api_key = key;
        frugal::chat_client client(io.get_executor(), p);
        if (std::string(key).empty())
            unsetenv("OPENROUTER_API_KEY");
        const auto r = run(io, chat_once(client, request("m", "Hi")));
        BOOST_TEST(r.ec == expected, url);
        BOOST_TEST(!r.diag.message.empty());
    }
    // Connection refused is a connection error, retried, then reported.
    frugal::client_params p = fast_retries();
    p.base_url = "http://127.0.0.1:1/api/v1";
    frugal::chat_client client(io.get_executor(), p);
    const auto r = run(io, chat_once(client, request("m", "Hi")));
    BOOST_TEST(r.ec == boost::asio::error::connection_refused);
    BOOST_TEST(r.diag.attempts == 3);
    BOOST_TEST(r.diag.message.find("cannot connect to 127.0.0.1:1") != std::string::npos);
}

BOOST_AUTO_TEST_CASE(the_key_never_appears_in_errors)
{
    auto cfg = fixed();
    cfg.accept_any_key = false;
    client_fixture f(cfg);
    const auto r = f.chat(request("openai/gpt-5-mini", "Hi"));
    BOOST_TEST(r.ec == frugal::error::unauthorized);
    BOOST_TEST(r.diag.message == "User not found.");
    BOOST_TEST(r.diag.to_string().find(f.key()) == std::string::npos);
    BOOST_TEST(r.ec.message().find(f.key()) == std::string::npos);
}

BOOST_AUTO_TEST_SUITE_END()
