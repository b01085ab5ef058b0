// The Redis budget store's two connections to redis-server, apart from what they carry: the
// pipe, run on Asio's thread, with its reconnections, backoff and watchdog, which carries the
// batches and the commands callers wait for; and the reservations' own link, written and read
// by the reserving thread itself.
#include "budget/redis_detail.hpp"
#include "budget/redis_scripts.hpp"

#include <boost/asio/connect.hpp>
#include <boost/asio/post.hpp>
#include <boost/asio/write.hpp>

#include <algorithm>
#include <cerrno>
#include <cstring>

#include <poll.h>
#include <sys/socket.h>

namespace frugal::detail::redis {

namespace {

constexpr std::chrono::seconds sweep_interval{1};

// Waits until `fd` is ready for `events` or `deadline` passes.
bool wait_fd(int fd, short events, std::chrono::steady_clock::time_point deadline)
{
    for (;;) {
        const auto left = std::chrono::ceil<std::chrono::milliseconds>(
            deadline - std::chrono::steady_clock::now());
        if (left.count() <= 0)
            return false;
        pollfd p{fd, events, 0};
        const int n = ::poll(&p, 1, static_cast<int>(left.count()));
        if (n > 0)
            return (p.revents & (events | POLLHUP | POLLERR)) != 0;
        if (n < 0 && errno != EINTR)
            return false;
    }
}

} // namespace

// Connects the reservations' link to `ep` within the timeout, selects the database and
// loads the reservation script. Under direct_mu_.
bool redis_store::direct_open(const asio::ip::tcp::endpoint& ep)
{
    direct_close();
    error_code ec;
    direct_socket_.open(ep.protocol(), ec);
    if (ec)
        return false;
    direct_socket_.set_option(asio::ip::tcp::no_delay(true), ec);
    direct_socket_.non_blocking(true, ec);
    const int fd = direct_socket_.native_handle();
    const auto deadline = std::chrono::steady_clock::now() + params_.timeout;
    if (::connect(fd, ep.data(), static_cast<socklen_t>(ep.size())) != 0) {
        int err = 0;
        socklen_t len = sizeof err;
        if (errno != EINPROGRESS || !wait_fd(fd, POLLOUT, deadline) ||
            ::getsockopt(fd, SOL_SOCKET, SO_ERROR, &err, &len) != 0 || err != 0) {
            direct_close();
            return false;
        }
    }
    direct_reader_.reset(redisReaderCreate());
    bool sent = false;
    if (db_ != 0) {
        const reply_ptr r = direct_call(select_command(), sent);
        if (!r || r->type == REDIS_REPLY_ERROR) {
            direct_close();
            return false;
        }
    }
    const reply_ptr r = direct_call(load_command(reserve_lua), sent);
    if (!r || r->type != REDIS_REPLY_STRING || r->len != 40) {
        direct_close();
        return false;
    }
    direct_sha_.assign(r->str, r->len);
    return true;
}

void redis_store::direct_close()
{
    error_code ignored;
    direct_socket_.close(ignored);
    direct_reader_.reset();
}

// One command on the reservations' link and its reply, within the timeout; null on a
// failure (`sent`: the whole command had been written).
reply_ptr redis_store::direct_call(const std::vector<std::string>& args, bool& sent)
{
    const auto deadline = std::chrono::steady_clock::now() + params_.timeout;
    const int fd = direct_socket_.native_handle();
    std::string cmd;
    append_command(cmd, args);
    sent = false;
    for (std::size_t off = 0; off < cmd.size();) {
        const auto n =
            ::send(fd, cmd.data() + off, cmd.size() - off, MSG_DONTWAIT | MSG_NOSIGNAL);
        if (n > 0)
            off += static_cast<std::size_t>(n);
        else if (
            n == 0 || (errno != EAGAIN && errno != EINTR) || !wait_fd(fd, POLLOUT, deadline))
            return nullptr;
    }
    sent = true;
    for (;;) {
        void* raw = nullptr;
        if (redisReaderGetReply(direct_reader_.get(), &raw) != REDIS_OK)
            return nullptr;
        if (raw != nullptr)
            return reply_ptr(static_cast<redisReply*>(raw));
        if (!wait_fd(fd, POLLIN, deadline))
            return nullptr;
        const auto n = ::recv(fd, rbuf_direct_.data(), rbuf_direct_.size(), MSG_DONTWAIT);
        if (n > 0) {
            if (redisReaderFeed(
                    direct_reader_.get(), rbuf_direct_.data(), static_cast<std::size_t>(n)) !=
                REDIS_OK)
                return nullptr;
        } else if (n == 0 || (errno != EAGAIN && errno != EINTR)) {
            return nullptr;
        }
    }
}

// Sends `w` and waits up to the timeout for its answer. False when Redis is unreachable
// or slow; a reservation that may have been applied meanwhile is dropped again by a change
// queued after it. `wait_connect`: also wait for a connection in backoff (opening).
bool redis_store::ask(const std::shared_ptr<waiter>& w, bool wait_connect)
{
    std::unique_lock lock(mu_);
    const auto now = std::chrono::steady_clock::now();
    if (link_ == link::down && now < next_connect_ && !wait_connect)
        return false; // refused at once while the backoff runs
    if (link_ == link::down && wait_connect)
        next_connect_ = now;
    // A connection still being made gets its own timeout on top of the command's.
    const auto wait = link_ == link::ready ? params_.timeout : params_.timeout * 2;
    queue_.push_back({{}, w});
    if (link_ == link::ready && !writing_)
        send_now_locked(); // one thread hop fewer on the escalation's path
    else
        kick_locked();
    if (!w->cv.wait_for(lock, wait, [&] { return w->done; })) {
        w->abandoned = true; // unsent: skipped; sent: its reply or loss drops it again
        return false;
    }
    return w->answered;
}

// `ask` without waiting: the command is queued (or refused at once while the backoff runs,
// false), and finish_waiter completes it through `on_done`.
bool redis_store::ask_async(const std::shared_ptr<waiter>& w)
{
    const std::lock_guard lock(mu_);
    if (link_ == link::down && std::chrono::steady_clock::now() < next_connect_)
        return false;
    queue_.push_back({{}, w});
    if (link_ == link::ready && !writing_)
        send_now_locked(); // one thread hop fewer on the escalation's path
    else
        kick_locked();
    return true;
}

// Called with mu_ held when a waited command is over; `r` null: lost or refused unseen.
void redis_store::finish_waiter(const std::shared_ptr<waiter>& w, const redisReply* r)
{
    if (r != nullptr && r->type != REDIS_REPLY_ERROR && w->on_reply && !w->abandoned)
        w->on_reply(r);
    if (w->release_id != 0 && w->sent)
        reservation_outcome_locked(w->release_id, r, w->abandoned);
    if (r != nullptr && r->type == REDIS_REPLY_ERROR)
        last_error_.assign(r->str, r->len);
    w->answered = r != nullptr && r->type != REDIS_REPLY_ERROR;
    w->done = true;
    if (w->on_done) {
        if (!w->sent && w->release_id != 0)
            held_.erase(w->release_id); // never sent: Redis holds nothing
        auto f = std::move(w->on_done);
        w->on_done = nullptr;
        f(w->answered ? verdict_error(w->verdict) : unreachable_locked());
        return;
    }
    w->cv.notify_one();
}

// Writes what is queued from the calling thread, without waking the pipe's: the socket is
// non-blocking, and what the kernel does not take at once is left to the pipe's thread.
void redis_store::send_now_locked()
{
    build_write_locked();
    if (out_.empty())
        return;
    const auto n = ::send(fd_, out_.data(), out_.size(), MSG_DONTWAIT | MSG_NOSIGNAL);
    if (n == static_cast<ssize_t>(out_.size()))
        return;
    out_.erase(0, n > 0 ? static_cast<std::size_t>(n) : 0);
    writing_ = true;
    const bool broken = n < 0 && errno != EAGAIN && errno != EWOULDBLOCK;
    const std::string why = broken ? std::strerror(errno) : std::string();
    const std::uint64_t id = conn_id_;
    asio::post(ioc_, [this, id, broken, why] {
        if (id != conn_id_)
            return;
        if (broken) {
            lose(why);
            return;
        }
        std::unique_lock l(mu_);
        start_write(l);
    });
}

// Makes sure the pipe's thread looks at the queue. Under mu_.
void redis_store::kick_locked()
{
    if (kicked_)
        return;
    kicked_ = true;
    asio::post(ioc_, [this] { pump(); });
}

// On the pipe's thread: connects when needed, writes what is queued.
void redis_store::pump()
{
    std::unique_lock lock(mu_);
    kicked_ = false;
    if (link_ == link::down) {
        if (queue_.empty())
            return;
        const auto now = std::chrono::steady_clock::now();
        if (now < next_connect_) {
            fail_waiters_locked(); // nobody waits through a backoff
            schedule_retry_locked();
            return;
        }
        link_ = link::connecting;
        lock.unlock();
        start_connect();
        return;
    }
    if (link_ == link::ready && !writing_)
        write_locked(lock);
}

// Fails every waited command not yet sent: nothing will carry it before the backoff ends.
void redis_store::fail_waiters_locked()
{
    for (auto it = queue_.begin(); it != queue_.end();) {
        if (it->w) {
            auto w = std::move(it->w);
            it = queue_.erase(it);
            finish_waiter(w, nullptr);
        } else {
            ++it;
        }
    }
}

void redis_store::schedule_retry_locked()
{
    if (owed_ == 0 || retry_armed_)
        return;
    retry_armed_ = true;
    retry_timer_.expires_at(next_connect_);
    retry_timer_.async_wait([this](error_code ec) {
        {
            const std::lock_guard lock(mu_);
            retry_armed_ = false;
        }
        if (!ec)
            pump();
    });
}

void redis_store::start_connect()
{
    const std::uint64_t id = ++conn_id_;
    connect_timer_.expires_after(params_.timeout);
    connect_timer_.async_wait([this, id](error_code ec) {
        if (!ec && id == conn_id_)
            lose("no connection within " + std::to_string(params_.timeout.count()) + " ms");
    });
    resolver_.async_resolve(
        host_, std::to_string(port_),
        [this, id](error_code ec, const asio::ip::tcp::resolver::results_type& eps) {
            if (id != conn_id_)
                return;
            if (ec) {
                lose(ec.message());
                return;
            }
            asio::async_connect(
                socket_, eps, [this, id](error_code ec2, const asio::ip::tcp::endpoint& ep) {
                    if (id != conn_id_)
                        return;
                    if (ec2) {
                        lose(ec2.message());
                        return;
                    }
                    connect_timer_.cancel();
                    {
                        const std::lock_guard lock(mu_);
                        endpoint_ = ep;
                    }
                    on_connected();
                });
        });
}

// A new connection: select the database and load the scripts before anything else.
void redis_store::on_connected()
{
    error_code ignored;
    socket_.set_option(asio::ip::tcp::no_delay(true), ignored);
    reader_.reset(redisReaderCreate());
    std::unique_lock lock(mu_);
    link_ = link::handshake;
    out_.clear();
    auto add = [this](const std::vector<std::string>& args, std::string* sha) {
        append_command(out_, args);
        inflight_.push_back({in_flight::handshake, {}, 0, nullptr, sha});
    };
    if (db_ != 0)
        add(select_command(), nullptr);
    add(load_command(reserve_lua), &reserve_sha_);
    add(load_command(apply_lua), &apply_sha_);
    handshake_left_ = inflight_.size();
    progress_ = std::chrono::steady_clock::now();
    start_write(lock);
    arm_watchdog();
    read();
}

// Moves what is queued into one write: runs of changes become one script call each.
void redis_store::write_locked(std::unique_lock<std::mutex>& lock)
{
    build_write_locked();
    if (!out_.empty())
        start_write(lock);
}

void redis_store::start_write(std::unique_lock<std::mutex>& lock)
{
    writing_ = true;
    const std::uint64_t id = conn_id_;
    lock.unlock();
    asio::async_write(socket_, asio::buffer(out_), [this, id](error_code ec, std::size_t) {
        if (id != conn_id_)
            return;
        if (ec) {
            lose(ec.message());
            return;
        }
        std::unique_lock l(mu_);
        writing_ = false;
        if (link_ == link::ready && (!queue_.empty() || sweep_due_))
            write_locked(l);
    });
}

void redis_store::read()
{
    const std::uint64_t id = conn_id_;
    socket_.async_read_some(asio::buffer(rbuf_), [this, id](error_code ec, std::size_t n) {
        if (id != conn_id_)
            return;
        if (ec) {
            lose(ec == asio::error::eof ? "Redis closed the connection" : ec.message());
            return;
        }
        if (redisReaderFeed(reader_.get(), rbuf_.data(), n) != REDIS_OK) {
            lose("unreadable reply from Redis");
            return;
        }
        std::unique_lock lock(mu_);
        for (;;) {
            void* raw = nullptr;
            if (redisReaderGetReply(reader_.get(), &raw) != REDIS_OK) {
                lock.unlock();
                lose("unreadable reply from Redis");
                return;
            }
            if (raw == nullptr)
                break;
            reply_ptr r(static_cast<redisReply*>(raw));
            if (inflight_.empty()) {
                lock.unlock();
                lose("a reply from Redis that nothing asked for");
                return;
            }
            progress_ = std::chrono::steady_clock::now();
            auto f = std::move(inflight_.front());
            inflight_.pop_front();
            if (!on_reply(f, r.get(), lock))
                return; // the connection was dropped
        }
        if (link_ == link::ready && !writing_ && (!queue_.empty() || sweep_due_))
            write_locked(lock);
        else
            lock.unlock();
        read();
    });
}

// One reply, for `f`. False when it made the connection unusable (mu_ released then).
bool redis_store::on_reply(in_flight& f, const redisReply* r, std::unique_lock<std::mutex>& lock)
{
    const bool err = r->type == REDIS_REPLY_ERROR;
    switch (f.kind) {
    case in_flight::handshake:
        if (err || (f.sha != nullptr && (r->type != REDIS_REPLY_STRING || r->len != 40))) {
            std::string why = err ? std::string(r->str, r->len) : "no script sha";
            lock.unlock();
            lose("Redis refused to prepare: " + why);
            return false;
        }
        if (f.sha != nullptr)
            f.sha->assign(r->str, r->len);
        if (--handshake_left_ == 0) {
            link_ = link::ready;
            sweep_due_ = true; // a dead process's leases turn into spend without waiting
            last_sweep_ = std::chrono::steady_clock::now();
            flush_due_ = true; // what was owed while the link was down
            fd_ = socket_.native_handle();
            backoff_ = std::chrono::milliseconds(0);
            last_error_.clear();
        }
        return true;
    case in_flight::changes:
        if (err) {
            // A script Redis forgot (SCRIPT FLUSH) or a refusal (out of memory, a replica):
            // the batch is applied whole or not at all, so it goes back and is resent
            // after a reconnection.
            std::string why(r->str, r->len);
            inflight_.push_front(std::move(f));
            lock.unlock();
            lose("Redis refused the spend: " + why);
            return false;
        }
        owed_ -= f.count;
        unacked_raising_ -= f.raising;
        if (owed_ == 0)
            drained_.notify_all();
        return true;
    case in_flight::waited: finish_waiter(f.w, r); return true;
    }
    return true;
}

// Redis is slow: a command unanswered past the timeout drops the connection.
void redis_store::arm_watchdog()
{
    const std::uint64_t id = conn_id_;
    watchdog_.expires_after(std::max(params_.timeout / 4, std::chrono::milliseconds(10)));
    watchdog_.async_wait([this, id](error_code ec) {
        if (ec || id != conn_id_)
            return;
        near_watch(false);
        bool stalled = false;
        {
            const std::lock_guard lock(mu_);
            const auto now = std::chrono::steady_clock::now();
            stalled = !inflight_.empty() && now - progress_ > params_.timeout;
            // Every process sweeps now and then, so that leases run out into spend even
            // while nothing is settled anywhere.
            if (!stalled && now - last_sweep_ >= sweep_interval) {
                last_sweep_ = now;
                sweep_due_ = true;
                kick_locked();
            }
        }
        if (stalled) {
            lose(
                "Redis did not answer within " + std::to_string(params_.timeout.count()) +
                " ms");
            return;
        }
        arm_watchdog();
    });
}

// The connection is gone (on the pipe's thread): changes in flight go back to the front of
// the queue in order, waited commands fail, and a reconnection is scheduled.
void redis_store::lose(const std::string& why)
{
    ++conn_id_; // every handler of the old connection is stale now
    near_watch(true); // the reservations' links, which nothing watches while the pipe is down
    const std::lock_guard lock(mu_);
    last_error_ = "Redis at " + host_ + ":" + std::to_string(port_) + ": " + why;
    fd_ = -1; // closed under mu_: a caller sending at once never sees a stale descriptor
    error_code ignored;
    socket_.close(ignored);
    connect_timer_.cancel();
    watchdog_.cancel();
    link_ = link::down;
    writing_ = false;
    backoff_ = std::min(
        std::max(backoff_ * 2, std::chrono::milliseconds(100)),
        std::chrono::milliseconds(5000));
    next_connect_ = std::chrono::steady_clock::now() + backoff_;
    std::vector<std::shared_ptr<waiter>> lost;
    while (!inflight_.empty()) {
        auto f = std::move(inflight_.back());
        inflight_.pop_back();
        if (f.kind == in_flight::changes) {
            queue_.push_front({{}, nullptr, std::move(f.batch), f.count, f.raising});
            ++resend_;
        } else if (f.kind == in_flight::waited)
            lost.push_back(std::move(f.w));
    }
    for (auto it = lost.rbegin(); it != lost.rend(); ++it)
        finish_waiter(*it, nullptr);
    fail_waiters_locked();
    schedule_retry_locked();
}

// Waits until Redis has acknowledged every change owed, or `deadline`. Retries a
// connection in backoff at once.
bool redis_store::drain(std::chrono::steady_clock::time_point deadline)
{
    std::unique_lock lock(mu_);
    if (owed_ == 0)
        return true;
    next_connect_ = std::chrono::steady_clock::now();
    flush_due_ = true;
    kick_locked();
    return drained_.wait_until(lock, deadline, [&] { return owed_ == 0; });
}

} // namespace frugal::detail::redis
