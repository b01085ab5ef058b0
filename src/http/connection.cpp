#include "http/connection.hpp"

#include <frugal/error.hpp>

#include <boost/asio/as_tuple.hpp>
#include <boost/asio/connect.hpp>
#include <boost/asio/this_coro.hpp>
#include <boost/asio/use_awaitable.hpp>
#include <boost/asio/write.hpp>
#include <boost/beast/core/detail/base64.hpp>
#include <boost/beast/http/empty_body.hpp>
#include <boost/beast/http/parser.hpp>
#include <boost/beast/http/read.hpp>

#include <openssl/ssl.h>
#include <openssl/x509v3.h>

#include <sys/socket.h>
#include <sys/uio.h>

#include <cerrno>

namespace frugal::http {

namespace beast = boost::beast;
constexpr auto tuple_awaitable = asio::as_tuple(asio::use_awaitable);

std::string route::key() const
{
    std::string k = (target.tls ? "https://" : "http://") + target.authority();
    if (proxy)
        k += " via " + proxy->authority();
    return k;
}

connection::connection(const asio::any_io_executor& ex, std::shared_ptr<asio::ssl::context> tls)
    : tls_context_(std::move(tls)), socket_(ex), watchdog_(ex)
{
}

connection::~connection() = default;

void connection::arm(steady_clock::time_point deadline, const char* phase)
{
    deadline_ = deadline;
    phase_ = phase;
    if (timer_pending_ && timer_expiry_ <= deadline)
        return; // the pending wake-up comes first and will re-arm for the rest
    timer_expiry_ = deadline;
    timer_pending_ = true;
    const std::uint64_t generation = ++timer_generation_;
    watchdog_.expires_at(deadline); // cancels a pending wait; its handler sees a stale generation
    watchdog_.async_wait([weak = weak_from_this(), generation](error_code ec) {
        if (auto self = weak.lock())
            self->on_watchdog(generation, ec);
    });
}

void connection::disarm()
{
    deadline_ = steady_clock::time_point::max();
    if (timer_pending_) {
        ++timer_generation_;
        timer_pending_ = false;
        watchdog_.cancel();
    }
}

void connection::on_watchdog(std::uint64_t generation, error_code ec)
{
    if (generation != timer_generation_ || ec == asio::error::operation_aborted)
        return;
    timer_pending_ = false;
    if (deadline_ == steady_clock::time_point::max())
        return; // none now (a rested or paused connection): the next deadline arms its own
    if (steady_clock::now() < deadline_) {
        arm(deadline_, phase_); // the deadline moved later meanwhile
        return;
    }
    timed_out_ = true;
    if (resolving_ != nullptr)
        resolving_->cancel();
    close();
}

void connection::close()
{
    error_code ignored;
    socket_.shutdown(tcp::socket::shutdown_both, ignored);
    socket_.close(ignored);
}

std::size_t connection::write_now(asio::const_buffer head, asio::const_buffer body, error_code& ec)
{
    ec = {};
    if (tls_ || !socket_.is_open())
        return 0;
    iovec parts[2] = {
        {const_cast<void*>(head.data()), head.size()},
        {const_cast<void*>(body.data()), body.size()}};
    msghdr msg{};
    msg.msg_iov = parts;
    msg.msg_iovlen = body.size() == 0 ? 1 : 2;
    const auto n = ::sendmsg(socket_.native_handle(), &msg, MSG_DONTWAIT | MSG_NOSIGNAL);
    if (n >= 0)
        return static_cast<std::size_t>(n);
    if (errno != EAGAIN && errno != EWOULDBLOCK && errno != EINTR)
        ec = error_code(errno, boost::system::system_category());
    return 0;
}

bool connection::alive()
{
    if (!socket_.is_open())
        return false;
    char byte = 0;
    // A peek that would block means: open, and nothing unexpected waiting. 0 means the peer
    // closed; data means it sent something we did not ask for (a TLS close_notify, an error).
    const auto n = ::recv(socket_.native_handle(), &byte, 1, MSG_PEEK | MSG_DONTWAIT);
    return n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK);
}

asio::awaitable<error_code>
connection::establish(const route& r, connect_deadlines d, std::string& detail)
{
    const url& first_hop = r.proxy ? *r.proxy : r.target;
    arm(std::min(steady_clock::now() + d.connect, d.total), "connect");

    // An IP literal needs no resolver and no list of addresses: one connect.
    error_code ec;
    const auto literal = asio::ip::make_address(first_hop.host, ec);
    if (!ec) {
        auto [cec] = co_await socket_.async_connect(
            tcp::endpoint(literal, first_hop.port), tuple_awaitable);
        if (!cec && !socket_.is_open())
            cec = asio::error::operation_aborted; // connected as the deadline closed it
        if (cec) {
            detail = "cannot connect to " + first_hop.authority() + ": " + cec.message();
            co_return timed_out_ ? error::timeout : cec;
        }
    } else if (auto cec = co_await resolve_and_connect(first_hop, detail)) {
        co_return cec;
    }
    error_code ignored;
    socket_.set_option(tcp::no_delay(true), ignored);
    if (r.proxy) {
        if (auto tec = co_await tunnel(r, d, detail))
            co_return tec;
    }
    if (tls_context_) {
        if (auto hec = co_await handshake(r, d, detail))
            co_return hec;
    }
    co_return error_code{};
}

// Resolves, then connects to the first address that answers.
asio::awaitable<error_code> connection::resolve_and_connect(const url& host, std::string& detail)
{
    std::vector<tcp::endpoint> endpoints;
    {
        tcp::resolver resolver(socket_.get_executor());
        resolving_ = &resolver;
        auto [rec, results] = co_await resolver.async_resolve(
            host.host, std::to_string(host.port), tuple_awaitable);
        resolving_ = nullptr;
        if (!rec && timed_out_)
            rec = asio::error::operation_aborted; // resolved as the deadline passed
        if (rec) {
            detail = "cannot resolve " + host.host + ": " + rec.message();
            co_return timed_out_ ? error::timeout : rec;
        }
        for (const auto& entry : results)
            endpoints.push_back(entry.endpoint());
    }
    auto [cec, chosen] = co_await asio::async_connect(socket_, endpoints, tuple_awaitable);
    if (cec) {
        detail = "cannot connect to " + host.authority() + ": " + cec.message();
        co_return timed_out_ ? error::timeout : cec;
    }
    co_return error_code{};
}

// An HTTP CONNECT tunnel (RFC 9110 9.3.6) to the target, for TLS inside it.
asio::awaitable<error_code>
connection::tunnel(const route& r, connect_deadlines d, std::string& detail)
{
    arm(std::min(steady_clock::now() + d.tls_handshake, d.total), "proxy CONNECT");
    std::string req = "CONNECT " + r.target.authority() + " HTTP/1.1\r\nHost: " +
                      r.target.authority() + "\r\n";
    if (!r.proxy->userinfo.empty()) {
        std::string encoded(beast::detail::base64::encoded_size(r.proxy->userinfo.size()), '\0');
        encoded.resize(beast::detail::base64::encode(
            encoded.data(), r.proxy->userinfo.data(), r.proxy->userinfo.size()));
        req += "Proxy-Authorization: Basic " + encoded + "\r\n";
    }
    req += "\r\n";
    auto [wec, wn] = co_await asio::async_write(socket_, asio::buffer(req), tuple_awaitable);
    if (wec) {
        detail = "proxy " + r.proxy->authority() + ": " + wec.message();
        co_return timed_out_ ? error::timeout : wec;
    }
    beast::http::response_parser<beast::http::empty_body> parser;
    parser.skip(true); // a CONNECT response has no body
    parser.header_limit(16 * 1024);
    auto [rec, rn] = co_await beast::http::async_read_header(socket_, buffer, parser, tuple_awaitable);
    if (rec) {
        detail = "proxy " + r.proxy->authority() + ": " + rec.message();
        co_return timed_out_ ? error::timeout : rec;
    }
    const auto status = parser.get().result_int();
    if (status != 200) {
        detail = "proxy " + r.proxy->authority() + " answered CONNECT with " + std::to_string(status);
        co_return error::proxy_error;
    }
    if (buffer.size() != 0) {
        detail = "proxy " + r.proxy->authority() + " sent bytes after its CONNECT response";
        co_return error::proxy_error;
    }
    co_return error_code{};
}

// TLS over the socket (or the tunnel), the target's name checked against its certificate.
asio::awaitable<error_code>
connection::handshake(const route& r, connect_deadlines d, std::string& detail)
{
    tls_ = std::make_unique<asio::ssl::stream<tcp::socket&>>(socket_, *tls_context_);
    SSL* ssl = tls_->native_handle();
    const std::string& host = r.target.host;
    if (is_ip_literal(host)) {
        // An IP address is checked against the certificate's IP SANs (no SNI for IPs).
        X509_VERIFY_PARAM* param = SSL_get0_param(ssl);
        X509_VERIFY_PARAM_set1_ip_asc(param, host.c_str());
    } else {
        SSL_set_tlsext_host_name(ssl, host.c_str());
        SSL_set_hostflags(ssl, X509_CHECK_FLAG_NO_PARTIAL_WILDCARDS);
        if (SSL_set1_host(ssl, host.c_str()) != 1) {
            detail = "cannot set the TLS host name " + host;
            co_return error::bad_url;
        }
    }
    arm(std::min(steady_clock::now() + d.tls_handshake, d.total), "TLS handshake");
    auto [hec] = co_await tls_->async_handshake(asio::ssl::stream_base::client, tuple_awaitable);
    if (hec) {
        detail = "TLS handshake with " + r.target.authority() + " failed: " + hec.message();
        if (const long verify = SSL_get_verify_result(ssl); verify != X509_V_OK)
            detail += " (" + std::string(X509_verify_cert_error_string(verify)) + ")";
        co_return timed_out_ ? error::timeout : hec;
    }
    co_return error_code{};
}

std::shared_ptr<asio::ssl::context>
make_tls_context(const std::string& ca_file, bool verify, error_code& ec)
{
    auto ctx = std::make_shared<asio::ssl::context>(asio::ssl::context::tls_client);
    ctx->set_options(
        asio::ssl::context::default_workarounds | asio::ssl::context::no_sslv2 |
            asio::ssl::context::no_sslv3 | asio::ssl::context::no_tlsv1 |
            asio::ssl::context::no_tlsv1_1,
        ec);
    if (ec)
        return nullptr;
    // OpenSSL's default paths read SSL_CERT_FILE and SSL_CERT_DIR first, as `openssl s_client`
    // does; a missing system store is not an error here (a CA file may be all there is).
    ctx->set_default_verify_paths(ec);
    ec.clear();
    if (!ca_file.empty()) {
        ctx->load_verify_file(ca_file, ec);
        if (ec)
            return nullptr;
    }
    ctx->set_verify_mode(verify ? asio::ssl::verify_peer : asio::ssl::verify_none, ec);
    if (ec)
        return nullptr;
    return ctx;
}

} // namespace frugal::http
