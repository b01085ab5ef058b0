#include "cli/commands.hpp"

#include <frugal/eval.hpp>
#include <frugal/sim.hpp>

#include <boost/asio/io_context.hpp>
#include <boost/asio/signal_set.hpp>
#include <boost/system/system_error.hpp>

#include <algorithm>
#include <map>
#include <csignal>
#include <cstdio>

namespace frugal::cli {

int run_sim(const sim_options& options)
{
    sim_config config;
    if (!options.config_file.empty()) {
        const auto text = read_text_file(options.config_file);
        if (!text) {
            std::fprintf(stderr, "frugal sim: cannot read %s\n", options.config_file.c_str());
            return exit_failure;
        }
        diagnostics diag;
        auto parsed = parse_sim_config(*text, &diag);
        if (!parsed) {
            std::fprintf(
                stderr, "frugal sim: %s: %s\n", options.config_file.c_str(), diag.message.c_str());
            return exit_failure;
        }
        config = std::move(*parsed);
    }
    if (options.seed)
        config.seed = *options.seed;
    if (options.demo_latency)
        config.apply_demo_latency();
    if (!options.outcome_files.empty()) {
        // Each recorded answer, cut into the tokens it is billed as: its recorded count, or
        // the estimate `frugal eval` uses, so the two price a replay alike.
        diagnostics diag;
        auto outcomes = read_outcomes(options.outcome_files, &diag);
        if (!outcomes) {
            std::fprintf(stderr, "frugal sim: %s\n", diag.message.c_str());
            return exit_failure;
        }
        const auto catalog = config.models.empty() ? standard_sim_models() : config.models;
        for (const auto& m : outcomes->models)
            if (std::none_of(catalog.begin(), catalog.end(), [&](const auto& s) { return s.id == m; }))
                std::fprintf(
                    stderr,
                    "frugal sim: note: the catalog has no model \"%s\": its answers are not "
                    "served (--config can add it)\n",
                    m.c_str());
        // A prompt recorded twice is answered as first recorded: say so when the two differ.
        std::map<std::pair<std::string_view, std::size_t>, const recorded_answer*> seen;
        std::size_t differing = 0;
        for (const auto& p : outcomes->prompts) {
            for (std::size_t m = 0; m < outcomes->models.size(); ++m) {
                const auto& a = p.answers[m];
                if (!a || !a->content)
                    continue;
                const auto [it, fresh] = seen.emplace(std::pair{std::string_view(p.prompt), m}, &*a);
                if (!fresh) {
                    differing += it->second->content != a->content ? 1 : 0;
                    continue;
                }
                sim_replay r;
                r.prompt = p.prompt;
                r.model = outcomes->models[m];
                r.content = *a->content;
                r.completion_tokens = a->completion_tokens.value_or(estimate_tokens(*a->content));
                r.prompt_tokens = a->prompt_tokens.value_or(estimate_tokens(p.prompt));
                r.finish_reason = a->finish_reason;
                config.replays.push_back(std::move(r));
            }
        }
        if (config.replays.empty()) {
            std::fprintf(
                stderr, "frugal sim: the outcomes record no answers' text: nothing to replay\n");
            return exit_failure;
        }
        if (differing > 0)
            std::fprintf(
                stderr,
                "frugal sim: note: %zu answers are of a prompt recorded before with another "
                "answer: the first recorded is served\n",
                differing);
    }

    boost::asio::io_context io{1};
    simulator sim(io.get_executor(), std::move(config), options.host, options.port);
    try {
        sim.start();
    } catch (const boost::system::system_error& e) {
        std::fprintf(
            stderr, "frugal sim: cannot listen on %s:%u: %s\n", options.host.c_str(),
            static_cast<unsigned>(options.port), e.code().message().c_str());
        return exit_failure;
    }
    std::printf("listening on %s\n", sim.base_url().c_str());
    std::fflush(stdout);

    boost::asio::signal_set signals(io, SIGINT, SIGTERM);
    signals.async_wait([&sim](const boost::system::error_code&, int) { sim.stop(); });
    io.run();
    return 0;
}

} // namespace frugal::cli
