#ifndef FRUGAL_BENCHMARKS_ALLOC_COUNT_HPP
#define FRUGAL_BENCHMARKS_ALLOC_COUNT_HPP

#include <cstdint>

namespace frugal::bench {
/// Heap allocations this program has made so far (every thread), when alloc_count.cpp is
/// linked in.
std::uint64_t allocations() noexcept;
} // namespace frugal::bench

#endif
