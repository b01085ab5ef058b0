#include "process.hpp"

#include <boost/asio/io_context.hpp>
#include <boost/asio/signal_set.hpp>

#include <cstdio>
#include <fstream>
#include <stdexcept>

#include <sched.h>
#include <signal.h>
#include <sys/resource.h>
#include <sys/wait.h>
#include <unistd.h>

namespace frugal::bench {

void pin_to_cpu(int cpu)
{
    cpu_set_t set;
    CPU_ZERO(&set);
    CPU_SET(cpu, &set);
    if (sched_setaffinity(0, sizeof set, &set) != 0)
        std::perror("sched_setaffinity");
}

void raise_fd_limit()
{
    rlimit r{};
    getrlimit(RLIMIT_NOFILE, &r);
    r.rlim_cur = r.rlim_max;
    setrlimit(RLIMIT_NOFILE, &r);
}

child spawn_server(
    int cpu, const std::function<void(const std::function<void(std::uint16_t)>&)>& serve)
{
    int fds[2];
    if (pipe(fds) != 0)
        throw std::runtime_error("pipe failed");
    const pid_t pid = fork();
    if (pid == 0) {
        close(fds[0]);
        pin_to_cpu(cpu);
        const int out = fds[1];
        serve([out](std::uint16_t port) {
            if (write(out, &port, sizeof port) != sizeof port)
                _exit(1);
            close(out);
        });
        _exit(0);
    }
    close(fds[1]);
    child c{pid, 0};
    if (read(fds[0], &c.port, sizeof c.port) != sizeof c.port)
        throw std::runtime_error("the server did not start");
    close(fds[0]);
    return c;
}

child spawn_sim(int cpu, frugal::sim_config config)
{
    return spawn_server(cpu, [&config](const auto& ready) {
        boost::asio::io_context io{1};
        frugal::simulator sim(io.get_executor(), std::move(config));
        sim.start();
        ready(sim.port());
        boost::asio::signal_set signals(io, SIGTERM);
        signals.async_wait([&](auto, int) {
            sim.stop();
            io.stop();
        });
        io.run();
    });
}

child_usage stop_server(const child& c)
{
    kill(c.pid, SIGTERM);
    int status = 0;
    rusage ru{};
    wait4(c.pid, &status, 0, &ru);
    return {
        static_cast<double>(ru.ru_utime.tv_sec + ru.ru_stime.tv_sec) +
            static_cast<double>(ru.ru_utime.tv_usec + ru.ru_stime.tv_usec) / 1e6,
        ru.ru_maxrss};
}

double cpu_seconds()
{
    rusage ru{};
    getrusage(RUSAGE_SELF, &ru);
    return static_cast<double>(ru.ru_utime.tv_sec + ru.ru_stime.tv_sec) +
           static_cast<double>(ru.ru_utime.tv_usec + ru.ru_stime.tv_usec) / 1e6;
}

long rss_kib()
{
    std::ifstream statm("/proc/self/statm");
    long pages = 0;
    long resident = 0;
    statm >> pages >> resident;
    return resident * (sysconf(_SC_PAGESIZE) / 1024);
}

long peak_rss_kib()
{
    rusage ru{};
    getrusage(RUSAGE_SELF, &ru);
    return ru.ru_maxrss; // KiB on Linux
}

} // namespace frugal::bench
