// frugal-load: frugal's client (or its cascade) driven at a fixed concurrency against any
// OpenAI-compatible endpoint, on one thread; one JSON line of figures. The peers comparison
// (benchmarks/peers/) runs it beside the Node SDKs against the same server.
//
//   frugal-load --base-url URL --model M --requests N --concurrency C [--stream] [--cascade]
//               [--budgeted]
//   frugal-load --base-url URL --model M --hold-streams N      (memory per open stream)
//   frugal-load --parse FILE [--decode]        (SSE framing speed; --decode: each chunk too)
#include "openrouter/codec.hpp"
#include "process.hpp"

#include <frugal/budget.hpp>
#include <frugal/chat_client.hpp>
#include <frugal/router.hpp>
#include <frugal/sse_parser.hpp>

#include <boost/asio/as_tuple.hpp>
#include <boost/asio/co_spawn.hpp>
#include <boost/asio/detached.hpp>
#include <boost/asio/io_context.hpp>
#include <boost/asio/use_awaitable.hpp>

#include <CLI/CLI.hpp>

#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <fstream>
#include <iterator>
#include <malloc.h>
#include <optional>
#include <string>
#include <tuple>
#include <vector>

namespace asio = boost::asio;
using std::chrono::steady_clock;

namespace {

constexpr auto tuple_awaitable = asio::as_tuple(asio::use_awaitable);

struct options {
    std::string base_url;
    std::string model = "openai/gpt-4o-mini";
    std::string flagship = "openai/gpt-4o";
    std::size_t requests = 10000;
    std::size_t warmup = 1000; // requests before the measured ones (connections, caches)
    std::size_t concurrency = 64;
    bool stream = false;
    bool cascade = false;
    bool budgeted = false;
    std::size_t hold_streams = 0;
    std::string parse_file;
    bool decode = false;
    int cpu = -1;
};

// OPENROUTER_API_KEY when it is set (a real endpoint); a placeholder for canned servers.
std::string key()
{
    const char* k =
        std::getenv("OPENROUTER_API_KEY"); // NOLINT(concurrency-mt-unsafe): before any thread
    return k != nullptr && *k != '\0' ? k : "sk-or-v1-frugal-load";
}

frugal::client_params client_params(const options& o, std::size_t connections)
{
    frugal::client_params p;
    p.base_url = o.base_url;
    p.api_key = key();
    p.max_connections = connections;
    return p;
}

struct tally {
    boost::system::error_code first_error;
    std::size_t done = 0;
    std::size_t errors = 0;
    std::uint64_t chunks = 0;
    std::vector<double> latency_ms;
};

frugal::chat_request make_request(const options& o)
{
    frugal::chat_request req;
    req.model = o.model;
    req.messages.push_back({.role = "user", .content = "Say something short."});
    req.max_tokens = 256;
    return req;
}

double percentile(std::vector<double>& v, double p)
{
    if (v.empty())
        return 0;
    const auto k = static_cast<std::size_t>(std::lround(p * static_cast<double>(v.size() - 1)));
    std::nth_element(v.begin(), v.begin() + static_cast<std::ptrdiff_t>(k), v.end());
    return v[k];
}

asio::awaitable<void> worker(
    frugal::chat_client& client,
    frugal::router* router,
    frugal::budget_guard* guard,
    const options& o,
    std::size_t& next,
    tally& t)
{
    const auto base = make_request(o);
    auto mine = base; // a budgeted call sends the max_tokens its reservation granted
    frugal::reserve_request ask;
    ask.model = base.model;
    ask.prompt_bytes = frugal::prompt_bound(base);
    ask.max_tokens = base.max_tokens.value_or(0);
    frugal::diagnostics diag;
    frugal::attempt_record record;
    while (next < o.requests) {
        ++next;
        const auto t0 = steady_clock::now();
        bool ok = false;
        boost::system::error_code last;
        if (router != nullptr) {
            auto [ec, res] = co_await router->async_complete(base, tuple_awaitable);
            ok = !ec;
            last = ec;
        } else if (guard != nullptr) {
            // As a router reserves: at once when the store can decide in memory.
            std::optional<frugal::reservation> held;
            if (!guard->reserves_async()) {
                if (auto now = guard->try_reserve(ask))
                    held = std::move(*now);
            }
            if (!held) {
                auto [re, later] = co_await guard->async_reserve(ask, tuple_awaitable);
                last = re;
                if (!re)
                    held = std::move(later);
            }
            if (held) {
                mine.max_tokens = held->max_tokens();
                auto [ec, res] = co_await client.async_chat(mine, diag, tuple_awaitable);
                record = {};
                frugal::settle(*held, ec, ec ? nullptr : &res, diag, record);
                last = ec;
            }
            ok = !last;
        } else if (!o.stream) {
            auto [ec, res] = co_await client.async_chat(base, tuple_awaitable);
            ok = !ec;
            last = ec;
        } else {
            frugal::chat_stream s;
            auto [ec] = co_await client.async_start_stream(base, s, tuple_awaitable);
            frugal::chat_delta d; // one delta across reads, as a relay keeps one
            while (!ec && !s.done()) {
                std::tie(ec) = co_await s.async_read_delta(d, tuple_awaitable);
                t.chunks += d.events;
            }
            ok = !ec;
            last = ec;
        }
        t.latency_ms.push_back(
            std::chrono::duration<double, std::milli>(steady_clock::now() - t0).count());
        ++t.done;
        t.errors += ok ? 0 : 1;
        if (!ok && !t.first_error)
            t.first_error = last;
    }
}

int run_load(const options& o)
{
    asio::io_context io{1};
    frugal::chat_client client(
        io.get_executor(), client_params(o, std::max<std::size_t>(o.concurrency, 1)));
    std::optional<frugal::budget_guard> guard;
    if (o.budgeted) {
        // A paid call through the guard (memory store, one cap far from reached), priced by the
        // endpoint's own catalog: the guard's cost over the same call unbudgeted.
        std::optional<std::vector<frugal::model_info>> models;
        asio::co_spawn(
            io,
            [&]() -> asio::awaitable<void> {
                auto [ec, m] = co_await client.async_models(tuple_awaitable);
                if (!ec)
                    models = std::move(m);
            },
            asio::detached);
        io.run();
        io.restart();
        if (!models) {
            std::fprintf(stderr, "frugal-load: --budgeted: the endpoint's /models could not be read\n");
            return 1;
        }
        frugal::budget_params bp;
        bp.budgets = {{"global", *frugal::money::parse("1000000")}};
        frugal::diagnostics d;
        auto g = frugal::budget_guard::open(bp, frugal::price_catalog(std::move(*models)), nullptr, &d);
        if (!g) {
            std::fprintf(stderr, "frugal-load: --budgeted: %s\n", d.message.c_str());
            return 1;
        }
        guard.emplace(std::move(*g));
    }
    std::optional<frugal::router> router;
    if (o.cascade) {
        // A cheap answer that is accepted: the cascade's cost over a direct call.
        frugal::cascade_policy policy;
        policy.tiers = {o.model, o.flagship};
        policy.free_tier.per_minute = 1u << 30; // only a real :free model has the limit
        policy.free_tier.per_day = 1u << 30;
        std::vector<frugal::model_info> rows(2);
        rows[0].id = o.model;
        rows[1].id = o.flagship;
        for (auto& r : rows) {
            // A `:free` model is listed at $0, as OpenRouter lists it; a paid one's answer
            // reporting $0 would be an anomaly the cascade records (and that is not the case
            // measured).
            if (r.id.ends_with(":free"))
                continue;
            r.prompt_price = *frugal::money::parse("0.00000015");
            r.completion_price = *frugal::money::parse("0.0000006");
        }
        // With --budgeted the router reserves each attempt through the guard (the memory
        // store), as a server under a cap does; the endpoint's own catalog prices it then.
        if (guard)
            router.emplace(client, policy, guard->prices(), guard);
        else
            router.emplace(client, policy, frugal::price_catalog(rows));
    }
    frugal::router* routed = router ? &*router : nullptr;
    frugal::budget_guard* guarded = router || !guard ? nullptr : &*guard; // a call's own guard
    // Warm: the pool's connections open, buffers and caches grown, as in a server that has been
    // up for a while. The peers' harness warms the SDKs the same way.
    if (o.warmup != 0) {
        options warm = o;
        warm.requests = o.warmup;
        tally wt;
        std::size_t wnext = 0;
        for (std::size_t w = 0; w < o.concurrency; ++w)
            asio::co_spawn(
                io, worker(client, routed, guarded, warm, wnext, wt), asio::detached);
        io.run();
        io.restart();
        if (wt.errors != 0) {
            std::fprintf(
                stderr, "frugal-load: warm-up failed: %s\n", wt.first_error.message().c_str());
            return 1;
        }
    }
    tally t;
    t.latency_ms.reserve(o.requests);
    std::size_t next = 0;
    const double cpu0 = frugal::bench::cpu_seconds();
    const auto t0 = steady_clock::now();
    for (std::size_t w = 0; w < o.concurrency; ++w)
        asio::co_spawn(io, worker(client, routed, guarded, o, next, t), asio::detached);
    io.run();
    const double secs = std::chrono::duration<double>(steady_clock::now() - t0).count();
    const double cpu = frugal::bench::cpu_seconds() - cpu0;
    const double p50 = percentile(t.latency_ms, 0.50);
    const double p99 = percentile(t.latency_ms, 0.99);
    std::printf(
        "{\"requests\":%zu,\"seconds\":%.4f,\"req_per_s\":%.1f,\"chunks_per_s\":%.1f,"
        "\"cpu_us_per_req\":%.3f,\"cpu_us_per_chunk\":%.4f,\"peak_rss_kib\":%ld,"
        "\"p50_ms\":%.3f,\"p99_ms\":%.3f,\"errors\":%zu}\n",
        t.done, secs, static_cast<double>(t.done) / secs, static_cast<double>(t.chunks) / secs,
        t.done == 0 ? 0.0 : cpu * 1e6 / static_cast<double>(t.done),
        t.chunks == 0 ? 0.0 : cpu * 1e6 / static_cast<double>(t.chunks),
        frugal::bench::peak_rss_kib(), p50, p99, t.errors);
    if (t.first_error)
        std::fprintf(stderr, "frugal-load: first error: %s\n", t.first_error.message().c_str());
    return t.errors == 0 ? 0 : 1;
}

// Opens N streams, reads each one's first delta and holds them: the memory an open stream
// costs, from the resident set before and after.
int run_hold(const options& o)
{
    asio::io_context io{1};
    frugal::chat_client client(io.get_executor(), client_params(o, o.hold_streams + 1));
    std::vector<frugal::chat_stream> streams(o.hold_streams);
    std::size_t opened = 0, errors = 0;
    const auto base = make_request(o);
    const long before = frugal::bench::rss_kib();
    const auto heap_before = ::mallinfo2().uordblks;
    for (auto& s : streams) {
        asio::co_spawn(
            io,
            [&]() -> asio::awaitable<void> {
                auto [ec] = co_await client.async_start_stream(base, s, tuple_awaitable);
                if (!ec) {
                    auto [rec, d] = co_await s.async_read_delta(tuple_awaitable);
                    ec = rec;
                }
                ++(ec ? errors : opened);
            },
            asio::detached);
    }
    io.run();
    const long after = frugal::bench::rss_kib();
    // The heap in use beside the resident set: what the streams hold, without the pages freed
    // memory leaves resident (the starts' transient buffers, between live objects).
    const auto heap_after = ::mallinfo2().uordblks;
    const double per = opened == 0 ? 0.0 : 1.0 / static_cast<double>(opened);
    std::printf(
        "{\"open_streams\":%zu,\"errors\":%zu,\"kib_per_stream\":%.2f,"
        "\"heap_kib_per_stream\":%.2f,\"peak_rss_kib\":%ld}\n",
        opened, errors, static_cast<double>(after - before) * per,
        static_cast<double>(heap_after - heap_before) / 1024.0 * per,
        frugal::bench::peak_rss_kib());
    return errors == 0 ? 0 : 1;
}

// Frames (and with `decode`, parses each chunk's JSON) a whole event stream held in memory.
int run_parse(const options& o)
{
    std::ifstream in(o.parse_file, std::ios::binary);
    const std::string bytes((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
    if (bytes.empty()) {
        std::fprintf(stderr, "frugal-load: cannot read %s\n", o.parse_file.c_str());
        return 2;
    }
    double best = 1e30;
    std::uint64_t events = 0;
    std::size_t content = 0;
    for (int rep = 0; rep < 5; ++rep) {
        frugal::sse_parser parser;
        frugal::openrouter::chat_decoder decoder; // what the client runs on every chunk
        frugal::openrouter::chat_chunk chunk;
        events = 0;
        content = 0;
        const double cpu0 = frugal::bench::cpu_seconds();
        std::string_view rest(bytes);
        // Fed in 16 KiB pieces, as reads from a socket arrive.
        while (!rest.empty()) {
            const auto piece = rest.substr(0, 16384);
            rest.remove_prefix(piece.size());
            parser.feed(piece);
            while (auto ev = parser.next()) {
                ++events;
                if (o.decode && ev->data != "[DONE]") {
                    const auto ec = decoder.decode(ev->data, chunk);
                    content += ec ? 0 : chunk.content.size();
                }
            }
        }
        best = std::min(best, frugal::bench::cpu_seconds() - cpu0);
    }
    std::printf(
        "{\"bytes\":%zu,\"events\":%llu,\"seconds\":%.4f,\"mib_per_s\":%.1f,"
        "\"cpu_us_per_event\":%.4f,\"decoded\":%s,\"checksum\":%zu}\n",
        bytes.size(), static_cast<unsigned long long>(events), best,
        static_cast<double>(bytes.size()) / (1024.0 * 1024.0) / best,
        best * 1e6 / static_cast<double>(std::max<std::uint64_t>(events, 1)),
        o.decode ? "true" : "false", content);
    return 0;
}

} // namespace

int main(int argc, char** argv)
{
    options o;
    CLI::App app{"frugal-load: frugal's client at a fixed concurrency; one JSON line of figures"};
    app.add_option("--base-url", o.base_url, "API base URL, e.g. http://127.0.0.1:8080/api/v1");
    app.add_option("--model", o.model, "Model id sent in each request")->capture_default_str();
    app.add_option("--requests", o.requests, "Requests measured")->capture_default_str();
    app.add_option("--warmup", o.warmup, "Requests before the measured ones")
        ->capture_default_str();
    app.add_option("--concurrency", o.concurrency, "Requests in flight")->capture_default_str();
    app.add_flag("--stream", o.stream, "Streamed chats, every delta read");
    app.add_flag("--cascade", o.cascade, "Through a two-tier cascade whose cheap answer is kept");
    app.add_option("--flagship", o.flagship, "The cascade's second tier")->capture_default_str();
    app.add_flag("--budgeted", o.budgeted,
        "Each call reserved and settled by a budget guard (with --cascade: the router's)");
    app.add_option("--hold-streams", o.hold_streams, "Open N streams and report KiB per stream");
    app.add_option("--parse", o.parse_file, "Parse an event-stream file in memory");
    app.add_flag("--decode", o.decode, "With --parse: also decode each chunk, as the client does");
    app.add_option("--cpu", o.cpu, "Pin to this CPU");
    try {
        app.parse(argc, argv);
    } catch (const CLI::ParseError& e) {
        return app.exit(e) == 0 ? 0 : 2;
    }
    if (o.cpu >= 0)
        frugal::bench::pin_to_cpu(o.cpu);
    if (!o.parse_file.empty())
        return run_parse(o);
    if (o.base_url.empty()) {
        std::fprintf(stderr, "frugal-load: --base-url is needed\n");
        return 2;
    }
    frugal::bench::raise_fd_limit();
    if (o.hold_streams != 0)
        return run_hold(o);
    return run_load(o);
}
