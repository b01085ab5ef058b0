// frugal-rate: requests at a fixed rate (open loop), for latency as a server sees traffic from
// many independent users. Each request's latency runs from when it was due, not from when a
// connection was free to send it, so a server that falls behind is charged for the queue it
// causes (no coordinated omission). One JSON line of figures.
//   frugal-rate --url http://127.0.0.1:PORT/PATH --rate 5000 --seconds 10 [--warmup 2]
//               [--connections 256] [--header "Name: value"]... [--body JSON]
#include <boost/asio/as_tuple.hpp>
#include <boost/asio/co_spawn.hpp>
#include <boost/asio/connect.hpp>
#include <boost/asio/detached.hpp>
#include <boost/asio/io_context.hpp>
#include <boost/asio/ip/tcp.hpp>
#include <boost/asio/steady_timer.hpp>
#include <boost/asio/use_awaitable.hpp>
#include <boost/asio/write.hpp>
#include <boost/beast/core/flat_buffer.hpp>
#include <boost/beast/http/read.hpp>
#include <boost/beast/http/string_body.hpp>

#include <CLI/CLI.hpp>

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <deque>
#include <string>
#include <utility>
#include <vector>

namespace asio = boost::asio;
namespace http = boost::beast::http;
using asio::ip::tcp;
using std::chrono::steady_clock;

namespace {

constexpr auto tuple_awaitable = asio::as_tuple(asio::use_awaitable);

struct state {
    std::string request; // the bytes of one request
    std::string host, port;
    steady_clock::time_point measure_from; // after the warm-up
    std::vector<double> latency_us;
    std::vector<std::pair<double, double>> timeline; // (due after start, latency) in µs, for --dump
    steady_clock::time_point start;
    bool keep_timeline = false;
    std::size_t errors = 0, sent = 0, late = 0;
    std::deque<steady_clock::time_point> due; // requests due with no free connection
    std::vector<tcp::socket*> idle;
    std::size_t running = 0;
};

asio::awaitable<void> serve_due(state& st, tcp::socket& s, steady_clock::time_point due)
{
    boost::beast::flat_buffer buf;
    for (;;) {
        auto [wec, wn] = co_await asio::async_write(s, asio::buffer(st.request), tuple_awaitable);
        bool ok = !wec;
        if (ok) {
            http::response_parser<http::string_body> p;
            p.body_limit(64 << 20);
            auto [rec, rn] = co_await http::async_read(s, buf, p, tuple_awaitable);
            ok = !rec && p.get().result_int() == 200;
        }
        const auto done = steady_clock::now();
        if (due >= st.measure_from) {
            st.latency_us.push_back(std::chrono::duration<double, std::micro>(done - due).count());
            if (st.keep_timeline)
                st.timeline.emplace_back(
                    std::chrono::duration<double, std::micro>(due - st.start).count(),
                    st.latency_us.back());
            st.errors += ok ? 0 : 1;
        }
        if (!ok)
            break; // the connection is left out from then on
        if (st.due.empty()) {
            st.idle.push_back(&s);
            break;
        }
        due = st.due.front();
        st.due.pop_front();
    }
    --st.running;
}

double percentile(std::vector<double>& v, double p)
{
    if (v.empty())
        return 0;
    const auto k = static_cast<std::size_t>(p * static_cast<double>(v.size() - 1) + 0.5);
    std::nth_element(v.begin(), v.begin() + static_cast<std::ptrdiff_t>(k), v.end());
    return v[k];
}

} // namespace

int main(int argc, char** argv)
{
    std::string url, body = R"({"model":"openai/gpt-4o-mini","messages":[{"role":"user","content":"Say something short."}],"max_tokens":256})";
    double rate = 5000, seconds = 10, warmup = 2;
    std::size_t connections = 256;
    std::vector<std::string> headers;
    std::string dump;
    CLI::App app{"frugal-rate: requests at a fixed rate; latency from when each was due"};
    app.add_option("--url", url, "http://HOST:PORT/PATH")->required();
    app.add_option("--rate", rate, "Requests a second")->capture_default_str();
    app.add_option("--seconds", seconds, "Measured seconds")->capture_default_str();
    app.add_option("--warmup", warmup, "Seconds before the measured ones")->capture_default_str();
    app.add_option("--connections", connections, "Keep-alive connections")->capture_default_str();
    app.add_option("--header", headers, "An extra header line");
    app.add_option("--body", body, "The POST body");
    app.add_option("--dump", dump, "Write each measured request's due time and latency (µs) here");
    CLI11_PARSE(app, argc, argv);

    state st;
    const auto scheme = url.find("://");
    const auto rest = url.substr(scheme == std::string::npos ? 0 : scheme + 3);
    const auto slash = rest.find('/');
    const auto hostport = rest.substr(0, slash);
    const auto path = slash == std::string::npos ? "/" : rest.substr(slash);
    const auto colon = hostport.rfind(':');
    st.host = hostport.substr(0, colon);
    st.port = colon == std::string::npos ? "80" : hostport.substr(colon + 1);
    st.request = "POST " + path + " HTTP/1.1\r\nHost: " + hostport +
                 "\r\nContent-Type: application/json\r\nContent-Length: " +
                 std::to_string(body.size()) + "\r\n";
    for (const auto& h : headers)
        st.request += h + "\r\n";
    st.request += "\r\n" + body;

    asio::io_context io{1};
    tcp::resolver resolver(io);
    const auto eps = resolver.resolve(st.host, st.port);
    std::vector<tcp::socket> socks;
    socks.reserve(connections);
    for (std::size_t i = 0; i < connections; ++i) {
        socks.emplace_back(io);
        asio::connect(socks.back(), eps);
        socks.back().set_option(tcp::no_delay(true));
        st.idle.push_back(&socks.back());
    }
    const auto interval = std::chrono::duration<double>(1.0 / rate);
    const auto start = steady_clock::now();
    st.start = start;
    st.keep_timeline = !dump.empty();
    if (st.keep_timeline) // grown during the run, it would stall the generator it watches
        st.timeline.reserve(static_cast<std::size_t>((warmup + seconds) * rate) + 1);
    st.measure_from = start + std::chrono::duration_cast<steady_clock::duration>(
                                  std::chrono::duration<double>(warmup));
    const auto total = static_cast<std::size_t>((warmup + seconds) * rate);
    asio::co_spawn(
        io,
        [&]() -> asio::awaitable<void> {
            asio::steady_timer t(io);
            for (std::size_t i = 0; i < total; ++i) {
                const auto due = start + std::chrono::duration_cast<steady_clock::duration>(
                                             interval * static_cast<double>(i));
                if (steady_clock::now() < due) {
                    t.expires_at(due);
                    co_await t.async_wait(tuple_awaitable);
                }
                ++st.sent;
                if (st.idle.empty()) {
                    st.due.push_back(due);
                    if (due >= st.measure_from)
                        ++st.late;
                    continue;
                }
                auto* s = st.idle.back();
                st.idle.pop_back();
                ++st.running;
                asio::co_spawn(io, serve_due(st, *s, due), asio::detached);
            }
        },
        asio::detached);
    io.run();
    const double measured = static_cast<double>(st.latency_us.size());
    std::printf(
        "{\"rate\":%.0f,\"requests\":%.0f,\"errors\":%zu,\"queued\":%zu,\"p50_us\":%.1f,"
        "\"p99_us\":%.1f,\"p999_us\":%.1f,\"max_us\":%.1f}\n",
        rate, measured, st.errors, st.late, percentile(st.latency_us, 0.50),
        percentile(st.latency_us, 0.99), percentile(st.latency_us, 0.999),
        percentile(st.latency_us, 1.0));
    if (!dump.empty()) {
        // Where the slow requests fall in time tells a stall (clustered) from noise (spread).
        auto* f = std::fopen(dump.c_str(), "w");
        if (f == nullptr) {
            std::fprintf(stderr, "frugal-rate: cannot write %s\n", dump.c_str());
            return 1;
        }
        for (const auto& [at, us] : st.timeline)
            std::fprintf(f, "%.0f %.1f\n", at, us);
        std::fclose(f);
    }
    return st.errors == 0 ? 0 : 1;
}
