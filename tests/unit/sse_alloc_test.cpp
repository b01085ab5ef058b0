// The SSE parser promises no allocation per event once its buffers have grown, a connection's
// HTTP response reader none per response after the first, and a client's stream read into one
// delta none per chunk after warm-up: counted here by replacing the global allocation
// functions for this program only.
#define BOOST_TEST_MODULE frugal allocation tests
#include <frugal/chat_client.hpp>
#include <frugal/sse_parser.hpp>

#include "http/response.hpp"
#include "tls_servers.hpp"

#include <boost/asio/as_tuple.hpp>
#include <boost/asio/buffer.hpp>
#include <boost/asio/co_spawn.hpp>
#include <boost/asio/io_context.hpp>
#include <boost/asio/use_awaitable.hpp>

#include <boost/test/unit_test.hpp>

#include <atomic>
#include <cstdio>
#include <cstdlib>
#include <new>
#include <optional>
#include <string>
#include <thread>

namespace {
std::atomic<std::size_t> allocations{0};
// Only the thread the tests run on counts (not the stream test's server): set on it during
// static initialisation; allocations made before then are not measured by any test.
const std::thread::id counted_thread = std::this_thread::get_id();
} // namespace

void* operator new(std::size_t size)
{
    if (std::this_thread::get_id() == counted_thread)
        allocations.fetch_add(1, std::memory_order_relaxed);
    if (void* p = std::malloc(size == 0 ? 1 : size))
        return p;
    throw std::bad_alloc();
}
void operator delete(void* p) noexcept
{
    std::free(p);
}
void operator delete(void* p, std::size_t) noexcept
{
    std::free(p);
}

namespace {

// An OpenRouter-like stream: one-token chunks, keep-alive comments, the odd multi-line event,
// an id and a custom type now and then.
std::string make_stream(int events)
{
    std::string s;
    for (int i = 0; i < events; ++i) {
        if (i % 64 == 0)
            s += ": OPENROUTER PROCESSING\n\n";
        if (i % 97 == 0)
            s += "event: note\nid: " + std::to_string(i) + "\ndata: first\ndata: second\n\n";
        s += "data: {\"id\":\"gen-1778031306-UD7bR0I1JNCsPvVzlXat\",\"object\":\"chat.completion."
             "chunk\",\"choices\":[{\"index\":0,\"delta\":{\"content\":\"t" +
             std::to_string(i % 1000) + "\"},\"finish_reason\":null}]}\n\n";
    }
    return s;
}

std::size_t drain(frugal::sse_parser& parser, const std::string& stream, std::size_t piece)
{
    std::size_t events = 0;
    for (std::size_t at = 0; at < stream.size(); at += piece) {
        parser.feed(std::string_view(stream).substr(at, piece));
        while (auto e = parser.next())
            events += e->data.empty() ? 0 : 1;
    }
    return events;
}

} // namespace

BOOST_AUTO_TEST_CASE(no_allocation_per_event_after_warm_up)
{
    for (const std::size_t piece : {std::size_t{1}, std::size_t{7}, std::size_t{4096}}) {
        const std::string warm = make_stream(2000);
        const std::string steady = make_stream(20000);
        frugal::sse_parser parser;
        drain(parser, warm, piece);
        const std::size_t before = allocations.load();
        const std::size_t events = drain(parser, steady, piece);
        const std::size_t during = allocations.load() - before;
        BOOST_TEST_MESSAGE(
            "piece " << piece << ": " << events << " events, " << during << " allocations");
        BOOST_TEST(events > 20000u);
        BOOST_TEST(during == 0u, "piece size " << piece);
    }
}

BOOST_AUTO_TEST_CASE(no_allocation_per_response_after_the_first)
{
    // A whole OpenRouter answer's head, as a connection reads it again and again.
    const std::string head = "HTTP/1.1 200 OK\r\n"
                             "Date: Sat, 05 Dec 2026 10:00:00 GMT\r\n"
                             "Content-Type: application/json\r\n"
                             "Transfer-Encoding: chunked\r\n"
                             "Connection: keep-alive\r\n"
                             "Access-Control-Allow-Origin: *\r\n"
                             "X-Generation-Id: gen-1778031306-UD7bR0I1JNCsPvVzlXat\r\n"
                             "Vary: Accept-Encoding\r\n"
                             "Server: cloudflare\r\n"
                             "CF-RAY: 99a1b2c3d4e5f6a7-FRA\r\n\r\n";
    const std::string body(900, 'x');
    char size[16];
    const int n = std::snprintf(size, sizeof size, "%zx\r\n", body.size());
    const std::string message =
        head + std::string(size, static_cast<std::size_t>(n)) + body + "\r\n0\r\n\r\n";

    frugal::http::response_head fields;
    std::optional<frugal::http::response_reader> reader;
    std::string text;
    std::size_t during = 0;
    for (int i = 0; i < 100; ++i) {
        const std::size_t before = allocations.load();
        auto& r = reader.emplace(fields); // as connection::start_response does
        text.clear();
        r.body_into(text, 1 << 20);
        boost::system::error_code ec;
        std::size_t at = 0;
        while (!r.is_done() && !ec) {
            const auto used =
                r.put(boost::asio::buffer(message.data() + at, message.size() - at), ec);
            at += used;
            if (used == 0)
                break;
        }
        BOOST_TEST_REQUIRE(!ec, ec.message());
        BOOST_TEST_REQUIRE(r.is_done());
        BOOST_TEST_REQUIRE(text == body);
        BOOST_TEST_REQUIRE(fields.generation_id == "gen-1778031306-UD7bR0I1JNCsPvVzlXat");
        if (i > 0)
            during += allocations.load() - before;
    }
    BOOST_TEST(during == 0u);
}

namespace {

namespace asio = boost::asio;

// An OpenRouter-like streamed answer of `events` one-word chunks, chunked as a server sends it.
std::string canned_stream(int events)
{
    std::string body;
    for (int i = 0; i < events; ++i) {
        body += "data: {\"id\":\"gen-1778031306-UD7bR0I1JNCsPvVzlXat\",\"provider\":\"Stub\","
                "\"model\":\"m/x\",\"object\":\"chat.completion.chunk\",\"created\":1778031306,"
                "\"choices\":[{\"index\":0,\"delta\":{\"role\":\"assistant\",\"content\":\" word" +
                std::to_string(i) + "\"},\"finish_reason\":null}]}\n\n";
    }
    body += "data: [DONE]\n\n";
    std::string out = "HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\n"
                      "Transfer-Encoding: chunked\r\n\r\n";
    // Chunks of a few events, as a server flushes them.
    for (std::size_t at = 0; at < body.size(); at += 1000) {
        const auto part = body.substr(at, 1000);
        char size[16];
        const int n = std::snprintf(size, sizeof size, "%zx\r\n", part.size());
        out.append(size, static_cast<std::size_t>(n)).append(part).append("\r\n");
    }
    return out + "0\r\n\r\n";
}

} // namespace

// A server relaying tokens keeps one delta across reads: once the stream's buffers (read
// buffer, the parser's line, the answer's whole text) have the room earlier streams gave
// them, a chunk costs no heap allocation.
BOOST_AUTO_TEST_CASE(a_stream_read_into_one_delta_allocates_nothing_per_chunk_after_warm_up)
{
    frugal::test::canned_server server({canned_stream(200)}); // on a thread of its own
    asio::io_context io{1};
    frugal::client_params p;
    p.base_url = "http://127.0.0.1:" + std::to_string(server.port()) + "/api/v1";
    p.api_key = "sk-or-v1-alloc-test";
    frugal::chat_client client(io.get_executor(), p);
    frugal::chat_request req;
    req.model = "m/x";
    req.messages.push_back({.role = "user", .content = "Stream it."});
    std::size_t counted = 0, chunks = 0, streams = 0;
    std::string failure;
    asio::co_spawn(
        io,
        [&]() -> asio::awaitable<void> {
            const auto t = asio::as_tuple(asio::use_awaitable);
            frugal::chat_delta d;
            for (int round = 0; round < 60; ++round) {
                frugal::chat_stream s;
                auto [ec] = co_await client.async_start_stream(req, s, t);
                if (ec) {
                    failure = "start: " + ec.message();
                    co_return;
                }
                std::size_t events = 0, from = 0, before = 0;
                std::string text;
                while (!s.done()) {
                    auto [rec] = co_await s.async_read_delta(d, t);
                    if (rec) {
                        failure = "read: " + rec.message();
                        co_return;
                    }
                    events += d.events;
                    if (round < 40) {
                        text += d.content;
                        continue;
                    }
                    if (from == 0 && events >= 10) {
                        before = allocations.load();
                        from = events;
                    } else if (before != 0 && events >= 190) {
                        counted += allocations.load() - before;
                        chunks += events - from;
                        before = 0;
                    }
                }
                if (round < 40 && text != s.response().content) {
                    failure = "the deltas do not add up to the answer";
                    co_return;
                }
                ++streams;
            }
        },
        asio::detached);
    io.run();
    BOOST_TEST_REQUIRE(failure.empty(), failure);
    BOOST_TEST(streams == 60u);
    BOOST_TEST(chunks >= 20u * 170u);
    BOOST_TEST_MESSAGE(counted << " allocations in " << chunks << " chunks");
    BOOST_TEST(counted == 0u);
}
