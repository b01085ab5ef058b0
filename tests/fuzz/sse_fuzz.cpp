// Fuzz target for the event-stream parser. For any input and any split of it the parser must
// dispatch the same events, end in the same state and fail the same way, and its buffers must
// stay within their documented bound. Each piece lives in its own heap block that is freed once
// the parser has drained it, so a view kept into old input is a use after free.
#include <frugal/sse_parser.hpp>

#include <cstdint>
#include <cstdlib>
#include <cstring>
#include <memory>
#include <optional>
#include <string>
#include <vector>

namespace {

struct outcome {
    std::vector<std::string> events; // type, data and id of each event, NUL-separated
    std::optional<std::uint64_t> retry;
    std::string last_event_id;
    boost::system::error_code ec;
    bool mid_event = false;
    bool operator==(const outcome&) const = default;
};

outcome
run(const frugal::sse_parser_params& params,
    const std::uint8_t* data,
    const std::vector<std::size_t>& cuts)
{
    frugal::sse_parser parser(params);
    const std::size_t bound = params.max_event_size + 4 * params.max_line_size;
    outcome out;
    std::size_t begin = 0;
    for (const std::size_t end : cuts) {
        const std::size_t n = end - begin;
        auto piece = std::make_unique<char[]>(n + 1);
        std::memcpy(piece.get(), data + begin, n);
        parser.feed({piece.get(), n});
        while (auto e = parser.next()) {
            std::string record(e->type);
            record += '\0';
            record += e->data;
            record += '\0';
            record += e->id;
            out.events.push_back(std::move(record));
        }
        // Generous slack for std::string's small-buffer capacities.
        if (parser.buffered_size() > bound + 256)
            std::abort();
        begin = end;
    }
    out.retry = parser.retry();
    out.last_event_id = std::string(parser.last_event_id());
    out.ec = parser.error();
    out.mid_event = parser.mid_event();
    return out;
}

} // namespace

// NOLINTNEXTLINE(readability-identifier-naming): the name libFuzzer calls
extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size)
{
    if (size < 2)
        return 0;
    // Byte 0 picks the limits (small ones reach the failure paths), byte 1 seeds the splits.
    frugal::sse_parser_params params;
    if (data[0] & 1) {
        params.max_line_size = 1 + (data[0] >> 1) % 48;
        params.max_event_size = 1 + (data[0] >> 3) % 96;
    }
    std::uint32_t seed = data[1] * 2654435761u + 1;
    data += 2;
    size -= 2;

    const outcome whole = run(params, data, {size});

    std::vector<std::size_t> cuts;
    if (seed % 5 == 0) {
        for (std::size_t i = 1; i <= size; ++i)
            cuts.push_back(i);
    } else {
        std::size_t at = 0;
        while (at < size) {
            seed = seed * 1103515245u + 12345u;
            at = std::min(size, at + 1 + (seed >> 16) % 17);
            cuts.push_back(at);
        }
    }
    if (cuts.empty())
        cuts.push_back(0);
    if (!(run(params, data, cuts) == whole))
        std::abort();
    return 0;
}
