// How much the simulator serves on one core: whole responses per second at concurrency 64,
// and how many token streams it keeps open at once. The simulator runs in a child process
// pinned to one core; the load generator (raw Asio, no JSON) runs here pinned to the other, so
// the figures are the server's, not the client's.
//
// Figures: sim_nonstream_req_per_s, sim_open_streams, sim_kib_per_open_stream,
// sim_stream_cpu_us_per_chunk.
#include "figures.hpp"
#include "process.hpp"

#include <frugal/sim.hpp>

#include <boost/asio/connect.hpp>
#include <boost/asio/io_context.hpp>
#include <boost/asio/ip/tcp.hpp>
#include <boost/asio/read.hpp>
#include <boost/asio/signal_set.hpp>
#include <boost/asio/steady_timer.hpp>
#include <boost/asio/write.hpp>

#include <array>
#include <chrono>
#include <csignal>
#include <cstdio>
#include <cstring>
#include <iostream>
#include <memory>
#include <string>
#include <vector>

namespace asio = boost::asio;
namespace bench = frugal::bench;
using tcp = asio::ip::tcp;
using namespace std::chrono_literals;
using steady = std::chrono::steady_clock;

namespace {

std::string request_bytes(const std::string& body)
{
    return "POST /api/v1/chat/completions HTTP/1.1\r\nHost: 127.0.0.1\r\nAuthorization: Bearer "
           "sk-or-v1-bench\r\nContent-Type: application/json\r\nContent-Length: " +
           std::to_string(body.size()) + "\r\n\r\n" + body;
}

// Whole responses: `connections` keep-alive connections, each sending the next request as soon
// as the previous response is complete. Responses are framed by Content-Length.
class whole_load {
public:
    whole_load(asio::io_context& io, std::uint16_t port, std::string request, int connections)
        : io_(io), request_(std::move(request))
    {
        for (int i = 0; i < connections; ++i) {
            auto c = std::make_shared<conn>(io);
            c->socket.connect({asio::ip::make_address("127.0.0.1"), port});
            c->socket.set_option(tcp::no_delay(true));
            conns_.push_back(c);
        }
    }

    void start()
    {
        for (auto& c : conns_)
            send(c);
    }

    std::uint64_t completed = 0;
    std::uint64_t errors = 0;
    bool counting = false;
    bool stopping = false;

private:
    struct conn {
        explicit conn(asio::io_context& io) : socket(io) {}
        tcp::socket socket;
        std::vector<char> buf = std::vector<char>(std::size_t{64} * 1024);
        std::size_t have = 0;
    };

    void send(const std::shared_ptr<conn>& c)
    {
        if (stopping)
            return;
        asio::async_write(c->socket, asio::buffer(request_), [this, c](auto ec, std::size_t) {
            if (ec) {
                ++errors;
                return;
            }
            c->have = 0;
            read(c);
        });
    }

    void read(const std::shared_ptr<conn>& c)
    {
        c->socket.async_read_some(
            asio::buffer(c->buf.data() + c->have, c->buf.size() - c->have),
            [this, c](auto ec, std::size_t n) {
                if (ec) {
                    ++errors;
                    return;
                }
                c->have += n;
                const std::string_view got(c->buf.data(), c->have);
                const auto end_of_head = got.find("\r\n\r\n");
                if (end_of_head == std::string_view::npos)
                    return read(c);
                const auto cl = got.find("Content-Length: ");
                const std::size_t length = std::strtoul(got.data() + cl + 16, nullptr, 10);
                if (c->have < end_of_head + 4 + length)
                    return read(c);
                if (!got.starts_with("HTTP/1.1 200"))
                    ++errors;
                if (counting)
                    ++completed;
                send(c);
            });
    }

    asio::io_context& io_;
    std::string request_;
    std::vector<std::shared_ptr<conn>> conns_;
};

double measure_whole(std::uint16_t port)
{
    asio::io_context io{1};
    const std::string body =
        R"({"model":"deepseek/deepseek-v3.2","max_tokens":200,"messages":[{"role":"user","content":"Explain cheap-first routing. [sim tokens=60]"}]})";
    whole_load load(io, port, request_bytes(body), 64);
    load.start();
    io.run_for(500ms); // warm-up
    load.counting = true;
    const auto t0 = steady::now();
    io.run_for(3s);
    const double seconds = std::chrono::duration<double>(steady::now() - t0).count();
    load.counting = false;
    load.stopping = true;
    io.run_for(200ms);
    if (load.errors != 0)
        std::cerr << "whole responses: " << load.errors << " errors\n";
    return static_cast<double>(load.completed) / seconds;
}

// Streams: `count` connections each open one slow stream; counts how many are open at once
// and how many end with [DONE].
struct stream_result {
    std::size_t peak_open = 0;
    std::size_t completed = 0;
    std::size_t failed = 0;
    std::uint64_t chunks = 0;
};

class stream_load {
public:
    stream_load(asio::io_context& io, std::uint16_t port, std::string request, std::size_t count)
        : io_(io), endpoint_({asio::ip::make_address("127.0.0.1"), port}),
          request_(std::move(request)), remaining_(count)
    {
    }

    void start()
    {
        // Connections are opened a few hundred at a time: the listen backlog is finite.
        for (int i = 0; i < 256; ++i)
            open_next();
    }

    stream_result result;

private:
    struct conn {
        explicit conn(asio::io_context& io) : socket(io) {}
        tcp::socket socket;
        std::array<char, 4096> buf{};
        std::string tail;
        bool counted_open = false;
    };

    void open_next()
    {
        if (remaining_ == 0)
            return;
        --remaining_;
        auto c = std::make_shared<conn>(io_);
        c->socket.async_connect(endpoint_, [this, c](auto ec) {
            if (ec) {
                ++result.failed;
                return open_next();
            }
            asio::async_write(c->socket, asio::buffer(request_), [this, c](auto ec2, std::size_t) {
                if (ec2) {
                    ++result.failed;
                    return open_next();
                }
                read(c);
            });
        });
    }

    void read(const std::shared_ptr<conn>& c)
    {
        c->socket.async_read_some(asio::buffer(c->buf), [this, c](auto ec, std::size_t n) {
            if (ec) {
                ++result.failed;
                close(c);
                return;
            }
            if (!c->counted_open) {
                // The first bytes (headers and the first keep-alive comment) mean the stream is
                // open; from here the connection slot goes to the next stream.
                c->counted_open = true;
                result.peak_open = std::max(result.peak_open, ++open_);
                open_next();
            }
            std::string window = c->tail + std::string(c->buf.data(), n);
            for (auto at = window.find("data: {"); at != std::string::npos;
                 at = window.find("data: {", at + 1))
                ++result.chunks;
            if (window.find("data: [DONE]") != std::string::npos) {
                ++result.completed;
                close(c);
                return;
            }
            c->tail = window.substr(window.size() > 16 ? window.size() - 16 : 0);
            read(c);
        });
    }

    void close(const std::shared_ptr<conn>& c)
    {
        if (c->counted_open)
            --open_;
        boost::system::error_code ignored;
        c->socket.close(ignored);
    }

    asio::io_context& io_;
    tcp::endpoint endpoint_;
    std::string request_;
    std::size_t remaining_;
    std::size_t open_ = 0;
};

} // namespace

int main(int argc, char** argv)
{
    const auto results = frugal::bench::results_path(argc, argv);
    std::size_t streams = 10000;
    for (int i = 1; i < argc; ++i) {
        if (std::strncmp(argv[i], "--streams=", 10) == 0)
            streams = std::strtoul(argv[i] + 10, nullptr, 10);
    }
    bench::raise_fd_limit();
    bench::pin_to_cpu(1);
    std::map<std::string, std::pair<double, std::string>> figures;

    {
        frugal::sim_config config;
        bench::child sim = bench::spawn_sim(0, config);
        const double rps = measure_whole(sim.port);
        bench::stop_server(sim);
        std::printf(
            "sim_nonstream_req_per_s   %10.0f req/s (64 connections, 60-token answers)\n", rps);
        figures["sim_nonstream_req_per_s"] = {rps, "req/s"};
    }
    {
        // Each stream: 30 tokens 250 ms apart, so every stream stays open about 7.5 s while
        // the rest connect.
        frugal::sim_config config;
        config.models = frugal::standard_sim_models();
        for (auto& m : config.models)
            m.time_per_token = 250ms;
        bench::child sim = bench::spawn_sim(0, config);
        asio::io_context io{1};
        const std::string body =
            R"({"model":"deepseek/deepseek-v3.2","stream":true,"max_tokens":100,"messages":[{"role":"user","content":"Stream it. [sim tokens=29]"}]})";
        stream_load load(io, sim.port, request_bytes(body), streams);
        load.start();
        const auto t0 = steady::now();
        io.run_for(120s);
        const double seconds = std::chrono::duration<double>(steady::now() - t0).count();
        const bench::child_usage usage = bench::stop_server(sim);
        const auto& r = load.result;
        const std::size_t held = r.failed == 0 ? r.peak_open : std::min(r.peak_open, r.completed);
        std::printf(
            "sim_open_streams           %10zu streams open at once (%zu completed, %zu failed, "
            "%.1f s)\n",
            held, r.completed, r.failed, seconds);
        const double kib = static_cast<double>(usage.max_rss_kib) /
                           static_cast<double>(std::max<std::size_t>(held, 1));
        const double us_per_chunk =
            usage.cpu_seconds * 1e6 / static_cast<double>(std::max<std::uint64_t>(r.chunks, 1));
        std::printf(
            "sim_kib_per_open_stream    %10.1f KiB (peak RSS %ld KiB over the streams held)\n", kib,
            usage.max_rss_kib);
        std::printf(
            "sim_stream_cpu_us_per_chunk%10.2f us (simulator CPU %.2f s for %llu chunks)\n",
            us_per_chunk, usage.cpu_seconds, static_cast<unsigned long long>(r.chunks));
        figures["sim_open_streams"] = {static_cast<double>(held), "streams"};
        figures["sim_kib_per_open_stream"] = {kib, "KiB"};
        figures["sim_stream_cpu_us_per_chunk"] = {us_per_chunk, "us/chunk"};
    }
    frugal::bench::write_results(results, figures);
    return 0;
}
