#ifndef FRUGAL_TESTS_TLS_SERVERS_HPP
#define FRUGAL_TESTS_TLS_SERVERS_HPP

// Test-time TLS: a CA and server certificates made with OpenSSL when the test runs (nothing is
// checked in), a TLS front that terminates TLS on 127.0.0.1 and relays to a plain backend (the
// simulator), and an HTTP CONNECT proxy. All on loopback.

#include <boost/asio/as_tuple.hpp>
#include <boost/asio/co_spawn.hpp>
#include <boost/asio/detached.hpp>
#include <boost/asio/experimental/awaitable_operators.hpp>
#include <boost/asio/io_context.hpp>
#include <boost/asio/ip/tcp.hpp>
#include <boost/asio/read.hpp>
#include <boost/asio/read_until.hpp>
#include <boost/asio/ssl.hpp>
#include <boost/asio/steady_timer.hpp>
#include <boost/asio/streambuf.hpp>
#include <boost/asio/use_awaitable.hpp>
#include <boost/asio/write.hpp>

#include <openssl/pem.h>
#include <openssl/x509v3.h>

#include <algorithm>
#include <chrono>
#include <atomic>
#include <fstream>
#include <memory>
#include <mutex>
#include <optional>
#include <stdexcept>
#include <string>
#include <thread>
#include <vector>

namespace frugal::test {

namespace asio = boost::asio;
using tcp = asio::ip::tcp;

struct pem_pair {
    std::string certificate;
    std::string private_key;
};

namespace detail {

inline void check(bool ok, const char* what)
{
    if (!ok)
        throw std::runtime_error(std::string("OpenSSL: ") + what);
}

inline std::string to_pem(X509* x)
{
    BIO* bio = BIO_new(BIO_s_mem());
    PEM_write_bio_X509(bio, x);
    char* data = nullptr;
    const long n = BIO_get_mem_data(bio, &data);
    std::string s(data, static_cast<std::size_t>(n));
    BIO_free(bio);
    return s;
}

inline std::string to_pem(EVP_PKEY* k)
{
    BIO* bio = BIO_new(BIO_s_mem());
    PEM_write_bio_PrivateKey(bio, k, nullptr, nullptr, 0, nullptr, nullptr);
    char* data = nullptr;
    const long n = BIO_get_mem_data(bio, &data);
    std::string s(data, static_cast<std::size_t>(n));
    BIO_free(bio);
    return s;
}

inline void add_ext(X509* cert, X509* issuer, int nid, const char* value)
{
    X509V3_CTX ctx;
    X509V3_set_ctx_nodb(&ctx);
    X509V3_set_ctx(&ctx, issuer, cert, nullptr, nullptr, 0);
    X509_EXTENSION* ext = X509V3_EXT_conf_nid(nullptr, &ctx, nid, value);
    check(ext != nullptr, "extension");
    X509_add_ext(cert, ext, -1);
    X509_EXTENSION_free(ext);
}

} // namespace detail

/// A certificate authority that signs server certificates for tests.
class test_ca {
public:
    test_ca()
    {
        key_ = EVP_EC_gen("P-256");
        detail::check(key_ != nullptr, "key");
        cert_ = X509_new();
        X509_set_version(cert_, 2);
        ASN1_INTEGER_set(X509_get_serialNumber(cert_), 1);
        X509_gmtime_adj(X509_getm_notBefore(cert_), -3600);
        X509_gmtime_adj(X509_getm_notAfter(cert_), 86400);
        X509_set_pubkey(cert_, key_);
        X509_NAME* name = X509_get_subject_name(cert_);
        X509_NAME_add_entry_by_txt(
            name, "CN", MBSTRING_ASC, reinterpret_cast<const unsigned char*>("frugal test CA"), -1,
            -1, 0);
        X509_set_issuer_name(cert_, name);
        detail::add_ext(cert_, cert_, NID_basic_constraints, "critical,CA:TRUE");
        detail::add_ext(cert_, cert_, NID_key_usage, "critical,keyCertSign,cRLSign");
        detail::add_ext(cert_, cert_, NID_subject_key_identifier, "hash");
        detail::check(X509_sign(cert_, key_, EVP_sha256()) > 0, "sign CA");
    }
    ~test_ca()
    {
        X509_free(cert_);
        EVP_PKEY_free(key_);
    }
    test_ca(const test_ca&) = delete;
    test_ca& operator=(const test_ca&) = delete;

    std::string certificate_pem() const { return detail::to_pem(cert_); }

    /// Writes the CA certificate to `path` (for ca_file or SSL_CERT_FILE).
    void write(const std::string& path) const { std::ofstream(path) << certificate_pem(); }

    /// A server certificate for `san` ("DNS:localhost,IP:127.0.0.1"), signed by this CA.
    pem_pair issue(const std::string& san, long serial = 2) const
    {
        EVP_PKEY* key = EVP_EC_gen("P-256");
        X509* cert = X509_new();
        X509_set_version(cert, 2);
        ASN1_INTEGER_set(X509_get_serialNumber(cert), serial);
        X509_gmtime_adj(X509_getm_notBefore(cert), -3600);
        X509_gmtime_adj(X509_getm_notAfter(cert), 86400);
        X509_set_pubkey(cert, key);
        X509_NAME* name = X509_get_subject_name(cert);
        X509_NAME_add_entry_by_txt(
            name, "CN", MBSTRING_ASC, reinterpret_cast<const unsigned char*>("server"), -1, -1, 0);
        X509_set_issuer_name(cert, X509_get_subject_name(cert_));
        detail::add_ext(cert, cert_, NID_basic_constraints, "critical,CA:FALSE");
        detail::add_ext(cert, cert_, NID_key_usage, "critical,digitalSignature");
        detail::add_ext(cert, cert_, NID_ext_key_usage, "serverAuth");
        detail::add_ext(cert, cert_, NID_subject_alt_name, san.c_str());
        detail::add_ext(cert, cert_, NID_authority_key_identifier, "keyid:always");
        detail::check(X509_sign(cert, key_, EVP_sha256()) > 0, "sign server");
        pem_pair out{detail::to_pem(cert), detail::to_pem(key)};
        X509_free(cert);
        EVP_PKEY_free(key);
        return out;
    }

private:
    EVP_PKEY* key_ = nullptr;
    X509* cert_ = nullptr;
};

namespace detail {

template <class From, class To>
asio::awaitable<void> copy(From& from, To& to)
{
    char buf[16384];
    for (;;) {
        auto [ec, n] =
            co_await from.async_read_some(asio::buffer(buf), asio::as_tuple(asio::use_awaitable));
        if (ec)
            co_return;
        auto [wec, wn] = co_await asio::async_write(
            to, asio::buffer(buf, n), asio::as_tuple(asio::use_awaitable));
        if (wec)
            co_return;
    }
}

// An HTTP head (through its blank line), taken out of `in`; nothing when the peer is gone.
// What came after it stays in `in`.
inline asio::awaitable<std::optional<std::string>>
read_head(tcp::socket& socket, asio::streambuf& in)
{
    auto [ec, n] = co_await asio::async_read_until(
        socket, in, "\r\n\r\n", asio::as_tuple(asio::use_awaitable));
    if (ec)
        co_return std::nullopt;
    std::string head(
        asio::buffers_begin(in.data()), asio::buffers_begin(in.data()) + static_cast<long>(n));
    in.consume(n);
    co_return head;
}

// The body its head announced (Content-Length), read past what `in` holds and taken out of it;
// nothing when the peer is gone first.
inline asio::awaitable<std::optional<std::string>>
read_body(tcp::socket& socket, asio::streambuf& in, const std::string& head)
{
    std::size_t length = 0;
    if (const auto at = head.find("Content-Length: "); at != std::string::npos)
        length = std::stoul(head.substr(at + 16));
    if (in.size() < length) {
        auto [ec, n] = co_await asio::async_read(
            socket, in, asio::transfer_exactly(length - in.size()),
            asio::as_tuple(asio::use_awaitable));
        if (ec)
            co_return std::nullopt;
    }
    std::string body(
        asio::buffers_begin(in.data()),
        asio::buffers_begin(in.data()) + static_cast<std::ptrdiff_t>(length));
    in.consume(length);
    co_return body;
}

// Relays bytes both ways until either side stops.
template <class A, class B>
asio::awaitable<void> relay(A& a, B& b)
{
    using namespace asio::experimental::awaitable_operators;
    co_await (copy(a, b) || copy(b, a));
}

} // namespace detail

/// A server on 127.0.0.1 with its own thread.
class loopback_server {
public:
    loopback_server() : acceptor_(io_, {asio::ip::make_address("127.0.0.1"), 0}) {}
    virtual ~loopback_server() { stop(); }
    loopback_server(const loopback_server&) = delete;
    loopback_server& operator=(const loopback_server&) = delete;

    std::uint16_t port() const { return acceptor_.local_endpoint().port(); }
    int connections() const { return connections_; }

protected:
    void start()
    {
        asio::co_spawn(io_, accept_loop(), asio::detached);
        thread_ = std::thread([this] { io_.run(); });
    }
    void stop()
    {
        if (thread_.joinable()) {
            io_.stop();
            thread_.join();
        }
    }
    virtual asio::awaitable<void> serve(tcp::socket socket) = 0;

    asio::io_context io_{1};

private:
    asio::awaitable<void> accept_loop()
    {
        for (;;) {
            auto [ec, socket] =
                co_await acceptor_.async_accept(asio::as_tuple(asio::use_awaitable));
            if (ec)
                co_return;
            ++connections_;
            asio::co_spawn(io_, serve(std::move(socket)), asio::detached);
        }
    }

    tcp::acceptor acceptor_;
    std::thread thread_;
    std::atomic<int> connections_{0};
};

/// Terminates TLS with `cert` and relays to a plain server on 127.0.0.1:`backend`.
class tls_front : public loopback_server {
public:
    tls_front(std::uint16_t backend, const pem_pair& cert)
        : backend_(backend), ssl_(asio::ssl::context::tls_server)
    {
        ssl_.use_certificate_chain(asio::buffer(cert.certificate));
        ssl_.use_private_key(asio::buffer(cert.private_key), asio::ssl::context::pem);
        start();
    }
    ~tls_front() override { stop(); }

private:
    asio::awaitable<void> serve(tcp::socket socket) override
    {
        asio::ssl::stream<tcp::socket> tls(std::move(socket), ssl_);
        auto [hec] = co_await tls.async_handshake(
            asio::ssl::stream_base::server, asio::as_tuple(asio::use_awaitable));
        if (hec)
            co_return; // the client refused our certificate
        tcp::socket upstream(io_);
        auto [cec] = co_await upstream.async_connect(
            {asio::ip::make_address("127.0.0.1"), backend_}, asio::as_tuple(asio::use_awaitable));
        if (cec)
            co_return;
        co_await detail::relay(tls, upstream);
    }

    std::uint16_t backend_;
    asio::ssl::context ssl_;
};

/// An HTTP CONNECT proxy to 127.0.0.1 only; `refuse` answers 407 instead.
class connect_proxy : public loopback_server {
public:
    explicit connect_proxy(bool refuse = false) : refuse_(refuse) { start(); }
    ~connect_proxy() override { stop(); }

    /// The target of the last CONNECT, as the client wrote it.
    std::string last_target() const
    {
        std::lock_guard lock(mutex_);
        return last_target_;
    }

private:
    asio::awaitable<void> serve(tcp::socket socket) override
    {
        asio::streambuf in;
        const auto head = co_await detail::read_head(socket, in);
        if (!head)
            co_return;
        const std::string& request = *head;
        const auto space = request.find(' ');
        const auto space2 = request.find(' ', space + 1);
        const std::string method = request.substr(0, space);
        const std::string target = request.substr(space + 1, space2 - space - 1);
        {
            std::lock_guard lock(mutex_);
            last_target_ = target;
        }
        const auto colon = target.rfind(':');
        if (refuse_ || method != "CONNECT" || colon == std::string::npos) {
            const std::string no =
                "HTTP/1.1 407 Proxy Authentication Required\r\nContent-Length: 0\r\n\r\n";
            co_await asio::async_write(
                socket, asio::buffer(no), asio::as_tuple(asio::use_awaitable));
            co_return;
        }
        tcp::socket upstream(io_);
        const auto port = static_cast<std::uint16_t>(std::stoi(target.substr(colon + 1)));
        auto [cec] = co_await upstream.async_connect(
            {asio::ip::make_address("127.0.0.1"), port}, asio::as_tuple(asio::use_awaitable));
        if (cec)
            co_return;
        const std::string ok = "HTTP/1.1 200 Connection established\r\n\r\n";
        co_await asio::async_write(socket, asio::buffer(ok), asio::as_tuple(asio::use_awaitable));
        co_await detail::relay(socket, upstream);
    }

    bool refuse_;
    mutable std::mutex mutex_;
    std::string last_target_;
};

/// Answers the requests on each connection, in turn, with the responses it was given (the last
/// one again once they run out), keeping the connection open: what a provider sent, byte for
/// byte, with no simulator deciding it.
class canned_server : public loopback_server {
public:
    /// `body_pause`: how long each request's body is left unread after its head, so that a
    /// client's write of a large request stops partway and finishes asynchronously.
    explicit canned_server(
        std::vector<std::string> responses, std::chrono::milliseconds body_pause = {})
        : responses_(std::move(responses)), body_pause_(body_pause)
    {
        start();
    }
    ~canned_server() override { stop(); }

    /// The request bodies received so far, in order.
    std::vector<std::string> received()
    {
        const std::lock_guard lock(mutex_);
        return bodies_;
    }

    /// An HTTP/1.1 200 response with `body` and `headers` (each line ending in CRLF).
    static std::string ok(std::string_view body, std::string_view headers = {})
    {
        return "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\n" + std::string(headers) +
               "Content-Length: " + std::to_string(body.size()) + "\r\n\r\n" + std::string(body);
    }

private:
    asio::awaitable<void> serve(tcp::socket socket) override
    {
        asio::streambuf in;
        for (;;) {
            const auto head = co_await detail::read_head(socket, in);
            if (!head)
                co_return;
            if (body_pause_.count() > 0) {
                asio::steady_timer pause(io_, body_pause_);
                co_await pause.async_wait(asio::as_tuple(asio::use_awaitable));
            }
            auto body = co_await detail::read_body(socket, in, *head);
            if (!body)
                co_return;
            {
                const std::lock_guard lock(mutex_);
                bodies_.push_back(std::move(*body));
            }
            const std::size_t i = std::min(next_++, responses_.size() - 1);
            auto [wec, wn] = co_await asio::async_write(
                socket, asio::buffer(responses_[i]), asio::as_tuple(asio::use_awaitable));
            if (wec)
                co_return;
        }
    }

    std::vector<std::string> responses_;
    std::chrono::milliseconds body_pause_;
    std::size_t next_ = 0; // shared by every connection, on the server's one thread
    std::mutex mutex_;
    std::vector<std::string> bodies_; // written on the server's thread, read by the test's
};

} // namespace frugal::test

#endif // FRUGAL_TESTS_TLS_SERVERS_HPP
