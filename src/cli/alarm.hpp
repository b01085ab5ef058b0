#ifndef FRUGAL_CLI_ALARM_HPP
#define FRUGAL_CLI_ALARM_HPP

// The money alarm of `batch`, `chat` and `report`: when the bill passed a cap, or a provider's
// accounting was anomalous, one clear line on stderr naming the model, the amount and the
// cap, and exit status 3 (`exit_money`).

#include <frugal/money.hpp>

#include <cstddef>
#include <optional>
#include <string>
#include <string_view>

namespace frugal::cli {

class money_alarm {
public:
    /// An anomaly: a surprise bill or a reported cost frugal could not take as one. `what` is
    /// frugal's own wording (it names numbers and the model asked, never provider text).
    void anomaly(std::string_view model, std::string_view what, std::optional<money> booked);

    /// A budget's spend against its cap; remembered when the spend passed it.
    void budget(std::string_view name, money spent, money cap);

    /// Whether the CLI must raise the alarm.
    bool raised() const noexcept { return anomalies_ != 0 || over_ != 0; }

    /// The line for COMMAND ("frugal batch: ..."), without a newline; empty when not raised.
    std::string line(const char* command, std::optional<money> cap = std::nullopt) const;

    /// Prints the line to stderr, if raised, and returns whether it was.
    bool print(const char* command, std::optional<money> cap = std::nullopt) const;

private:
    std::size_t anomalies_ = 0;
    std::string first_; // "MODEL: WHAT; booked $X"
    std::size_t over_ = 0;
    std::string worst_; // "budget 'global' spent $0.05 against its $0.01 cap"
    money worst_excess_;
};

} // namespace frugal::cli

#endif // FRUGAL_CLI_ALARM_HPP
