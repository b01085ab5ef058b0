#ifndef FRUGAL_CLI_JSON_TEXT_HPP
#define FRUGAL_CLI_JSON_TEXT_HPP

#include <boost/json/fwd.hpp>

#include <string>
#include <string_view>

namespace frugal::cli {

/// Appends `bytes` to `out` as a JSON string literal. The bytes are decoded as UTF-8 the way
/// the WHATWG Encoding Standard's decoder does it: each maximal invalid subsequence becomes
/// one U+FFFD, so the output is valid JSON whatever the input holds.
void append_json_string(std::string& out, std::string_view bytes);

/// The text of `v`, as every JSON output of the CLI writes it: compact, strings escaped by
/// `append_json_string`, and numbers in plain decimals (a rate is `0.7`, never Boost.JSON's
/// `7E-1`). Money goes in as decimal strings (`money::to_string`), never as doubles.
std::string to_json(const boost::json::value& v);

} // namespace frugal::cli

#endif // FRUGAL_CLI_JSON_TEXT_HPP
