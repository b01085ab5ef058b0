// HTTPS against a loopback TLS server whose certificates are made when the test runs: a
// trusted CA passes; an untrusted one and a wrong host name fail clearly; SSL_CERT_FILE is
// honoured; CONNECT proxies carry the TLS session.
#include "client_fixture.hpp"
#include "tls_servers.hpp"

#include <boost/test/unit_test.hpp>

#include <cstdlib>
#include <filesystem>

using namespace frugal::test;

namespace {

struct tls_fixture {
    tls_fixture()
        : sim(fixed()), good(ca.issue("DNS:localhost,IP:127.0.0.1")), front(sim.port(), good),
          ca_path(
              std::filesystem::temp_directory_path() /
              ("frugal-test-ca-" + std::to_string(::getpid()) + ".pem"))
    {
        ca.write(ca_path.string());
    }
    ~tls_fixture() { std::filesystem::remove(ca_path); }

    frugal::client_params params(const std::string& host = "localhost") const
    {
        auto p = fast_retries();
        p.base_url = "https://" + host + ":" + std::to_string(front.port()) + "/api/v1";
        p.ca_file = ca_path.string();
        p.proxy_from_environment = false;
        return p;
    }

    chat_result chat(const frugal::client_params& p)
    {
        frugal::chat_client client(io.get_executor(), p);
        return run(io, chat_once(client, request("anthropic/claude-fable-5", "Hi")));
    }

    frugal::sim_thread sim;
    test_ca ca;
    pem_pair good;
    tls_front front;
    std::filesystem::path ca_path;
    boost::asio::io_context io;
};

} // namespace

BOOST_FIXTURE_TEST_SUITE(tls, tls_fixture)

BOOST_AUTO_TEST_CASE(a_trusted_ca_and_matching_name_connect)
{
    const auto r = chat(params());
    BOOST_TEST(!r.ec, r.ec.message() << ": " << r.diag.to_string());
    BOOST_TEST(!r.response.content.empty());
    // By IP address too: the certificate's IP SAN is checked.
    const auto by_ip = chat(params("127.0.0.1"));
    BOOST_TEST(!by_ip.ec, by_ip.diag.to_string());
    // And a stream.
    frugal::chat_client client(io.get_executor(), params());
    const auto s = run(io, stream_all(client, request("openai/gpt-5-mini", "Hi"), -1));
    BOOST_TEST(!s.ec, s.diag.to_string());
    BOOST_TEST(s.done);
}

BOOST_AUTO_TEST_CASE(an_untrusted_certificate_fails_clearly)
{
    auto p = params();
    p.ca_file.clear();
    const auto r = chat(p);
    BOOST_TEST(r.ec.failed());
    BOOST_TEST(
        r.diag.message.find("TLS handshake with localhost") != std::string::npos, r.diag.message);
    BOOST_TEST(
        r.diag.message.find("unable to get local issuer certificate") != std::string::npos,
        r.diag.message);
    BOOST_TEST(r.diag.attempts == 1); // a certificate problem is not transient
}

BOOST_AUTO_TEST_CASE(a_wrong_host_name_fails_clearly)
{
    const pem_pair other = ca.issue("DNS:other.example", 3);
    tls_front wrong(sim.port(), other);
    auto p = params();
    p.base_url = "https://localhost:" + std::to_string(wrong.port()) + "/api/v1";
    const auto r = chat(p);
    BOOST_TEST(r.ec.failed());
    BOOST_TEST(r.diag.message.find("hostname mismatch") != std::string::npos, r.diag.message);
}

BOOST_AUTO_TEST_CASE(ssl_cert_file_is_honoured_like_openssl_does)
{
    auto p = params();
    p.ca_file.clear();
    ::setenv("SSL_CERT_FILE", ca_path.c_str(), 1);
    const auto r = chat(p);
    ::unsetenv("SSL_CERT_FILE");
    BOOST_TEST(!r.ec, r.diag.to_string());
}

BOOST_AUTO_TEST_CASE(a_connect_proxy_carries_the_tls_session)
{
    connect_proxy proxy;
    auto p = params();
    p.https_proxy = "http://127.0.0.1:" + std::to_string(proxy.port());
    const auto r = chat(p);
    BOOST_TEST(!r.ec, r.diag.to_string());
    BOOST_TEST(proxy.connections() == 1);
    BOOST_TEST(proxy.last_target() == "localhost:" + std::to_string(front.port()));
}

BOOST_AUTO_TEST_CASE(proxies_come_from_the_environment_unless_no_proxy_says_otherwise)
{
    connect_proxy proxy;
    auto p = params();
    p.proxy_from_environment = true;
    ::setenv("HTTPS_PROXY", ("127.0.0.1:" + std::to_string(proxy.port())).c_str(), 1);
    auto r = chat(p);
    BOOST_TEST(!r.ec, r.diag.to_string());
    BOOST_TEST(proxy.connections() == 1);
    ::setenv("NO_PROXY", "example.com,localhost", 1);
    r = chat(p);
    BOOST_TEST(!r.ec, r.diag.to_string());
    BOOST_TEST(proxy.connections() == 1); // went direct
    ::unsetenv("HTTPS_PROXY");
    ::unsetenv("NO_PROXY");
}

BOOST_AUTO_TEST_CASE(a_refusing_proxy_is_a_proxy_error)
{
    connect_proxy proxy(/*refuse=*/true);
    auto p = params();
    p.https_proxy = "http://user:secret@127.0.0.1:" + std::to_string(proxy.port());
    const auto r = chat(p);
    BOOST_TEST(r.ec == frugal::error::proxy_error);
    BOOST_TEST(
        r.diag.message.find("answered CONNECT with 407") != std::string::npos, r.diag.message);
    BOOST_TEST(r.diag.message.find("secret") == std::string::npos);
}

BOOST_AUTO_TEST_SUITE_END()
