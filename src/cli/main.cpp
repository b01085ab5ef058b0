// The `frugal` command. Each subcommand lives in its own file; this one only parses the
// command line (CLI11, from Debian's libcli11-dev: help text, validation and subcommands
// without hand-written parsing).
#include "cli/commands.hpp"

#include <CLI/CLI.hpp>

#include <cstdio>
#include <exception>

int main(int argc, char** argv)
{
    using namespace frugal::cli;

    CLI::App app{"frugal: cheap-first LLM calls through OpenRouter, with a hard budget"};
    app.require_subcommand(1);

    sse_options sse;
    auto* sse_cmd = app.add_subcommand(
        "sse", "Parse an event stream (WHATWG rules) from stdin; print one JSON object per event");
    sse_cmd->add_flag("--count", sse.count, "Print only {\"events\":N,\"bytes\":M}");
    sse_cmd->add_option("--max-line", sse.limits.max_line_size, "Longest line accepted, in bytes")
        ->capture_default_str()
        ->check(CLI::NonNegativeNumber);
    sse_cmd
        ->add_option(
            "--max-event", sse.limits.max_event_size, "Largest event data accepted, in bytes")
        ->capture_default_str()
        ->check(CLI::NonNegativeNumber);

    try {
        app.parse(argc, argv);
    } catch (const CLI::ParseError& e) {
        const int status = app.exit(e);
        return status == 0 ? 0 : exit_usage;
    }

    try {
        if (*sse_cmd)
            return run_sse(sse);
    } catch (const std::exception& e) {
        std::fprintf(stderr, "frugal: %s\n", e.what());
        return exit_failure;
    }
    return exit_usage;
}
