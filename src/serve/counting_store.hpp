#ifndef FRUGAL_SRC_SERVE_COUNTING_STORE_HPP
#define FRUGAL_SRC_SERVE_COUNTING_STORE_HPP

// A budget store that hands every ledger record to the gateway's metrics on its way to the
// store it wraps. The metrics then count exactly what the ledger keeps, attempts of streams a
// client abandoned included, which the gateway itself never sees end (their producer settles
// them after the request is gone).

#include <frugal/budget_store.hpp>

#include <functional>
#include <memory>

namespace frugal::serve {

class counting_store final : public budget_store {
public:
    counting_store(std::shared_ptr<budget_store> inner, std::function<void(const attempt_record&)> on_record)
        : inner_(std::move(inner)), on_record_(std::move(on_record))
    {
    }

    boost::system::error_code settle(
        std::uint64_t id, std::span<const budget_charge_view> charges, attempt_record& r) override
    {
        auto ec = inner_->settle(id, charges, r);
        if (!ec)
            on_record_(r);
        return ec;
    }
    boost::system::error_code settle_swept(const swept_reservation& s, attempt_record& r) override
    {
        auto ec = inner_->settle_swept(s, r);
        if (!ec)
            on_record_(r);
        return ec;
    }

    // The rest is the wrapped store's.
    boost::system::error_code load(budget_store_state& out) override { return inner_->load(out); }
    bool keeps_reservations() const noexcept override { return inner_->keeps_reservations(); }
    boost::system::error_code reserve(const reservation_view& r) override
    {
        return inner_->reserve(r);
    }
    bool reserves_async() const noexcept override { return inner_->reserves_async(); }
    void async_reserve(
        const reservation_view& r,
        const boost::asio::any_io_executor& caller,
        std::function<void(boost::system::error_code)> done) override
    {
        inner_->async_reserve(r, caller, std::move(done));
    }
    boost::system::error_code note_generation(std::uint64_t id, const std::string& g) override
    {
        return inner_->note_generation(id, g);
    }
    boost::system::error_code release(std::uint64_t id) override { return inner_->release(id); }
    boost::system::error_code correct(std::uint64_t id, money proven, correction& out) override
    {
        return inner_->correct(id, proven, out);
    }
    boost::system::error_code read_ledger(std::int64_t since, std::vector<attempt_record>& out) override
    {
        return inner_->read_ledger(since, out);
    }
    boost::system::error_code put_note(std::string_view key, std::string_view value) override
    {
        return inner_->put_note(key, value);
    }
    boost::system::error_code read_notes(std::vector<std::pair<std::string, std::string>>& out) override
    {
        return inner_->read_notes(out);
    }
    boost::system::error_code read_swept(std::vector<swept_reservation>& out) override
    {
        return inner_->read_swept(out);
    }
    boost::system::error_code put_answer(std::string_view id, std::string_view answer) override
    {
        return inner_->put_answer(id, answer);
    }
    boost::system::error_code read_answers(std::vector<std::pair<std::string, std::string>>& out) override
    {
        return inner_->read_answers(out);
    }
    boost::system::error_code take_free_request(
        std::int64_t now, std::uint32_t per_minute, std::uint32_t per_day, std::int64_t& wait) override
    {
        return inner_->take_free_request(now, per_minute, per_day, wait);
    }
    boost::system::error_code block_free_until(std::int64_t until) override
    {
        return inner_->block_free_until(until);
    }
    boost::system::error_code
    take_rated_request(std::string_view limiter, std::uint32_t per_minute, std::int64_t& wait) override
    {
        return inner_->take_rated_request(limiter, per_minute, wait);
    }
    void async_take_rated_request(
        std::string_view limiter,
        std::uint32_t per_minute,
        std::function<void(boost::system::error_code, std::int64_t)> done) override
    {
        inner_->async_take_rated_request(limiter, per_minute, std::move(done));
    }
    boost::system::error_code sync(std::chrono::milliseconds timeout) override
    {
        return inner_->sync(timeout);
    }

private:
    std::shared_ptr<budget_store> inner_;
    std::function<void(const attempt_record&)> on_record_;
};

} // namespace frugal::serve

#endif // FRUGAL_SRC_SERVE_COUNTING_STORE_HPP
