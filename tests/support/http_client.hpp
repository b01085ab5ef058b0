#ifndef FRUGAL_TESTS_HTTP_CLIENT_HPP
#define FRUGAL_TESTS_HTTP_CLIENT_HPP

// A small blocking HTTP/1.1 client for tests that look at the simulator's bytes. It is the
// test's own, not frugal's client, so the simulator is checked against an independent peer.

#include <boost/asio/connect.hpp>
#include <boost/asio/ip/tcp.hpp>
#include <boost/beast/core/flat_buffer.hpp>
#include <boost/beast/http.hpp>

#include <chrono>
#include <string>

namespace frugal::test {

namespace asio = boost::asio;
namespace http = boost::beast::http;

struct http_result {
    boost::system::error_code ec;
    int status = 0;
    http::response<http::string_body> response;
    std::string body() const { return response.body(); }
};

class http_client {
public:
    explicit http_client(
        std::uint16_t port, std::chrono::milliseconds timeout = std::chrono::seconds(10))
        : socket_(io_)
    {
        socket_.connect({asio::ip::make_address("127.0.0.1"), port});
        set_timeout(timeout);
    }

    // Reads wait at most this long; then they fail with asio::error::timed_out. (SO_RCVTIMEO
    // does not work here: Asio's blocking reads poll again after EAGAIN.)
    void set_timeout(std::chrono::milliseconds timeout) { timeout_ = timeout; }

    void send(
        http::verb verb,
        const std::string& target,
        const std::string& body = "",
        const std::string& key = "sk-or-v1-test")
    {
        http::request<http::string_body> req{verb, target, 11};
        req.set(http::field::host, "127.0.0.1");
        if (!key.empty())
            req.set(http::field::authorization, "Bearer " + key);
        if (!body.empty()) {
            req.set(http::field::content_type, "application/json");
            req.body() = body;
        }
        req.prepare_payload();
        http::write(socket_, req);
    }

    http_result receive()
    {
        http_result r;
        http::response_parser<http::string_body> parser;
        parser.body_limit(std::uint64_t{64} * 1024 * 1024);
        r.ec = run([&](auto handler) { http::async_read(socket_, buffer_, parser, handler); });
        r.response = parser.release();
        r.status = static_cast<int>(r.response.result_int());
        return r;
    }

    http_result request(
        http::verb verb,
        const std::string& target,
        const std::string& body = "",
        const std::string& key = "sk-or-v1-test")
    {
        send(verb, target, body, key);
        return receive();
    }

    /// Reads raw bytes until `needle` has been seen `count` times (or the peer stops).
    std::string read_until(const std::string& needle, int count, boost::system::error_code& ec)
    {
        std::string got;
        char buf[4096];
        int seen = 0;
        std::size_t from = 0;
        while (seen < count) {
            const std::size_t n = read_some(buf, sizeof buf, ec);
            if (ec)
                break;
            got.append(buf, n);
            for (auto at = got.find(needle, from); at != std::string::npos;
                 at = got.find(needle, at + 1)) {
                ++seen;
                from = at + 1;
            }
        }
        return got;
    }

    /// Reads until the peer closes or the timeout; returns what came.
    std::string read_all(boost::system::error_code& ec)
    {
        std::string got;
        char buf[4096];
        for (;;) {
            const std::size_t n = read_some(buf, sizeof buf, ec);
            if (ec)
                return got;
            got.append(buf, n);
        }
    }

    void close()
    {
        boost::system::error_code ignored;
        socket_.close(ignored);
    }

    asio::ip::tcp::socket& socket() { return socket_; }

private:
    std::size_t read_some(char* buf, std::size_t size, boost::system::error_code& ec)
    {
        ec = run([&](auto handler) { socket_.async_read_some(asio::buffer(buf, size), handler); });
        return transferred_;
    }

    template <class Start>
    boost::system::error_code run(Start start)
    {
        boost::system::error_code result;
        bool done = false;
        transferred_ = 0;
        start([&](boost::system::error_code ec, std::size_t n) {
            result = ec;
            transferred_ = n;
            done = true;
        });
        io_.restart();
        io_.run_for(timeout_);
        if (!done) {
            boost::system::error_code ignored;
            socket_.cancel(ignored);
            io_.restart();
            io_.run();
            return asio::error::timed_out;
        }
        return result;
    }

    std::chrono::milliseconds timeout_{10000};
    std::size_t transferred_ = 0;
    asio::io_context io_;
    asio::ip::tcp::socket socket_;
    boost::beast::flat_buffer buffer_;
};

} // namespace frugal::test

#endif // FRUGAL_TESTS_HTTP_CLIENT_HPP
