#include "cli/commands.hpp"

#include <frugal/serve.hpp>

#include <boost/asio/io_context.hpp>
#include <boost/asio/signal_set.hpp>

#include <csignal>
#include <cstdio>
#include <optional>

namespace frugal::cli {

namespace {

std::optional<gateway_config> read_config(const std::string& path)
{
    const auto text = read_text_file(path);
    if (!text) {
        std::fprintf(stderr, "frugal serve: cannot read %s\n", path.c_str());
        return std::nullopt;
    }
    diagnostics diag;
    auto parsed = parse_gateway_config(*text, &diag);
    if (!parsed) {
        std::fprintf(stderr, "frugal serve: %s: %s\n", path.c_str(), diag.message.c_str());
        return std::nullopt;
    }
    return std::move(*parsed);
}

} // namespace

int run_serve(const serve_options& options)
{
    if (options.tls_cert.empty() != options.tls_key.empty()) {
        std::fprintf(stderr, "frugal serve: --tls-cert and --tls-key go together\n");
        return exit_usage;
    }
    auto config = read_config(options.config_file);
    if (!config)
        return exit_usage;
    for (const auto& [hash, k] : config->keys)
        if (!k.budget)
            std::fprintf(
                stderr, "frugal serve: tenant \"%s\" has no budget: its paid calls are uncapped\n",
                k.tenant.c_str());

    boost::asio::io_context io{1};
    gateway_params params;
    params.host = options.host;
    params.port = options.port;
    params.tls_cert = options.tls_cert;
    params.tls_key = options.tls_key;
    gateway gw(io.get_executor(), std::move(*config), params);
    diagnostics diag;
    int status = 0;
    bool started = false;
    gw.async_start(diag, [&](boost::system::error_code ec) {
        if (ec) {
            std::fprintf(stderr, "frugal serve: %s\n", diag.message.c_str());
            status = exit_failure;
            io.stop();
            return;
        }
        started = true;
        std::printf("listening on %s\n", gw.base_url().c_str());
        std::fflush(stdout);
    });

    boost::asio::signal_set stop(io, SIGINT, SIGTERM);
    boost::asio::signal_set hup(io, SIGHUP);
    std::function<void()> wait_hup = [&] {
        hup.async_wait([&](const boost::system::error_code& ec, int) {
            if (ec)
                return;
            if (auto next = read_config(options.config_file)) {
                diagnostics rd;
                if (auto rec = gw.reload(std::move(*next), &rd))
                    std::fprintf(stderr, "frugal serve: reload refused: %s\n", rd.message.c_str());
                else
                    std::fprintf(stderr, "frugal serve: reloaded %s\n", options.config_file.c_str());
            }
            wait_hup();
        });
    };
    wait_hup();
    stop.async_wait([&](const boost::system::error_code& ec, int) {
        if (ec)
            return;
        hup.cancel();
        // In flight requests finish within the grace, then are cancelled and settled; the
        // io_context runs on until the last settlement is written.
        gw.async_shutdown([&] {
            std::fprintf(stderr, "frugal serve: stopped\n");
            status = started ? 0 : status;
            io.stop();
        });
    });
    io.run();
    if (!started)
        return status; // nothing was served: nothing to settle
    // Streams abandoned mid-answer settle in their own coroutines after their request ended:
    // let them.
    io.restart();
    io.run_for(std::chrono::seconds(5));
    return status;
}

} // namespace frugal::cli
