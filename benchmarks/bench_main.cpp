// Runs the registered benchmarks with the usual console table, then merges every published
// figure into the results file (default build/bench/results.json, or --results=FILE) as
// {"<figure>": {"value": N, "unit": "..."}}. Figures already in the file from other benchmark
// programs are kept. With repetitions, the median is recorded.
#include "figures.hpp"

#include <benchmark/benchmark.h>

#include <atomic>
#include <cstdlib>
#include <map>
#include <new>
#include <string>

namespace {

std::atomic<std::size_t> allocation_count{0};

class recording_reporter : public benchmark::ConsoleReporter {
public:
    void ReportRuns(const std::vector<Run>& runs) override
    {
        ConsoleReporter::ReportRuns(runs);
        for (const auto& run : runs) {
            if (run.error_occurred)
                continue;
            const bool median = run.run_type == Run::RT_Aggregate && run.aggregate_name == "median";
            if (run.run_type == Run::RT_Aggregate && !median)
                continue;
            for (const auto& [name, counter] : run.counters) {
                if (frugal::bench::figure_unit(name).empty())
                    continue;
                // A median, once there is one, replaces the single runs before it.
                if (median || !medians_.contains(name))
                    values_[name] = counter.value;
                if (median)
                    medians_[name] = true;
            }
        }
    }

    const std::map<std::string, double>& values() const { return values_; }

private:
    std::map<std::string, double> values_;
    std::map<std::string, bool> medians_;
};

} // namespace

void* operator new(std::size_t size)
{
    allocation_count.fetch_add(1, std::memory_order_relaxed);
    if (void* p = std::malloc(size == 0 ? 1 : size))
        return p;
    throw std::bad_alloc();
}
void operator delete(void* p) noexcept
{
    std::free(p);
}
void operator delete(void* p, std::size_t) noexcept
{
    std::free(p);
}

namespace frugal::bench {

std::size_t allocations() noexcept
{
    return allocation_count.load(std::memory_order_relaxed);
}

} // namespace frugal::bench

int main(int argc, char** argv)
{
    const auto results = frugal::bench::results_path(argc, argv);
    benchmark::Initialize(&argc, argv);
    recording_reporter reporter;
    benchmark::RunSpecifiedBenchmarks(&reporter);
    benchmark::Shutdown();
    std::map<std::string, std::pair<double, std::string>> figures;
    for (const auto& [name, value] : reporter.values())
        figures[name] = {value, frugal::bench::figure_unit(name)};
    frugal::bench::write_results(results, figures);
    return 0;
}
