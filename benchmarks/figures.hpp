#ifndef FRUGAL_BENCHMARKS_FIGURES_HPP
#define FRUGAL_BENCHMARKS_FIGURES_HPP

// The named figures `make bench` records in build/bench/results.json as
// {"<figure>": {"value": N, "unit": "..."}}. Each benchmark program merges its own figures into
// the file, keeping those of the others.

#include <cstddef>
#include <filesystem>
#include <map>
#include <string>
#include <utility>

namespace frugal::bench {

/// Registers `name` as a figure measured in `unit` (for Google Benchmark counters). Returns
/// true, so it can initialise a namespace-scope constant next to the benchmark.
bool register_figure(const std::string& name, const std::string& unit);

/// The unit registered for `name`, or empty.
std::string figure_unit(const std::string& name);

/// Heap allocations made by this process so far (the benchmark binary counts them).
std::size_t allocations() noexcept;

/// Merges `figures` (name -> value, unit) into the results file at `path`.
void write_results(
    const std::filesystem::path& path,
    const std::map<std::string, std::pair<double, std::string>>& figures);

/// `--results=FILE` from the command line, or build/bench/results.json.
std::filesystem::path results_path(int argc, char** argv);

} // namespace frugal::bench

#endif // FRUGAL_BENCHMARKS_FIGURES_HPP
