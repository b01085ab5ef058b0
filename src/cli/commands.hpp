#ifndef FRUGAL_CLI_COMMANDS_HPP
#define FRUGAL_CLI_COMMANDS_HPP

#include <frugal/sse_parser.hpp>

#include <cstdint>
#include <optional>
#include <string>

namespace frugal::cli {

/// Exit status of a command that ran and failed (a bad stream, a failed request).
inline constexpr int exit_failure = 1;
/// Exit status of a command line that could not be understood.
inline constexpr int exit_usage = 2;

struct sse_options {
    bool count = false;
    sse_parser_params limits;
};

struct sim_options {
    std::string host = "127.0.0.1";
    std::uint16_t port = 0;
    std::string config_file;
    std::optional<std::uint64_t> seed;
    bool demo_latency = false;
};

/// `frugal sim`: serves the OpenRouter simulator until SIGINT or SIGTERM. The first line on
/// stdout is `listening on http://HOST:PORT/api/v1`.
int run_sim(const sim_options& options);

/// `frugal sse`: parses an event stream on stdin and prints each dispatched event as one JSON
/// object per line, or with `count` only `{"events":N,"bytes":M}`.
int run_sse(const sse_options& options);

} // namespace frugal::cli

#endif // FRUGAL_CLI_COMMANDS_HPP
