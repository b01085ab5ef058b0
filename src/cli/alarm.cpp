#include "cli/alarm.hpp"

#include <cstdio>

namespace frugal::cli {

void money_alarm::anomaly(
    std::string_view model, std::string_view what, std::optional<money> booked)
{
    if (anomalies_++ != 0)
        return;
    first_ =
        what.starts_with(model) ? std::string(what) : std::string(model) + ": " + std::string(what);
    if (booked)
        first_ += "; booked $" + booked->to_string();
}

void money_alarm::budget(std::string_view name, money spent, money cap)
{
    if (spent <= cap)
        return;
    ++over_;
    if (over_ > 1 && spent - cap <= worst_excess_)
        return;
    worst_excess_ = spent - cap;
    worst_ = "budget '" + std::string(name) + "' spent $" + spent.to_string() + " against its $" +
             cap.to_string() + " cap";
}

std::string money_alarm::line(const char* command, std::optional<money> cap) const
{
    if (!raised())
        return {};
    std::string out = std::string("frugal ") + command + ": ";
    if (over_ != 0) {
        out += "the bill passed a cap: " + worst_;
        if (anomalies_ != 0)
            out += " (" + first_ + ")";
    } else {
        out += "a provider's accounting was anomalous: " + first_;
        out += cap ? "; the cap is $" + cap->to_string() : std::string("; no cap");
    }
    if (anomalies_ > 1)
        out += "; " + std::to_string(anomalies_) + " anomalies in all";
    out += " (exit status 3)";
    return out;
}

bool money_alarm::print(const char* command, std::optional<money> cap) const
{
    if (!raised())
        return false;
    std::fprintf(stderr, "%s\n", line(command, cap).c_str());
    return true;
}

} // namespace frugal::cli
