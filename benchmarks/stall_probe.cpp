// frugal-stall-probe: how much of each CPU the machine itself takes away. One thread per CPU
// spins reading the clock; a gap between two reads longer than 100 µs is time the thread was
// not running (the host preempting the VM's CPU, or the guest kernel's own work). With every
// CPU busy this is the floor under any tail latency measured here: a request in flight during
// a 3 ms gap waits 3 ms, whoever served it. One JSON line.
//   frugal-stall-probe --cpus 0,1 --seconds 4

#include <CLI/CLI.hpp>

#include <pthread.h>
#include <sched.h>

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <string>
#include <thread>
#include <vector>

namespace {

struct gaps {
    double lost_ms = 0;
    double longest_ms = 0;
    std::size_t over_1ms = 0;
    bool pinned = false;
};

gaps spin(int cpu, double seconds)
{
    gaps g;
    cpu_set_t set;
    CPU_ZERO(&set);
    CPU_SET(cpu, &set);
    g.pinned = pthread_setaffinity_np(pthread_self(), sizeof set, &set) == 0;
    using clock = std::chrono::steady_clock;
    const auto end = clock::now() + std::chrono::duration_cast<clock::duration>(
                                        std::chrono::duration<double>(seconds));
    auto last = clock::now();
    for (;;) {
        const auto t = clock::now();
        const double ms = std::chrono::duration<double, std::milli>(t - last).count();
        last = t;
        if (t >= end)
            break;
        if (ms > 0.1) {
            g.lost_ms += ms;
            g.longest_ms = std::max(g.longest_ms, ms);
            g.over_1ms += ms > 1 ? 1 : 0;
        }
    }
    return g;
}

} // namespace

int main(int argc, char** argv)
{
    std::vector<int> cpus{0, 1};
    double seconds = 4;
    CLI::App app{"frugal-stall-probe: time the machine takes from a spinning thread on each CPU"};
    app.add_option("--cpus", cpus, "CPUs to spin on")->delimiter(',')->capture_default_str();
    app.add_option("--seconds", seconds, "How long")->capture_default_str()->check(CLI::PositiveNumber);
    CLI11_PARSE(app, argc, argv);

    std::vector<gaps> out(cpus.size());
    {
        std::vector<std::jthread> threads;
        for (std::size_t i = 0; i < cpus.size(); ++i)
            threads.emplace_back([&, i] { out[i] = spin(cpus[i], seconds); });
    }
    std::string per_cpu;
    double lost = 0, longest = 0;
    std::size_t over = 0;
    bool pinned = true;
    for (std::size_t i = 0; i < cpus.size(); ++i) {
        char buf[160];
        std::snprintf(buf, sizeof buf, "%s{\"cpu\":%d,\"lost_ms_per_s\":%.2f,\"longest_ms\":%.2f,\"gaps_over_1ms\":%zu}",
                      i ? "," : "", cpus[i], out[i].lost_ms / seconds, out[i].longest_ms, out[i].over_1ms);
        per_cpu += buf;
        lost += out[i].lost_ms / seconds;
        longest = std::max(longest, out[i].longest_ms);
        over += out[i].over_1ms;
        pinned = pinned && out[i].pinned;
    }
    std::printf("{\"seconds\":%.1f,\"pinned\":%s,\"lost_ms_per_s\":%.2f,\"longest_ms\":%.2f,\"gaps_over_1ms\":%zu,"
                "\"per_cpu\":[%s]}\n",
                seconds, pinned ? "true" : "false", lost, longest, over, per_cpu.c_str());
    return pinned ? 0 : 1;
}
