// The simulator over real sockets on 127.0.0.1: framing, keep-alive, timing, connection
// faults and the billing of clients that go away.
#define BOOST_TEST_MODULE frugal integration tests
#include "http_client.hpp"

#include <frugal/sim.hpp>
#include <frugal/sse_parser.hpp>

#include <boost/json.hpp>
#include <boost/test/unit_test.hpp>

#include <chrono>
#include <thread>

namespace json = boost::json;
using frugal::test::http_client;
using http = boost::beast::http::verb;
using namespace std::chrono_literals;
using steady = std::chrono::steady_clock;

namespace {

std::string chat(
    const std::string& model,
    const std::string& prompt,
    bool stream = false,
    const std::string& extra = "")
{
    json::object o{
        {"model", model},
        {"stream", stream},
        {"messages", json::array{json::object{{"role", "user"}, {"content", prompt}}}}};
    std::string s = json::serialize(o);
    if (!extra.empty())
        s.insert(s.size() - 1, "," + extra);
    return s;
}

frugal::sim_config fixed()
{
    frugal::sim_config c;
    c.fixed_time = 1795000000;
    return c;
}

frugal::sim_config paced(std::chrono::milliseconds per_token, std::chrono::milliseconds first = 0ms)
{
    auto c = fixed();
    c.models = frugal::standard_sim_models();
    for (auto& m : c.models) {
        m.time_per_token = per_token;
        m.time_to_first_token = first;
    }
    return c;
}

json::object bill(std::uint16_t port)
{
    http_client c(port);
    return json::parse(c.request(http::get, "/__sim/bill").body()).as_object();
}

// Events of an SSE body, through frugal's own parser.
std::vector<std::string> events(const std::string& body)
{
    frugal::sse_parser p;
    p.feed(body);
    std::vector<std::string> out;
    while (auto e = p.next())
        out.emplace_back(e->data);
    return out;
}

} // namespace

BOOST_AUTO_TEST_SUITE(sim_server)

BOOST_AUTO_TEST_CASE(serves_every_endpoint_on_one_keep_alive_connection)
{
    frugal::sim_thread sim(fixed());
    BOOST_TEST(sim.base_url() == "http://127.0.0.1:" + std::to_string(sim.port()) + "/api/v1");
    http_client c(sim.port());

    auto models = c.request(http::get, "/api/v1/models", "", "");
    BOOST_TEST(models.status == 200);
    BOOST_TEST(json::parse(models.body()).at("data").as_array().size() >= 5u);

    auto whole =
        c.request(http::post, "/api/v1/chat/completions", chat("anthropic/claude-fable-5", "Hi"));
    BOOST_TEST(whole.status == 200);
    const std::string id(json::parse(whole.body()).at("id").as_string());
    BOOST_TEST(whole.response["X-Generation-Id"] == id);

    auto stream = c.request(
        http::post, "/api/v1/chat/completions", chat("anthropic/claude-fable-5", "Hi", true));
    BOOST_TEST(stream.status == 200);
    BOOST_TEST(stream.response[boost::beast::http::field::content_type] == "text/event-stream");
    const auto ev = events(stream.body());
    BOOST_REQUIRE(ev.size() >= 3u);
    BOOST_TEST(ev.back() == "[DONE]");
    const auto usage = json::parse(ev[ev.size() - 2]).at("usage");
    BOOST_TEST(
        usage.at("completion_tokens").as_int64() == static_cast<std::int64_t>(ev.size() - 3));

    auto generation = c.request(http::get, "/api/v1/generation?id=" + id);
    BOOST_TEST(generation.status == 200);
    BOOST_TEST(json::parse(generation.body()).at("data").at("id").as_string() == id);

    auto key = c.request(http::get, "/api/v1/key");
    BOOST_TEST(key.status == 200);
    BOOST_TEST(json::parse(key.body()).at("data").at("usage").as_double() > 0);

    auto b = c.request(http::get, "/__sim/bill");
    BOOST_TEST(json::parse(b.body()).at("total").at("requests").as_int64() == 2);
}

BOOST_AUTO_TEST_CASE(same_seed_same_bytes_over_the_wire)
{
    auto run = [] {
        frugal::sim_thread sim(fixed());
        http_client c(sim.port());
        std::string all;
        for (const char* prompt : {"one", "two [sim poor=refusal]", "three"}) {
            all +=
                c.request(
                     http::post, "/api/v1/chat/completions", chat("deepseek/deepseek-v3.2", prompt))
                    .body();
            all += c.request(
                        http::post, "/api/v1/chat/completions",
                        chat("google/gemma-4-31b-it:free", prompt, true))
                       .body();
        }
        return all;
    };
    const std::string first = run();
    BOOST_TEST(first.size() > 1000u);
    BOOST_TEST(first == run());
}

BOOST_AUTO_TEST_CASE(whitespace_keepalive_precedes_a_whole_body)
{
    auto cfg = paced(10ms, 250ms);
    cfg.whitespace_keepalive = true;
    cfg.keepalive_interval = 100ms;
    frugal::sim_thread sim(cfg);
    http_client c(sim.port());
    auto r = c.request(
        http::post, "/api/v1/chat/completions",
        chat("anthropic/claude-fable-5", "Hi [sim tokens=3]"));
    BOOST_TEST(r.status == 200);
    BOOST_TEST(r.body().starts_with("\n\n"));
    const auto first_brace = r.body().find('{');
    BOOST_TEST(r.body().find_first_not_of('\n') == first_brace);
    BOOST_TEST(
        json::parse(r.body().substr(first_brace)).at("object").as_string() == "chat.completion");
}

BOOST_AUTO_TEST_CASE(latency_is_kept)
{
    frugal::sim_thread sim(paced(20ms, 200ms));
    http_client c(sim.port());
    const auto t0 = steady::now();
    auto r = c.request(
        http::post, "/api/v1/chat/completions",
        chat("anthropic/claude-fable-5", "Hi [sim tokens=9]", true));
    const auto took = steady::now() - t0;
    BOOST_TEST(r.status == 200);
    BOOST_TEST(events(r.body()).back() == "[DONE]");
    // 200 ms to the first token, then 9 more tokens (9 words and a full stop) 20 ms apart.
    BOOST_TEST((took >= 200ms + 9 * 20ms));
    BOOST_TEST((took < 2s));
}

BOOST_AUTO_TEST_CASE(slow_first_token_and_stall_are_pauses)
{
    frugal::sim_thread sim(fixed());
    http_client c(sim.port());
    auto t0 = steady::now();
    auto r = c.request(
        http::post, "/api/v1/chat/completions",
        chat("anthropic/claude-fable-5", "Hi [sim fault=slow-first-token ms=300]", true));
    BOOST_TEST((steady::now() - t0 >= 300ms));
    BOOST_TEST(events(r.body()).back() == "[DONE]");

    t0 = steady::now();
    r = c.request(
        http::post, "/api/v1/chat/completions",
        chat("anthropic/claude-fable-5", "Hi [sim fault=stall after=2 ms=300]", true));
    BOOST_TEST((steady::now() - t0 >= 300ms));
    BOOST_TEST(events(r.body()).back() == "[DONE]");
}

BOOST_AUTO_TEST_CASE(a_cut_stream_ends_without_done_and_bills_what_was_sent)
{
    frugal::sim_thread sim(fixed());
    http_client c(sim.port());
    auto r = c.request(
        http::post, "/api/v1/chat/completions",
        chat("anthropic/claude-fable-5", "Hi [sim tokens=9 fault=cut after=4]", true));
    BOOST_TEST(r.ec.failed()); // the chunked body never ends
    const auto b = bill(sim.port());
    BOOST_TEST(
        b.at("models").at("anthropic/claude-fable-5").at("completion_tokens").as_int64() == 4);
}

BOOST_AUTO_TEST_CASE(a_cut_whole_body_is_short)
{
    frugal::sim_thread sim(fixed());
    http_client c(sim.port());
    auto r = c.request(
        http::post, "/api/v1/chat/completions",
        chat("anthropic/claude-fable-5", "Hi [sim fault=cut]"));
    BOOST_TEST(r.ec.failed());
}

BOOST_AUTO_TEST_CASE(a_mid_stream_error_ends_the_stream_after_its_chunk)
{
    frugal::sim_thread sim(paced(5ms));
    for (const char* fault : {"midstream-error", "midstream-error-choice", "malformed-chunk"}) {
        http_client c(sim.port());
        auto r = c.request(
            http::post, "/api/v1/chat/completions",
            chat(
                "anthropic/claude-fable-5",
                std::string("Hi [sim tokens=6 fault=") + fault + " after=3]", true));
        BOOST_TEST(!r.ec, fault);
        const auto ev = events(r.body());
        BOOST_TEST(ev.back() == "[DONE]", fault);
        if (std::string(fault) != "malformed-chunk")
            BOOST_TEST(ev[3].find("\"finish_reason\":\"error\"") != std::string::npos, fault);
    }
}

BOOST_AUTO_TEST_CASE(reset_and_hang_are_connection_faults)
{
    frugal::sim_thread sim(fixed());
    {
        http_client c(sim.port());
        auto r = c.request(
            http::post, "/api/v1/chat/completions",
            chat("openai/gpt-5-mini", "Hi [sim fault=reset]"));
        BOOST_TEST(r.ec == boost::asio::error::connection_reset);
    }
    {
        http_client c(sim.port(), 300ms);
        const auto t0 = steady::now();
        auto r = c.request(
            http::post, "/api/v1/chat/completions",
            chat("openai/gpt-5-mini", "Hi [sim fault=hang]"));
        BOOST_TEST(r.ec.failed()); // timed out: nothing ever came
        BOOST_TEST((steady::now() - t0 >= 300ms));
    }
    BOOST_TEST(bill(sim.port()).at("total").at("requests").as_int64() == 0);
}

BOOST_AUTO_TEST_CASE(status_faults_arrive_with_their_headers)
{
    frugal::sim_thread sim(fixed());
    http_client c(sim.port());
    auto r = c.request(
        http::post, "/api/v1/chat/completions",
        chat("openai/gpt-5-mini", "Hi [sim fault=429 retry_after=7]"));
    BOOST_TEST(r.status == 429);
    BOOST_TEST(r.response["Retry-After"] == "7");
    r = c.request(
        http::post, "/api/v1/chat/completions",
        chat("openai/gpt-5-mini", "Hi [sim fault=error-200]"));
    BOOST_TEST(r.status == 200);
    BOOST_TEST(json::parse(r.body()).as_object().contains("error"));
    r = c.request(http::post, "/api/v1/chat/completions", chat("openai/gpt-5-mini", "Hi"), "");
    BOOST_TEST(r.status == 401);
}

BOOST_AUTO_TEST_CASE(a_cancelled_stream_is_billed_by_its_provider)
{
    // Anthropic stops billing at a cancel; Google does not, and bills the complete response.
    frugal::sim_thread sim(paced(30ms));
    for (const char* model : {"anthropic/claude-fable-5", "google/gemini-3-flash"}) {
        http_client c(sim.port());
        c.send(http::post, "/api/v1/chat/completions", chat(model, "Hi [sim tokens=40]", true));
        boost::system::error_code ec;
        c.read_until("data: {", 5, ec);
        BOOST_TEST(!ec);
        c.close();
    }
    std::this_thread::sleep_for(200ms); // the simulator notices the close
    const auto b = bill(sim.port()).at("models").as_object();
    const auto& anthropic = b.at("anthropic/claude-fable-5").as_object();
    BOOST_TEST(anthropic.at("cancelled").as_int64() == 1);
    BOOST_TEST(anthropic.at("completion_tokens").as_int64() >= 5);
    BOOST_TEST(anthropic.at("completion_tokens").as_int64() <= 8);
    const auto& google = b.at("google/gemini-3-flash").as_object();
    BOOST_TEST(google.at("cancelled").as_int64() == 1);
    BOOST_TEST(google.at("completion_tokens").as_int64() == 41);
}

BOOST_AUTO_TEST_CASE(a_whole_response_is_billed_when_its_client_leaves)
{
    frugal::sim_thread sim(paced(20ms, 100ms));
    {
        http_client c(sim.port());
        c.send(
            http::post, "/api/v1/chat/completions",
            chat("deepseek/deepseek-v3.2", "Hi [sim tokens=10]"));
        c.close();
    }
    std::this_thread::sleep_for(100ms);
    const auto m = bill(sim.port()).at("models").at("deepseek/deepseek-v3.2").as_object();
    BOOST_TEST(m.at("completion_tokens").as_int64() == 11);
    BOOST_TEST(m.at("cancelled").as_int64() == 0);
}

BOOST_AUTO_TEST_CASE(oversized_and_malformed_requests_are_refused)
{
    auto cfg = fixed();
    cfg.max_request_body = 1024;
    frugal::sim_thread sim(cfg);
    {
        http_client c(sim.port());
        auto r = c.request(
            http::post, "/api/v1/chat/completions",
            chat("openai/gpt-5-mini", std::string(4000, 'x')));
        BOOST_TEST(r.status == 413);
    }
    {
        http_client c(sim.port());
        boost::asio::write(c.socket(), boost::asio::buffer(std::string("NOT HTTP AT ALL\r\n\r\n")));
        boost::system::error_code ec;
        const std::string got = c.read_all(ec);
        BOOST_TEST(got.starts_with("HTTP/1.1 400"));
    }
}

BOOST_AUTO_TEST_CASE(http_1_0_clients_get_close_delimited_streams)
{
    frugal::sim_thread sim(fixed());
    http_client c(sim.port());
    const std::string body = chat("anthropic/claude-fable-5", "Hi [sim tokens=3]", true);
    const std::string req = "POST /api/v1/chat/completions HTTP/1.0\r\nAuthorization: Bearer k\r\n"
                            "Content-Length: " +
                            std::to_string(body.size()) + "\r\n\r\n" + body;
    boost::asio::write(c.socket(), boost::asio::buffer(req));
    boost::system::error_code ec;
    const std::string got = c.read_all(ec);
    BOOST_TEST(ec == boost::asio::error::eof); // the end of the body is the end of the connection
    const auto body_at = got.find("\r\n\r\n");
    BOOST_TEST(got.substr(0, body_at).find("Transfer-Encoding") == std::string::npos);
    BOOST_TEST(got.ends_with("data: [DONE]\n\n"));
    BOOST_TEST(events(got.substr(body_at + 4)).back() == "[DONE]");
}

BOOST_AUTO_TEST_CASE(stopping_closes_open_streams)
{
    auto sim = std::make_unique<frugal::sim_thread>(paced(0ms));
    http_client c(sim->port(), 5s);
    c.send(
        http::post, "/api/v1/chat/completions",
        chat("anthropic/claude-fable-5", "Hi [sim fault=stall after=1 ms=60000]", true));
    boost::system::error_code ec;
    c.read_until("data: {", 1, ec);
    const auto t0 = steady::now();
    sim.reset(); // must not wait for the minute-long stall
    BOOST_TEST((steady::now() - t0 < 2s));
    c.read_all(ec);
    BOOST_TEST(ec.failed());
}

BOOST_AUTO_TEST_SUITE_END()
