#ifndef FRUGAL_HTTP_TCP_INFO_HPP
#define FRUGAL_HTTP_TCP_INFO_HPP

// What the kernel knows of a TCP connection, read apart from Asio: <linux/tcp.h>, which has the
// fields needed, cannot be included beside the <netinet/tcp.h> that Asio includes.

#include <cstdint>
#include <optional>

namespace frugal::http {

/// The sequence space the peer has acknowledged on socket `fd` (data bytes, and the SYN as one):
/// `tcpi_bytes_acked`. Nothing where the kernel does not say.
std::optional<std::uint64_t> bytes_acknowledged(int fd) noexcept;

} // namespace frugal::http

#endif // FRUGAL_HTTP_TCP_INFO_HPP
