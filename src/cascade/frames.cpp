#include "cascade/frames.hpp"

#include <array>
#include <new>

#if defined(__SANITIZE_ADDRESS__)
#include <sanitizer/asan_interface.h>
// A cached frame is poisoned until it is taken again: a use after its coroutine ended is
// still reported, as it would be for a frame given back to the heap.
#define FRUGAL_FRAME_POISON(p, n) ASAN_POISON_MEMORY_REGION(p, n)
#define FRUGAL_FRAME_UNPOISON(p, n) ASAN_UNPOISON_MEMORY_REGION(p, n)
#else
#define FRUGAL_FRAME_POISON(p, n) ((void)(p), (void)(n))
#define FRUGAL_FRAME_UNPOISON(p, n) ((void)(p), (void)(n))
#endif

namespace frugal::detail {

namespace {

// Frames are sized by the compiler, one size per coroutine; size classes of 256 bytes keep a
// coroutine's frames in one class whatever else runs.
constexpr std::size_t granule = 256;
constexpr std::size_t classes = 33; // blocks up to 8 KiB; larger ones are the heap's alone
constexpr std::size_t kept_bytes = 256 * 1024;

struct free_block {
    free_block* next;
};

struct frame_cache {
    std::array<free_block*, classes> head{};
    std::size_t bytes = 0;
    frame_cache() = default;
    frame_cache(const frame_cache&) = delete;
    frame_cache& operator=(const frame_cache&) = delete;
    ~frame_cache();
};

// Trivially destructible, so readable until the thread's very end: a frame given back after
// the cache is gone (a coroutine destroyed by a later thread_local or static destructor) goes
// to the heap.
thread_local bool cache_gone = false;
thread_local frame_cache cache;

frame_cache::~frame_cache()
{
    cache_gone = true;
    for (std::size_t c = 0; c < classes; ++c)
        while (free_block* b = head[c]) {
            FRUGAL_FRAME_UNPOISON(b, c * granule);
            head[c] = b->next;
            ::operator delete(b, c * granule);
        }
}

constexpr std::size_t class_of(std::size_t size) noexcept
{
    return (size + granule - 1) / granule;
}

} // namespace

void* take_frame(std::size_t size)
{
    const std::size_t c = class_of(size);
    if (c >= classes)
        return ::operator new(size);
    if (!cache_gone) {
        frame_cache& k = cache;
        if (free_block* b = k.head[c]) {
            FRUGAL_FRAME_UNPOISON(b, c * granule);
            k.head[c] = b->next;
            k.bytes -= c * granule;
            return b;
        }
    }
    return ::operator new(c * granule);
}

void give_frame(void* block, std::size_t size) noexcept
{
    const std::size_t c = class_of(size);
    if (c >= classes) {
        ::operator delete(block, size);
        return;
    }
    if (!cache_gone) {
        frame_cache& k = cache;
        if (k.bytes + c * granule <= kept_bytes) {
            k.head[c] = ::new (block) free_block{k.head[c]};
            k.bytes += c * granule;
            FRUGAL_FRAME_POISON(block, c * granule);
            return;
        }
    }
    ::operator delete(block, c * granule);
}

std::size_t cached_frame_bytes() noexcept
{
    return cache_gone ? 0 : cache.bytes;
}

} // namespace frugal::detail
