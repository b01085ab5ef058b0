#ifndef FRUGAL_SIM_SIM_MONEY_HPP
#define FRUGAL_SIM_SIM_MONEY_HPP

// The simulator's own exact money: a count of 1e-18 USD in a 128-bit integer. It is
// deliberately not frugal's money type, so that a parsing or rounding bug in one cannot be
// mirrored in the other and go unseen.

#include <optional>
#include <string>
#include <string_view>

namespace frugal::sim {

// __extension__ keeps -Wpedantic quiet about the GCC/Clang 128-bit integer.
__extension__ typedef __int128 attodollars; // NOLINT(modernize-use-using)

/// Parses a plain decimal ("0.0000000375", "3", "-1") with at most 18 fractional digits.
std::optional<attodollars> parse_usd(std::string_view text);

/// Formats as the shortest exact decimal ("0.00000495", "0", "12.5").
std::string format_usd(attodollars amount);

} // namespace frugal::sim

#endif // FRUGAL_SIM_SIM_MONEY_HPP
