#include "cli/json_text.hpp"

#include <boost/json/array.hpp>
#include <boost/json/object.hpp>
#include <boost/json/value.hpp>
#include <boost/test/unit_test.hpp>

#include <string>

using namespace std::string_literals;

namespace {

std::string json(std::string_view bytes)
{
    return frugal::cli::to_json(boost::json::string_view(bytes.data(), bytes.size()));
}

const std::string fffd = "\xEF\xBF\xBD";

} // namespace

BOOST_AUTO_TEST_SUITE(json_text)

BOOST_AUTO_TEST_CASE(escapes_quotes_backslashes_and_control_characters)
{
    BOOST_TEST(json("a\"b\\c") == R"("a\"b\\c")");
    BOOST_TEST(json("\n\r\t\b\f") == R"("\n\r\t\b\f")");
    BOOST_TEST(json("\0\x01\x1f"s) == R"("\u0000\u0001\u001f")");
    BOOST_TEST(json("\x7f/") == "\"\x7f/\"");
    std::string quotes = "\"";
    for (int i = 0; i < 1000; ++i)
        quotes += "\\\"";
    BOOST_TEST(json(std::string(1000, '"')) == quotes + "\""); // longer than one read
}

BOOST_AUTO_TEST_CASE(keeps_valid_utf8_as_is)
{
    BOOST_TEST(json("h\xC3\xA9") == "\"h\xC3\xA9\"");
    BOOST_TEST(json("\xE4\xBA\x9A") == "\"\xE4\xBA\x9A\"");
    BOOST_TEST(json("\xF0\x9F\x98\x80") == "\"\xF0\x9F\x98\x80\"");
    BOOST_TEST(json("\xF4\x8F\xBF\xBF") == "\"\xF4\x8F\xBF\xBF\""); // U+10FFFF
}

// WHATWG Encoding, UTF-8 decoder: one U+FFFD per maximal subpart of an invalid sequence.
BOOST_AUTO_TEST_CASE(replaces_invalid_sequences_like_the_whatwg_decoder)
{
    BOOST_TEST(json("\x80") == "\"" + fffd + "\"");                       // lone continuation
    BOOST_TEST(json("\xC0\x80") == "\"" + fffd + fffd + "\"");            // overlong lead
    BOOST_TEST(json("\xE0\x80\x80") == "\"" + fffd + fffd + fffd + "\""); // overlong 3-byte
    BOOST_TEST(json("\xED\xA0\x80") == "\"" + fffd + fffd + fffd + "\""); // surrogate
    BOOST_TEST(json("\xF4\x90\x80\x80") == "\"" + fffd + fffd + fffd + fffd + "\""); // > U+10FFFF
    BOOST_TEST(json("\xE2\x82") == "\"" + fffd + "\""); // truncated at the end
    BOOST_TEST(
        json("\xE2\x82"
             "A") == "\"" + fffd + "A\""); // truncated, then ASCII
    BOOST_TEST(
        json("\xF0\x9F\x98"
             "\"") == "\"" + fffd + "\\\"\""); // truncated before a quote
    BOOST_TEST(json("\xFF\xFE") == "\"" + fffd + fffd + "\"");
}

BOOST_AUTO_TEST_CASE(keys_are_replaced_like_values)
{
    const boost::json::object o{{"k\xFF", "v"}};
    BOOST_TEST(frugal::cli::to_json(o) == "{\"k" + fffd + "\":\"v\"}");
}

// Boost.JSON would write 7E-1; a rate reads as 0.7. Members keep their insertion order.
BOOST_AUTO_TEST_CASE(numbers_are_plain_decimals_in_insertion_order)
{
    boost::json::object o;
    o["z"] = 0.7;
    o["a"] = 1.0 / 3.0;
    o["m"] = 2.0;
    o["n"] = -0.0000001;
    o["i"] = std::int64_t{-42};
    o["u"] = std::uint64_t{18446744073709551615ULL};
    o["b"] = boost::json::array{true, false, nullptr};
    BOOST_TEST(
        frugal::cli::to_json(o) ==
        R"({"z":0.7,"a":0.333333,"m":2,"n":0,"i":-42,"u":18446744073709551615,"b":[true,false,null]})");
}

BOOST_AUTO_TEST_SUITE_END()
