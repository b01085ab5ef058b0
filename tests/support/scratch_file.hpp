#ifndef FRUGAL_TESTS_SCRATCH_FILE_HPP
#define FRUGAL_TESTS_SCRATCH_FILE_HPP

// An SQLite file of a test's own, removed (with its WAL, shared memory and lock) before and
// after: a run that died leaves nothing the next one reads.

#include <unistd.h>

#include <filesystem>
#include <string>

namespace frugal::test {

struct scratch_file {
    explicit scratch_file(const std::string& tag)
        : path(
              std::filesystem::temp_directory_path() /
              ("frugal-" + tag + "-" + std::to_string(::getpid()) + ".db"))
    {
        clean();
    }
    ~scratch_file() { clean(); }
    scratch_file(const scratch_file&) = delete;
    scratch_file& operator=(const scratch_file&) = delete;
    void clean() const
    {
        for (const char* s : {"", "-wal", "-shm", ".lock"})
            std::filesystem::remove(path.string() + s);
    }
    std::filesystem::path path;
};

} // namespace frugal::test

#endif // FRUGAL_TESTS_SCRATCH_FILE_HPP
