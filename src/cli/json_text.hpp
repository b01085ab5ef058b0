#ifndef FRUGAL_CLI_JSON_TEXT_HPP
#define FRUGAL_CLI_JSON_TEXT_HPP

#include <boost/json/fwd.hpp>

#include <string>

namespace frugal::cli {

/// The text of `v`, as every JSON output of the CLI writes it: compact, members in insertion
/// order, strings escaped by Boost.JSON's serializer, and numbers in plain decimals (a rate is
/// `0.7`, never Boost.JSON's `7E-1`). Money goes in as decimal strings (`money::to_string`),
/// never as doubles. A string's bytes are decoded as UTF-8 the way the WHATWG Encoding
/// Standard's decoder does it (each maximal invalid subsequence becomes one U+FFFD), so the
/// output is valid JSON whatever a string holds (`frugal sse` passes stdin's bytes through).
std::string to_json(const boost::json::value& v);

} // namespace frugal::cli

#endif // FRUGAL_CLI_JSON_TEXT_HPP
