// Tests of the event-stream parser against the WHATWG HTML Standard, 9.2.6 "Parsing an event
// stream" (the ABNF and the line rules) and 9.2.6/9.2.7's field processing and dispatch.
// Every fixture is also re-fed split at every byte position and one byte at a time.
#include "printers.hpp"

#include <frugal/sse_parser.hpp>

#include <boost/test/data/monomorphic.hpp>
#include <boost/test/data/test_case.hpp>
#include <boost/test/unit_test.hpp>

#include <algorithm>
#include <cstdint>
#include <memory>
#include <optional>
#include <ostream>
#include <random>
#include <string>
#include <vector>

using namespace std::string_literals;

namespace {

struct event {
    std::string type;
    std::string data;
    std::string id;
    bool operator==(const event&) const = default;
};

std::ostream& operator<<(std::ostream& os, const event& e)
{
    return os << "{type=" << e.type << ", data=" << e.data << ", id=" << e.id << "}";
}

struct outcome {
    std::vector<event> events;
    std::optional<std::uint64_t> retry;
    std::string last_event_id;
    boost::system::error_code ec;
    bool mid_event = false;
    bool operator==(const outcome&) const = default;
};

std::ostream& operator<<(std::ostream& os, const outcome& o)
{
    os << "events=[";
    for (const auto& e : o.events)
        os << e << ' ';
    os << "] retry=" << (o.retry ? std::to_string(*o.retry) : "none")
       << " last_event_id=" << o.last_event_id << " ec=" << o.ec.message()
       << " mid_event=" << o.mid_event;
    return os;
}

// Feeds each piece from its own heap buffer and scribbles over it before freeing it once the
// parser has drained it, so a view the parser kept into old input shows up as wrong data
// (or, under AddressSanitizer, as a use after free).
outcome parse_pieces(const std::vector<std::string>& pieces, frugal::sse_parser_params params = {})
{
    frugal::sse_parser parser(params);
    outcome out;
    for (const auto& piece : pieces) {
        auto buffer = std::make_unique<char[]>(piece.size() + 1);
        std::copy(piece.begin(), piece.end(), buffer.get());
        parser.feed({buffer.get(), piece.size()});
        while (auto e = parser.next())
            out.events.push_back({std::string(e->type), std::string(e->data), std::string(e->id)});
        std::fill(buffer.get(), buffer.get() + piece.size(), '#');
    }
    out.retry = parser.retry();
    out.last_event_id = std::string(parser.last_event_id());
    out.ec = parser.error();
    out.mid_event = parser.mid_event();
    return out;
}

outcome parse(const std::string& input, frugal::sse_parser_params params = {})
{
    return parse_pieces({input}, params);
}

std::vector<std::string> split_at(const std::string& input, std::size_t at)
{
    return {input.substr(0, at), input.substr(at)};
}

std::vector<std::string> bytewise(const std::string& input)
{
    std::vector<std::string> pieces;
    for (const char c : input)
        pieces.emplace_back(1, c);
    return pieces;
}

event msg(std::string data, std::string id = "")
{
    return {"message", std::move(data), std::move(id)};
}

struct fixture {
    const char* name; // the rule, as the specification words it
    std::string input;
    std::vector<event> events;
    std::optional<std::uint64_t> retry = std::nullopt;
    std::string last_event_id = "";
};

std::ostream& operator<<(std::ostream& os, const fixture& f)
{
    return os << f.name;
}

// One fixture per rule of 9.2.6, plus the OpenRouter stream shapes frugal lives on.
const std::vector<fixture> fixtures = {
    {"LF ends a line", "data: a\n\ndata: b\n\n", {msg("a"), msg("b")}},
    {"CR ends a line", "data: a\r\rdata: b\r\r", {msg("a"), msg("b")}},
    {"CRLF ends a line", "data: a\r\n\r\ndata: b\r\n\r\n", {msg("a"), msg("b")}},
    {"line ends may be mixed", "data: a\r\ndata: b\rdata: c\n\r\n", {msg("a\nb\nc")}},
    {"CR CR is two line ends", "data: a\r\r", {msg("a")}},
    {"LF CR is two line ends", "data: a\n\r", {msg("a")}},
    {"CR LF LF is two line ends", "data: a\r\n\n", {msg("a")}},
    {"leading UTF-8 BOM is removed",
     "\xEF\xBB\xBF"
     "data: a\n\n",
     {msg("a")}},
    {"a second BOM is part of the first field name",
     "\xEF\xBB\xBF\xEF\xBB\xBF"
     "data: a\n\ndata: b\n\n",
     {msg("b")}},
    {"a BOM after the start is data",
     "data: \xEF\xBB\xBF"
     "a\n\n",
     {msg("\xEF\xBB\xBF"
          "a")}},
    {"a BOM prefix that is not a BOM is kept",
     "\xEF\xBB"
     "data: a\n\ndata: b\n\n",
     {msg("b")}},
    {"a lone first byte of a BOM is kept",
     "\xEF"
     "\n"
     "data: a\n\n",
     {msg("a")}},
    {"comment lines are ignored", ": hello\n:\ndata: a\n: between\n\n", {msg("a")}},
    {"a comment does not end an event", "data: a\n: c\ndata: b\n\n", {msg("a\nb")}},
    {"a field with no colon has an empty value", "data\n\n", {msg("")}},
    {"two empty data lines give one LF", "data\ndata\n\n", {msg("\n")}},
    {"one leading space is stripped", "data:  two spaces\n\n", {msg(" two spaces")}},
    {"no space is also accepted", "data:x\n\n", {msg("x")}},
    {"a lone space after the colon is stripped", "data: \n\n", {msg("")}},
    {"a tab is not stripped", "data:\tx\n\n", {msg("\tx")}},
    {"only the first colon separates", "data: a:b: c\n\n", {msg("a:b: c")}},
    {"data lines join with LF", "data: a\ndata: b\ndata: c\n\n", {msg("a\nb\nc")}},
    {"a trailing empty data line keeps one LF", "data: a\ndata:\n\n", {msg("a\n")}},
    {"a leading empty data line keeps one LF", "data:\ndata: a\n\n", {msg("\na")}},
    {"event sets the type", "event: add\ndata: x\n\n", {{"add", "x", ""}}},
    {"the type resets after dispatch",
     "event: add\ndata: x\n\ndata: y\n\n",
     {{"add", "x", ""}, msg("y")}},
    {"an empty type means message", "event:\ndata: x\n\n", {msg("x")}},
    {"the last event field wins", "event: a\nevent: b\ndata: x\n\n", {{"b", "x", ""}}},
    {"a type without data is dropped and reset", "event: add\n\ndata: x\n\n", {msg("x")}},
    {"id persists across events",
     "id: 1\ndata: a\n\ndata: b\n\n",
     {msg("a", "1"), msg("b", "1")},
     std::nullopt,
     "1"},
    {"a later id replaces the earlier",
     "id: 1\ndata: a\n\nid: 2\ndata: b\n\n",
     {msg("a", "1"), msg("b", "2")},
     std::nullopt,
     "2"},
    {"an id with NUL is ignored",
     "id: 1\ndata: a\n\nid: 2\0x\ndata: b\n\n"s,
     {msg("a", "1"), msg("b", "1")},
     std::nullopt,
     "1"},
    {"an empty id resets the last event ID",
     "id: 1\ndata: a\n\nid\ndata: b\n\n",
     {msg("a", "1"), msg("b", "")},
     std::nullopt,
     ""},
    {"an id is kept even when no event is dispatched",
     "id: 7\n\ndata: a\n\n",
     {msg("a", "7")},
     std::nullopt,
     "7"},
    {"the id applies to the event it is in",
     "data: a\nid: 3\n\n",
     {msg("a", "3")},
     std::nullopt,
     "3"},
    {"an id in an unfinished event is not applied",
     "id: 1\ndata: a\n\nid: 2\ndata: b\n",
     {msg("a", "1")},
     std::nullopt,
     "1"},
    {"id keeps spaces after the first",
     "id:  x \ndata: a\n\n",
     {msg("a", " x ")},
     std::nullopt,
     " x "},
    {"retry sets the reconnection time", "retry: 1500\ndata: a\n\n", {msg("a")}, 1500},
    {"retry without a space", "retry:42\n", {}, 42},
    {"retry with a non-digit is ignored", "retry: 1000\nretry: 15ms\n", {}, 1000},
    {"retry with a sign is ignored", "retry: +5\nretry: -5\n", {}, std::nullopt},
    {"retry with inner space is ignored", "retry: 1 000\n", {}, std::nullopt},
    {"an empty retry is ignored", "retry: 10\nretry:\nretry\n", {}, 10},
    {"retry does not dispatch", "retry: 10\n\n", {}, 10},
    {"a huge retry saturates",
     "retry: 99999999999999999999999\n",
     {},
     UINT64_C(18446744073709551615)},
    {"unknown fields are ignored", "foo: bar\ndata: a\nDATA: b\nData: c\n\n", {msg("a")}},
    {"a field name keeps its trailing space", "data : a\ndata: b\n\n", {msg("b")}},
    {"an empty data buffer is not dispatched",
     "\n\n\nid: 1\n\nevent: x\n\n",
     {},
     std::nullopt,
     "1"},
    {"an unfinished line is discarded at the end", "data: a\n\ndata: b", {msg("a")}},
    {"an unfinished event is discarded at the end", "data: a\n\ndata: b\n", {msg("a")}},
    {"NUL and other bytes in data pass through", "data: a\0b\x01\xff\n\n"s, {msg("a\0b\x01\xff"s)}},
    {"a value may contain CR-free UTF-8",
     "data: h\xC3\xA9llo \xE4\xBA\x9A\n\n",
     {msg("h\xC3\xA9llo \xE4\xBA\x9A")}},
    {"blank lines between events dispatch nothing",
     "data: a\n\n\n\ndata: b\n\n",
     {msg("a"), msg("b")}},
    {"OpenRouter keep-alive comments and [DONE]",
     ": OPENROUTER PROCESSING\n\n: OPENROUTER PROCESSING\n\n"
     "data: {\"id\":\"gen-1\",\"choices\":[{\"delta\":{\"content\":\"Hi\"}}]}\n\n"
     "data: {\"id\":\"gen-1\",\"choices\":[],\"usage\":{\"cost\":0.00000495}}\n\n"
     "data: [DONE]\n\n",
     {msg("{\"id\":\"gen-1\",\"choices\":[{\"delta\":{\"content\":\"Hi\"}}]}"),
      msg("{\"id\":\"gen-1\",\"choices\":[],\"usage\":{\"cost\":0.00000495}}"), msg("[DONE]")}},
    {"OpenRouter in-band error chunk",
     "data: {\"error\":{\"code\":429,\"message\":\"Rate limit exceeded\"},"
     "\"choices\":[{\"delta\":{\"content\":\"\"},\"finish_reason\":\"error\"}]}\n\ndata: "
     "[DONE]\n\n",
     {msg("{\"error\":{\"code\":429,\"message\":\"Rate limit exceeded\"},"
          "\"choices\":[{\"delta\":{\"content\":\"\"},\"finish_reason\":\"error\"}]}"),
      msg("[DONE]")}},
};

namespace data = boost::unit_test::data;

} // namespace

BOOST_AUTO_TEST_SUITE(sse_parser)

BOOST_DATA_TEST_CASE(follows_the_rule_when_fed_whole, data::make(fixtures), f)
{
    const outcome got = parse(f.input);
    BOOST_TEST(!got.ec);
    BOOST_TEST(got.events == f.events, boost::test_tools::per_element());
    BOOST_TEST(got.retry == f.retry);
    BOOST_TEST(got.last_event_id == f.last_event_id);
}

BOOST_DATA_TEST_CASE(same_events_when_split_at_every_byte, data::make(fixtures), f)
{
    const outcome whole = parse(f.input);
    for (std::size_t at = 0; at <= f.input.size(); ++at)
        BOOST_TEST_REQUIRE(parse_pieces(split_at(f.input, at)) == whole, "split at " << at);
    BOOST_TEST(parse_pieces(bytewise(f.input)) == whole);
}

BOOST_AUTO_TEST_CASE(cr_at_end_of_a_chunk_and_lf_at_start_of_the_next_are_one_line_end)
{
    // Were the LF read as a second line end, it would dispatch "a" on its own.
    const outcome got = parse_pieces({"data: a\r", "\ndata: b\r", "\n\r", "\n"});
    BOOST_TEST(got.events == std::vector<event>{msg("a\nb")}, boost::test_tools::per_element());
}

BOOST_AUTO_TEST_CASE(cr_at_end_of_input_dispatches_without_waiting_for_more)
{
    frugal::sse_parser parser;
    parser.feed("data: a\r\r");
    const auto e = parser.next();
    BOOST_REQUIRE(e);
    BOOST_TEST(e->data == "a");
}

BOOST_AUTO_TEST_CASE(bom_split_across_chunks_is_removed)
{
    const outcome got = parse_pieces(
        {"\xEF", "\xBB",
         "\xBF"
         "data: a\n\n"});
    BOOST_TEST(got.events == std::vector<event>{msg("a")}, boost::test_tools::per_element());
}

BOOST_AUTO_TEST_CASE(three_way_splits_of_a_mixed_stream)
{
    const std::string input =
        "\xEF\xBB\xBF: c\r\nid: 9\revent: e\ndata: x\r\ndata\r\rretry: 7\n\ndata: y\n\n";
    const outcome whole = parse(input);
    BOOST_TEST(whole.events.size() == 2u);
    for (std::size_t i = 0; i <= input.size(); ++i) {
        for (std::size_t j = i; j <= input.size(); ++j) {
            const std::vector<std::string> pieces = {
                input.substr(0, i), input.substr(i, j - i), input.substr(j)};
            BOOST_TEST_REQUIRE(parse_pieces(pieces) == whole, "split at " << i << "," << j);
        }
    }
}

BOOST_AUTO_TEST_CASE(random_splits_of_an_openrouter_stream)
{
    std::string input = ": OPENROUTER PROCESSING\n\n";
    for (int i = 0; i < 200; ++i) {
        input += "data: {\"id\":\"gen-1\",\"choices\":[{\"index\":0,\"delta\":{\"content\":\"tok" +
                 std::to_string(i) + "\"}}]}\n\n";
        if (i % 50 == 0)
            input += ": OPENROUTER PROCESSING\n\n";
    }
    input += "data: [DONE]\n\n";
    const outcome whole = parse(input);
    BOOST_TEST(whole.events.size() == 201u);

    std::mt19937 rng(12345);
    for (int round = 0; round < 200; ++round) {
        std::vector<std::string> pieces;
        std::size_t at = 0;
        while (at < input.size()) {
            const std::size_t n = std::uniform_int_distribution<std::size_t>(1, 300)(rng);
            pieces.push_back(input.substr(at, n));
            at += n;
        }
        BOOST_TEST_REQUIRE(parse_pieces(pieces) == whole, "round " << round);
    }
}

BOOST_AUTO_TEST_CASE(openrouter_data_line_of_one_mebibyte)
{
    const std::string payload(std::size_t{1} << 20, 'x');
    const std::string input =
        ": OPENROUTER PROCESSING\n\ndata: " + payload + "\n\ndata: [DONE]\n\n";
    const outcome whole = parse(input);
    BOOST_TEST(!whole.ec);
    BOOST_REQUIRE(whole.events.size() == 2u);
    BOOST_TEST(whole.events[0].data == payload);
    // In 4 KiB pieces the line is assembled from 257 inputs.
    std::vector<std::string> pieces;
    for (std::size_t at = 0; at < input.size(); at += 4096)
        pieces.push_back(input.substr(at, 4096));
    BOOST_TEST(parse_pieces(pieces) == whole);
    BOOST_TEST(parse_pieces(split_at(input, 30)) == whole);
}

BOOST_AUTO_TEST_CASE(feeding_again_before_reading_keeps_every_event_in_order)
{
    frugal::sse_parser parser;
    const std::string first = "data: a\n\ndata: b\n\ndata: c";
    const std::string second = "\n\ndata: d\n\n";
    parser.feed(first);
    auto e = parser.next();
    BOOST_REQUIRE(e);
    BOOST_TEST(e->data == "a");
    parser.feed(second); // "data: b" and the start of "c" are still unread
    std::vector<std::string> rest;
    while (auto next = parser.next())
        rest.emplace_back(next->data);
    BOOST_TEST(rest == (std::vector<std::string>{"b", "c", "d"}), boost::test_tools::per_element());
}

BOOST_AUTO_TEST_CASE(mid_event_tells_an_unfinished_event)
{
    frugal::sse_parser parser;
    BOOST_TEST(!parser.mid_event());
    parser.feed("data: a\n\n");
    BOOST_TEST(parser.next().has_value());
    BOOST_TEST(!parser.next().has_value());
    BOOST_TEST(!parser.mid_event());
    parser.feed("data: b");
    BOOST_TEST(!parser.next().has_value());
    BOOST_TEST(parser.mid_event()); // unfinished line
    parser.feed("\n");
    BOOST_TEST(!parser.next().has_value());
    BOOST_TEST(parser.mid_event()); // data not yet dispatched
    parser.feed("\n: keep-alive\n");
    BOOST_TEST(parser.next().has_value());
    BOOST_TEST(!parser.next().has_value());
    BOOST_TEST(!parser.mid_event());
}

BOOST_AUTO_TEST_CASE(reset_starts_a_new_stream)
{
    frugal::sse_parser parser;
    parser.feed("\xEF\xBB\xBFid: 1\nretry: 5\ndata: a\n\ndata: unfinished");
    while (parser.next()) {
    }
    BOOST_TEST(parser.last_event_id() == "1");
    parser.reset();
    BOOST_TEST(parser.last_event_id().empty());
    BOOST_TEST(!parser.retry());
    BOOST_TEST(!parser.mid_event());
    BOOST_TEST(parser.bytes_consumed() == 0u);
    parser.feed("\xEF\xBB\xBF"
                "data: b\n\n"); // a BOM is again removed at the new start
    const auto e = parser.next();
    BOOST_REQUIRE(e);
    BOOST_TEST(e->data == "b");
    BOOST_TEST(e->id == "");
}

BOOST_AUTO_TEST_CASE(bytes_consumed_counts_complete_lines)
{
    frugal::sse_parser parser;
    parser.feed("\xEF\xBB\xBF"
                "data: a\n\ndata: b");
    BOOST_TEST(parser.next().has_value());
    BOOST_TEST(parser.bytes_consumed() == 3u + 8u + 1u);
    BOOST_TEST(!parser.next().has_value());
    BOOST_TEST(parser.bytes_consumed() == 3u + 8u + 1u); // "data: b" is unfinished
}

BOOST_AUTO_TEST_SUITE(limits)

frugal::sse_parser_params small_limits()
{
    return {.max_line_size = 16, .max_event_size = 24};
}

BOOST_AUTO_TEST_CASE(a_line_of_exactly_the_limit_is_accepted)
{
    const std::string input = "data: " + std::string(10, 'x') + "\n\n"; // 16 bytes
    for (std::size_t at = 0; at <= input.size(); ++at) {
        const outcome got = parse_pieces(split_at(input, at), small_limits());
        BOOST_TEST_REQUIRE(!got.ec);
        BOOST_TEST_REQUIRE(got.events.size() == 1u);
    }
}

BOOST_AUTO_TEST_CASE(a_line_one_byte_longer_fails_whatever_the_split)
{
    const std::string input = "data: ok\n\ndata: " + std::string(11, 'x') + "\n\ndata: later\n\n";
    for (std::size_t at = 0; at <= input.size(); ++at) {
        const outcome got = parse_pieces(split_at(input, at), small_limits());
        BOOST_TEST_REQUIRE(got.ec == frugal::error::sse_line_too_long, "split at " << at);
        BOOST_TEST_REQUIRE(got.events == std::vector<event>{msg("ok")});
    }
}

BOOST_AUTO_TEST_CASE(an_unfinished_long_line_fails_before_its_end_arrives)
{
    frugal::sse_parser parser(small_limits());
    parser.feed("data: 0123456789"); // 16 bytes, still within the limit
    BOOST_TEST(!parser.next());
    BOOST_TEST(!parser.error());
    parser.feed("a");
    BOOST_TEST(!parser.next());
    BOOST_TEST(parser.error() == frugal::error::sse_line_too_long);
}

BOOST_AUTO_TEST_CASE(long_comment_lines_count_too)
{
    const outcome got = parse(": " + std::string(100, 'c') + "\ndata: a\n\n", small_limits());
    BOOST_TEST(got.ec == frugal::error::sse_line_too_long);
    BOOST_TEST(got.events.empty());
}

BOOST_AUTO_TEST_CASE(an_event_larger_than_the_limit_fails)
{
    // Three lines within the line limit whose data joins to 26 bytes.
    const std::string input = "data: 12345678\ndata: 12345678\ndata: 12345678\n\n";
    for (std::size_t at = 0; at <= input.size(); ++at) {
        const outcome got = parse_pieces(split_at(input, at), small_limits());
        BOOST_TEST_REQUIRE(got.ec == frugal::error::sse_event_too_large, "split at " << at);
        BOOST_TEST_REQUIRE(got.events.empty());
    }
}

BOOST_AUTO_TEST_CASE(an_event_of_exactly_the_limit_is_accepted)
{
    const std::string input = "data: 12345678\ndata: 12345678\ndata: 123456\n\n"; // 8+1+8+1+6
    const outcome got = parse(input, small_limits());
    BOOST_TEST(!got.ec);
    BOOST_TEST(got.events.size() == 1u);
    BOOST_TEST(got.events.at(0).data.size() == 24u);
}

BOOST_AUTO_TEST_CASE(a_failed_parser_stays_failed_until_reset)
{
    frugal::sse_parser parser(small_limits());
    const std::string long_line = std::string(40, 'x') + "\n";
    parser.feed(long_line);
    BOOST_TEST(!parser.next());
    const auto ec = parser.error();
    BOOST_TEST(ec == frugal::error::sse_line_too_long);
    parser.feed("data: fine\n\n");
    BOOST_TEST(!parser.next());
    BOOST_TEST(parser.error() == ec);
    parser.reset();
    BOOST_TEST(!parser.error());
    parser.feed("data: fine\n\n");
    const auto e = parser.next();
    BOOST_REQUIRE(e);
    BOOST_TEST(e->data == "fine");
}

BOOST_AUTO_TEST_CASE(failure_reports_the_offset_of_the_offending_line)
{
    frugal::sse_parser parser(small_limits());
    parser.feed("data: a\n\n: a long comment line\n");
    BOOST_TEST(parser.next().has_value());
    BOOST_TEST(!parser.next());
    BOOST_TEST(parser.error() == frugal::error::sse_line_too_long);
    BOOST_TEST(parser.bytes_consumed() == 9u);
}

BOOST_AUTO_TEST_CASE(memory_stays_within_the_bound_for_an_endless_line)
{
    const frugal::sse_parser_params params{.max_line_size = 1 << 20, .max_event_size = 1 << 20};
    const std::size_t bound = params.max_event_size + 4 * params.max_line_size;
    frugal::sse_parser parser(params);
    const std::string chunk(4096, 'a');
    std::size_t fed = 0;
    while (!parser.error() && fed < (std::size_t{64} << 20)) {
        parser.feed(chunk);
        fed += chunk.size();
        BOOST_TEST_REQUIRE(!parser.next());
        BOOST_TEST_REQUIRE(parser.buffered_size() <= bound);
    }
    BOOST_TEST(parser.error() == frugal::error::sse_line_too_long);
    BOOST_TEST(fed <= params.max_line_size + chunk.size());
}

BOOST_AUTO_TEST_CASE(memory_stays_within_the_bound_for_an_endless_event)
{
    const frugal::sse_parser_params params{.max_line_size = 1 << 16, .max_event_size = 1 << 20};
    const std::size_t bound = params.max_event_size + 4 * params.max_line_size;
    frugal::sse_parser parser(params);
    const std::string chunk = "data: " + std::string(4000, 'd') + "\n";
    std::size_t fed = 0;
    while (!parser.error() && fed < (std::size_t{64} << 20)) {
        parser.feed(chunk);
        fed += chunk.size();
        BOOST_TEST_REQUIRE(!parser.next());
        BOOST_TEST_REQUIRE(parser.buffered_size() <= bound);
    }
    BOOST_TEST(parser.error() == frugal::error::sse_event_too_large);
    BOOST_TEST(fed <= params.max_event_size + 2 * chunk.size());
}

BOOST_AUTO_TEST_SUITE_END() // limits

BOOST_AUTO_TEST_SUITE_END() // sse_parser

// The parser keeps a view of its input: a temporary std::string must not compile as input.
template <class T>
concept feedable = requires(frugal::sse_parser p, T&& input)
{
    p.feed(std::forward<T>(input));
};
static_assert(!feedable<std::string>);
static_assert(feedable<const std::string&>);
static_assert(feedable<std::string&>);
static_assert(feedable<std::string_view>);
static_assert(feedable<const char (&)[8]>);
