#include "sim/sim_money.hpp"

#include <algorithm>

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
        const char c = i < static_cast<int>(fraction.size()) ? fraction[static_cast<std::size_t>(i)] : '0';
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
    attodollars whole = amount / one_usd;
    attodollars frac = amount % one_usd;
    std::string digits;
    do {
        digits += static_cast<char>('0' + static_cast<int>(whole % 10));
        whole /= 10;
    } while (whole != 0);
    std::reverse(digits.begin(), digits.end());
    std::string out = negative ? "-" + digits : digits;
    if (frac != 0) {
        std::string f(fraction_digits, '0');
        for (int i = fraction_digits - 1; i >= 0; --i) {
            f[static_cast<std::size_t>(i)] = static_cast<char>('0' + static_cast<int>(frac % 10));
            frac /= 10;
        }
        f.erase(f.find_last_not_of('0') + 1);
        out += '.';
        out += f;
    }
    return out;
}

} // namespace frugal::sim
