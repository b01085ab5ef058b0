#ifndef FRUGAL_BENCHMARKS_FIGURES_HPP
#define FRUGAL_BENCHMARKS_FIGURES_HPP

// The named figures `make bench` records in results.json. A benchmark publishes one by setting
// a Google Benchmark counter with the figure's name; bench_main.cpp collects those whose name
// is registered here, with the unit given.

#include <cstddef>
#include <string>

namespace frugal::bench {

/// Registers `name` as a figure measured in `unit`. Returns true, so it can initialise a
/// namespace-scope constant next to the benchmark that publishes it.
bool register_figure(const std::string& name, const std::string& unit);

/// Heap allocations made by this process so far (the benchmark binary counts them).
std::size_t allocations() noexcept;

} // namespace frugal::bench

#endif // FRUGAL_BENCHMARKS_FIGURES_HPP
