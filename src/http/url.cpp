#include "http/url.hpp"

#include <boost/asio/ip/address.hpp>

#include <algorithm>
#include <cctype>
#include <charconv>

namespace frugal::http {

std::string url::authority() const
{
    const bool v6 = host.find(':') != std::string::npos;
    return (v6 ? "[" + host + "]" : host) + ":" + std::to_string(port);
}

std::optional<url> parse_url(std::string_view text)
{
    url u;
    if (text.starts_with("https://")) {
        text.remove_prefix(8);
    } else if (text.starts_with("http://")) {
        u.tls = false;
        u.port = 80;
        text.remove_prefix(7);
    } else {
        return std::nullopt;
    }
    for (const char c : text) {
        if (std::isspace(static_cast<unsigned char>(c)) != 0 || c == '?' || c == '#')
            return std::nullopt;
    }
    const auto slash = text.find('/');
    std::string_view authority = text.substr(0, slash);
    std::string_view path =
        slash == std::string_view::npos ? std::string_view() : text.substr(slash);
    if (const auto at = authority.rfind('@'); at != std::string_view::npos) {
        u.userinfo = std::string(authority.substr(0, at));
        authority.remove_prefix(at + 1);
    }
    std::string_view port;
    if (authority.starts_with("[")) {
        const auto close = authority.find(']');
        if (close == std::string_view::npos)
            return std::nullopt;
        u.host = std::string(authority.substr(1, close - 1));
        const std::string_view rest = authority.substr(close + 1);
        if (!rest.empty()) {
            if (rest.front() != ':')
                return std::nullopt;
            port = rest.substr(1);
        }
    } else {
        const auto colon = authority.find(':');
        u.host = std::string(authority.substr(0, colon));
        if (colon != std::string_view::npos)
            port = authority.substr(colon + 1);
    }
    if (u.host.empty())
        return std::nullopt;
    if (!port.empty()) {
        unsigned value = 0;
        const auto [p, ec] = std::from_chars(port.data(), port.data() + port.size(), value);
        if (ec != std::errc() || p != port.data() + port.size() || value == 0 || value > 65535)
            return std::nullopt;
        u.port = static_cast<std::uint16_t>(value);
    }
    while (path.ends_with("/"))
        path.remove_suffix(1);
    u.path = std::string(path);
    return u;
}

bool is_ip_literal(std::string_view host)
{
    boost::system::error_code ec;
    boost::asio::ip::make_address(std::string(host), ec);
    return !ec;
}

bool is_loopback_host(std::string_view host)
{
    std::string lower(host);
    std::transform(
        lower.begin(), lower.end(), lower.begin(), [](unsigned char c) { return std::tolower(c); });
    if (lower == "localhost" || lower == "localhost.")
        return true;
    boost::system::error_code ec;
    const auto address = boost::asio::ip::make_address(lower, ec);
    return !ec && address.is_loopback();
}

bool no_proxy_matches(std::string_view no_proxy, std::string_view host)
{
    std::string h(host);
    std::transform(h.begin(), h.end(), h.begin(), [](unsigned char c) { return std::tolower(c); });
    while (!no_proxy.empty()) {
        const auto comma = no_proxy.find(',');
        std::string entry(no_proxy.substr(0, comma));
        no_proxy =
            comma == std::string_view::npos ? std::string_view() : no_proxy.substr(comma + 1);
        entry.erase(
            std::remove_if(
                entry.begin(), entry.end(), [](unsigned char c) { return std::isspace(c); }),
            entry.end());
        std::transform(entry.begin(), entry.end(), entry.begin(), [](unsigned char c) {
            return std::tolower(c);
        });
        if (const auto colon = entry.rfind(':'); colon != std::string::npos &&
                                                 entry.find(']') == std::string::npos &&
                                                 std::count(entry.begin(), entry.end(), ':') == 1)
            entry.erase(colon); // a port: NO_PROXY matches hosts, not ports
        if (entry.empty())
            continue;
        if (entry == "*")
            return true;
        if (entry.front() == '.')
            entry.erase(0, 1);
        if (h == entry || (h.size() > entry.size() && h.ends_with(entry) &&
                           h[h.size() - entry.size() - 1] == '.'))
            return true;
    }
    return false;
}

} // namespace frugal::http
