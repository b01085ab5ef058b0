// The simulator's network side: accepts connections, reads requests with Beast's parser, and
// delivers what sim::engine decided, keeping time for latencies, keep-alives and stalls. One
// coroutine per connection, all on one executor.
#include "sim/sim_engine.hpp"

#include <frugal/sim.hpp>

#include <boost/asio/as_tuple.hpp>
#include <boost/asio/bind_cancellation_slot.hpp>
#include <boost/asio/co_spawn.hpp>
#include <boost/asio/detached.hpp>
#include <boost/asio/dispatch.hpp>
#include <boost/asio/experimental/awaitable_operators.hpp>
#include <boost/asio/io_context.hpp>
#include <boost/asio/ip/tcp.hpp>
#include <boost/asio/post.hpp>
#include <boost/asio/steady_timer.hpp>
#include <boost/asio/use_awaitable.hpp>
#include <boost/asio/write.hpp>
#include <boost/beast/core/flat_buffer.hpp>
#include <boost/beast/http/read.hpp>
#include <boost/beast/http/string_body.hpp>

#include <atomic>
#include <list>
#include <thread>

namespace frugal {

namespace asio = boost::asio;
namespace beast = boost::beast;
namespace http = beast::http;
using tcp = asio::ip::tcp;
using namespace asio::experimental::awaitable_operators;
using std::chrono::milliseconds;

struct simulator::impl {
    impl(asio::any_io_executor ex, sim_config config, std::string h, std::uint16_t p)
        : executor(std::move(ex)), engine(std::move(config)), acceptor(executor),
          host(std::move(h)), requested_port(p)
    {
    }

    asio::any_io_executor executor;
    sim::engine engine;
    tcp::acceptor acceptor;
    std::string host;
    std::uint16_t requested_port;
    std::atomic<std::uint16_t> port{0};
    std::list<asio::cancellation_signal> sessions; // one per live connection, to stop them
    bool stopped = false;
};

namespace {

using session_list = std::list<asio::cancellation_signal>;
constexpr auto tuple_awaitable = asio::as_tuple(asio::use_awaitable);

const char* reason(int status)
{
    switch (status) {
    case 200: return "OK";
    case 400: return "Bad Request";
    case 401: return "Unauthorized";
    case 402: return "Payment Required";
    case 403: return "Forbidden";
    case 404: return "Not Found";
    case 405: return "Method Not Allowed";
    case 408: return "Request Timeout";
    case 413: return "Payload Too Large";
    case 429: return "Too Many Requests";
    case 500: return "Internal Server Error";
    case 502: return "Bad Gateway";
    case 503: return "Service Unavailable";
    case 524: return "A Timeout Occurred";
    case 529: return "Site Overloaded";
    default: return "Unknown";
    }
}

// Responses are rendered by hand: a flat buffer written with one call is the cheapest thing a
// server can send, and the simulator has to outrun every client it measures.
std::string head(
    int status,
    std::string_view content_type,
    const std::vector<std::pair<std::string, std::string>>& headers,
    std::optional<std::size_t> content_length,
    bool keep_alive,
    bool chunked = true)
{
    std::string h =
        "HTTP/1.1 " + std::to_string(status) + " " + reason(status) + "\r\nContent-Type: ";
    h += content_type;
    h += "\r\n";
    if (content_length) {
        h += "Content-Length: ";
        h += std::to_string(*content_length);
        h += "\r\n";
    } else if (chunked) {
        h += "Transfer-Encoding: chunked\r\n";
    }
    for (const auto& [name, value] : headers) {
        h += name;
        h += ": ";
        h += value;
        h += "\r\n";
    }
    if (!keep_alive)
        h += "Connection: close\r\n";
    h += "\r\n";
    return h;
}

// How a body of unknown length is framed: chunked for HTTP/1.1, and for an HTTP/1.0 client
// (which knows no chunks) the raw bytes, ended by closing the connection.
struct framing {
    bool chunked = true;

    void add(std::string& out, std::string_view data) const
    {
        if (!chunked) {
            out += data;
            return;
        }
        char size[20];
        const int n = std::snprintf(size, sizeof size, "%zx\r\n", data.size());
        out.append(size, static_cast<std::size_t>(n));
        out += data;
        out += "\r\n";
    }

    void finish(std::string& out) const
    {
        if (chunked)
            out += "0\r\n\r\n";
    }
};

asio::awaitable<bool> write(tcp::socket& socket, const std::string& bytes)
{
    auto [ec, n] = co_await asio::async_write(socket, asio::buffer(bytes), tuple_awaitable);
    co_return !ec;
}

asio::awaitable<bool> wait(milliseconds d)
{
    if (d.count() <= 0)
        co_return true;
    asio::steady_timer timer(co_await asio::this_coro::executor);
    timer.expires_after(d);
    auto [ec] = co_await timer.async_wait(tuple_awaitable);
    co_return !ec;
}

// Completes when the client closes the connection (or the wait is cancelled). Bytes that
// arrive meanwhile are kept in `buffer` for the next request.
asio::awaitable<void> watch_disconnect(tcp::socket& socket, beast::flat_buffer& buffer)
{
    for (;;) {
        auto [ec, n] = co_await socket.async_read_some(buffer.prepare(512), tuple_awaitable);
        if (ec)
            co_return;
        buffer.commit(n);
    }
}

void close(tcp::socket& socket)
{
    boost::system::error_code ec;
    socket.shutdown(tcp::socket::shutdown_both, ec);
    socket.close(ec);
}

struct progress {
    std::size_t delivered = 0;
};

// A whole response, after the model's time: billed already by the engine.
asio::awaitable<bool> deliver_whole(
    simulator::impl& sim, tcp::socket& socket, const sim::completion& c, bool keep_alive, framing f)
{
    const milliseconds work =
        c.time_to_first_token + c.time_per_token * static_cast<std::int64_t>(c.pieces.size());
    const std::vector<std::pair<std::string, std::string>> headers = {{"X-Generation-Id", c.id}};
    std::string body = sim.engine.whole_body(c);
    if (!c.whitespace_keepalive) {
        if (!co_await wait(work))
            co_return false;
        if (c.injected == sim::fault::cut) {
            std::string out = head(200, "application/json", headers, body.size(), keep_alive);
            out += sim::engine::truncated_body(c, body);
            co_await write(socket, out);
            close(socket);
            co_return false;
        }
        std::string out = head(200, "application/json", headers, body.size(), keep_alive);
        out += body;
        co_return co_await write(socket, out);
    }
    // OpenRouter sends the status at once and whitespace while the model works.
    std::string out = head(200, "application/json", headers, std::nullopt, keep_alive, f.chunked);
    f.add(out, "\n");
    if (!co_await write(socket, out))
        co_return false;
    for (milliseconds left = work; left.count() > 0;) {
        const milliseconds step = std::min(left, sim.engine.config().keepalive_interval);
        if (!co_await wait(step))
            co_return false;
        left -= step;
        out.clear();
        f.add(out, "\n");
        if (left.count() > 0 && !co_await write(socket, out))
            co_return false;
    }
    out.clear();
    if (c.injected == sim::fault::cut) {
        f.add(out, body);
        out.resize(out.size() / 2);
        co_await write(socket, out);
        close(socket);
        co_return false;
    }
    f.add(out, body);
    f.finish(out);
    co_return co_await write(socket, out);
}

// A stream with timing: a keep-alive comment, the wait for the first token (with more
// comments), then one event per token.
asio::awaitable<bool> deliver_paced(
    simulator::impl& sim, tcp::socket& socket, const sim::completion& c, progress& p, framing f)
{
    const sim::engine& e = sim.engine;
    std::string out;
    f.add(out, e.stream_comment());
    if (!co_await write(socket, out))
        co_return false;
    for (milliseconds left = c.time_to_first_token; left.count() > 0;) {
        const milliseconds step = std::min(left, e.config().keepalive_interval);
        if (!co_await wait(step))
            co_return false;
        left -= step;
        if (left.count() > 0) {
            out.clear();
            f.add(out, e.stream_comment());
            if (!co_await write(socket, out))
                co_return false;
        }
    }
    const std::size_t n = c.pieces.size();
    for (std::size_t i = 0; i < n; ++i) {
        if (i == c.after && c.injected != sim::fault::none && c.injected != sim::fault::stall) {
            out.clear();
            switch (c.injected) {
            case sim::fault::cut: close(socket); co_return false;
            case sim::fault::malformed_chunk: f.add(out, e.stream_malformed_event(c)); break;
            default: // mid-stream errors end the stream
                f.add(out, e.stream_error_event(c));
                f.finish(out);
                co_return co_await write(socket, out);
            }
            if (!co_await write(socket, out))
                co_return false;
        }
        if (i != 0 && !co_await wait(c.time_per_token))
            co_return false;
        out.clear();
        f.add(out, e.stream_event(c, i));
        if (!co_await write(socket, out))
            co_return false;
        p.delivered = i + 1;
        if (c.injected == sim::fault::stall && p.delivered == c.after && !co_await wait(c.stall))
            co_return false;
    }
    if (c.injected == sim::fault::cut) { // cut after the last token
        close(socket);
        co_return false;
    }
    out.clear();
    f.add(out, e.stream_end(c));
    f.finish(out);
    co_return co_await write(socket, out);
}

asio::awaitable<bool> deliver_stream(
    simulator::impl& sim,
    tcp::socket& socket,
    beast::flat_buffer& buffer,
    const sim::completion& c,
    bool keep_alive,
    framing f)
{
    const std::vector<std::pair<std::string, std::string>> headers = {
        {"Cache-Control", "no-cache"}, {"X-Generation-Id", c.id}};
    std::string out = head(200, "text/event-stream", headers, std::nullopt, keep_alive, f.chunked);
    const std::size_t n = c.pieces.size();
    const bool paced = c.time_to_first_token.count() > 0 || c.time_per_token.count() > 0 ||
                       c.injected == sim::fault::stall;
    if (!paced) {
        // Nothing to wait for: the whole stream goes out in one write.
        f.add(out, sim.engine.whole_stream(c));
        const bool cut = c.injected == sim::fault::cut;
        if (!cut)
            f.finish(out);
        const bool ok = co_await write(socket, out);
        const bool partial = c.injected == sim::fault::cut ||
                             c.injected == sim::fault::midstream_error ||
                             c.injected == sim::fault::midstream_error_choice;
        sim.engine.settle(c, partial ? c.after : n, !ok, sim::clock::now());
        if (cut)
            close(socket);
        co_return ok && !cut;
    }
    if (!co_await write(socket, out)) {
        sim.engine.settle(c, 0, true, sim::clock::now());
        co_return false;
    }
    progress p;
    // The client cancels a stream by closing the connection; watching for that while the
    // stream is paced bills exactly the tokens delivered before it.
    auto result =
        co_await (deliver_paced(sim, socket, c, p, f) || watch_disconnect(socket, buffer));
    const bool cancelled = result.index() == 1;
    const bool ok = !cancelled && std::get<0>(result);
    sim.engine.settle(
        c, p.delivered,
        cancelled ||
            (!ok && c.injected != sim::fault::cut && c.injected != sim::fault::midstream_error &&
             c.injected != sim::fault::midstream_error_choice),
        sim::clock::now());
    co_return ok;
}

asio::awaitable<void> session(std::shared_ptr<simulator::impl> sim, tcp::socket socket)
{
    beast::flat_buffer buffer;
    for (;;) {
        http::request_parser<http::string_body> parser;
        parser.header_limit(64 * 1024);
        parser.body_limit(sim->engine.config().max_request_body);
        auto [ec, n] = co_await http::async_read(socket, buffer, parser, tuple_awaitable);
        if (ec) {
            if (ec == http::error::body_limit || ec == http::error::header_limit) {
                sim::reply r;
                r.status = 413;
                r.body = "{\"error\":{\"message\":\"Payload too large\",\"code\":413}}";
                co_await write(
                    socket, head(413, r.content_type, {}, r.body.size(), false) + r.body);
            } else if (
                ec.category() == http::make_error_code(http::error::bad_target).category() &&
                ec != http::error::end_of_stream && ec != http::error::partial_message) {
                const std::string body = "{\"error\":{\"message\":\"Bad request\",\"code\":400}}";
                co_await write(
                    socket, head(400, "application/json", {}, body.size(), false) + body);
            }
            break;
        }
        const auto& req = parser.get();
        const bool keep_alive = req.keep_alive();
        const sim::request request{
            req.method_string(), req.target(), req[http::field::authorization], req.body()};
        sim::outcome outcome = sim->engine.handle(request, sim::clock::now());

        if (auto* r = std::get_if<sim::reply>(&outcome)) {
            std::string out =
                head(r->status, r->content_type, r->headers, r->body.size(), keep_alive);
            out += r->body;
            if (!co_await write(socket, out) || !keep_alive)
                break;
            continue;
        }
        if (auto* d = std::get_if<sim::drop>(&outcome)) {
            if (d->kind == sim::fault::reset) {
                // SO_LINGER with a zero timeout makes close() send a reset.
                boost::system::error_code ignored;
                socket.set_option(asio::socket_base::linger(true, 0), ignored);
                socket.close(ignored);
            } else {
                co_await watch_disconnect(socket, buffer);
            }
            break;
        }
        const auto& c = std::get<sim::completion>(outcome);
        const framing f{req.version() >= 11};
        // A body ended by closing the connection leaves nothing to keep alive.
        const bool keep = keep_alive && f.chunked;
        const bool ok = c.stream ? co_await deliver_stream(*sim, socket, buffer, c, keep, f)
                                 : co_await deliver_whole(*sim, socket, c, keep, f);
        if (!ok || !keep)
            break;
    }
    close(socket);
}

asio::awaitable<void> accept_loop(std::shared_ptr<simulator::impl> sim)
{
    for (;;) {
        auto [ec, socket] = co_await sim->acceptor.async_accept(tuple_awaitable);
        if (ec) {
            if (sim->stopped || ec == asio::error::operation_aborted)
                co_return;
            // Out of descriptors and the like: back off instead of spinning.
            co_await wait(milliseconds(10));
            continue;
        }
        boost::system::error_code ignored;
        socket.set_option(tcp::no_delay(true), ignored);
        auto it = sim->sessions.emplace(sim->sessions.end());
        // The signal lets stop() cancel the session wherever it waits; it is erased only after
        // the coroutine has completed, since the completion still uses its slot.
        asio::co_spawn(
            sim->executor, session(sim, std::move(socket)),
            asio::bind_cancellation_slot(it->slot(), [sim, it](const std::exception_ptr&) {
                asio::post(sim->executor, [sim, it] { sim->sessions.erase(it); });
            }));
    }
}

} // namespace

simulator::simulator(
    asio::any_io_executor executor, sim_config config, std::string host, std::uint16_t port)
    : impl_(std::make_shared<impl>(std::move(executor), std::move(config), std::move(host), port))
{
}

simulator::~simulator()
{
    stop();
}

void simulator::start()
{
    const tcp::endpoint endpoint(asio::ip::make_address(impl_->host), impl_->requested_port);
    impl_->acceptor.open(endpoint.protocol());
    impl_->acceptor.set_option(asio::socket_base::reuse_address(true));
    impl_->acceptor.bind(endpoint);
    impl_->acceptor.listen(asio::socket_base::max_listen_connections);
    impl_->port = impl_->acceptor.local_endpoint().port();
    asio::co_spawn(impl_->executor, accept_loop(impl_), asio::detached);
}

void simulator::stop()
{
    asio::dispatch(impl_->executor, [sim = impl_] {
        if (sim->stopped)
            return;
        sim->stopped = true;
        boost::system::error_code ignored;
        sim->acceptor.close(ignored);
        for (auto& s : sim->sessions)
            s.emit(asio::cancellation_type::terminal);
    });
}

std::uint16_t simulator::port() const noexcept
{
    return impl_->port;
}

std::string simulator::base_url() const
{
    const bool v6 = impl_->host.find(':') != std::string::npos;
    return "http://" + (v6 ? "[" + impl_->host + "]" : impl_->host) + ":" + std::to_string(port()) +
           "/api/v1";
}

struct sim_thread::impl {
    impl(sim_config config, std::string host, std::uint16_t port)
        : sim(io.get_executor(), std::move(config), std::move(host), port)
    {
        sim.start();
        thread = std::thread([this] { io.run(); });
    }
    asio::io_context io{1};
    simulator sim;
    std::thread thread;
};

sim_thread::sim_thread(sim_config config, std::string host, std::uint16_t port)
    : impl_(std::make_unique<impl>(std::move(config), std::move(host), port))
{
}

sim_thread::~sim_thread()
{
    impl_->sim.stop();
    impl_->thread.join();
}

std::uint16_t sim_thread::port() const noexcept
{
    return impl_->sim.port();
}

std::string sim_thread::base_url() const
{
    return impl_->sim.base_url();
}

} // namespace frugal
