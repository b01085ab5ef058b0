#include "http/url.hpp"

#include <boost/test/unit_test.hpp>

using namespace frugal::http;

BOOST_AUTO_TEST_SUITE(url_parsing)

BOOST_AUTO_TEST_CASE(base_urls)
{
    auto u = parse_url("https://openrouter.ai/api/v1");
    BOOST_REQUIRE(u);
    BOOST_TEST(u->tls);
    BOOST_TEST(u->host == "openrouter.ai");
    BOOST_TEST(u->port == 443);
    BOOST_TEST(u->path == "/api/v1");
    BOOST_TEST(u->authority() == "openrouter.ai:443");
    u = parse_url("http://127.0.0.1:8080/api/v1/");
    BOOST_TEST(!u->tls);
    BOOST_TEST(u->port == 8080);
    BOOST_TEST(u->path == "/api/v1");
    u = parse_url("http://[::1]:9/x");
    BOOST_TEST(u->host == "::1");
    BOOST_TEST(u->authority() == "[::1]:9");
    u = parse_url("http://user:pw@proxy.corp:3128");
    BOOST_TEST(u->userinfo == "user:pw");
    BOOST_TEST(u->host == "proxy.corp");
    BOOST_TEST(u->path.empty());
    for (const char* bad :
         {"ftp://x", "openrouter.ai", "https://", "https://h:0", "https://h:70000", "https://h:x",
          "https://h/a b", "https://h/?q=1", "http://[::1"})
        BOOST_TEST(!parse_url(bad), bad);
}

BOOST_AUTO_TEST_CASE(loopback_hosts)
{
    for (const char* h : {"localhost", "LOCALHOST", "127.0.0.1", "127.1.2.3", "::1"})
        BOOST_TEST(is_loopback_host(h), h);
    for (const char* h : {"openrouter.ai", "10.0.0.1", "localhost.example.com", "::2", "0.0.0.0"})
        BOOST_TEST(!is_loopback_host(h), h);
}

BOOST_AUTO_TEST_CASE(no_proxy_lists)
{
    BOOST_TEST(no_proxy_matches("*", "openrouter.ai"));
    BOOST_TEST(no_proxy_matches("example.com, openrouter.ai", "openrouter.ai"));
    BOOST_TEST(no_proxy_matches(".openrouter.ai", "api.openrouter.ai"));
    BOOST_TEST(no_proxy_matches("openrouter.ai", "api.openrouter.ai"));
    BOOST_TEST(no_proxy_matches("openrouter.ai:443", "openrouter.ai"));
    BOOST_TEST(no_proxy_matches("OpenRouter.AI", "openrouter.ai"));
    BOOST_TEST(!no_proxy_matches("router.ai", "openrouter.ai"));
    BOOST_TEST(!no_proxy_matches("", "openrouter.ai"));
    BOOST_TEST(!no_proxy_matches("example.com", "openrouter.ai"));
}

BOOST_AUTO_TEST_SUITE_END()
