#ifndef FRUGAL_CLI_OUTPUT_HPP
#define FRUGAL_CLI_OUTPUT_HPP

// What the commands say to a person: one line per failure, and a progress bar on stderr.

#include <frugal/diagnostics.hpp>
#include <frugal/money.hpp>
#include <frugal/router.hpp>

#include <boost/json/object.hpp>
#include <boost/system/error_code.hpp>

#include <chrono>
#include <cstddef>
#include <optional>
#include <string>

namespace frugal::cli {

/// A failure in one line without repeated phrases: what the server said (its message, status
/// and code) when it said anything, else what the error is; for the client's own
/// configuration errors, the command line's words (`OPENROUTER_API_KEY`, not the SDK's
/// parameter names).
std::string failure_text(const boost::system::error_code& ec, const diagnostics& diag);

/// One cascade's outcome as `frugal batch` and `frugal chat --json` write it: the answer's
/// content, the model that gave it, whether it escalated (and why), whether the budget denied
/// an escalation (and why it wanted one), its cost (money as decimal strings), its error in
/// one line (the model, the error and what the provider said), and every attempt.
boost::json::object result_json(
    const cascade_result& r, const boost::system::error_code& ec, const std::string& id = {});

/// A failed cascade's reason in one line: the last failed attempt's model, error and the
/// provider's message (or the guard's reason), else the cascade's own error.
std::string cascade_failure(const cascade_result& r, const boost::system::error_code& ec);

/// A progress bar on stderr when stderr is a terminal: done/total, the rate, the time left,
/// the escalations and the spend against the cap. Redrawn at most ten times a second.
class progress_bar {
public:
    progress_bar(std::size_t total, std::optional<money> cap);
    void update(std::size_t done, std::size_t escalated, money spent, bool force = false);
    /// Clears the bar's line (before the command prints its results).
    void clear();

private:
    bool enabled_;
    std::size_t total_;
    std::optional<money> cap_;
    std::chrono::steady_clock::time_point start_;
    std::chrono::steady_clock::time_point last_{};
};

} // namespace frugal::cli

#endif // FRUGAL_CLI_OUTPUT_HPP
