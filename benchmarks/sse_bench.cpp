// SSE parser throughput on a 64 MiB OpenRouter-style stream (one-token chat.completion.chunk
// events, a keep-alive comment every 32 events) fed in 4 KiB pieces, as a socket would.
#include "figures.hpp"

#include <frugal/sse_parser.hpp>

#include <benchmark/benchmark.h>
#include <boost/json.hpp>

#include <string>

namespace {

const bool figures = frugal::bench::register_figure("sse_parse_mib_per_s", "MiB/s") &&
                     frugal::bench::register_figure("sse_parse_events_per_s", "events/s") &&
                     frugal::bench::register_figure("sse_allocs_per_event", "allocations/event") &&
                     frugal::bench::register_figure("sse_parse_json_mib_per_s", "MiB/s") &&
                     frugal::bench::register_figure("sse_parse_json_events_per_s", "events/s");

constexpr std::size_t stream_size = std::size_t{64} << 20;
constexpr std::size_t piece_size = 4096;

const std::string& openrouter_stream()
{
    static const std::string stream = [] {
        const char* words[] = {"The",   " quick", " brown", " fox", " jumps", " over", " the",
                               " lazy", " dog",   ".",      "\\n",  " 亚",    " é"};
        std::string s;
        s.reserve(stream_size + 1024);
        for (std::size_t i = 0; s.size() < stream_size; ++i) {
            if (i % 32 == 0)
                s += ": OPENROUTER PROCESSING\n\n";
            s += "data: "
                 "{\"id\":\"gen-1778031306-UD7bR0I1JNCsPvVzlXat\",\"object\":\"chat.completion."
                 "chunk\",\"created\":1778031306,\"model\":\"google/"
                 "gemma-4-31b-it:free\",\"provider\":"
                 "\"Google AI Studio\",\"choices\":[{\"index\":0,\"delta\":{\"content\":\"";
            s += words[i % std::size(words)];
            s += "\",\"role\":\"assistant\"},\"finish_reason\":null,\"native_finish_reason\":null}]"
                 "}\n\n";
        }
        return s;
    }();
    return stream;
}

template <class OnEvent>
std::size_t parse_stream(frugal::sse_parser& parser, const std::string& stream, OnEvent&& on_event)
{
    std::size_t events = 0;
    parser.reset();
    for (std::size_t at = 0; at < stream.size(); at += piece_size) {
        parser.feed(std::string_view(stream).substr(at, piece_size));
        while (auto e = parser.next()) {
            on_event(*e);
            ++events;
        }
    }
    return events;
}

void sse_parse(benchmark::State& state)
{
    const std::string& stream = openrouter_stream();
    frugal::sse_parser parser;
    std::size_t sink = 0;
    parse_stream(parser, stream, [&](const frugal::sse_event& e) { sink += e.data.size(); });

    std::size_t events = 0;
    std::size_t bytes = 0;
    const std::size_t allocs_before = frugal::bench::allocations();
    for (auto _ : state) {
        events += parse_stream(
            parser, stream, [&](const frugal::sse_event& e) { sink += e.data.size(); });
        bytes += stream.size();
        benchmark::DoNotOptimize(sink);
    }
    const std::size_t allocs = frugal::bench::allocations() - allocs_before;
    state.SetBytesProcessed(static_cast<std::int64_t>(bytes));
    state.counters["sse_parse_mib_per_s"] = benchmark::Counter(
        static_cast<double>(bytes) / (1024.0 * 1024.0), benchmark::Counter::kIsRate);
    state.counters["sse_parse_events_per_s"] =
        benchmark::Counter(static_cast<double>(events), benchmark::Counter::kIsRate);
    state.counters["sse_allocs_per_event"] =
        static_cast<double>(allocs) / static_cast<double>(events == 0 ? 1 : events);
}
BENCHMARK(sse_parse)->Unit(benchmark::kMillisecond)->MinTime(2.0);

// The same stream with each event's JSON decoded, as a client must: Boost.JSON into a
// reused parser whose DOM lives in a reused arena.
void sse_parse_json(benchmark::State& state)
{
    const std::string& stream = openrouter_stream();
    frugal::sse_parser parser;
    unsigned char arena[16384];
    boost::json::parser json;
    std::size_t sink = 0;
    auto decode = [&](const frugal::sse_event& e) {
        boost::json::monotonic_resource mr(arena, sizeof arena);
        json.reset(&mr);
        boost::system::error_code ec;
        json.write(e.data.data(), e.data.size(), ec);
        if (!ec) {
            const auto v = json.release();
            if (const auto* choices = v.as_object().if_contains("choices"))
                sink += choices->as_array().size();
        }
    };
    std::size_t events = 0;
    std::size_t bytes = 0;
    for (auto _ : state) {
        events += parse_stream(parser, stream, decode);
        bytes += stream.size();
        benchmark::DoNotOptimize(sink);
    }
    state.SetBytesProcessed(static_cast<std::int64_t>(bytes));
    state.counters["sse_parse_json_mib_per_s"] = benchmark::Counter(
        static_cast<double>(bytes) / (1024.0 * 1024.0), benchmark::Counter::kIsRate);
    state.counters["sse_parse_json_events_per_s"] =
        benchmark::Counter(static_cast<double>(events), benchmark::Counter::kIsRate);
}
BENCHMARK(sse_parse_json)->Unit(benchmark::kMillisecond)->MinTime(2.0);

} // namespace
