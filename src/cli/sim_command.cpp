#include "cli/commands.hpp"

#include <frugal/sim.hpp>

#include <boost/asio/io_context.hpp>
#include <boost/asio/signal_set.hpp>
#include <boost/system/system_error.hpp>

#include <csignal>
#include <cstdio>
#include <fstream>
#include <sstream>

namespace frugal::cli {

int run_sim(const sim_options& options)
{
    sim_config config;
    if (!options.config_file.empty()) {
        std::ifstream in(options.config_file);
        if (!in) {
            std::fprintf(stderr, "frugal sim: cannot read %s\n", options.config_file.c_str());
            return exit_failure;
        }
        std::stringstream text;
        text << in.rdbuf();
        diagnostics diag;
        auto parsed = parse_sim_config(text.str(), &diag);
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
