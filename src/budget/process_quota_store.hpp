#ifndef FRUGAL_SRC_BUDGET_PROCESS_QUOTA_STORE_HPP
#define FRUGAL_SRC_BUDGET_PROCESS_QUOTA_STORE_HPP

// A store whose free-tier quota is this process's count (memory, SQLite: neither is a place to
// share one), so every router over its guard draws from one quota. Redis counts for the fleet.

#include <frugal/budget_store.hpp>

#include "budget/free_quota.hpp"

namespace frugal::detail {

class process_quota_store : public budget_store {
public:
    boost::system::error_code take_free_request(
        std::int64_t now_ms,
        std::uint32_t per_minute,
        std::uint32_t per_day,
        std::int64_t& wait_ms) override
    {
        wait_ms = free_.take(now_ms, per_minute, per_day);
        return {};
    }

    boost::system::error_code block_free_until(std::int64_t until_ms) override
    {
        free_.block_until(until_ms);
        return {};
    }

private:
    process_free_quota free_;
};

} // namespace frugal::detail

#endif // FRUGAL_SRC_BUDGET_PROCESS_QUOTA_STORE_HPP
