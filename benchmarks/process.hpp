#ifndef FRUGAL_BENCHMARKS_PROCESS_HPP
#define FRUGAL_BENCHMARKS_PROCESS_HPP

// Process plumbing for benchmarks that put a server on one core and the measured client on the
// other: pinning, a server in a forked child, and CPU and memory readings.

#include <frugal/sim.hpp>

#include <cstdint>
#include <functional>

#include <sys/types.h>

namespace frugal::bench {

void pin_to_cpu(int cpu);
void raise_fd_limit();

struct child {
    pid_t pid = -1;
    std::uint16_t port = 0;
};

/// Forks a server pinned to `cpu`. `serve` runs in the child: it must bind, call `ready(port)`
/// once, and serve until SIGTERM.
child spawn_server(
    int cpu, const std::function<void(const std::function<void(std::uint16_t)>& ready)>& serve);

/// A simulator with `config` in a child process on `cpu`.
child spawn_sim(int cpu, frugal::sim_config config);

struct child_usage {
    double cpu_seconds = 0;
    long max_rss_kib = 0;
};

/// Stops the child with SIGTERM and returns what it used.
child_usage stop_server(const child& c);

/// CPU time (user + system) of this process so far, in seconds.
double cpu_seconds();

/// Resident memory of this process now, in KiB.
long rss_kib();

/// The largest resident memory this process has had, in KiB.
long peak_rss_kib();

} // namespace frugal::bench

#endif // FRUGAL_BENCHMARKS_PROCESS_HPP
