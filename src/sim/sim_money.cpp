#include "sim/sim_money.hpp"

#include <algorithm>
#include <cstdint>

namespace frugal::sim {

namespace {
constexpr int fraction_digits = 18;
constexpr attodollars one_usd = static_cast<attodollars>(1'000'000'000'000'000'000LL);
} // namespace

std::optional<attodollars> parse_usd(std::string_view text)
{
    bool negative = false;
    if (!text.empty() && text.front() == '-') {
        negative = true;
        text.remove_prefix(1);
    }
    const auto dot = text.find('.');
    const std::string_view whole = text.substr(0, dot);
    const std::string_view fraction = dot == std::string_view::npos ? "" : text.substr(dot + 1);
    if (whole.empty() || whole.size() > 18 || fraction.size() > fraction_digits ||
        (dot != std::string_view::npos && fraction.empty()))
        return std::nullopt;
    attodollars value = 0;
    for (const char c : whole) {
        if (c < '0' || c > '9')
            return std::nullopt;
        value = value * 10 + (c - '0');
    }
    attodollars frac = 0;
    for (int i = 0; i < fraction_digits; ++i) {
        const char c =
            i < static_cast<int>(fraction.size()) ? fraction[static_cast<std::size_t>(i)] : '0';
        if (c < '0' || c > '9')
            return std::nullopt;
        frac = frac * 10 + (c - '0');
    }
    value = value * one_usd + frac;
    return negative ? -value : value;
}

std::string format_usd(attodollars amount)
{
    const bool negative = amount < 0;
    if (negative)
        amount = -amount;
    // One 128-bit division splits the amount; the rest is 64-bit arithmetic.
    const auto whole = amount / one_usd;
    auto frac = static_cast<std::uint64_t>(amount % one_usd);
    std::string out = negative ? "-" : "";
    if (whole > static_cast<attodollars>(UINT64_MAX)) {
        std::string digits;
        for (auto w = whole; w != 0; w /= 10)
            digits += static_cast<char>('0' + static_cast<int>(w % 10));
        out.append(digits.rbegin(), digits.rend());
    } else {
        out += std::to_string(static_cast<std::uint64_t>(whole));
    }
    if (frac != 0) {
        char f[fraction_digits];
        for (int i = fraction_digits - 1; i >= 0; --i) {
            f[i] = static_cast<char>('0' + frac % 10);
            frac /= 10;
        }
        int n = fraction_digits;
        while (f[n - 1] == '0')
            --n;
        out += '.';
        out.append(f, static_cast<std::size_t>(n));
    }
    return out;
}

} // namespace frugal::sim
