#ifndef FRUGAL_SRC_BUDGET_FREE_QUOTA_HPP
#define FRUGAL_SRC_BUDGET_FREE_QUOTA_HPP

// The free tier's quota counted in this process, for the stores that do not share one (memory,
// SQLite): every router over one guard then draws from one count, as an account's quota is one
// (a server runs a router per policy and per model it passes through). The same rules as the
// fleet's count in Redis (redis_scripts.cpp): a sliding minute, a UTC day, and a block learnt
// from a 429 that only moves later.

#include <algorithm>
#include <cstdint>
#include <deque>
#include <limits>
#include <mutex>

namespace frugal::detail {

class process_free_quota {
public:
    // 0 when a request is taken at `now_ms`, else the milliseconds to wait. A limit of
    // UINT32_MAX is one not known: it holds nothing back.
    std::int64_t take(std::int64_t now_ms, std::uint32_t per_minute, std::uint32_t per_day)
    {
        const std::lock_guard lock(mu_);
        if (now_ms < block_until_)
            return block_until_ - now_ms;
        const std::int64_t day = now_ms / day_ms;
        if (day != day_) {
            day_ = day;
            day_count_ = 0;
        }
        if (per_day != unknown && day_count_ >= per_day)
            return (day + 1) * day_ms - now_ms;
        while (!minute_.empty() && minute_.front() <= now_ms - minute_ms)
            minute_.pop_front();
        if (per_minute != unknown && minute_.size() >= per_minute)
            return std::max<std::int64_t>(minute_.front() + minute_ms - now_ms, 1);
        minute_.push_back(now_ms);
        ++day_count_;
        return 0;
    }

    void block_until(std::int64_t until_ms)
    {
        const std::lock_guard lock(mu_);
        block_until_ = std::max(block_until_, until_ms);
    }

private:
    static constexpr std::uint32_t unknown = std::numeric_limits<std::uint32_t>::max();
    static constexpr std::int64_t minute_ms = 60'000;
    static constexpr std::int64_t day_ms = 86'400'000;
    std::mutex mu_; // routers on several threads may share a guard
    std::deque<std::int64_t> minute_;
    std::int64_t day_ = -1;
    std::uint64_t day_count_ = 0;
    std::int64_t block_until_ = 0;
};

} // namespace frugal::detail

#endif // FRUGAL_SRC_BUDGET_FREE_QUOTA_HPP
