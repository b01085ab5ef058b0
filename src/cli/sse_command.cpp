#include "cli/commands.hpp"
#include "cli/json_text.hpp"

#include <frugal/sse_parser.hpp>

#include <boost/json/object.hpp>

#include <cerrno>
#include <cstdint>
#include <cstdio>
#include <string>
#include <system_error>
#include <vector>

#include <unistd.h>

namespace frugal::cli {
namespace {

// std::strerror is not thread-safe; the category's message is.
std::string errno_message()
{
    return std::generic_category().message(errno);
}

bool write_all(std::string_view bytes)
{
    return bytes.empty() || std::fwrite(bytes.data(), 1, bytes.size(), stdout) == bytes.size();
}

void append_event(std::string& out, const sse_event& event, std::optional<std::uint64_t> retry)
{
    boost::json::object o{{"event", event.type}, {"data", event.data}, {"id", event.id}};
    if (retry)
        o["retry"] = *retry;
    out += to_json(o);
    out += '\n';
}

std::string describe_failure(const sse_parser& parser)
{
    const auto& limits = parser.params();
    std::string what =
        parser.error() == error::sse_line_too_long
            ? "a line longer than " + std::to_string(limits.max_line_size) + " bytes (--max-line)"
            : "an event larger than " + std::to_string(limits.max_event_size) +
                  " bytes (--max-event)";
    return "frugal sse: stream rejected at byte " + std::to_string(parser.bytes_consumed()) + ": " +
           what + " [" + parser.error().to_string() + "]";
}

} // namespace

int run_sse(const sse_options& options)
{
    sse_parser parser(options.limits);
    std::vector<char> buffer(std::size_t{64} * 1024);
    std::string out;
    std::uint64_t events = 0;
    std::uint64_t bytes = 0;

    for (;;) {
        const ssize_t got = ::read(STDIN_FILENO, buffer.data(), buffer.size());
        if (got < 0) {
            if (errno == EINTR)
                continue;
            std::fprintf(stderr, "frugal sse: reading stdin: %s\n", errno_message().c_str());
            return exit_failure;
        }
        if (got == 0)
            break;
        bytes += static_cast<std::uint64_t>(got);
        parser.feed({buffer.data(), static_cast<std::size_t>(got)});
        while (auto event = parser.next()) {
            ++events;
            if (!options.count)
                append_event(out, *event, parser.retry());
        }
        // Events are written as each read completes, so a live stream shows up live.
        if (!options.count) {
            if (!write_all(out) || std::fflush(stdout) != 0) {
                std::fprintf(stderr, "frugal sse: writing stdout: %s\n", errno_message().c_str());
                return exit_failure;
            }
            out.clear();
        }
        if (parser.error()) {
            std::fprintf(stderr, "%s\n", describe_failure(parser).c_str());
            return exit_failure;
        }
    }
    if (options.count) {
        out = to_json(boost::json::object{{"events", events}, {"bytes", bytes}}) + '\n';
        if (!write_all(out) || std::fflush(stdout) != 0) {
            std::fprintf(stderr, "frugal sse: writing stdout: %s\n", errno_message().c_str());
            return exit_failure;
        }
    }
    return 0;
}

} // namespace frugal::cli
