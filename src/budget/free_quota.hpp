#ifndef FRUGAL_SRC_BUDGET_FREE_QUOTA_HPP
#define FRUGAL_SRC_BUDGET_FREE_QUOTA_HPP

// The free tier's quota as this side counts it: a sliding minute, a UTC day (OpenRouter's
// daily count resets at 00:00 UTC), and a block learnt from a 429 that only moves later; the
// same rules as the fleet's count in Redis (redis_scripts.cpp). A router's limiter counts with
// it (cascade/judge.hpp), and so do the stores that do not share a count (memory, SQLite), for
// every router over one guard: an account's quota is one.

#include <algorithm>
#include <cstdint>
#include <deque>
#include <mutex>

namespace frugal::detail {

// The counts. A limit of UINT32_MAX (not known) is never reached.
class free_window {
public:
    // 0 when a request is taken at `now_ms` (Unix), else the milliseconds to wait for one.
    std::int64_t take(std::int64_t now_ms, std::uint32_t per_minute, std::uint32_t per_day)
    {
        if (now_ms < blocked_until_)
            return blocked_until_ - now_ms;
        const std::int64_t day = now_ms / day_ms;
        if (day != day_) {
            day_ = day;
            day_count_ = 0;
        }
        if (day_count_ >= per_day)
            return (day + 1) * day_ms - now_ms;
        while (!minute_.empty() && minute_.front() <= now_ms - minute_ms)
            minute_.pop_front();
        if (minute_.size() >= per_minute)
            return std::max<std::int64_t>(minute_.front() + minute_ms - now_ms, 1);
        minute_.push_back(now_ms);
        ++day_count_;
        return 0;
    }

    // How long before a request may go by the block and the day alone, taking none.
    std::int64_t held_back(std::int64_t now_ms, std::uint32_t per_day) const
    {
        if (now_ms < blocked_until_)
            return blocked_until_ - now_ms;
        const std::int64_t day = now_ms / day_ms;
        if (day == day_ && day_count_ >= per_day)
            return (day + 1) * day_ms - now_ms;
        return 0;
    }

    // Requests that went without being taken (a client's own retries).
    void count_extra(std::uint32_t n, std::int64_t now_ms)
    {
        for (std::uint32_t i = 0; i < n; ++i)
            minute_.push_back(now_ms);
        day_count_ += n;
    }

    // The day's count is at least `n`, as the server says.
    void spent_today(std::uint64_t n) { day_count_ = std::max(day_count_, n); }

    void block_until(std::int64_t until_ms) { blocked_until_ = std::max(blocked_until_, until_ms); }

private:
    static constexpr std::int64_t minute_ms = 60'000;
    static constexpr std::int64_t day_ms = 86'400'000;
    std::deque<std::int64_t> minute_;
    std::int64_t day_ = -1;
    std::uint64_t day_count_ = 0;
    std::int64_t blocked_until_ = 0;
};

// The count a store keeps for the routers over its guard, which may run on several threads.
class process_free_quota {
public:
    std::int64_t take(std::int64_t now_ms, std::uint32_t per_minute, std::uint32_t per_day)
    {
        const std::lock_guard lock(mu_);
        return window_.take(now_ms, per_minute, per_day);
    }

    void block_until(std::int64_t until_ms)
    {
        const std::lock_guard lock(mu_);
        window_.block_until(until_ms);
    }

private:
    std::mutex mu_;
    free_window window_;
};

} // namespace frugal::detail

#endif // FRUGAL_SRC_BUDGET_FREE_QUOTA_HPP
