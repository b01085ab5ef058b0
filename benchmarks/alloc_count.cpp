// Every heap allocation this program makes, counted: malloc and its relatives are replaced for
// the program (glibc's own are called underneath), so what operator new, Asio's handler memory
// (aligned_alloc), Beast and the C libraries take is all seen. Linked into the client
// benchmark only: a relaxed atomic increment per allocation is its whole cost.
#include "alloc_count.hpp"

#include <atomic>
#include <cerrno>
#include <cstddef>

extern "C" {
void* __libc_malloc(std::size_t);
void* __libc_calloc(std::size_t, std::size_t);
void* __libc_realloc(void*, std::size_t);
void* __libc_memalign(std::size_t, std::size_t);
void __libc_free(void*);
}

namespace {
std::atomic<std::uint64_t> count{0};
void note() noexcept { count.fetch_add(1, std::memory_order_relaxed); }
} // namespace

namespace frugal::bench {
std::uint64_t allocations() noexcept { return count.load(std::memory_order_relaxed); }
} // namespace frugal::bench

extern "C" {

void* malloc(std::size_t n)
{
    note();
    return __libc_malloc(n);
}

void* calloc(std::size_t n, std::size_t size)
{
    note();
    return __libc_calloc(n, size);
}

void* realloc(void* p, std::size_t n)
{
    note(); // a move or a growth in place: either way the heap was asked
    return __libc_realloc(p, n);
}

void free(void* p)
{
    __libc_free(p);
}

void* aligned_alloc(std::size_t align, std::size_t n)
{
    note();
    return __libc_memalign(align, n);
}

void* memalign(std::size_t align, std::size_t n)
{
    note();
    return __libc_memalign(align, n);
}

int posix_memalign(void** out, std::size_t align, std::size_t n)
{
    note();
    void* p = __libc_memalign(align, n);
    if (p == nullptr)
        return ENOMEM;
    *out = p;
    return 0;
}

} // extern "C"
