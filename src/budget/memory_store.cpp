#include <frugal/budget_store.hpp>

#include <frugal/error.hpp>

#include "budget/process_quota_store.hpp"

#include <algorithm>
#include <map>
#include <memory>
#include <unordered_map>

namespace frugal {

const char* to_string(attempt_outcome o) noexcept
{
    switch (o) {
    case attempt_outcome::ok: return "ok";
    case attempt_outcome::error: return "error";
    case attempt_outcome::cancelled: return "cancelled";
    case attempt_outcome::unknown: return "unknown";
    case attempt_outcome::not_sent: return "not_sent";
    case attempt_outcome::denied: return "denied";
    }
    return "unknown";
}

boost::system::error_code budget_store::note_generation(std::uint64_t, const std::string&)
{
    return {};
}

void budget_store::dropped_since(std::int64_t, std::vector<std::pair<std::string, std::int64_t>>& out) const
{
    out.clear();
}

boost::system::error_code budget_store::put_note(std::string_view, std::string_view)
{
    return {};
}

boost::system::error_code
budget_store::read_notes(std::vector<std::pair<std::string, std::string>>& out)
{
    out.clear();
    return {};
}

boost::system::error_code budget_store::sync(std::chrono::milliseconds)
{
    return {};
}

std::string proven_above_booked(money proven, money booked)
{
    return "the provider's record proves a bill of $" + proven.to_string() + " where $" +
           booked.to_string() + " was booked";
}

boost::system::error_code budget_store::put_answer(std::string_view, std::string_view)
{
    return {};
}

boost::system::error_code
budget_store::read_answers(std::vector<std::pair<std::string, std::string>>& out)
{
    out.clear();
    return {};
}

void budget_store::async_reserve(
    const reservation_view& r,
    const boost::asio::any_io_executor&,
    std::function<void(boost::system::error_code)> done)
{
    done(reserve(r));
}

boost::system::error_code budget_store::read_swept(std::vector<swept_reservation>& out)
{
    out.clear();
    return {};
}

boost::system::error_code
budget_store::take_free_request(std::int64_t, std::uint32_t, std::uint32_t, std::int64_t& wait_ms)
{
    wait_ms = 0;
    return error::not_found;
}

boost::system::error_code budget_store::block_free_until(std::int64_t)
{
    return error::not_found;
}

boost::system::error_code
budget_store::take_rated_request(std::string_view, std::uint32_t, std::int64_t& wait_ms)
{
    wait_ms = 0;
    return error::not_found;
}

void budget_store::async_take_rated_request(
    std::string_view limiter,
    std::uint32_t per_minute,
    std::function<void(boost::system::error_code, std::int64_t)> done)
{
    std::int64_t wait = 0;
    const auto ec = take_rated_request(limiter, per_minute, wait);
    done(ec, wait);
}

boost::system::error_code budget_store::settle_swept(const swept_reservation&, attempt_record&)
{
    return error::not_found;
}

namespace {

// Strings that repeat from record to record (models, providers, keys), stored once.
class string_table {
public:
    // `last` is the caller's hint for this field: consecutive records mostly name the same
    // model and provider, and comparing with the last one costs less than hashing.
    std::uint32_t intern(std::string_view s, std::uint32_t& last)
    {
        if (last < strings_.size() && strings_[last] == s)
            return last;
        auto it = index_.find(s);
        if (it == index_.end())
            it = index_.emplace(std::string(s), static_cast<std::uint32_t>(strings_.size())).first;
        if (it->second == strings_.size())
            strings_.push_back(it->first);
        last = it->second;
        return last;
    }
    const std::string& at(std::uint32_t i) const { return strings_[i]; }

private:
    struct hash {
        using is_transparent = void;
        std::size_t operator()(std::string_view s) const noexcept
        {
            return std::hash<std::string_view>{}(s);
        }
    };
    std::unordered_map<std::string, std::uint32_t, hash, std::equal_to<>> index_;
    std::vector<std::string> strings_;
};

// The memory store keeps the newest records in a ring of compact entries: repeated strings
// interned, the generation id inline, and the budget windows each was charged to by the
// guard's account index. A settlement allocates nothing once the ring has filled.
class memory_store final : public detail::process_quota_store {
public:
    explicit memory_store(memory_store_params p) : params_(std::move(p))
    {
        params_.ledger_capacity = std::max<std::size_t>(params_.ledger_capacity, 1);
    }

    boost::system::error_code load(budget_store_state& out) override
    {
        out = {};
        return {};
    }

    bool keeps_reservations() const noexcept override { return false; }
    boost::system::error_code reserve(const reservation_view&) override { return {}; }

    boost::system::error_code
    settle(std::uint64_t, std::span<const budget_charge_view> charges, attempt_record& r) override
    {
        r.record_id = next_record_++;
        for (const auto& c : charges) {
            if (c.account >= names_.size() || names_[c.account].empty()) {
                names_.resize(std::max<std::size_t>(names_.size(), c.account + 1));
                names_[c.account] = std::string(c.budget);
            }
        }
        if (params_.on_record)
            params_.on_record(r);
        entry* e = nullptr;
        if (ring_.size() < params_.ledger_capacity) {
            e = &ring_.grow(params_.ledger_capacity);
        } else {
            e = &ring_[head_];
            head_ = (head_ + 1) % ring_.size();
            if (e->cost > money()) {
                auto [it, fresh] = dropped_.try_emplace(e->keys, e->time_ms);
                if (!fresh)
                    it->second = std::max(it->second, e->time_ms);
            }
        }
        e->record_id = r.record_id;
        e->reservation_id = r.reservation_id;
        e->time_ms = r.time_ms;
        e->request_id = r.request_id;
        e->prompt_tokens = r.prompt_tokens;
        e->completion_tokens = r.completion_tokens;
        e->cost = r.cost;
        e->latency_us = r.latency_us;
        e->tier = r.tier;
        e->model_asked = strings_.intern(r.model_asked, hints_[0]);
        e->model_served = strings_.intern(r.model_served, hints_[1]);
        e->provider = strings_.intern(r.provider, hints_[2]);
        e->keys = strings_.intern(r.keys, hints_[3]);
        e->reason = strings_.intern(r.reason, hints_[4]);
        e->anomaly.assign(r.anomaly);
        e->outcome = r.outcome;
        e->estimated = r.estimated;
        e->generation_id.assign(r.generation_id); // capacity kept from the entry's last use
        e->charges.clear();
        for (const auto& c : charges)
            e->charges.push_back({c.account, c.window});
        return {};
    }

    boost::system::error_code release(std::uint64_t) override { return {}; }

    boost::system::error_code put_note(std::string_view key, std::string_view value) override
    {
        notes_.insert_or_assign(std::string(key), std::string(value));
        return {};
    }

    boost::system::error_code
    read_notes(std::vector<std::pair<std::string, std::string>>& out) override
    {
        out.assign(notes_.begin(), notes_.end());
        return {};
    }

    boost::system::error_code correct(std::uint64_t record_id, money proven, correction& out) override
    {
        out = {};
        entry* e = find(record_id);
        if (e == nullptr)
            return error::not_found;
        out.previous = e->cost;
        out.model = strings_.at(e->model_asked);
        const auto delta = proven - e->cost;
        if (proven > e->cost)
            e->anomaly = proven_above_booked(proven, e->cost);
        e->cost = proven;
        e->estimated = false;
        for (const auto& c : e->charges)
            out.moved.push_back({names_[c.account], c.window, delta});
        return {};
    }

    void dropped_since(
        std::int64_t since_ms, std::vector<std::pair<std::string, std::int64_t>>& out) const override
    {
        out.clear();
        for (const auto& [keys, latest] : dropped_)
            if (latest >= since_ms)
                out.emplace_back(strings_.at(keys), latest);
    }

    boost::system::error_code read_ledger(std::int64_t since_ms, std::vector<attempt_record>& out) override
    {
        out.clear();
        for (std::size_t i = 0; i < ring_.size(); ++i) {
            const auto& e = ring_[(head_ + i) % ring_.size()];
            if (e.time_ms < since_ms)
                continue;
            attempt_record r;
            r.record_id = e.record_id;
            r.reservation_id = e.reservation_id;
            r.time_ms = e.time_ms;
            r.request_id = e.request_id;
            r.generation_id = e.generation_id;
            r.tier = e.tier;
            r.model_asked = strings_.at(e.model_asked);
            r.model_served = strings_.at(e.model_served);
            r.provider = strings_.at(e.provider);
            r.prompt_tokens = e.prompt_tokens;
            r.completion_tokens = e.completion_tokens;
            r.cost = e.cost;
            r.outcome = e.outcome;
            r.estimated = e.estimated;
            r.latency_us = e.latency_us;
            r.keys = strings_.at(e.keys);
            r.reason = strings_.at(e.reason);
            r.anomaly = e.anomaly;
            out.push_back(std::move(r));
        }
        return {};
    }

private:
    struct charge_ref {
        std::uint32_t account;
        std::int64_t window;
    };
    struct entry {
        std::uint64_t record_id = 0;
        std::uint64_t reservation_id = 0;
        std::int64_t time_ms = 0;
        std::uint64_t request_id = 0;
        std::uint64_t prompt_tokens = 0;
        std::uint64_t completion_tokens = 0;
        money cost;
        std::int64_t latency_us = 0;
        std::uint32_t tier = 0;
        std::uint32_t model_asked = 0;
        std::uint32_t model_served = 0;
        std::uint32_t provider = 0;
        std::uint32_t keys = 0;
        std::uint32_t reason = 0;
        attempt_outcome outcome = attempt_outcome::ok;
        bool estimated = false;
        std::string generation_id;
        std::string anomaly;
        std::vector<charge_ref> charges;
    };

    entry* find(std::uint64_t record_id)
    {
        if (ring_.empty())
            return nullptr;
        // Records are numbered in order, so the ring holds ids [oldest, oldest + size).
        const auto oldest = ring_[head_].record_id;
        if (record_id < oldest || record_id - oldest >= ring_.size())
            return nullptr;
        return &ring_[(head_ + (record_id - oldest)) % ring_.size()];
    }

    // The ring grows in blocks that never move. A vector doubling at 32,768 records copied
    // 6 MB into fresh pages in one settlement: a stall of tens of milliseconds for every
    // request behind it on a server's thread.
    class block_ring {
    public:
        std::size_t size() const noexcept { return size_; }
        bool empty() const noexcept { return size_ == 0; }
        entry& operator[](std::size_t i) noexcept { return blocks_[i / block][i % block]; }
        entry& grow(std::size_t capacity)
        {
            if (size_ % block == 0)
                blocks_.push_back(std::make_unique<entry[]>(std::min(block, capacity - size_)));
            return (*this)[size_++];
        }

    private:
        static constexpr std::size_t block = 512;
        std::vector<std::unique_ptr<entry[]>> blocks_;
        std::size_t size_ = 0;
    };

    memory_store_params params_;
    block_ring ring_;
    std::size_t head_ = 0; // the oldest entry once the ring is full
    // The latest time of a record with a cost the ring dropped, by its keys: a budget that
    // comes can tell whether its spend is all still here.
    std::unordered_map<std::uint32_t, std::int64_t> dropped_;
    std::uint64_t next_record_ = 1;
    std::vector<std::string> names_;
    string_table strings_;
    std::uint32_t hints_[5] = {~0u, ~0u, ~0u, ~0u, ~0u};
    std::map<std::string, std::string, std::less<>> notes_;
};

} // namespace

std::shared_ptr<budget_store> make_memory_store(memory_store_params params)
{
    return std::make_shared<memory_store>(std::move(params));
}

} // namespace frugal
