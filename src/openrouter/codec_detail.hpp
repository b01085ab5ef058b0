#ifndef FRUGAL_SRC_OPENROUTER_CODEC_DETAIL_HPP
#define FRUGAL_SRC_OPENROUTER_CODEC_DETAIL_HPP

// What the codec's files share beyond codec.hpp. The codec is split by how it reads or writes
// JSON: the request writer (codec.cpp), the chat decoder, the hot loop of every stream
// (codec_chunk.cpp), and the rarer endpoints through the DOM (codec_dom.cpp). A bill as a
// provider reports it is read by both decoders (`usage.cost` in a chunk, `total_cost` in a
// generation's record), and must be judged the same way in both.

#include <frugal/money.hpp>

#include <optional>
#include <string>
#include <string_view>

namespace frugal::openrouter::codec_detail {

// A bill as a provider wrote it (a JSON number's text): the amount, rounded up to the
// picodollar, or nothing with `rejected` saying why it cannot be booked. The number's own text
// is quoted in the reason (digits, a sign and an exponent only), shortened.
// Defined in codec_dom.cpp.
std::optional<money> reported_cost(std::string_view text, std::string& rejected);

} // namespace frugal::openrouter::codec_detail

#endif // FRUGAL_SRC_OPENROUTER_CODEC_DETAIL_HPP
