// The SSE parser promises no allocation per event once its buffers have grown, and a
// connection's HTTP response reader none per response after the first: counted here by
// replacing the global allocation functions for this program only.
#define BOOST_TEST_MODULE frugal allocation tests
#include <frugal/sse_parser.hpp>

#include "http/response.hpp"

#include <boost/asio/buffer.hpp>

#include <boost/test/unit_test.hpp>

#include <atomic>
#include <cstdio>
#include <cstdlib>
#include <new>
#include <optional>
#include <string>

namespace {
std::atomic<std::size_t> allocations{0};
} // namespace

void* operator new(std::size_t size)
{
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
