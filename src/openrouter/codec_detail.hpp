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

// The length of the UTF-8 sequence (RFC 3629: no overlongs, no surrogates, nothing above
// U+10FFFF) that starts `s`, or 0 when none does. The text a provider sends is checked by it
// where frugal keeps or quotes it.
inline std::size_t utf8_sequence(std::string_view s) noexcept
{
    if (s.empty())
        return 0;
    const auto c = static_cast<unsigned char>(s[0]);
    if (c < 0x80)
        return 1;
    std::size_t need = 0;
    unsigned char lo = 0x80;
    unsigned char hi = 0xBF;
    if (c >= 0xC2 && c <= 0xDF) {
        need = 1;
    } else if (c >= 0xE0 && c <= 0xEF) {
        need = 2;
        lo = c == 0xE0 ? 0xA0 : 0x80;
        hi = c == 0xED ? 0x9F : 0xBF;
    } else if (c >= 0xF0 && c <= 0xF4) {
        need = 3;
        lo = c == 0xF0 ? 0x90 : 0x80;
        hi = c == 0xF4 ? 0x8F : 0xBF;
    } else {
        return 0;
    }
    if (s.size() <= need)
        return 0;
    const auto second = static_cast<unsigned char>(s[1]);
    if (second < lo || second > hi)
        return 0;
    for (std::size_t k = 2; k <= need; ++k) {
        if ((static_cast<unsigned char>(s[k]) & 0xC0) != 0x80)
            return 0;
    }
    return need + 1;
}

} // namespace frugal::openrouter::codec_detail

#endif // FRUGAL_SRC_OPENROUTER_CODEC_DETAIL_HPP
