// The reservations' links: one connection to Redis per io_context whose callers await
// reservations, opened and read on that io_context. A reply then wakes the thread that waits
// for it and no other; through the pipe it would wake the pipe's thread, which would wake the
// caller's. Each link lives no longer than its io_context (a service of the context closes it
// when the context goes) nor than the store (which closes its links when it goes).
//
// A reservation takes a link only when it may pass everything queued on the pipe: the pipe is
// up and no change that may raise the fleet's spend is unacknowledged (as for the blocking
// reservations' link). Otherwise, and while a link is being opened, the pipe carries it.
#include "budget/redis_detail.hpp"

#include <boost/asio/connect.hpp>
#include <boost/asio/execution/context.hpp>
#include <boost/asio/execution/outstanding_work.hpp>
#include <boost/asio/execution_context.hpp>
#include <boost/asio/post.hpp>
#include <boost/asio/prefer.hpp>
#include <boost/asio/query.hpp>
#include <boost/asio/write.hpp>

#include <algorithm>
#include <cerrno>

#include <sys/socket.h>

namespace frugal::detail::redis {

namespace {
// A process has one io_context per thread at most, in practice: beyond this many the pipe
// carries the reservations of the rest.
constexpr std::size_t max_near_links = 16;
constexpr std::chrono::seconds near_backoff{1};
} // namespace

class near_service;

struct redis_store::near_registry {
    std::mutex mu;                 // before the store's mu_
    redis_store* store = nullptr;  // null once the store is gone
    std::vector<std::shared_ptr<near_link>> links; // open or opening, one per context
};

struct redis_store::near_link {
    near_link(std::shared_ptr<near_registry> r, asio::any_io_executor e, const void* c)
        : reg(std::move(r))
        , ex(std::move(e))
        , ctx(c)
    {
    }
    std::shared_ptr<near_registry> reg;
    asio::any_io_executor ex;
    const void* ctx; // its execution context, as a key only

    // Under the registry's lock (the socket's operations are started from any thread, its
    // handlers run on the link's), or in its context's shutdown.
    std::optional<asio::ip::tcp::socket> socket;
    std::unique_ptr<redisReader, reader_deleter> reader;
    std::array<char, 16 * 1024> rbuf{};
    std::string wbuf; // the write in progress
    near_service* service = nullptr;

    // Under the store's mu_.
    enum { opening, ready, closed } state = opening;
    bool retiring = false; // Redis forgot the script: no new command, closed once answered
    int fd = -1;
    std::uint64_t pipe = 0;  // the pipe's connection this link was opened beside
    std::size_t skip = 0;    // replies of its opening still to come (SELECT)
    std::deque<std::shared_ptr<waiter>> inflight;
    std::string out; // written once the write in progress ends
    bool writing = false;
    // A read is pending only while a reply is awaited: an idle link keeps no io_context
    // running (its `run` returns once its own work is done).
    bool reading = false;
    std::chrono::steady_clock::time_point progress;
};

// Closes the links of an io_context that is going away, before its reactor does: a socket
// must not outlive the context it was made on.
class near_service : public asio::execution_context::service {
public:
    using key_type = near_service;
    static inline asio::execution_context::id id;

    explicit near_service(asio::execution_context& ctx)
        : asio::execution_context::service(ctx)
    {
    }

    void add(const std::shared_ptr<redis_store::near_link>& l)
    {
        const std::lock_guard lock(mu_);
        links_.push_back(l);
    }

    void remove(const redis_store::near_link* l)
    {
        const std::lock_guard lock(mu_);
        std::erase_if(links_, [l](const auto& x) { return x.get() == l; });
    }

private:
    void shutdown() override
    {
        std::vector<std::shared_ptr<redis_store::near_link>> all;
        {
            const std::lock_guard lock(mu_);
            all.swap(links_);
        }
        for (auto& l : all) {
            {
                const std::lock_guard reg(l->reg->mu);
                if (auto* s = l->reg->store) {
                    const std::lock_guard lock(s->mu_);
                    s->near_drop_locked(l, false);
                }
            }
            l->socket.reset();
            l->reader.reset();
        }
    }

    std::mutex mu_;
    std::vector<std::shared_ptr<redis_store::near_link>> links_;
};

// Sends reservation `w` on the link of `caller`'s io_context. False when the pipe must carry
// it (no link ready, or it may not pass what the pipe holds); a link is opened meanwhile.
bool redis_store::near_send(const asio::any_io_executor& caller, const std::shared_ptr<waiter>& w)
{
    if (!caller)
        return false;
    asio::execution_context& context = asio::query(caller, asio::execution::context);
    const void* ctx = &context;
    std::unique_lock reg(near_->mu);
    std::shared_ptr<near_link> l;
    for (const auto& x : near_->links)
        if (x->ctx == ctx)
            l = x;
    std::unique_lock lock(mu_);
    if (!may_pass_pipe_locked())
        return false;
    const auto now = std::chrono::steady_clock::now();
    if (!l) {
        if (now < near_retry_ || near_->links.size() >= max_near_links)
            return false;
        const std::uint64_t pipe = conn_id_;
        lock.unlock();
        // Untracked: a link keeps no io_context running. The socket is made before the
        // service: a service made later is shut down earlier, so the context closes its links
        // while its reactor still stands, even if the link never got to open.
        l = std::make_shared<near_link>(
            near_, asio::prefer(caller, asio::execution::outstanding_work.untracked), ctx);
        l->pipe = pipe;
        l->progress = now;
        l->socket.emplace(l->ex);
        l->service = &asio::use_service<near_service>(context);
        l->service->add(l);
        near_->links.push_back(l);
        reg.unlock();
        asio::post(l->ex, [l] {
            const std::lock_guard r(l->reg->mu);
            if (auto* s = l->reg->store)
                s->near_open(l);
        });
        return false;
    }
    if (l->state != near_link::ready || l->retiring)
        return false;
    if (l->pipe != conn_id_) {
        near_drop_locked(l, false); // Redis restarted, say: so does the link, beside the pipe
        return false;
    }
    w->args[1] = reserve_sha_;
    if (l->inflight.empty())
        l->progress = now;
    if (l->writing) {
        append_command(l->out, w->args);
    } else {
        l->out.clear();
        append_command(l->out, w->args);
        const auto n = ::send(l->fd, l->out.data(), l->out.size(), MSG_DONTWAIT | MSG_NOSIGNAL);
        if (n < 0 && errno != EAGAIN && errno != EWOULDBLOCK) {
            near_drop_locked(l, true); // nothing of it was sent: the pipe carries it
            return false;
        }
        l->out.erase(0, n > 0 ? static_cast<std::size_t>(n) : 0);
        if (!l->out.empty()) {
            l->writing = true;
            asio::post(l->ex, [l] {
                const std::lock_guard r(l->reg->mu);
                if (auto* s = l->reg->store)
                    s->near_write(l);
            });
        }
    }
    w->sent = true;
    l->inflight.push_back(w);
    if (!l->reading) {
        l->reading = true;
        near_read(l); // under the registry's lock, as every use of the socket
    }
    return true;
}

// On the link's thread, under the registry's lock: connects beside the pipe.
void redis_store::near_open(const std::shared_ptr<near_link>& l)
{
    asio::ip::tcp::endpoint ep;
    {
        const std::lock_guard lock(mu_);
        if (l->state == near_link::closed)
            return;
        ep = endpoint_;
    }
    l->socket->async_connect(ep, [l](error_code ec) {
        const std::lock_guard r(l->reg->mu);
        if (auto* s = l->reg->store)
            s->near_opened(l, ec);
    });
}

void redis_store::near_opened(const std::shared_ptr<near_link>& l, error_code ec)
{
    std::unique_lock lock(mu_);
    if (l->state == near_link::closed)
        return;
    if (ec) {
        near_drop_locked(l, true);
        return;
    }
    error_code ignored;
    l->socket->set_option(asio::ip::tcp::no_delay(true), ignored);
    l->socket->non_blocking(true, ignored);
    l->fd = l->socket->native_handle();
    l->reader.reset(redisReaderCreate());
    l->progress = std::chrono::steady_clock::now();
    if (db_ == 0) {
        l->state = near_link::ready;
        return;
    }
    l->skip = 1;
    l->writing = l->reading = true;
    append_command(l->out, select_command());
    lock.unlock();
    near_write(l);
    near_read(l);
}

// On the link's thread: writes what the callers could not hand the kernel themselves.
void redis_store::near_write(const std::shared_ptr<near_link>& l)
{
    {
        const std::lock_guard lock(mu_);
        if (l->state == near_link::closed)
            return;
        if (l->out.empty()) {
            l->writing = false;
            return;
        }
        l->wbuf.swap(l->out);
        l->out.clear();
    }
    asio::async_write(*l->socket, asio::buffer(l->wbuf), [l](error_code ec, std::size_t) {
        const std::lock_guard r(l->reg->mu);
        auto* s = l->reg->store;
        if (s == nullptr)
            return;
        if (ec) {
            const std::lock_guard lock(s->mu_);
            s->near_drop_locked(l, true);
            return;
        }
        s->near_write(l);
    });
}

void redis_store::near_read(const std::shared_ptr<near_link>& l)
{
    l->socket->async_read_some(asio::buffer(l->rbuf), [l](error_code ec, std::size_t n) {
        const std::lock_guard r(l->reg->mu);
        if (auto* s = l->reg->store)
            s->near_on_read(l, ec, n);
    });
}

// On the link's thread, under the registry's lock: the replies, in the order asked.
void redis_store::near_on_read(const std::shared_ptr<near_link>& l, error_code ec, std::size_t n)
{
    std::unique_lock lock(mu_);
    if (l->state == near_link::closed)
        return;
    if (ec || redisReaderFeed(l->reader.get(), l->rbuf.data(), n) != REDIS_OK) {
        near_drop_locked(l, true);
        return;
    }
    for (;;) {
        void* raw = nullptr;
        if (redisReaderGetReply(l->reader.get(), &raw) != REDIS_OK) {
            near_drop_locked(l, true);
            return;
        }
        if (raw == nullptr)
            break;
        const reply_ptr r(static_cast<redisReply*>(raw));
        l->progress = std::chrono::steady_clock::now();
        if (l->skip > 0) {
            if (r->type == REDIS_REPLY_ERROR) {
                near_drop_locked(l, true);
                return;
            }
            if (--l->skip == 0)
                l->state = near_link::ready;
            continue;
        }
        if (l->inflight.empty()) {
            near_drop_locked(l, true); // a reply nothing asked for
            return;
        }
        auto w = std::move(l->inflight.front());
        l->inflight.pop_front();
        if (forgot_script(r.get())) {
            // Redis forgot the script (SCRIPT FLUSH): nothing was applied, so the pipe carries
            // the reservation instead, and this link takes no more. The pipe loads its scripts
            // when it connects: until it reconnects, it too meets NOSCRIPT and the
            // reservation is refused (closed, never granted unseen).
            l->retiring = true;
            w->sent = false;
            queue_.push_back({{}, std::move(w)});
            kick_locked();
            continue;
        }
        finish_waiter(w, r.get());
    }
    if (l->retiring && l->inflight.empty()) {
        near_drop_locked(l, false);
        return;
    }
    l->reading = !l->inflight.empty() || l->skip > 0;
    if (!l->reading)
        return;
    lock.unlock();
    near_read(l);
}

// Closes link `l` (any thread, under the registry's lock and mu_): the reservations it
// carries fail as a lost pipe's do (each may have been applied: a release queued on the pipe
// drops it again), and no new link is opened for a while when it `failed`.
void redis_store::near_drop_locked(const std::shared_ptr<near_link>& l, bool failed)
{
    if (l->state == near_link::closed)
        return;
    l->state = near_link::closed;
    l->fd = -1;
    std::erase(near_->links, l);
    if (failed)
        near_retry_ = std::chrono::steady_clock::now() + near_backoff;
    auto lost = std::move(l->inflight);
    for (auto& w : lost)
        finish_waiter(w, nullptr);
    // The socket belongs to the link's thread: it is closed there (or by the context's
    // shutdown, when the context is going).
    asio::post(l->ex, [l] {
        const std::lock_guard r(l->reg->mu);
        error_code ignored;
        l->socket->close(ignored);
        l->service->remove(l.get());
    });
}

// On the pipe's thread: a link that has not answered (or opened) within the timeout is
// dropped, and its reservations fail; every link, when the pipe lost Redis (`all`).
void redis_store::near_watch(bool all)
{
    const std::lock_guard reg(near_->mu);
    const std::lock_guard lock(mu_);
    const auto now = std::chrono::steady_clock::now();
    auto links = near_->links;
    for (const auto& l : links)
        if (all || ((l->state == near_link::opening || !l->inflight.empty()) &&
                    now - l->progress > params_.timeout))
            near_drop_locked(l, true);
}

void redis_store::near_start()
{
    near_ = std::make_shared<near_registry>();
    near_->store = this;
}

// The store is going: its links close, and their handlers find no store.
void redis_store::near_close_all()
{
    const std::lock_guard reg(near_->mu);
    {
        const std::lock_guard lock(mu_);
        auto links = near_->links;
        for (const auto& l : links)
            near_drop_locked(l, false);
    }
    near_->store = nullptr;
}

} // namespace frugal::detail::redis
