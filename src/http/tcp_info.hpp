#ifndef FRUGAL_HTTP_TCP_INFO_HPP
#define FRUGAL_HTTP_TCP_INFO_HPP

// What the kernel knows of a TCP connection, read apart from Asio: <linux/tcp.h>, which has the
// fields needed, cannot be included beside the <netinet/tcp.h> that Asio includes.

#include <chrono>
#include <cstdint>
#include <optional>

namespace frugal::http {

struct tcp_facts {
    /// The sequence space the peer has acknowledged: data bytes, and the SYN as one
    /// (`tcpi_bytes_acked`).
    std::uint64_t bytes_acked = 0;
    /// The connection was reset by the peer (it is closed, and not by us).
    bool reset = false;
    /// The kernel's smoothed round-trip estimate.
    std::chrono::microseconds round_trip{0};
};

/// The facts of socket `fd`; nothing where the kernel does not say.
std::optional<tcp_facts> tcp_facts_of(int fd) noexcept;

} // namespace frugal::http

#endif // FRUGAL_HTTP_TCP_INFO_HPP
