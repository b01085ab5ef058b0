#ifndef FRUGAL_CLI_COMMANDS_HPP
#define FRUGAL_CLI_COMMANDS_HPP

#include <frugal/sse_parser.hpp>

namespace frugal::cli {

/// Exit status of a command that ran and failed (a bad stream, a failed request).
inline constexpr int exit_failure = 1;
/// Exit status of a command line that could not be understood.
inline constexpr int exit_usage = 2;

struct sse_options {
    bool count = false;
    sse_parser_params limits;
};

/// `frugal sse`: parses an event stream on stdin and prints each dispatched event as one JSON
/// object per line, or with `count` only `{"events":N,"bytes":M}`.
int run_sse(const sse_options& options);

} // namespace frugal::cli

#endif // FRUGAL_CLI_COMMANDS_HPP
