#include <frugal/budget_store.hpp>

#include <frugal/error.hpp>

#include <algorithm>

namespace frugal {

const char* to_string(attempt_outcome o) noexcept
{
    switch (o) {
    case attempt_outcome::ok: return "ok";
    case attempt_outcome::error: return "error";
    case attempt_outcome::cancelled: return "cancelled";
    case attempt_outcome::unknown: return "unknown";
    case attempt_outcome::not_sent: return "not_sent";
    }
    return "unknown";
}

boost::system::error_code budget_store::note_generation(std::uint64_t, const std::string&)
{
    return {};
}

namespace {

// The memory store keeps the newest records in a ring, and with each the budget windows it
// was charged to (by the guard's account index, so a settlement copies no budget name).
class memory_store final : public budget_store {
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

    boost::system::error_code reserve(const reservation_view&) override { return {}; }

    boost::system::error_code settle(
        std::uint64_t, std::span<const budget_charge_view> charges, attempt_record& record) override
    {
        record.record_id = next_record_++;
        for (const auto& c : charges)
            if (c.account >= names_.size() || names_[c.account].empty()) {
                names_.resize(std::max<std::size_t>(names_.size(), c.account + 1));
                names_[c.account] = std::string(c.budget);
            }
        if (params_.on_record)
            params_.on_record(record);
        entry* e = nullptr;
        if (ring_.size() < params_.ledger_capacity) {
            e = &ring_.emplace_back();
        } else {
            e = &ring_[head_];
            head_ = (head_ + 1) % ring_.size();
        }
        e->record = std::move(record);
        e->charges.clear();
        for (const auto& c : charges)
            e->charges.push_back({c.account, c.window});
        return {};
    }

    boost::system::error_code release(std::uint64_t) override { return {}; }

    boost::system::error_code
    correct(std::uint64_t record_id, money proven, std::vector<budget_charge>& moved) override
    {
        moved.clear();
        entry* e = find(record_id);
        if (e == nullptr)
            return error::not_found;
        const auto delta = proven - e->record.cost;
        e->record.cost = proven;
        e->record.estimated = false;
        for (const auto& c : e->charges)
            moved.push_back({names_[c.account], c.window, delta});
        return {};
    }

    boost::system::error_code
    read_ledger(std::int64_t since_ms, std::vector<attempt_record>& out) override
    {
        out.clear();
        for (std::size_t i = 0; i < ring_.size(); ++i) {
            const auto& e = ring_[(head_ + i) % ring_.size()];
            if (e.record.time_ms >= since_ms)
                out.push_back(e.record);
        }
        return {};
    }

private:
    struct charge_ref {
        std::uint32_t account;
        std::int64_t window;
    };
    struct entry {
        attempt_record record;
        std::vector<charge_ref> charges;
    };

    entry* find(std::uint64_t record_id)
    {
        if (ring_.empty())
            return nullptr;
        // Records are numbered in order, so the ring holds ids [oldest, oldest + size).
        const auto oldest = ring_[head_].record.record_id;
        if (record_id < oldest || record_id - oldest >= ring_.size())
            return nullptr;
        return &ring_[(head_ + (record_id - oldest)) % ring_.size()];
    }

    memory_store_params params_;
    std::vector<entry> ring_;
    std::size_t head_ = 0; // the oldest entry once the ring is full
    std::uint64_t next_record_ = 1;
    std::vector<std::string> names_;
};

} // namespace

std::shared_ptr<budget_store> make_memory_store(memory_store_params params)
{
    return std::make_shared<memory_store>(std::move(params));
}

} // namespace frugal
