#ifndef FRUGAL_CLI_JSON_TEXT_HPP
#define FRUGAL_CLI_JSON_TEXT_HPP

#include <string>
#include <string_view>

namespace frugal::cli {

/// Appends `bytes` to `out` as a JSON string literal. The bytes are decoded as UTF-8 the way
/// the WHATWG Encoding Standard's decoder does it: each maximal invalid subsequence becomes
/// one U+FFFD, so the output is valid JSON whatever the input holds.
void append_json_string(std::string& out, std::string_view bytes);

} // namespace frugal::cli

#endif // FRUGAL_CLI_JSON_TEXT_HPP
