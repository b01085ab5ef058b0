#include "http/tcp_info.hpp"

#ifdef __linux__
#include <linux/tcp.h>
#include <netinet/in.h>
#include <sys/socket.h>
#endif

namespace frugal::http {

std::optional<std::uint64_t> bytes_acknowledged([[maybe_unused]] int fd) noexcept
{
#ifdef __linux__
    tcp_info info{};
    socklen_t size = sizeof info;
    // An older kernel fills less: the field must be within what it wrote.
    if (::getsockopt(fd, IPPROTO_TCP, TCP_INFO, &info, &size) == 0 &&
        size >= offsetof(tcp_info, tcpi_bytes_acked) + sizeof info.tcpi_bytes_acked)
        return info.tcpi_bytes_acked;
#endif
    return std::nullopt;
}

} // namespace frugal::http
