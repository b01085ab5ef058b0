// The client's cost on one core, with the server on the other: whole responses and stream
// chunks per second and CPU per unit at concurrency 64, against a static canned-response server
// (the client's own cost) and against the simulator; and memory per open stream.
//
// Figures: client_nonstream_req_per_s, client_cpu_us_per_req, client_stream_chunks_per_s,
// client_cpu_us_per_chunk, client_kib_per_open_stream (canned server), and the same with
// _sim for the simulator.
#include "alloc_count.hpp"
#include "figures.hpp"
#include "process.hpp"

#include <frugal/budget.hpp>
#include <frugal/chat_client.hpp>
#include <frugal/router.hpp>
#include <frugal/sim.hpp>

#include <boost/asio/as_tuple.hpp>
#include <boost/asio/co_spawn.hpp>
#include <boost/asio/detached.hpp>
#include <boost/asio/io_context.hpp>
#include <boost/asio/ip/tcp.hpp>
#include <boost/asio/read.hpp>
#include <boost/asio/read_until.hpp>
#include <boost/asio/signal_set.hpp>
#include <boost/asio/steady_timer.hpp>
#include <boost/asio/use_awaitable.hpp>
#include <boost/asio/write.hpp>

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <cstring>
#include <malloc.h>
#include <optional>
#include <string>
#include <tuple>

namespace asio = boost::asio;
namespace bench = frugal::bench;
using tcp = asio::ip::tcp;
using namespace std::chrono_literals;
using steady = std::chrono::steady_clock;
constexpr auto tuple_awaitable = asio::as_tuple(asio::use_awaitable);

namespace {

// The canned responses: a 60-token whole answer, and a 200-chunk stream with a keep-alive
// comment, a finish chunk, a usage chunk and [DONE], in OpenRouter's 2026 shapes.
// `model` and its `cost` as OpenRouter reports them (a free model's is 0).
std::string canned_whole(const std::string& model, const std::string& cost)
{
    std::string content;
    for (int i = 0; i < 60; ++i)
        content += i == 0 ? "Token" : " token";
    const std::string body =
        R"({"id":"gen-1795000000-q7Rk2mXvB9sLdT4wPz1a","provider":"DeepSeek","model":")" + model + R"(","object":"chat.completion","created":1795000000,"choices":[{"logprobs":null,"finish_reason":"stop","native_finish_reason":"stop","index":0,"message":{"role":"assistant","content":")" +
        content +
        R"(","refusal":null,"reasoning":null}}],"system_fingerprint":null,"usage":{"prompt_tokens":14,"completion_tokens":60,"total_tokens":74,"cost":)" + cost + R"(,"is_byok":false,"prompt_tokens_details":{"cached_tokens":0,"cache_write_tokens":0,"audio_tokens":0,"video_tokens":0},"cost_details":{"upstream_inference_cost":)" + cost + R"(},"completion_tokens_details":{"reasoning_tokens":0,"image_tokens":0,"audio_tokens":0}}})";
    return "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: " +
           std::to_string(body.size()) +
           "\r\nX-Generation-Id: gen-1795000000-q7Rk2mXvB9sLdT4wPz1a\r\n\r\n" + body;
}

constexpr int stream_chunks = 200;

std::string canned_stream()
{
    const std::string prefix =
        R"(data: {"id":"gen-1795000000-q7Rk2mXvB9sLdT4wPz1a","object":"chat.completion.chunk","created":1795000000,"model":"deepseek/deepseek-v3.2","provider":"DeepSeek","choices":[{"index":0,"delta":{"content":")";
    std::string sse = ": OPENROUTER PROCESSING\n\n";
    for (int i = 0; i < stream_chunks; ++i) {
        sse += prefix + (i == 0 ? "Token" : " token") +
               R"(","role":"assistant"},"finish_reason":null,"native_finish_reason":null}]})" +
               "\n\n";
    }
    const std::string finish =
        R"("choices":[{"index":0,"delta":{"content":"","role":"assistant"},"finish_reason":"stop","native_finish_reason":"stop"}])";
    const std::string head =
        R"(data: {"id":"gen-1795000000-q7Rk2mXvB9sLdT4wPz1a","object":"chat.completion.chunk","created":1795000000,"model":"deepseek/deepseek-v3.2","provider":"DeepSeek",)";
    sse += head + finish + "}\n\n";
    sse +=
        head + finish +
        R"(,"usage":{"prompt_tokens":14,"completion_tokens":200,"total_tokens":214,"cost":0.00008378,"is_byok":false}})" +
        "\n\n";
    sse += "data: [DONE]\n\n";
    char size[20];
    std::snprintf(size, sizeof size, "%zx\r\n", sse.size());
    return "HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\nTransfer-Encoding: "
           "chunked\r\nCache-Control: "
           "no-cache\r\n\r\n" +
           std::string(size) + sse + "\r\n0\r\n\r\n";
}

// The canned replies: a paid model's whole answer, a free model's, and a stream.
struct canned_replies {
    std::string whole = canned_whole("deepseek/deepseek-v3.2", "0.00002778");
    std::string free = canned_whole("google/gemma-4-31b-it:free", "0");
    std::string stream = canned_stream();
};

// A static server: reads each request (head and Content-Length body) and answers with the
// canned whole response (the free model's when a `:free` model was asked), or the canned
// stream when the body asks for one.
asio::awaitable<void> canned_session(tcp::socket socket, const canned_replies* replies)
{
    std::string buffer;
    for (;;) {
        auto [ec, n] = co_await asio::async_read_until(
            socket, asio::dynamic_buffer(buffer), "\r\n\r\n", tuple_awaitable);
        if (ec)
            co_return;
        const auto cl = buffer.find("Content-Length: ");
        const std::size_t length = cl < n ? std::strtoul(buffer.c_str() + cl + 16, nullptr, 10) : 0;
        if (buffer.size() < n + length) {
            const std::size_t missing = n + length - buffer.size();
            const std::size_t old = buffer.size();
            buffer.resize(old + missing);
            auto [rec, rn] = co_await asio::async_read(
                socket, asio::buffer(buffer.data() + old, missing), tuple_awaitable);
            if (rec)
                co_return;
        }
        const bool streamed = buffer.find("\"stream\":true", n) != std::string::npos;
        const bool free = buffer.find(":free\"", n) != std::string::npos;
        buffer.erase(0, n + length);
        const std::string& reply =
            streamed ? replies->stream : (free ? replies->free : replies->whole);
        auto [wec, wn] = co_await asio::async_write(socket, asio::buffer(reply), tuple_awaitable);
        if (wec)
            co_return;
    }
}

asio::awaitable<void> canned_accept(tcp::acceptor& acceptor, const canned_replies* replies)
{
    for (;;) {
        auto [ec, socket] = co_await acceptor.async_accept(tuple_awaitable);
        if (ec)
            co_return;
        socket.set_option(tcp::no_delay(true));
        asio::co_spawn(
            acceptor.get_executor(), canned_session(std::move(socket), replies),
            asio::detached);
    }
}

bench::child spawn_canned()
{
    return bench::spawn_server(0, [](const auto& ready) {
        const canned_replies replies;
        asio::io_context io{1};
        tcp::acceptor acceptor(io, {asio::ip::make_address("127.0.0.1"), 0});
        ready(acceptor.local_endpoint().port());
        asio::co_spawn(io, canned_accept(acceptor, &replies), asio::detached);
        asio::signal_set signals(io, SIGTERM);
        signals.async_wait([&](auto, int) { io.stop(); });
        io.run();
    });
}

bool failed_runs = false; // a measured window was mostly errors

struct load {
    bool counting = false;
    bool stopping = false;
    std::uint64_t units = 0; // requests or chunks
    std::uint64_t errors = 0;
    std::string first_error;
};

void note_error(load& l, const boost::system::error_code& ec, const frugal::diagnostics& d)
{
    if (l.errors++ == 0)
        l.first_error = ec.message() + ": " + d.to_string();
}

asio::awaitable<void> whole_worker(frugal::chat_client& c, frugal::chat_request req, load& l)
{
    frugal::diagnostics diag;
    while (!l.stopping) {
        auto [ec, r] = co_await c.async_chat(req, diag, tuple_awaitable);
        if (ec)
            note_error(l, ec, diag);
        else if (l.counting)
            ++l.units;
    }
}

asio::awaitable<void> stream_worker(frugal::chat_client& c, frugal::chat_request req, load& l)
{
    while (!l.stopping) {
        frugal::chat_stream s;
        auto [ec] = co_await c.async_start_stream(req, s, tuple_awaitable);
        if (ec) {
            note_error(l, ec, s.diagnostics());
            continue;
        }
        frugal::chat_delta d; // one delta across reads, as a relay keeps one: its room is reused
        while (!s.done()) {
            auto [rec] = co_await s.async_read_delta(d, tuple_awaitable);
            if (rec) {
                note_error(l, rec, s.diagnostics());
                break;
            }
            if (l.counting)
                l.units += d.events; // a read joins the events that arrived meanwhile
        }
    }
}

struct rate {
    double per_second = 0;
    double cpu_us_per_unit = 0;
    double allocs_per_unit = 0; // heap allocations, every thread, in the measured window
};

// Runs `io` for `d`, as a server runs it: in one `run`. Not `io_context::run_for`: in Asio 1.81
// that runs each handler in a `thread_info` of its own (`scheduler::wait_one`), whose recycling
// cache is freed when the handler returns, so every block an operation frees in a later
// handler than the one that allocated it goes back to the heap, and the next is allocated anew.
void run_measured(asio::io_context& io, std::chrono::steady_clock::duration d)
{
    asio::steady_timer stop(io, d);
    stop.async_wait([&io](boost::system::error_code) { io.stop(); });
    io.run();
    io.restart();
}

// Runs the workers already spawned on `io`: a warm-up, a measured window (rate and CPU per unit
// of `l`), then a drain; errors are reported on stderr.
rate run_load(asio::io_context& io, load& l, std::chrono::seconds window)
{
    run_measured(io, 500ms);
    l.counting = true;
    const double cpu0 = bench::cpu_seconds();
    const auto allocs0 = bench::allocations();
    const auto t0 = steady::now();
    run_measured(io, window);
    const double seconds = std::chrono::duration<double>(steady::now() - t0).count();
    const double cpu = bench::cpu_seconds() - cpu0;
    const auto allocs = bench::allocations() - allocs0;
    l.counting = false;
    l.stopping = true;
    io.run_for(2s);
    if (l.errors != 0) {
        std::fprintf(
            stderr, "  %llu errors, the first: %s\n", static_cast<unsigned long long>(l.errors),
            l.first_error.c_str());
        // A figure measured on failures is not a figure: the run fails instead.
        if (l.errors * 100 > l.units)
            failed_runs = true;
    }
    const double units = static_cast<double>(std::max<std::uint64_t>(l.units, 1));
    return {static_cast<double>(l.units) / seconds, cpu * 1e6 / units,
            static_cast<double>(allocs) / units};
}

// Runs `workers` copies of `worker` for a warm-up and a measured window on this thread.
template <class Worker>
rate measure(std::uint16_t port, bool stream, int workers, std::chrono::seconds window)
{
    asio::io_context io{1};
    frugal::client_params p;
    p.base_url = "http://127.0.0.1:" + std::to_string(port) + "/api/v1";
    p.api_key = "sk-or-v1-bench";
    p.max_connections = static_cast<std::size_t>(workers);
    frugal::chat_client client(io.get_executor(), p);
    frugal::chat_request req;
    req.model = "deepseek/deepseek-v3.2";
    req.max_tokens = 300;
    req.messages.push_back(
        {.role = "user",
         .content = stream ? "Stream it. [sim tokens=199]" : "Explain. [sim tokens=59]"});
    load l;
    for (int i = 0; i < workers; ++i)
        asio::co_spawn(io, Worker{}(client, req, l), asio::detached);
    return run_load(io, l, window);
}

struct whole_fn {
    asio::awaitable<void> operator()(frugal::chat_client& c, frugal::chat_request r, load& l) const
    {
        return whole_worker(c, std::move(r), l);
    }
};
struct stream_fn {
    asio::awaitable<void> operator()(frugal::chat_client& c, frugal::chat_request r, load& l) const
    {
        return stream_worker(c, std::move(r), l);
    }
};

// What runs each request of a measure_calls run.
enum class calls {
    direct_free,  // async_chat on the free model
    cascade,      // a cascade whose free answer is accepted (the router's own cost: policy,
                  // judging, the free tier's reservation and ledger record)
    cascade_unguarded, // the same cascade, its router without a budget guard
    direct_paid,  // async_chat on the paid model
    budgeted,     // the paid model through the guard: async_reserve, async_chat, settle
};

rate measure_calls(std::uint16_t port, calls what, int workers, std::chrono::seconds window)
{
    asio::io_context io{1};
    frugal::client_params p;
    p.base_url = "http://127.0.0.1:" + std::to_string(port) + "/api/v1";
    p.api_key = "sk-or-v1-bench";
    p.max_connections = static_cast<std::size_t>(workers);
    frugal::chat_client client(io.get_executor(), p);
    frugal::model_info cheap;
    cheap.id = "google/gemma-4-31b-it:free";
    frugal::model_info flagship;
    flagship.id = "anthropic/claude-fable-5";
    flagship.prompt_price = *frugal::money::parse("0.000003");
    flagship.completion_price = *frugal::money::parse("0.000015");
    const frugal::price_catalog prices({cheap, flagship});
    frugal::budget_params bp;
    bp.budgets = {{"global", *frugal::money::parse("1000")}};
    auto guard = frugal::budget_guard::open(bp, prices).value();
    frugal::cascade_policy policy;
    policy.tiers = {cheap.id, flagship.id};
    policy.max_tokens = 300;
    policy.free_tier.per_minute = 1u << 30;
    policy.free_tier.per_day = 1u << 30;
    frugal::router router(
        client, policy, prices,
        what == calls::cascade_unguarded ? std::optional<frugal::budget_guard>() : guard);
    frugal::chat_request req;
    const bool paid = what == calls::direct_paid || what == calls::budgeted;
    req.model = paid ? flagship.id : cheap.id;
    req.max_tokens = 300;
    req.messages.push_back({.role = "user", .content = "Explain. [sim tokens=59]"});
    frugal::reserve_request ask;
    ask.model = req.model;
    ask.prompt_bytes = frugal::prompt_bound(req);
    ask.max_tokens = 300;
    load l;
    for (int i = 0; i < workers; ++i) {
        asio::co_spawn(
            io,
            [&]() -> asio::awaitable<void> {
                frugal::diagnostics diag;
                auto mine = req; // a budgeted call sends the max_tokens its reservation granted
                while (!l.stopping) {
                    boost::system::error_code e;
                    if (what == calls::cascade || what == calls::cascade_unguarded) {
                        auto [ce, r] = co_await router.async_complete(req, tuple_awaitable);
                        e = ce;
                    } else if (what == calls::budgeted) {
                        // As the router reserves: at once when the memory store can decide,
                        // awaiting only a store on the network or a wait for headroom.
                        std::optional<frugal::reservation> held;
                        if (!guard.reserves_async()) {
                            if (auto now = guard.try_reserve(ask))
                                held = std::move(*now);
                        }
                        if (!held) {
                            auto [re, later] = co_await guard.async_reserve(ask, tuple_awaitable);
                            e = re;
                            if (!e)
                                held = std::move(later);
                        }
                        if (!e) {
                            auto& reservation = *held;
                            mine.max_tokens = reservation.max_tokens();
                            auto [ce, r] = co_await client.async_chat(mine, diag, tuple_awaitable);
                            frugal::attempt_record record;
                            frugal::settle(reservation, ce, ce ? nullptr : &r, diag, record);
                            e = ce;
                        }
                    } else {
                        auto [ce, r] = co_await client.async_chat(req, diag, tuple_awaitable);
                        e = ce;
                    }
                    if (e)
                        note_error(l, e, diag);
                    else if (l.counting)
                        ++l.units;
                }
            },
            asio::detached);
    }
    return run_load(io, l, window);
}

// Heap allocations per chunk inside a stream, after warm-up: one stream at a time (nothing
// else runs on the thread to be counted with it), counted between its 10th and its 190th event,
// so the stream's start and its last chunks (finish, usage) are left out. The first streams
// warm the pools and buffers; the last 20 are counted.
// `into`: each read goes into one delta kept across reads (`async_read_delta(delta, token)`);
// otherwise each read hands its delta over by value.
double allocs_per_chunk_in_stream(std::uint16_t port, bool into)
{
    asio::io_context io{1};
    frugal::client_params p;
    p.base_url = "http://127.0.0.1:" + std::to_string(port) + "/api/v1";
    p.api_key = "sk-or-v1-bench";
    frugal::chat_client client(io.get_executor(), p);
    frugal::chat_request req;
    req.model = "deepseek/deepseek-v3.2";
    req.max_tokens = 300;
    req.messages.push_back({.role = "user", .content = "Stream it. [sim tokens=199]"});
    std::uint64_t allocs = 0, chunks = 0;
    asio::steady_timer give_up(io, 60s); // a server that stops answering
    give_up.async_wait([&io](boost::system::error_code ec) {
        if (!ec)
            io.stop();
    });
    asio::co_spawn(
        io,
        [&]() -> asio::awaitable<void> {
            struct stop_guard {
                asio::steady_timer& t;
                ~stop_guard() { t.cancel(); }
            } ended{give_up}; // however the loop ends, the run ends with it
            for (int round = 0; round < 60; ++round) {
                frugal::chat_stream s;
                auto [ec] = co_await client.async_start_stream(req, s, tuple_awaitable);
                if (ec)
                    co_return;
                std::uint64_t events = 0, from = 0, a0 = 0;
                frugal::chat_delta d;
                while (!s.done()) {
                    boost::system::error_code rec;
                    if (into)
                        std::tie(rec) = co_await s.async_read_delta(d, tuple_awaitable);
                    else
                        std::tie(rec, d) = co_await s.async_read_delta(tuple_awaitable);
                    if (rec)
                        co_return;
                    events += d.events;
                    if (round < 40)
                        continue;
                    if (from == 0 && events >= 10) { // once: the window is 10 to 190
                        a0 = bench::allocations();
                        from = events;
                    } else if (a0 != 0 && events >= 190) {
                        allocs += bench::allocations() - a0;
                        chunks += events - from;
                        a0 = 0;
                    }
                }
            }
        },
        asio::detached);
    io.run(); // in one run, as a server runs (see run_measured)
    return chunks == 0 ? -1.0 : static_cast<double>(allocs) / static_cast<double>(chunks);
}

asio::awaitable<void>
open_stream(frugal::chat_client& c, frugal::chat_request req, frugal::chat_stream& s, int& opened)
{
    auto [ec] = co_await c.async_start_stream(std::move(req), s, tuple_awaitable);
    if (!ec) {
        auto [rec, d] = co_await s.async_read_delta(tuple_awaitable);
        if (!rec)
            ++opened;
    }
}

// Opens streams[first, last) one after another: several openers run at once, as a server opens
// streams for concurrent users.
asio::awaitable<void> opener(
    frugal::chat_client& c,
    frugal::chat_request req,
    std::vector<frugal::chat_stream>& streams,
    std::size_t first,
    std::size_t step,
    int& opened)
{
    for (std::size_t i = first; i < streams.size(); i += step) {
        co_await open_stream(c, req, streams[i], opened);
    }
}

// Memory per open stream: `n` streams started (64 at a time) and one delta read from each,
// held open by the simulator's slow tokens; the growth of this process's RSS, divided by n. Both
// samples are taken after malloc_trim, so the figure is what open streams hold, not the heap's
// high-water mark from connecting them all at once (those pages are free and reused by later
// streams).
double kib_per_open_stream(int n)
{
    frugal::sim_config config;
    config.models = frugal::standard_sim_models();
    for (auto& m : config.models)
        m.time_per_token = 2s;
    bench::child sim = bench::spawn_sim(0, config);
    asio::io_context io{1};
    frugal::client_params p;
    p.base_url = "http://127.0.0.1:" + std::to_string(sim.port) + "/api/v1";
    p.api_key = "sk-or-v1-bench";
    p.max_connections = static_cast<std::size_t>(n) + 1;
    frugal::chat_client client(io.get_executor(), p);
    frugal::chat_request req;
    req.model = "deepseek/deepseek-v3.2";
    req.messages.push_back({.role = "user", .content = "Hold it open. [sim tokens=20]"});
    // Warm the allocator and the client with a first batch, then measure a second.
    std::vector<frugal::chat_stream> warm(64);
    int opened = 0;
    for (auto& s : warm)
        asio::co_spawn(io, open_stream(client, req, s, opened), asio::detached);
    io.run_for(3s);
    malloc_trim(0);
    const long before = bench::rss_kib();
    std::vector<frugal::chat_stream> streams(static_cast<std::size_t>(n));
    opened = 0;
    constexpr std::size_t openers = 64;
    for (std::size_t i = 0; i < openers; ++i)
        asio::co_spawn(io, opener(client, req, streams, i, openers, opened), asio::detached);
    io.restart();
    const auto give_up = steady::now() + 60s;
    while (opened < n && steady::now() < give_up)
        io.run_for(100ms);
    malloc_trim(0);
    const long after = bench::rss_kib();
    streams.clear();
    warm.clear();
    bench::stop_server(sim);
    return static_cast<double>(after - before) / static_cast<double>(std::max(opened, 1));
}

} // namespace

int main(int argc, char** argv)
{
    // --serve-canned: only the canned server, on this process, until killed (for profiling the
    // client in another process, e.g. under callgrind).
    if (argc > 1 && std::strcmp(argv[1], "--serve-canned") == 0) {
        const canned_replies replies;
        asio::io_context io{1};
        tcp::acceptor acceptor(io, {asio::ip::make_address("127.0.0.1"), 0});
        std::printf(
            "listening on http://127.0.0.1:%u/api/v1\n",
            static_cast<unsigned>(acceptor.local_endpoint().port()));
        std::fflush(stdout);
        asio::co_spawn(io, canned_accept(acceptor, &replies), asio::detached);
        io.run();
        return 0;
    }
    // --cascade-only: just the cascade's overhead (for profiling it).
    const bool cascade_only = argc > 1 && std::strcmp(argv[1], "--cascade-only") == 0;
    // --steady-only: just the allocations inside a stream (for finding where they come from).
    const bool steady_only = argc > 1 && std::strcmp(argv[1], "--steady-only") == 0;
    const auto results = bench::results_path(argc, argv);
    bench::raise_fd_limit();
    bench::pin_to_cpu(1);
    std::map<std::string, std::pair<double, std::string>> figures;
    const auto window = 2s;

    // Three rounds, alternating whole and streamed runs; the medians are recorded.
    const auto median = [](std::vector<double> v) {
        std::sort(v.begin(), v.end());
        return v[v.size() / 2];
    };
    const auto rounds = [&](std::uint16_t port, const char* label, const std::string& suffix) {
        std::vector<double> rps, cpu_req, cps, cpu_chunk, alloc_req, alloc_chunk;
        for (int round = 0; round < 3; ++round) {
            const rate whole = measure<whole_fn>(port, false, 64, window);
            const rate stream = measure<stream_fn>(port, true, 64, window);
            rps.push_back(whole.per_second);
            cpu_req.push_back(whole.cpu_us_per_unit);
            alloc_req.push_back(whole.allocs_per_unit);
            cps.push_back(stream.per_second);
            cpu_chunk.push_back(stream.cpu_us_per_unit);
            alloc_chunk.push_back(stream.allocs_per_unit);
        }
        std::printf(
            "%-15s %9.0f req/s  %6.2f us CPU/req   %10.0f chunks/s  %5.3f us CPU/chunk  (medians "
            "of 3)\n",
            label, median(rps), median(cpu_req), median(cps), median(cpu_chunk));
        std::printf(
            "%-15s %9.2f allocations/req             %10.3f allocations/chunk (the stream's own "
            "shared among its chunks)\n",
            "", median(alloc_req), median(alloc_chunk));
        figures["client_nonstream_req_per_s" + suffix] = {median(rps), "req/s"};
        figures["client_cpu_us_per_req" + suffix] = {median(cpu_req), "us/req"};
        figures["client_stream_chunks_per_s" + suffix] = {median(cps), "chunks/s"};
        figures["client_cpu_us_per_chunk" + suffix] = {median(cpu_chunk), "us/chunk"};
        figures["client_allocs_per_req" + suffix] = {median(alloc_req), "allocs/req"};
        figures["client_allocs_per_chunk" + suffix] = {median(alloc_chunk), "allocs/chunk"};
    };
    {
        bench::child canned = spawn_canned();
        if (!cascade_only) {
            if (!steady_only)
                rounds(canned.port, "canned server:", "");
            const double steady_allocs = allocs_per_chunk_in_stream(canned.port, true);
            const double by_value_allocs = allocs_per_chunk_in_stream(canned.port, false);
            std::printf(
                "%-15s %9.3f allocations per chunk inside a stream, after warm-up (%.3f with "
                "each delta handed over by value)\n",
                "", steady_allocs, by_value_allocs);
            figures["client_allocs_per_chunk_steady"] = {steady_allocs, "allocs/chunk"};
            figures["client_allocs_per_chunk_steady_by_value"] = {by_value_allocs, "allocs/chunk"};
            if (steady_only) {
                bench::stop_server(canned);
                return 0;
            }
        }
        // The cascade's and the guard's overheads: direct and routed runs alternate; the
        // median difference of seven pairs (a single pair varies by several microseconds on a
        // shared VM).
        std::vector<double> overhead, direct_cpu, cascade_cpu, budget_overhead, budgeted_cpu;
        std::vector<double> unguarded_overhead;
        for (int round = 0; round < 7; ++round) {
            const rate direct = measure_calls(canned.port, calls::direct_free, 64, window);
            const rate cascaded = measure_calls(canned.port, calls::cascade, 64, window);
            const rate unguarded = measure_calls(canned.port, calls::cascade_unguarded, 64, window);
            unguarded_overhead.push_back(unguarded.cpu_us_per_unit - direct.cpu_us_per_unit);
            const rate paid = measure_calls(canned.port, calls::direct_paid, 64, window);
            const rate budgeted = measure_calls(canned.port, calls::budgeted, 64, window);
            direct_cpu.push_back(direct.cpu_us_per_unit);
            cascade_cpu.push_back(cascaded.cpu_us_per_unit);
            overhead.push_back(cascaded.cpu_us_per_unit - direct.cpu_us_per_unit);
            budgeted_cpu.push_back(budgeted.cpu_us_per_unit);
            budget_overhead.push_back(budgeted.cpu_us_per_unit - paid.cpu_us_per_unit);
        }
        std::printf(
            "cascade:        %6.2f us CPU/req direct, %6.2f us cascaded: %5.2f us overhead "
            "(median of 7)\n",
            median(direct_cpu), median(cascade_cpu), median(overhead));
        std::printf(
            "                %5.2f us overhead without a budget guard in the router (median of "
            "7)\n",
            median(unguarded_overhead));
        std::printf(
            "budgeted call:  %6.2f us CPU/req, %5.2f us over an unbudgeted paid call "
            "(memory store, median of 7)\n",
            median(budgeted_cpu), median(budget_overhead));
        figures["cascade_overhead_cpu_us"] = {median(overhead), "us/req"};
        figures["cascade_unguarded_overhead_cpu_us"] = {median(unguarded_overhead), "us/req"};
        figures["cascade_cpu_us_per_req"] = {median(cascade_cpu), "us/req"};
        figures["budgeted_call_overhead_cpu_us"] = {median(budget_overhead), "us/req"};
        bench::stop_server(canned);
    }
    if (cascade_only) {
        if (failed_runs)
            return 1;
        bench::write_results(results, figures);
        return 0;
    }
    {
        bench::child sim = bench::spawn_sim(0, frugal::sim_config{});
        rounds(sim.port, "simulator:", "_sim");
        bench::stop_server(sim);
    }
    const double kib = kib_per_open_stream(2000);
    std::printf("open streams:   %6.2f KiB per open stream (2000 streams)\n", kib);
    figures["client_kib_per_open_stream"] = {kib, "KiB"};
    if (failed_runs) {
        std::fprintf(stderr, "frugal_client_bench: runs failed; no figures written\n");
        return 1;
    }
    bench::write_results(results, figures);
    return 0;
}
