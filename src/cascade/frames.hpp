#ifndef FRUGAL_SRC_CASCADE_FRAMES_HPP
#define FRUGAL_SRC_CASCADE_FRAMES_HPP

// The router's coroutine frames come from a per-thread cache of their own.
//
// Asio recycles an awaitable's frame only up to 1,020 bytes. A larger one is a full
// malloc and free, and its allocation also throws away one of the blocks Asio keeps for the
// thread: a cascade's two frames (about 5.4 and 1.8 KiB, the cascade and its attempt) cost
// the client's own recycled frames too, four trips to the heap a request. Frames of the
// router's coroutines (every `awaitable` returned by a non-static, non-const member of
// `router_impl`) are taken from here instead; every other coroutine keeps Asio's recycling.

#include <boost/asio/awaitable.hpp>
#include <boost/asio/any_io_executor.hpp>
#include <boost/asio/version.hpp>

#include <coroutine>
#include <cstddef>
#include <utility>

namespace frugal::detail {

struct router_impl;

// A block of at least `size` bytes, aligned for any coroutine frame: from this thread's cache
// when it holds one of the same size class, else from the heap.
void* take_frame(std::size_t size);
// Gives back a block `take_frame(size)` made, on any thread. The cache keeps at most
// 256 KiB a thread; what it cannot keep goes back to the heap.
void give_frame(void* block, std::size_t size) noexcept;
// The bytes this thread's cache holds (for tests).
std::size_t cached_frame_bytes() noexcept;

// Asio's promise with the allocation above. It adds no member: the promise's address, and so
// the frame's (`coroutine_handle::from_promise` in Asio's promise), is where Asio's would be.
// That leans on Asio's promise as 1.26 (Boost 1.81) has it: another version must be read again.
static_assert(BOOST_ASIO_VERSION == 102600, "cached_frame derives from Asio 1.26's awaitable_frame");
template <class T>
class cached_frame : public boost::asio::detail::awaitable_frame<T, boost::asio::any_io_executor> {
    using base = boost::asio::detail::awaitable_frame<T, boost::asio::any_io_executor>;

public:
    static void* operator new(std::size_t size) { return take_frame(size); }
    static void operator delete(void* block, std::size_t size) noexcept
    {
        give_frame(block, size);
    }

    // An awaited `awaitable` takes the handle of Asio's own promise type; this passes the
    // same frame under that type.
    template <class U>
    struct awaiting {
        boost::asio::awaitable<U, boost::asio::any_io_executor> inner;
        bool await_ready() const noexcept { return false; }
        void await_suspend(std::coroutine_handle<cached_frame> h)
        {
            inner.await_suspend(std::coroutine_handle<base>::from_promise(h.promise()));
        }
        U await_resume() { return inner.await_resume(); }
    };

    using base::await_transform;
    template <class U>
    awaiting<U> await_transform(boost::asio::awaitable<U, boost::asio::any_io_executor> a) const
    {
        return {base::await_transform(std::move(a))};
    }
};

} // namespace frugal::detail

// A program may specialize coroutine_traits for its own types ([coroutine.traits.primary]): the
// coroutines that are members of `router_impl` get the cached frame. This is more specialized
// than Asio's `coroutine_traits<awaitable<T, Executor>, Args...>`.
template <class T, class... Args>
struct std::coroutine_traits<
    boost::asio::awaitable<T, boost::asio::any_io_executor>,
    frugal::detail::router_impl&,
    Args...> {
    using promise_type = frugal::detail::cached_frame<T>;
    static_assert(sizeof(promise_type) ==
                  sizeof(boost::asio::detail::awaitable_frame<T, boost::asio::any_io_executor>));
    static_assert(alignof(promise_type) ==
                  alignof(boost::asio::detail::awaitable_frame<T, boost::asio::any_io_executor>));
};

#endif // FRUGAL_SRC_CASCADE_FRAMES_HPP
