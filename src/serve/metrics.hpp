#ifndef FRUGAL_SRC_SERVE_METRICS_HPP
#define FRUGAL_SRC_SERVE_METRICS_HPP

// The gateway's counters, written in Prometheus' text format (version 0.0.4). Debian has no
// Prometheus client for C++; the format is small enough to write, and it is checked against
// its grammar in the tests. Labels come from the configuration (tenants, policies) and the
// catalog (models), never from free text a client sends, so their number is bounded.

#include <frugal/budget_types.hpp>
#include <frugal/money.hpp>

#include <array>
#include <chrono>
#include <cstdint>
#include <map>
#include <string>
#include <string_view>
#include <vector>

namespace frugal::serve {

class histogram {
public:
    explicit histogram(std::vector<double> bounds) : bounds_(std::move(bounds)), counts_(bounds_.size() + 1) {}
    void observe(double v);
    void write(std::string& out, const std::string& name) const;

private:
    std::vector<double> bounds_;
    std::vector<std::uint64_t> counts_; // per bucket, not cumulative; the last is +Inf
    double sum_ = 0;
    std::uint64_t count_ = 0;
};

// What the guard found billed above its prices: how many such settlements, and the models that
// made unpriced for the process's life (sorted, each once).
struct price_surprises {
    std::uint64_t count = 0;
    std::vector<std::string> models;
};

struct metrics {
    struct spend {
        std::uint64_t attempts = 0;
        std::uint64_t prompt_tokens = 0;
        std::uint64_t completion_tokens = 0;
        money cost;
    };
    // A request by tenant, model (as asked: a model id or frugal/POLICY) and outcome.
    void count_request(std::string_view tenant, std::string_view model, std::string_view outcome);
    // The attempts of a tenant on a model asked that ended with `outcome` (the ledger's: ok,
    // error, cancelled, unknown, not_sent, denied), as the ledger keeps them.
    spend& usage_of(std::string_view tenant, std::string_view model, std::string_view outcome);

    // Keyed by the labels joined with a unit separator, found without building a string: a
    // request counts without allocating once its labels have been seen.
    std::map<std::string, std::uint64_t, std::less<>> requests;
    std::map<std::string, spend, std::less<>> usage;
    std::map<std::string, std::uint64_t> escalations;    // by reason
    std::map<std::string, std::uint64_t> budget_denials; // by tenant
    histogram duration{{0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120}};
    histogram added{{0.00005, 0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.1}};

    // The text of GET /metrics; `budgets` are the guard's, each with its cap and spend.
    std::string
    render(const std::vector<budget_snapshot>& budgets, const price_surprises& surprises = {}) const;
};

// A label value escaped as the format asks (backslash, double quote, line feed).
void append_label(std::string& out, std::string_view name, std::string_view value, bool first);

} // namespace frugal::serve

#endif // FRUGAL_SRC_SERVE_METRICS_HPP
