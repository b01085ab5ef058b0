#ifndef FRUGAL_MONEY_HPP
#define FRUGAL_MONEY_HPP

/// @file
/// Exact amounts of US dollars.

#include <compare>
#include <cstdint>
#include <optional>
#include <string>
#include <string_view>

namespace frugal {

/// An exact amount of US dollars: a signed 64-bit count of picodollars (10⁻¹² USD).
///
/// The unit is fine enough for every price OpenRouter lists (USD per token with up to 12
/// decimals, e.g. "0.0000000375" = 37,500 units), so token counts times prices and sums of
/// costs are exact: no floating point is ever involved in arithmetic. The range is ±9.2 million
/// USD.
///
/// @par Thread safety
/// A value type: distinct objects safe, shared objects safe for reading.
class money {
public:
    using rep = std::int64_t;

    /// Units per US dollar.
    static constexpr rep units_per_usd = 1'000'000'000'000;

    constexpr money() noexcept = default;

    /// The amount of `units` picodollars.
    static constexpr money from_units(rep units) noexcept { return money(units); }

    /// Parses a decimal amount of USD as OpenRouter writes them: price strings such as
    /// "0.0000000375" or "-1", and JSON numbers such as "0.00002415" or "4.95e-06". Returns
    /// nothing if the text is not a number, or not exactly representable in picodollars, or
    /// out of range: an amount is never silently rounded.
    static std::optional<money> parse(std::string_view text) noexcept;

    /// Parses an amount a provider billed, which floating-point arithmetic may have written
    /// with more digits than a picodollar holds ("0.30000000000000004"): like `parse`, but such
    /// an amount is rounded up to the next picodollar, so a bill is never booked below itself.
    static std::optional<money> parse_ceil(std::string_view text) noexcept;

    /// `price × n`, saturating at the largest amount instead of wrapping: for counts read from
    /// outside (a ledger file, a provider), whose product must never come out small.
    static money saturating_times(money price, std::uint64_t n) noexcept;

    /// The count of picodollars.
    constexpr rep units() const noexcept { return units_; }

    /// The exact decimal amount in USD, shortest form: "0.00000495", "0", "-1.5".
    std::string to_string() const;

    /// An approximation, for display and for APIs that want a JSON number.
    double to_double() const noexcept { return static_cast<double>(units_) / units_per_usd; }

    friend constexpr money operator+(money a, money b) noexcept
    {
        return money(a.units_ + b.units_);
    }
    friend constexpr money operator-(money a, money b) noexcept
    {
        return money(a.units_ - b.units_);
    }
    /// A price per token times a count of tokens.
    friend constexpr money operator*(money a, std::int64_t n) noexcept
    {
        return money(a.units_ * n);
    }
    constexpr money& operator+=(money b) noexcept
    {
        units_ += b.units_;
        return *this;
    }
    constexpr money& operator-=(money b) noexcept
    {
        units_ -= b.units_;
        return *this;
    }
    // NOLINTNEXTLINE(modernize-use-nullptr): clang-tidy 14 misreads a defaulted <=>
    friend constexpr auto operator<=>(money, money) noexcept = default;
    friend constexpr bool operator==(money, money) noexcept = default;

private:
    constexpr explicit money(rep units) noexcept : units_(units) {}
    rep units_ = 0;
};

} // namespace frugal

#endif // FRUGAL_MONEY_HPP
