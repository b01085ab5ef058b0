// Runs the registered benchmarks with the usual console table, then merges every published
// figure into the results file (default build/bench/results.json, or --results=FILE) as
// {"<figure>": {"value": N, "unit": "..."}}. Figures already in the file from other benchmark
// programs are kept. With repetitions, the median is recorded.
#include "figures.hpp"

#include <benchmark/benchmark.h>
#include <boost/json.hpp>

#include <atomic>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <iostream>
#include <map>
#include <new>
#include <sstream>
#include <string>

namespace {

std::atomic<std::size_t> allocation_count{0};

std::map<std::string, std::string>& figure_units()
{
    static std::map<std::string, std::string> units;
    return units;
}

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
                if (!figure_units().contains(name))
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

void write_results(const std::filesystem::path& path, const std::map<std::string, double>& values)
{
    boost::json::object all;
    if (std::ifstream in(path); in) {
        std::stringstream text;
        text << in.rdbuf();
        boost::system::error_code ec;
        auto old = boost::json::parse(text.str(), ec);
        if (!ec && old.is_object())
            all = std::move(old.as_object());
    }
    for (const auto& [name, value] : values) {
        // Rounded for reading: whole numbers from 100 up, four significant digits below.
        char text[64];
        std::snprintf(text, sizeof text, std::fabs(value) >= 100 ? "%.0f" : "%.4g", value);
        all[name] = {{"value", boost::json::parse(text)}, {"unit", figure_units().at(name)}};
    }

    std::filesystem::create_directories(path.parent_path().empty() ? "." : path.parent_path());
    std::ofstream out(path);
    out << "{\n";
    bool first = true;
    for (const auto& [name, figure] : all) {
        out << (first ? "" : ",\n") << "  " << boost::json::serialize(name) << ": "
            << boost::json::serialize(figure);
        first = false;
    }
    out << "\n}\n";
    std::cout << "figures written to " << path.string() << '\n';
}

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

bool register_figure(const std::string& name, const std::string& unit)
{
    figure_units()[name] = unit;
    return true;
}

std::size_t allocations() noexcept
{
    return allocation_count.load(std::memory_order_relaxed);
}

} // namespace frugal::bench

int main(int argc, char** argv)
{
    std::filesystem::path results = "build/bench/results.json";
    for (int i = 1; i < argc; ++i) {
        if (std::strncmp(argv[i], "--results=", 10) == 0)
            results = argv[i] + 10;
    }
    benchmark::Initialize(&argc, argv);
    recording_reporter reporter;
    benchmark::RunSpecifiedBenchmarks(&reporter);
    benchmark::Shutdown();
    write_results(results, reporter.values());
    return 0;
}
