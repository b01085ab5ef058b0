#include <frugal/money.hpp>

#include <limits>

namespace frugal {

namespace {
__extension__ using u128 = unsigned __int128; // GCC and Clang; -Wpedantic is told so
} // namespace

namespace {

// `round_up`: an amount finer than a picodollar is rounded toward +infinity instead of refused.
std::optional<money::rep> parse_units(std::string_view text, bool round_up) noexcept
{
    // JSON number grammar (plus a leading '+' and a bare fraction-less "1."-free decimal):
    // -? digits (. digits)? ([eE] [+-]? digits)?
    bool negative = false;
    std::size_t i = 0;
    if (i < text.size() && (text[i] == '-' || text[i] == '+'))
        negative = text[i++] == '-';
    // The significant digits, without leading zeros, and the power of ten they are scaled by.
    u128 digits = 0;
    int digit_count = 0;
    int scale = 0;
    bool any = false;
    for (; i < text.size() && text[i] >= '0' && text[i] <= '9'; ++i) {
        any = true;
        if (digit_count == 0 && text[i] == '0')
            continue;
        if (digit_count >= 36)
            return std::nullopt; // far out of range
        digits = digits * 10 + static_cast<unsigned>(text[i] - '0');
        ++digit_count;
    }
    if (i < text.size() && text[i] == '.') {
        ++i;
        bool fraction = false;
        for (; i < text.size() && text[i] >= '0' && text[i] <= '9'; ++i) {
            fraction = true;
            --scale;
            if (digit_count == 0 && text[i] == '0')
                continue;
            if (digit_count >= 36)
                return std::nullopt;
            digits = digits * 10 + static_cast<unsigned>(text[i] - '0');
            ++digit_count;
        }
        if (!fraction)
            return std::nullopt;
    }
    if (!any)
        return std::nullopt; // JSON and OpenRouter always write a digit before the point
    if (i < text.size() && (text[i] == 'e' || text[i] == 'E')) {
        ++i;
        bool exp_negative = false;
        if (i < text.size() && (text[i] == '-' || text[i] == '+'))
            exp_negative = text[i++] == '-';
        int exponent = 0;
        bool exp_digits = false;
        for (; i < text.size() && text[i] >= '0' && text[i] <= '9'; ++i) {
            exp_digits = true;
            if (exponent > 1000)
                return std::nullopt;
            exponent = exponent * 10 + (text[i] - '0');
        }
        if (!exp_digits)
            return std::nullopt;
        scale += exp_negative ? -exponent : exponent;
    }
    if (i != text.size())
        return std::nullopt;

    // units = digits * 10^(scale + 12), exactly.
    int power = scale + 12;
    bool dropped = false;
    while (power < 0) {
        if (digits % 10 != 0) {
            if (!round_up)
                return std::nullopt; // finer than a picodollar
            dropped = true;
        }
        digits /= 10;
        ++power;
    }
    if (dropped && !negative)
        ++digits;
    constexpr auto limit = static_cast<u128>(std::numeric_limits<money::rep>::max());
    for (; power > 0; --power) {
        digits *= 10;
        if (digits > limit)
            return std::nullopt;
    }
    if (digits > limit)
        return std::nullopt;
    const auto units = static_cast<money::rep>(digits);
    return negative ? -units : units;
}

} // namespace

std::optional<money> money::parse(std::string_view text) noexcept
{
    const auto u = parse_units(text, false);
    return u ? std::optional<money>(money(*u)) : std::nullopt;
}

std::optional<money> money::parse_ceil(std::string_view text) noexcept
{
    const auto u = parse_units(text, true);
    return u ? std::optional<money>(money(*u)) : std::nullopt;
}

std::string money::to_string() const
{
    const bool negative = units_ < 0;
    // Negating in unsigned arithmetic is defined for the most negative value too.
    const auto magnitude =
        negative ? 0 - static_cast<std::uint64_t>(units_) : static_cast<std::uint64_t>(units_);
    const auto per = static_cast<std::uint64_t>(units_per_usd);
    std::string out = negative ? "-" : "";
    out += std::to_string(magnitude / per);
    std::uint64_t frac = magnitude % per;
    if (frac != 0) {
        char f[12];
        for (int k = 11; k >= 0; --k) {
            f[k] = static_cast<char>('0' + frac % 10);
            frac /= 10;
        }
        int n = 12;
        while (f[n - 1] == '0')
            --n;
        out += '.';
        out.append(f, static_cast<std::size_t>(n));
    }
    return out;
}

money money::saturating_times(money price, std::uint64_t n) noexcept
{
    __extension__ using i128 = __int128;
    const i128 v = static_cast<i128>(price.units()) * static_cast<i128>(n);
    constexpr auto hi = static_cast<i128>(std::numeric_limits<rep>::max());
    constexpr auto lo = static_cast<i128>(std::numeric_limits<rep>::min());
    return money(static_cast<rep>(v > hi ? hi : v < lo ? lo : v));
}

} // namespace frugal
