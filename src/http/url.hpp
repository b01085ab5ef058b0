#ifndef FRUGAL_HTTP_URL_HPP
#define FRUGAL_HTTP_URL_HPP

// The few URLs frugal needs: a base URL (scheme, host, port, path prefix) and a proxy.

#include <cstdint>
#include <optional>
#include <string>
#include <string_view>

namespace frugal::http {

struct url {
    bool tls = true;
    std::string host; // without brackets for IPv6 literals
    std::uint16_t port = 443;
    std::string path;     // without a trailing slash ("/api/v1")
    std::string userinfo; // "user:password" of a proxy URL

    /// host:port as the Host header and CONNECT want it (IPv6 in brackets).
    std::string authority() const;
};

/// Parses `http://` and `https://` URLs; nothing for anything else (other schemes, spaces,
/// a query or fragment, a bad port).
std::optional<url> parse_url(std::string_view text);

/// Whether `host` is loopback: "localhost", 127.0.0.0/8 or ::1.
bool is_loopback_host(std::string_view host);

/// Whether `host` is an IPv4 or IPv6 literal.
bool is_ip_literal(std::string_view host);

/// Whether `host` matches a NO_PROXY list ("*", exact names, ".suffix" or "suffix" domains,
/// optional ports ignored).
bool no_proxy_matches(std::string_view no_proxy, std::string_view host);

} // namespace frugal::http

#endif // FRUGAL_HTTP_URL_HPP
