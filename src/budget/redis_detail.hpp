#ifndef FRUGAL_SRC_BUDGET_REDIS_DETAIL_HPP
#define FRUGAL_SRC_BUDGET_REDIS_DETAIL_HPP

// What the pieces of the Redis budget store share. The store is one object, but its members fall
// into three parts, each in its own file: the budget_store interface (redis_store.cpp), the
// changes owed to Redis summed into batches and the commands and replies encoded and read
// (redis_batch.cpp), and the two connections to redis-server (redis_link.cpp).

#include <frugal/budget_store.hpp>

#include <boost/asio/any_io_executor.hpp>
#include <boost/asio/executor_work_guard.hpp>
#include <boost/asio/io_context.hpp>
#include <boost/asio/ip/tcp.hpp>
#include <boost/asio/steady_timer.hpp>

#include <hiredis/hiredis.h>

#include <array>
#include <atomic>
#include <chrono>
#include <condition_variable>
#include <cstdint>
#include <deque>
#include <functional>
#include <memory>
#include <mutex>
#include <optional>
#include <string>
#include <thread>
#include <unordered_map>
#include <vector>

namespace frugal::detail::redis {

using boost::system::error_code;
namespace asio = boost::asio;

inline std::int64_t unix_ms()
{
    return std::chrono::duration_cast<std::chrono::milliseconds>(
               std::chrono::system_clock::now().time_since_epoch())
        .count();
}

struct reply_deleter {
    void operator()(redisReply* r) const { freeReplyObject(r); }
};
using reply_ptr = std::unique_ptr<redisReply, reply_deleter>;

struct reader_deleter {
    void operator()(redisReader* r) const { redisReaderFree(r); }
};

// The encoding and decoding both the store and its links need (redis_batch.cpp).

// Appends `args` to `out` as one RESP command (hiredis formats it).
void append_command(std::string& out, const std::vector<std::string>& args);
// 1: the reservation script granted it; 0: it refused it (no headroom); -1: anything else.
int verdict_of(const redisReply* r);
error_code verdict_error(int verdict);
// Redis answered NOSCRIPT: it no longer knows the script (SCRIPT FLUSH, a restart), and
// applied nothing.
bool forgot_script(const redisReply* r);

class redis_store final : public budget_store {
public:
    redis_store(redis_store_params p, std::shared_ptr<budget_store> ledger);
    ~redis_store() override;

    error_code open(std::string& detail);

    error_code load(budget_store_state& out) override;
    error_code reserve(const reservation_view& v) override;
    bool reserves_async() const noexcept override { return true; }
    void async_reserve(
        const reservation_view& v,
        const asio::any_io_executor& caller,
        std::function<void(error_code)> done) override;
    error_code note_generation(std::uint64_t id, const std::string& generation_id) override;
    error_code settle(
        std::uint64_t reservation_id,
        std::span<const budget_charge_view> charges,
        attempt_record& record) override;
    error_code release(std::uint64_t id) override;
    error_code correct(std::uint64_t record_id, money proven, correction& out) override;
    error_code sync(std::chrono::milliseconds timeout) override;
    error_code read_ledger(std::int64_t since_ms, std::vector<attempt_record>& out) override;
    error_code take_free_request(
        std::int64_t now_ms,
        std::uint32_t per_minute,
        std::uint32_t per_day,
        std::int64_t& wait_ms) override;
    error_code block_free_until(std::int64_t until_ms) override;
    error_code take_rated_request(
        std::string_view limiter, std::uint32_t per_minute, std::int64_t& wait_ms) override;
    void async_take_rated_request(
        std::string_view limiter,
        std::uint32_t per_minute,
        std::function<void(error_code, std::int64_t)> done) override;
    error_code read_swept(std::vector<swept_reservation>& out) override;
    error_code settle_swept(const swept_reservation& sw, attempt_record& record) override;
    error_code put_note(std::string_view key, std::string_view value) override;
    error_code put_answer(std::string_view id, std::string_view answer) override;
    error_code read_answers(std::vector<std::pair<std::string, std::string>>& out) override;
    error_code read_notes(std::vector<std::pair<std::string, std::string>>& out) override;

    // A reservations' link on a caller's io_context, and what the store and its links share
    // (redis_near.cpp).
    struct near_link;
    struct near_registry;

private:
    friend class near_service;

    // A command a caller waits for (a reservation, a read).
    struct waiter {
        std::vector<std::string> args;
        const std::string* script = nullptr; // EVALSHA of this script: args[1] is its sha
        std::function<void(const redisReply*)> on_reply; // on Redis's thread, under mu_
        std::uint64_t release_id = 0; // a reservation: what to drop if it may be applied unseen
        // An awaited reservation's completion (async_reserve), called once under mu_; empty
        // for a command a thread blocks on.
        std::function<void(error_code)> on_done;
        int verdict = -1;
        bool done = false, answered = false, sent = false, abandoned = false;
        std::condition_variable cv;
    };
    // A change this process owes Redis. Changes are summed into batches; a batch is kept, as
    // the command it was written as, until Redis acknowledges it, and resent whole after a
    // lost connection (its sequence number makes the resend count once).
    struct change {
        char kind = 's';      // settle, release, move (a corrected bill), generation id
        std::uint64_t id = 0; // the reservation: a settlement's (0: none), a release's
        std::vector<std::pair<std::string, std::int64_t>> moves; // committed spend per field
        std::string gen;
        bool raises = false; // may raise the fleet's spend (see owe_locked)
    };
    // What a reservation holds in Redis, as this process made it.
    struct held {
        std::int64_t amount = 0;
        std::vector<std::string> fields; // WINDOW:BUDGET
        std::string entry;               // AMOUNT\nFIELD...
    };
    struct queued {
        change c;
        std::shared_ptr<waiter> w; // set: a waited command
        std::string batch;         // set: a batch to resend as it was written
        std::size_t count = 0;     // the changes in `batch`
        std::size_t raising = 0;   // of those, the ones that may raise the spend
    };
    struct in_flight {
        enum { handshake, changes, waited } kind = changes;
        std::string batch; // the command, for a resend
        std::size_t count = 0;
        std::shared_ptr<waiter> w;
        std::string* sha = nullptr; // a script being loaded: where its sha goes
        std::size_t raising = 0;    // changes in `batch` that may raise the spend
    };
    enum class link { down, connecting, handshake, ready };

    std::string rid(std::uint64_t id) const { return instance_ + "." + std::to_string(id); }
    std::atomic<std::uint64_t> free_seq_{0}; // members of the free tier's minute, unique

    // What a new connection sends first (SELECT only for a database other than 0).
    std::vector<std::string> select_command() const { return {"SELECT", std::to_string(db_)}; }

    // The store's side (redis_store.cpp).
    error_code unreachable();
    error_code unreachable_locked() const;
    std::shared_ptr<waiter> reservation_waiter(const reservation_view& v);
    std::shared_ptr<waiter> rated_waiter(std::string_view limiter, std::uint32_t per_minute) const;
    // Whether a reservation may go on a connection of its own, passing what the pipe holds:
    // the pipe is up, and every change that may raise the spend has landed. Under mu_.
    bool may_pass_pipe_locked() const
    {
        return link_ == link::ready && unacked_raising_ == 0;
    }
    std::optional<error_code> reserve_direct(std::uint64_t id, std::vector<std::string>& args);

    // Changes owed, and their batches (redis_batch.cpp).
    void reservation_outcome_locked(std::uint64_t id, const redisReply* r, bool caller_gone);
    void owe(change c);
    void owe_locked(change c);
    void write_batch_locked(const std::string& now, bool take);
    void build_write_locked();

    // The reservations' links on their callers' io_contexts (redis_near.cpp).
    bool near_send(const asio::any_io_executor& caller, const std::shared_ptr<waiter>& w);
    void near_open(const std::shared_ptr<near_link>& l);
    void near_opened(const std::shared_ptr<near_link>& l, error_code ec);
    void near_read(const std::shared_ptr<near_link>& l);
    void near_on_read(const std::shared_ptr<near_link>& l, error_code ec, std::size_t n);
    void near_write(const std::shared_ptr<near_link>& l);
    void near_drop_locked(const std::shared_ptr<near_link>& l, bool failed);
    void near_watch(bool all);
    void near_start();
    void near_close_all();

    // The connections (redis_link.cpp).
    bool direct_open(const asio::ip::tcp::endpoint& ep);
    void direct_close();
    reply_ptr direct_call(const std::vector<std::string>& args, bool& sent);
    bool ask(const std::shared_ptr<waiter>& w, bool wait_connect);
    bool ask_async(const std::shared_ptr<waiter>& w);
    void finish_waiter(const std::shared_ptr<waiter>& w, const redisReply* r);
    void send_now_locked();
    void kick_locked();
    void pump();
    void fail_waiters_locked();
    void schedule_retry_locked();
    void start_connect();
    void on_connected();
    void write_locked(std::unique_lock<std::mutex>& lock);
    void start_write(std::unique_lock<std::mutex>& lock);
    void read();
    bool on_reply(in_flight& f, const redisReply* r, std::unique_lock<std::mutex>& lock);
    void arm_watchdog();
    void lose(const std::string& why);
    bool drain(std::chrono::steady_clock::time_point deadline);

    redis_store_params params_;
    std::shared_ptr<budget_store> ledger_;
    std::string instance_;
    std::string host_;
    int port_ = 6379;
    int db_ = 0;

    asio::io_context ioc_{1};
    asio::ip::tcp::socket socket_;
    asio::ip::tcp::resolver resolver_;
    asio::steady_timer connect_timer_, retry_timer_, watchdog_, flush_timer_;
    asio::executor_work_guard<asio::io_context::executor_type> work_;
    std::thread thread_;
    std::unique_ptr<redisReader, reader_deleter> reader_;
    std::array<char, 64 * 1024> rbuf_{};
    std::string out_;                       // the write in progress; only its writer touches it
    std::atomic<std::uint64_t> conn_id_{0}; // changed on the pipe's thread only

    // The reservations' own link (reserve_direct); only the thread holding direct_mu_ uses it.
    std::mutex direct_mu_;
    // An io_context nobody runs: the link is used synchronously, and a socket of the pipe's
    // io_context would wake the pipe's thread with every reply it reads.
    asio::io_context direct_ioc_{1};
    asio::ip::tcp::socket direct_socket_{direct_ioc_};
    std::unique_ptr<redisReader, reader_deleter> direct_reader_;
    std::string direct_sha_;
    std::chrono::steady_clock::time_point direct_retry_{};
    std::uint64_t direct_pipe_ = 0; // the pipe's connection when this link was opened
    std::array<char, 4096> rbuf_direct_{};

    std::mutex mu_; // everything below
    std::deque<queued> queue_;
    std::deque<in_flight> inflight_;
    std::unordered_map<std::uint64_t, held> held_; // the reservations Redis holds for this process
    std::size_t owed_ = 0;                         // changes queued or in flight
    std::uint64_t seq_ = 0;
    std::size_t handshake_left_ = 0;
    link link_ = link::down;
    int fd_ = -1; // the socket's descriptor while the link is ready
    bool kicked_ = false, writing_ = false, retry_armed_ = false;
    bool flush_due_ = false, flush_armed_ = false, sweep_due_ = false;
    std::chrono::steady_clock::time_point last_sweep_{};
    std::size_t queued_changes_ = 0;   // changes not yet in a batch
    std::size_t raising_ = 0;          // of those, the ones that may raise the spend
    std::size_t unacked_raising_ = 0;  // changes that may raise it, until Redis acknowledges them
    asio::ip::tcp::endpoint endpoint_; // where the pipelined connection reached Redis
    std::size_t resend_ = 0;           // batches to resend after a lost connection
    std::chrono::steady_clock::time_point next_connect_{}, progress_{};
    std::chrono::milliseconds backoff_{0};
    std::condition_variable drained_;
    std::string reserve_sha_, apply_sha_;
    // The reservations' links on callers' io_contexts; their registry's lock comes before mu_.
    std::shared_ptr<near_registry> near_;
    std::chrono::steady_clock::time_point near_retry_{}; // no new link before (under mu_)
    // Why Redis last failed. Kept for the day the store interface carries a reason to the
    // guard's refusal; nothing reads it yet.
    std::string last_error_;
};

} // namespace frugal::detail::redis

#endif // FRUGAL_SRC_BUDGET_REDIS_DETAIL_HPP
