#include "http/tcp_info.hpp"

#ifdef __linux__
#include <linux/tcp.h>
#include <netinet/in.h>
#include <sys/socket.h>

#include <cstddef>
#endif

namespace frugal::http {

std::optional<tcp_facts> tcp_facts_of([[maybe_unused]] int fd) noexcept
{
#ifdef __linux__
    tcp_info info{};
    socklen_t size = sizeof info;
    // An older kernel fills less: the field must be within what it wrote.
    if (::getsockopt(fd, IPPROTO_TCP, TCP_INFO, &info, &size) != 0 ||
        size < offsetof(tcp_info, tcpi_bytes_acked) + sizeof info.tcpi_bytes_acked)
        return std::nullopt;
    // TCP_CLOSE (7 in Linux's states): a socket we have not closed gets there by a reset.
    constexpr std::uint8_t tcp_close = 7;
    return tcp_facts{
        info.tcpi_bytes_acked, info.tcpi_state == tcp_close,
        std::chrono::microseconds(info.tcpi_rtt)};
#else
    return std::nullopt;
#endif
}

} // namespace frugal::http
