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

struct chat_options {
    std::string base_url;
    std::string model;
    std::string prompt;
    bool stream = false;
    bool json = false;
    std::optional<std::uint32_t> max_tokens;
    std::string ca_file;
    double timeout_seconds = 120;
};

/// `frugal chat`: one chat completion; the content (streamed token by token with `stream`) or
/// one JSON object on stdout; on failure a single line on stderr and exit status 1.
int run_chat(const chat_options& options);

struct batch_options {
    std::string base_url;
    std::string policy_file;
    std::string budget; ///< USD, empty for none
    std::size_t concurrency = 8;
    std::string ledger_file;
    bool json = false;
    std::string prompts_file;
};

/// `frugal batch`: every prompt of a JSONL file through a cascade policy, inside a budget;
/// prints a table per model (or one JSON object) on stdout. Exit status 1 when a line was
/// skipped or a prompt failed, 2 for a bad policy or command line.
int run_batch(const batch_options& options);

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
