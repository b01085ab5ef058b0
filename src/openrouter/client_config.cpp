// The client's configuration: client_params completed from the environment, and the URL, proxy,
// TLS context and fixed headers resolved from them once, at construction.
#include "openrouter/client_impl.hpp"

#include "http/url.hpp"

#include <cstdlib>

namespace frugal {

namespace {

std::string env(const char* name)
{
    const char* v = std::getenv(name); // NOLINT(concurrency-mt-unsafe): read once, at construction
    return v == nullptr ? std::string() : std::string(v);
}

} // namespace

chat_client::impl::impl(asio::any_io_executor ex, client_params p)
    : executor(std::move(ex)), params(std::move(p)),
      pool(executor, {params.max_connections, params.idle_timeout}), rng(std::random_device{}())
{
    if (params.base_url.empty())
        params.base_url = env("OPENROUTER_BASE_URL");
    if (params.base_url.empty())
        params.base_url = "https://openrouter.ai/api/v1";
    if (params.api_key.empty())
        params.api_key = env("OPENROUTER_API_KEY");
    configure();
}

void chat_client::impl::configure()
{
    auto target = http::parse_url(params.base_url);
    if (!target) {
        config_error = error::bad_url;
        config_detail = "base URL \"" + params.base_url + "\" is not an http:// or https:// URL";
        return;
    }
    if (!target->tls && !params.allow_insecure_http && !http::is_loopback_host(target->host)) {
        config_error = error::insecure_url;
        config_detail = "refusing plain http:// to " + target->host +
                        ": the API key would cross the network unencrypted (allow_insecure_http)";
        return;
    }
    if (params.api_key.empty()) {
        config_error = error::missing_api_key;
        config_detail = "no API key: set OPENROUTER_API_KEY or client_params::api_key";
        return;
    }
    route.target = *target;
    base_path = target->path;
    std::string proxy = params.https_proxy;
    if (proxy.empty() && params.proxy_from_environment && target->tls) {
        proxy = env("HTTPS_PROXY");
        if (proxy.empty())
            proxy = env("https_proxy");
        std::string no_proxy = env("NO_PROXY");
        if (no_proxy.empty())
            no_proxy = env("no_proxy");
        if (http::no_proxy_matches(no_proxy, target->host))
            proxy.clear();
    }
    if (!proxy.empty() && target->tls) {
        if (proxy.find("://") == std::string::npos)
            proxy = "http://" + proxy;
        auto p = http::parse_url(proxy);
        if (!p || p->tls) {
            config_error = error::bad_url;
            config_detail = "proxy \"" + http::parse_url(proxy).value_or(http::url{}).host +
                            "\" is not an http://host:port URL";
            return;
        }
        route.proxy = *p;
    }
    if (target->tls) {
        error_code ec;
        tls = http::make_tls_context(params.ca_file, params.verify_peer, ec);
        if (!tls) {
            config_error = ec;
            config_detail =
                "cannot set up TLS" +
                (params.ca_file.empty() ? std::string() : " with CA file " + params.ca_file) +
                ": " + ec.message();
            return;
        }
    }
    key = route.key();
    scrubber = openrouter::key_scrubber(params.api_key);
    // Everything but the request line and the body is the same for every request.
    fixed_headers =
        "Host: " +
        (route.target.port == (route.target.tls ? 443 : 80) ? route.target.host
                                                            : route.target.authority()) +
        "\r\nAuthorization: Bearer " + params.api_key + "\r\nUser-Agent: " + params.user_agent +
        "\r\n";
    if (!params.http_referer.empty())
        fixed_headers += "HTTP-Referer: " + params.http_referer + "\r\n";
    if (!params.app_title.empty())
        fixed_headers += "X-OpenRouter-Title: " + params.app_title + "\r\n";
}

} // namespace frugal
