#include "http/connection.hpp"
#include "http/pool.hpp"
#include "http/response.hpp"

#include <boost/asio/buffer.hpp>
#include <boost/asio/io_context.hpp>
#include <boost/beast/http/error.hpp>
#include <boost/test/unit_test.hpp>

#include <string>
#include <string_view>

using namespace frugal::http;
namespace bhttp = boost::beast::http;
using boost::system::error_code;

namespace {

// Feeds `bytes` in pieces of `piece` bytes, as reads would bring them; returns the first error.
error_code feed(response_reader& r, std::string_view bytes, std::size_t piece)
{
    std::string pending;
    for (std::size_t at = 0; at < bytes.size() && !r.is_done(); at += piece) {
        pending.append(bytes.substr(at, piece));
        // As Beast's read loop does: put again while the parser makes progress.
        for (std::size_t used = 1; used != 0 && !pending.empty() && !r.is_done();) {
            error_code ec;
            used = r.put(boost::asio::buffer(pending), ec);
            if (ec && ec != bhttp::error::need_more)
                return ec;
            pending.erase(0, used);
        }
    }
    if (!r.is_done()) {
        error_code ec;
        r.put_eof(ec);
        return ec;
    }
    return {};
}

void collect(void* out, std::string_view bytes)
{
    static_cast<std::string*>(out)->append(bytes);
}

} // namespace

BOOST_AUTO_TEST_SUITE(http_response)

BOOST_AUTO_TEST_CASE(keeps_the_fields_the_client_reads)
{
    const std::string_view msg = "HTTP/1.1 429 Too Many Requests\r\n"
                                 "content-type: application/json\r\n"
                                 "x-generation-id: gen-1\r\n"
                                 "X-Generation-Id: gen-2\r\n"
                                 "Retry-After: 7\r\n"
                                 "X-RATELIMIT-LIMIT: 20\r\n"
                                 "x-ratelimit-remaining: 0\r\n"
                                 "X-RateLimit-Reset: 1700000000000\r\n"
                                 "X-Other: ignored\r\n"
                                 "Content-Length: 2\r\n\r\n{}";
    for (std::size_t piece : {msg.size(), std::size_t{1}, std::size_t{7}}) {
        response_head head;
        head.generation_id = "left over from the previous response";
        response_reader r(head);
        std::string body;
        r.body_into(body, 1024);
        BOOST_TEST(!feed(r, msg, piece));
        BOOST_TEST(r.is_done());
        BOOST_TEST(head.status == 429);
        BOOST_TEST(head.content_type == "application/json");
        BOOST_TEST(head.generation_id == "gen-1"); // the first, as fields::operator[] gives
        BOOST_TEST(head.retry_after == "7");
        BOOST_TEST(head.rate_limit == "20");
        BOOST_TEST(head.rate_remaining == "0");
        BOOST_TEST(head.rate_reset == "1700000000000");
        BOOST_TEST(body == "{}");
        BOOST_TEST(r.keep_alive());
    }
}

BOOST_AUTO_TEST_CASE(limits_a_whole_body)
{
    // A Content-Length beyond the limit fails at the head, before any body byte.
    {
        response_head head;
        response_reader r(head);
        r.body_limit(10);
        std::string body;
        r.body_into(body, 10);
        BOOST_TEST(
            feed(r, "HTTP/1.1 200 OK\r\nContent-Length: 11\r\n\r\n", 64) ==
            error_code(bhttp::error::body_limit));
    }
    // The limit set after the head (an error answer to a stream request) holds too, whether the
    // body is counted by Content-Length, chunked, or runs to the end of the connection.
    for (std::string_view msg :
         {std::string_view("HTTP/1.1 500 Oops\r\nContent-Length: 11\r\n\r\n01234567890"),
          std::string_view("HTTP/1.1 500 Oops\r\nTransfer-Encoding: chunked\r\n\r\n"
                           "6\r\n012345\r\n5\r\n67890\r\n0\r\n\r\n"),
          std::string_view("HTTP/1.1 500 Oops\r\nConnection: close\r\n\r\n01234567890")}) {
        response_head head;
        response_reader r(head);
        r.body_limit(boost::none);
        std::string text(msg);
        const auto head_end = text.find("\r\n\r\n") + 4;
        error_code ec;
        r.put(boost::asio::buffer(text.data(), head_end), ec);
        BOOST_TEST_REQUIRE(!ec);
        BOOST_TEST_REQUIRE(r.is_header_done());
        std::string body;
        r.body_into(body, 10);
        BOOST_TEST(
            feed(r, std::string_view(text).substr(head_end), 3) ==
            error_code(bhttp::error::body_limit));
        BOOST_TEST(body.size() <= 10);
    }
    // Exactly the limit is fine.
    response_head head;
    response_reader r(head);
    std::string body;
    r.body_into(body, 10);
    BOOST_TEST(!feed(r, "HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\n0123456789", 5));
    BOOST_TEST(body == "0123456789");
}

BOOST_AUTO_TEST_CASE(streams_a_chunked_body_to_a_sink)
{
    const std::string_view msg = "HTTP/1.1 200 OK\r\n"
                                 "Content-Type: text/event-stream\r\n"
                                 "Transfer-Encoding: chunked\r\n\r\n"
                                 "e;ext=1\r\ndata: {\"a\":1}\n\r\n"
                                 "e\r\ndata: [DONE]\n\n\r\n"
                                 "0\r\nTrailer: x\r\n\r\n";
    for (std::size_t piece : {msg.size(), std::size_t{1}, std::size_t{5}}) {
        response_head head;
        response_reader r(head);
        std::string got;
        r.body_into(&collect, &got);
        BOOST_TEST(!feed(r, msg, piece));
        BOOST_TEST(r.is_done());
        BOOST_TEST(head.content_type == "text/event-stream");
        BOOST_TEST(got == "data: {\"a\":1}\ndata: [DONE]\n\n");
        BOOST_TEST(r.keep_alive());
    }
}

BOOST_AUTO_TEST_CASE(rejects_what_is_not_a_response)
{
    for (std::string_view bad :
         {std::string_view("GET / HTTP/1.1\r\n\r\n"),
          std::string_view("HTTP/1.1 200 OK\r\nContent-Length: 1\r\nContent-Length: 2\r\n\r\n"),
          std::string_view("HTTP/1.1 2000 OK\r\n\r\n"),
          std::string_view("HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n")}) {
        response_head head;
        response_reader r(head);
        std::string body;
        r.body_into(body, 1024);
        BOOST_TEST(feed(r, bad, bad.size()), bad);
    }
    // Connection: close is seen, so the connection is not reused.
    response_head head;
    response_reader r(head);
    std::string body;
    r.body_into(body, 1024);
    const auto ec =
        feed(r, "HTTP/1.1 200 OK\r\nConnection: close\r\nContent-Length: 2\r\n\r\nok", 4);
    BOOST_TEST(!ec, ec.message());
    BOOST_TEST(!r.keep_alive());
}

BOOST_AUTO_TEST_SUITE_END()

// A stream waiting for its next token reads with room for its pace: the head's 4 KiB buffer,
// holding only the end of a chunk's framing, is traded for a smaller one with the same bytes.
BOOST_AUTO_TEST_CASE(a_large_read_buffer_with_a_few_unread_bytes_is_traded_for_a_small_one)
{
    boost::asio::io_context io;
    frugal::http::pool pool(io.get_executor(), {});
    frugal::http::connection conn(io.get_executor(), nullptr);
    conn.buffer.reserve(4096);
    conn.buffer.commit(boost::asio::buffer_copy(conn.buffer.prepare(2), boost::asio::buffer("\r\n", 2)));
    pool.lend_buffer(conn, 2048);
    BOOST_TEST(conn.buffer.capacity() <= 2048u);
    BOOST_TEST(std::string_view(static_cast<const char*>(conn.buffer.data().data()), conn.buffer.size()) == "\r\n");
    // A buffer within the pace, or one holding much, stays as it is.
    conn.buffer.reserve(4096);
    const auto* before = conn.buffer.data().data();
    pool.lend_buffer(conn, 8192);
    BOOST_TEST(conn.buffer.data().data() == before);
    conn.buffer.commit(boost::asio::buffer_copy(conn.buffer.prepare(1500), boost::asio::buffer(std::string(1500, 'x'))));
    before = conn.buffer.data().data();
    pool.lend_buffer(conn, 2048);
    BOOST_TEST(conn.buffer.data().data() == before);
    BOOST_TEST(conn.buffer.size() == 1502u);
}
