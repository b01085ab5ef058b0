// The gateway: an HTTP/1.1 front on one executor, each connection a coroutine. Everything that
// decides about money (reservations, escalations, settlement, the ledger) is the library's
// router and guard; this file authenticates, translates the wire and counts.
#include <frugal/serve.hpp>

#include <frugal/budget.hpp>
#include <frugal/chat_client.hpp>
#include <frugal/error.hpp>
#include <frugal/ledger_notes.hpp>

#include "serve/counting_store.hpp"
#include "serve/metrics.hpp"
#include "serve/wire.hpp"

#include <boost/asio/as_tuple.hpp>
#include <boost/asio/bind_cancellation_slot.hpp>
#include <boost/asio/co_spawn.hpp>
#include <boost/asio/detached.hpp>
#include <boost/asio/ip/tcp.hpp>
#include <boost/asio/steady_timer.hpp>
#include <boost/asio/this_coro.hpp>
#include <boost/asio/use_awaitable.hpp>
#include <boost/asio/ssl/context.hpp>
#include <boost/asio/ssl/stream.hpp>
#include <boost/asio/write.hpp>
#include <boost/beast/core/flat_buffer.hpp>
#include <boost/beast/http/read.hpp>
#include <boost/beast/http/status.hpp>
#include <boost/beast/http/parser.hpp>
#include <boost/beast/http/string_body.hpp>

#include <algorithm>
#include <cstdio>
#include <ctime>
#include <random>
#include <set>
#include <string_view>
#include <unordered_map>
#include <unordered_set>

namespace frugal {

namespace asio = boost::asio;
namespace beast = boost::beast;
namespace bhttp = boost::beast::http;
using asio::ip::tcp;
using boost::system::error_code;
using std::chrono::steady_clock;

namespace detail {

namespace {

constexpr auto tuple_awaitable = asio::as_tuple(asio::use_awaitable);
constexpr std::string_view api_prefix = "/api/v1";
const std::string continue_line = "HTTP/1.1 100 Continue\r\n\r\n";

std::int64_t unix_ms()
{
    return std::chrono::duration_cast<std::chrono::milliseconds>(
               std::chrono::system_clock::now().time_since_epoch())
        .count();
}

// "gen-frugal-" and 16 random hex digits: two processes (or one restarted) share no id.
std::string stream_id_prefix()
{
    std::random_device rd;
    const std::uint64_t r = std::uint64_t{rd()} << 32 | rd();
    char buf[40];
    std::snprintf(buf, sizeof buf, "gen-frugal-%016llx-", static_cast<unsigned long long>(r));
    return buf;
}

std::string iso_time(std::int64_t ms)
{
    const std::time_t t = static_cast<std::time_t>(ms / 1000);
    std::tm tm{};
    gmtime_r(&t, &tm);
    char buf[32];
    std::strftime(buf, sizeof buf, "%Y-%m-%dT%H:%M:%SZ", &tm);
    return buf;
}

// The longest model name a stream repeats in its chunks (OpenRouter's ids are under 100 bytes).
constexpr std::size_t max_shown_model = 256;

// A failed chat's outcome in /metrics: the budget's refusal and the budget store's failure
// apart from the upstream's errors, which an operator acts on differently.
std::string_view outcome_of(const error_code& ec)
{
    if (ec == error::budget_exhausted)
        return "budget_denied";
    if (ec == error::budget_store_failed)
        return "budget_store_failed";
    return "error";
}

// The model a stream names in its header and every chunk: the one that answered, as a whole
// answer names it, unless it is a name no model id could be (empty, or longer than any); then
// the tier asked. An upstream cannot multiply a stream's size by its name's.
const std::string& shown_model(const std::string& served, const std::string& asked)
{
    return served.empty() || served.size() > max_shown_model ? asked : served;
}

// A header value from text the upstream sent (a model's name): control characters dropped, so
// a lying upstream cannot end the header and write its own.
std::string header_value(std::string_view text)
{
    std::string out;
    out.reserve(text.size());
    for (const char c : text)
        if (static_cast<unsigned char>(c) >= 0x20 && c != 0x7f)
            out += c;
    return out;
}

// An answer to one request: its status, its extra header lines and its body.
struct reply {
    int status = 200;
    // Always a literal. As a string it was one byte past the short-string room, so every
    // reply, even an empty one swapped in to free a connection's, allocated for it.
    std::string_view content_type = "application/json";
    std::string headers; // "Name: value\r\n" each
    std::string body;
    std::string message; // an error's, for a stream that has started
    bool close = false;
    bool head_only = false; // the answer to HEAD: the head a GET would get, without its body
};

reply error_reply(
    int status,
    std::string_view message,
    std::string_view type,
    std::string_view code,
    std::string_view param = {})
{
    reply r;
    r.status = status;
    r.body = serve::error_body(status, message, type, code, param);
    r.message = std::string(message);
    return r;
}

void append_head(std::string& h, const reply& r, bool keep_alive, bool chunked_stream)
{
    h += "HTTP/1.1 ";
    h += std::to_string(r.status);
    h += ' ';
    h += bhttp::obsolete_reason(bhttp::int_to_status(static_cast<unsigned>(r.status)));
    h += "\r\nServer: frugal\r\nContent-Type: ";
    h += r.content_type;
    h += "\r\n";
    if (chunked_stream)
        h += "Cache-Control: no-cache\r\n";
    else
        h += "Content-Length: " + std::to_string(r.body.size()) + "\r\n";
    h += r.headers;
    h += keep_alive && !r.close ? "Connection: keep-alive\r\n\r\n" : "Connection: close\r\n\r\n";
}

// A client's rpm allowance: a bucket of `rpm` requests refilled continuously over a minute.
struct rpm_bucket {
    double tokens = 0;
    steady_clock::time_point last;
    bool primed = false;
};

// Watches a client's connection while its answer is produced. A client sends nothing then
// but its EOF (it went away) or a pipelined request, whose bytes are kept for the next read.
template <class Stream>
struct disconnect_watch {
    disconnect_watch(Stream& s, beast::flat_buffer& b, asio::cancellation_signal& sig)
        : sock(s), buf(b), request(sig)
    {
    }
    Stream& sock;
    beast::flat_buffer& buf;
    asio::cancellation_signal& request; // stops the request when the client is gone
    asio::cancellation_signal stop_read;
    // What stop_watch waits on while the watch finishes, made then: an open stream's watch
    // holds no timer.
    std::unique_ptr<asio::steady_timer> ended;
    bool running = false;
    bool gone = false;
    bool stopping = false; // a read that completed before the stop must not start another
};

template <class Stream>
asio::awaitable<void> watch(disconnect_watch<Stream>& w)
{
    co_await asio::this_coro::throw_if_cancelled(false);
    while (!w.stopping) {
        // A client that pipelines without end is not read further; its EOF then shows at the
        // next write.
        if (w.buf.size() > 64 * 1024) {
            asio::steady_timer idle(w.sock.get_executor(), steady_clock::time_point::max());
            co_await idle.async_wait(asio::bind_cancellation_slot(w.stop_read.slot(), tuple_awaitable));
            break;
        }
        auto [ec, n] = co_await w.sock.async_read_some(
            w.buf.prepare(256), asio::bind_cancellation_slot(w.stop_read.slot(), tuple_awaitable));
        if (!ec) {
            w.buf.commit(n);
            continue;
        }
        if (ec != asio::error::operation_aborted) {
            w.gone = true;
            w.request.emit(asio::cancellation_type::terminal);
        }
        break;
    }
    w.running = false;
    if (w.ended)
        w.ended->cancel();
}

// Plain TCP: only the socket's readiness is awaited, with no buffer, coroutine or read
// pending; what a readable socket holds is read then, without waiting (the session made the
// socket non-blocking). An open stream's watch is one small wait.
void await_readable(disconnect_watch<tcp::socket>& w)
{
    w.sock.async_wait(
        tcp::socket::wait_read,
        asio::bind_cancellation_slot(w.stop_read.slot(), [&w](error_code ec) {
            auto ended = [&w] {
                w.running = false;
                if (w.ended)
                    w.ended->cancel();
            };
            if (ec == asio::error::operation_aborted || w.stopping)
                return ended();
            if (!ec) {
                const std::size_t n = w.sock.read_some(w.buf.prepare(256), ec);
                w.buf.commit(n);
                if (ec == asio::error::would_block || ec == asio::error::try_again)
                    ec = {};
                else if (!ec && n == 0)
                    ec = asio::error::eof;
            }
            if (ec) {
                w.gone = true;
                w.request.emit(asio::cancellation_type::terminal);
                return ended();
            }
            // A client that pipelines without end is not read further; its EOF then shows at
            // the next write.
            if (w.buf.size() > 64 * 1024)
                return ended();
            await_readable(w);
        }));
}

template <class Stream>
void start_watch(disconnect_watch<Stream>& w)
{
    w.running = true;
    w.stopping = false;
    if constexpr (std::is_same_v<Stream, tcp::socket>) {
        if (w.sock.non_blocking()) {
            await_readable(w);
            return;
        }
    }
    asio::co_spawn(w.sock.get_executor(), watch(w), asio::detached);
}

template <class Stream>
asio::awaitable<void> stop_watch(disconnect_watch<Stream>& w)
{
    if (!w.running)
        co_return;
    w.stopping = true;
    w.stop_read.emit(asio::cancellation_type::terminal);
    if (w.running) {
        w.ended = std::make_unique<asio::steady_timer>(
            w.sock.get_executor(), steady_clock::time_point::max());
        co_await w.ended->async_wait(tuple_awaitable);
    }
}

// A chat request that may be answered: who asks, what for, and the router that answers,
// filled by a plain function (`gateway_impl::admit`). The parsed request is on the heap: a
// streamed answer hands it to the router and frees it at once, so its frames keep none of it.
struct admission {
    std::shared_ptr<const gateway_config> config; // what the request started with, across a reload
    const gateway_key* key = nullptr;
    std::unique_ptr<serve::wire_request> wire;
    std::string model; // as asked: a model id or frugal/POLICY
    std::shared_ptr<router> r;
    cascade_options opts; // the tenant's budget
    std::string rate_key; // the key's hash when it has an rpm
};

template <class Stream>
struct exchange {
    Stream& sock;
    disconnect_watch<Stream>& w;
    asio::cancellation_signal& sig; // stops the router's operation
    admission& a;
    reply& rep; // the connection's, for whatever goes back
    bool keep;
    steady_clock::time_point received;
};

} // namespace

struct gateway_impl : std::enable_shared_from_this<gateway_impl> {
    gateway_impl(asio::any_io_executor ex, gateway_config c, gateway_params p)
        : executor(ex), params(std::move(p)), config(std::make_shared<gateway_config>(std::move(c))),
          acceptor(ex), drained(ex)
    {
        client_params cp;
        cp.base_url = config->base_url;
        cp.api_key = params.api_key;
        cp.ca_file = config->ca_file;
        cp.timeouts.connect = config->connect_timeout;
        cp.timeouts.total = config->upstream_timeout;
        cp.timeouts.first_byte = std::min(cp.timeouts.first_byte, config->upstream_timeout);
        cp.max_connections = config->pool_size;
        cp.user_agent = "frugal-serve/0.1";
        client = std::make_unique<chat_client>(ex, std::move(cp));
    }

    asio::awaitable<error_code> start(diagnostics& diag);
    error_code open_guard(diagnostics& diag);
    error_code check_models(const gateway_config& c, diagnostics& diag) const;
    void build_routers(const gateway_config& c);
    void note_tiers();
    std::shared_ptr<router> passthrough(const std::string& model);
    std::string models_body() const;
    // The listing, built once for each catalog and configuration and each count of models
    // whose bills passed their prices (a set that only grows): not for every request, which
    // with a large catalog would let anyone without a key keep the gateway's thread busy.
    std::string models_listing;
    std::size_t models_listing_unpriced = std::string::npos; // npos: not built
    asio::awaitable<void> accept_loop();
    asio::awaitable<void> session(tcp::socket sock);
    asio::awaitable<void> tls_session(tcp::socket& sock);
    template <class Stream>
    asio::awaitable<void> connection(Stream& sock);
    bool route(const bhttp::request<bhttp::string_body>& req, reply& rep, bool& keep);
    template <class Stream>
    asio::awaitable<bool> read_request(
        Stream& sock,
        beast::flat_buffer& buf,
        bhttp::request<bhttp::string_body>& req,
        reply& rep);
    // Closes the sending side and reads what the client still sends, for a second at most.
    template <class Stream>
    asio::awaitable<void> drain_before_close(Stream& sock, beast::flat_buffer& buf);
    // Who asks, what for, and whether they may: false with the refusal in `rep`.
    bool admit(const bhttp::request<bhttp::string_body>& http_req, admission& a, reply& rep);
    bool within_rate(const admission& a, std::optional<std::int64_t> shared, reply& rep);
    template <class Stream>
    asio::awaitable<bool> chat(
        Stream& sock,
        beast::flat_buffer& buf,
        bhttp::request<bhttp::string_body>& req,
        reply& rep,
        steady_clock::time_point received);
    template <class Stream>
    asio::awaitable<bool> answer_whole(exchange<Stream>& x);
    template <class Stream>
    asio::awaitable<bool> answer_stream(exchange<Stream>& x);
    // A streamed answer's state, and its rendering (plain functions: see answer_stream).
    struct stream_text {
        router* r;
        std::string id;
        std::int64_t created = 0;
        std::string shown_model;
        bool head_sent = false;
    };
    // A stream's head, with the x-frugal headers given and the budget's.
    void append_stream_head(std::string& out, const gateway_key& key, std::string headers);
    void render_stream_chunk(
        std::string& chunk, stream_text& st, const gateway_key& key, const cascade_event& ev);
    // The stream's last bytes into `out`; false when nothing was sent yet and the failure goes
    // as a reply of its own (in `rep`).
    bool render_stream_end(
        std::string& out,
        reply& rep,
        const stream_text& st,
        const admission& a,
        const std::string& cut_reason,
        const error_code& final_ec,
        const cascade_result* result,
        steady_clock::time_point received);
    template <class Stream>
    asio::awaitable<bool> write_reply(Stream& sock, const reply& r, bool keep_alive);
    template <class Stream>
    asio::awaitable<bool> write_all(Stream& sock, const std::string& bytes);
    // Writes `bytes` from `from` on through the stream's operation, under the client deadline.
    template <class Stream>
    asio::awaitable<bool> write_later(Stream& sock, const std::string& bytes, std::size_t from);
    // Writes chunk_scratch(); what the socket does not take now waits in `rest`.
    template <class Stream>
    asio::awaitable<bool> write_chunk(Stream& sock, std::string& rest);
    void arm(tcp::socket& sock, asio::steady_timer& t, std::chrono::milliseconds d);
    std::optional<budget_snapshot> tenant_budget(const std::string& tenant) const;
    void budget_headers(const gateway_key& k, std::string& headers) const;
    reply failure_reply(const error_code& ec, const cascade_result& res, const gateway_key& k) const;
    void count(
        const gateway_key& k,
        const std::string& model,
        std::string_view outcome,
        const cascade_result* res,
        steady_clock::time_point received);
    void request_ended();
    void record_attempt(const attempt_record& r);

    asio::any_io_executor executor;
    gateway_params params;
    std::shared_ptr<const gateway_config> config;
    std::unique_ptr<chat_client> client;
    std::optional<budget_guard> guard;
    price_catalog prices;
    std::vector<model_info> catalog;
    std::map<std::string, std::shared_ptr<router>, std::less<>> policy_routers;
    std::map<std::string, std::shared_ptr<router>, std::less<>> model_routers;
    std::map<std::string, rpm_bucket, std::less<>> buckets; // by key hash
    // The hashes of the keys presented that the configuration holds: a request costs a lookup
    // rather than a SHA-256 (9,500 instructions through OpenSSL's EVP). At most one entry per
    // configured key; emptied on reload.
    struct text_hash {
        using is_transparent = void;
        std::size_t operator()(std::string_view s) const noexcept
        {
            return std::hash<std::string_view>{}(s);
        }
    };
    std::unordered_map<std::string, std::string, text_hash, std::equal_to<>> known_keys;
    const std::string& hash_of(std::string_view presented);
    tcp::acceptor acceptor;
    std::optional<asio::ssl::context> tls; // --tls-cert: HTTPS
    std::uint16_t bound_port = 0;
    bool ready = false;
    bool draining = false;
    bool cancelling = false; // the grace is over: requests still running are cancelled
    std::size_t connections = 0;
    std::size_t in_flight = 0;
    std::set<asio::cancellation_signal*> live; // the requests in flight, to cancel at the grace's end
    asio::steady_timer drained;                // woken as the last request in flight ends
    serve::metrics stats;
    // A streamed answer's id: an OpenAI client keys chunks, logs and retries by it, so it must
    // not repeat across restarts or across the gateways that share one cap.
    std::string id_prefix = stream_id_prefix();
    std::uint64_t next_id = 1;
};

namespace {

// What a finished cascade reports beside its answer: every attempt's tokens and cost, and the
// model that answered (`asked` when the response names none).
serve::wire_totals totals_of(const cascade_result& res, const std::string& asked)
{
    serve::wire_totals t;
    t.model = shown_model(res.response.model, asked); // a header's and the body's: bounded
    t.cost = res.total_cost;
    for (const auto& a : res.attempts) {
        t.prompt_tokens += a.prompt_tokens;
        t.completion_tokens += a.completion_tokens;
    }
    return t;
}

// The policy of a passed-through model: one tier, its answer returned as it is.
cascade_policy single_model(const std::string& model, std::uint32_t max_tokens)
{
    cascade_policy p;
    p.tiers = {model};
    p.escalate_on.clear();
    p.refusal_patterns.clear();
    p.max_tokens = max_tokens;
    p.budget_exhausted = on_budget_exhausted::fail;
    return p;
}

} // namespace

// One cap per tenant with a budget (config.cpp checked that a tenant's keys agree on it).
std::vector<budget_spec> tenant_budgets(const gateway_config& c)
{
    std::vector<budget_spec> out;
    std::set<std::string> seen;
    for (const auto& [hash, k] : c.keys) {
        if (!k.budget || !seen.insert(k.tenant).second)
            continue;
        out.push_back({"tenant:" + k.tenant, *k.budget, k.period});
    }
    return out;
}

error_code gateway_impl::open_guard(diagnostics& diag)
{
    const auto& c = *config;
    budget_params bp;
    bp.budgets = tenant_budgets(c);
    // A guard even with no cap and no ledger: the routers (one per policy, one per model passed
    // through) then draw the free tier from one count, the account's.
    std::shared_ptr<budget_store> store;
    if (!c.ledger.empty()) {
        auto opened = open_sqlite_store({c.ledger}, &diag);
        if (!opened) {
            diag.message = "ledger " + c.ledger + ": " + diag.message;
            return opened.error();
        }
        store = std::move(*opened);
    }
    if (!c.budget_store.empty()) {
        redis_store_params rp;
        rp.url = c.budget_store;
        auto shared = open_redis_store(rp, store, &diag);
        if (!shared) {
            diag.message = "budget_store: " + diag.message;
            return shared.error();
        }
        store = std::move(*shared);
    }
    if (!store)
        store = make_memory_store();
    // The metrics count what the ledger keeps, record by record (counting_store.hpp).
    store = std::make_shared<serve::counting_store>(
        std::move(store), [w = weak_from_this()](const attempt_record& r) {
            if (const auto self = w.lock())
                self->record_attempt(r);
        });
    // A request waits this long for reservations in flight to settle before it is refused.
    bp.max_wait = std::chrono::seconds(5);
    auto opened = budget_guard::open(bp, prices, store, &diag);
    if (!opened)
        return opened.error();
    guard = std::move(*opened);
    (void)guard->annotate(ledger_notes::base_url_key, client->params().base_url);
    return {};
}

error_code gateway_impl::check_models(const gateway_config& c, diagnostics& diag) const
{
    for (const auto& [name, p] : c.policies) {
        for (const auto& tier : p.tiers) {
            if (prices.find(tier) == nullptr) {
                diag.message = "policies." + name + ": tier \"" + tier +
                               "\" is not in the upstream's models catalog";
                return error::bad_policy;
            }
        }
    }
    for (const auto& [hash, k] : c.keys) {
        for (const auto& a : k.allow) {
            if (a == "*" || a.starts_with("frugal/"))
                continue;
            if (prices.find(a) == nullptr) {
                diag.message = "keys[\"sha256:" + hash.substr(0, 12) + "…\"].allow: \"" + a +
                               "\" is not in the upstream's models catalog";
                return error::bad_budget_config;
            }
        }
    }
    return {};
}

void gateway_impl::build_routers(const gateway_config& c)
{
    models_listing_unpriced = std::string::npos; // the policies or the catalog changed
    policy_routers.clear();
    for (const auto& [name, p] : c.policies)
        policy_routers.emplace(name, std::make_shared<router>(*client, p, prices, guard));
    // A passed-through model's router depends on default_max_tokens only.
    model_routers.clear();
    note_tiers();
}

// Each router notes its tiers in the ledger as it opens, for the report's per-tier table and
// its flagship comparison; a gateway runs many. The note says the one policy when there is
// one, else nothing: a report then names each tier by the model asked.
void gateway_impl::note_tiers()
{
    if (!guard)
        return;
    ledger_notes n;
    if (config->policies.size() == 1)
        n.tiers = config->policies.begin()->second.tiers;
    for (const auto& [key, value] : n.format_tiers())
        (void)guard->annotate(key, value);
}

std::shared_ptr<router> gateway_impl::passthrough(const std::string& model)
{
    if (const auto it = model_routers.find(model); it != model_routers.end())
        return it->second;
    if (prices.find(model) == nullptr)
        return nullptr;
    auto r = std::make_shared<router>(
        *client, single_model(model, config->default_max_tokens), prices, guard);
    model_routers.emplace(model, r);
    note_tiers();
    return r;
}

asio::awaitable<error_code> gateway_impl::start(diagnostics& diag)
{
    auto [ec, models] = co_await client->async_models(diag, tuple_awaitable);
    if (ec) {
        diag.message = "the upstream's models catalog (" + client->params().base_url +
                       "): " + (diag.message.empty() ? ec.message() : diag.message);
        co_return ec;
    }
    catalog = std::move(models);
    prices = price_catalog(catalog);
    if (auto e = check_models(*config, diag))
        co_return e;
    if (auto e = open_guard(diag))
        co_return e;
    build_routers(*config);

    error_code bec;
    if (!params.tls_cert.empty() || !params.tls_key.empty()) {
        tls.emplace(asio::ssl::context::tls_server);
        tls->set_options(
            asio::ssl::context::default_workarounds | asio::ssl::context::no_sslv2 |
            asio::ssl::context::no_sslv3 | asio::ssl::context::no_tlsv1 |
            asio::ssl::context::no_tlsv1_1);
        tls->use_certificate_chain_file(params.tls_cert, bec);
        if (bec) {
            diag.message = "--tls-cert " + params.tls_cert + ": " + bec.message();
            co_return bec;
        }
        tls->use_private_key_file(params.tls_key, asio::ssl::context::pem, bec);
        if (bec) {
            diag.message = "--tls-key " + params.tls_key + ": " + bec.message();
            co_return bec;
        }
    }
    const auto address = asio::ip::make_address(params.host, bec);
    if (bec) {
        diag.message = "--host " + params.host + ": " + bec.message();
        co_return bec;
    }
    const tcp::endpoint ep(address, params.port);
    acceptor.open(ep.protocol(), bec);
    if (!bec)
        acceptor.set_option(tcp::acceptor::reuse_address(true), bec);
    if (!bec)
        acceptor.bind(ep, bec);
    if (!bec)
        acceptor.listen(asio::socket_base::max_listen_connections, bec);
    if (bec) {
        diag.message = "cannot listen on " + params.host + ":" + std::to_string(params.port) +
                       ": " + bec.message();
        co_return bec;
    }
    bound_port = acceptor.local_endpoint().port();
    ready = true;
    asio::co_spawn(executor, accept_loop(), asio::detached);
    co_return error_code{};
}

asio::awaitable<void> gateway_impl::accept_loop()
{
    auto self = shared_from_this();
    for (;;) {
        auto [ec, sock] = co_await acceptor.async_accept(tuple_awaitable);
        if (ec == asio::error::operation_aborted || !acceptor.is_open())
            co_return;
        if (ec) {
            // Out of descriptors, most often: wait a moment rather than spin.
            asio::steady_timer t(executor, std::chrono::milliseconds(10));
            co_await t.async_wait(tuple_awaitable);
            continue;
        }
        if (connections >= config->max_connections) {
            error_code ignored;
            sock.close(ignored);
            continue;
        }
        sock.set_option(tcp::no_delay(true), ec);
        if (config->socket_send_buffer_bytes != 0)
            sock.set_option(
                asio::socket_base::send_buffer_size(
                    static_cast<int>(config->socket_send_buffer_bytes)),
                ec);
        asio::co_spawn(executor, session(std::move(sock)), asio::detached);
    }
}

void gateway_impl::arm(tcp::socket& sock, asio::steady_timer& t, std::chrono::milliseconds d)
{
    t.expires_after(d);
    t.async_wait([&sock](error_code ec) {
        if (!ec) {
            error_code ignored;
            sock.shutdown(tcp::socket::shutdown_both, ignored);
            sock.close(ignored);
        }
    });
}

namespace {

// Writes what a plain socket takes now, without waiting (the session made it non-blocking):
// a reply or a stream's chunk nearly always goes whole, with no operation, timer or buffer
// kept for it. Over TLS nothing is written here; the stream's own operation writes it all.
// `failed`: the socket cannot be written to any more.
template <class Stream>
std::size_t write_now(Stream& sock, std::string_view bytes, bool& failed)
{
    failed = false;
    if constexpr (std::is_same_v<Stream, tcp::socket>) {
        if (!sock.non_blocking())
            return 0; // it would wait here
        std::size_t done = 0;
        while (done < bytes.size()) {
            error_code ec;
            done += sock.write_some(asio::buffer(bytes.substr(done)), ec);
            if (ec == asio::error::would_block || ec == asio::error::try_again)
                break;
            if (ec) {
                failed = true;
                break;
            }
        }
        return done;
    } else {
        return 0;
    }
}

// Leaves `x` as new and frees its room: assigning an empty value would not (a string assigned
// an empty one keeps its buffer).
template <class T>
void release_room(T& x)
{
    T gone;
    std::swap(x, gone);
}

// A stream's chunks are rendered here, one at a time, and written at once: the stream keeps no
// buffer of its own between chunks unless its client reads too slowly to take one.
std::string& chunk_scratch()
{
    thread_local std::string s;
    return s;
}

} // namespace

template <class Stream>
asio::awaitable<bool>
gateway_impl::write_later(Stream& sock, const std::string& bytes, std::size_t from)
{
    asio::steady_timer deadline(executor);
    arm(beast::get_lowest_layer(sock), deadline, config->client_timeout);
    auto [ec, n] =
        co_await asio::async_write(sock, asio::buffer(bytes) + from, tuple_awaitable);
    deadline.cancel();
    co_return !ec;
}

template <class Stream>
asio::awaitable<bool> gateway_impl::write_all(Stream& sock, const std::string& bytes)
{
    bool failed = false;
    const std::size_t now = write_now(sock, bytes, failed);
    if (failed)
        co_return false;
    if (now == bytes.size())
        co_return true;
    co_return co_await write_later(sock, bytes, now);
}

template <class Stream>
asio::awaitable<bool> gateway_impl::write_chunk(Stream& sock, std::string& rest)
{
    std::string& chunk = chunk_scratch();
    if constexpr (!std::is_same_v<Stream, tcp::socket>) {
        // Over TLS every chunk goes through the stream's operation: it is written from the
        // stream's own string, whose room is kept for the next chunk, as the scratch's is.
        rest.swap(chunk);
        co_return co_await write_later(sock, rest, 0);
    }
    bool failed = false;
    const std::size_t now = write_now(sock, chunk, failed);
    if (failed)
        co_return false;
    if (now == chunk.size())
        co_return true;
    rest.assign(chunk, now); // the scratch is the next chunk's: what waits is the stream's
    const bool ok = co_await write_later(sock, rest, 0);
    std::string().swap(rest);
    co_return ok;
}

template <class Stream>
asio::awaitable<bool> gateway_impl::write_reply(Stream& sock, const reply& r, bool keep_alive)
{
    const bool again = keep_alive && !r.close; // read now: `r` may change while a write waits
    // Rendered in the per-thread scratch and written as a chunk is: only what the socket does
    // not take at once waits, in `rest`.
    std::string& bytes = chunk_scratch();
    bytes.clear();
    append_head(bytes, r, keep_alive, false);
    if (!r.head_only)
        bytes += r.body;
    std::string rest;
    co_return co_await write_chunk(sock, rest) && again;
}

// Reads one request into `req`. False when the connection is to end: the client left, or its
// request could not be read (then `rep` has gone to it when it can take one). Its own
// coroutine, so that the parser is not in the frame of a connection that streams an answer.
template <class Stream>
asio::awaitable<bool> gateway_impl::read_request(
    Stream& sock,
    beast::flat_buffer& buf,
    bhttp::request<bhttp::string_body>& req,
    reply& rep)
{
    asio::steady_timer deadline(executor);
    // The bytes read and not yet parsed: the head (16 KiB), what a client pipelined while its
    // last answer was written (the watch stops at 64 KiB) and one read. Beast bounds neither a
    // chunk's size line nor the trailers, so without this a client could send one without end
    // and grow the buffer until the process runs out of memory.
    buf.max_size(std::size_t{160} * 1024);
    bhttp::request_parser<bhttp::string_body> parser;
    parser.header_limit(16 * 1024);
    parser.body_limit(config->max_body_bytes);
    arm(beast::get_lowest_layer(sock), deadline, config->client_timeout);
    auto [hec, hn] = co_await bhttp::async_read_header(sock, buf, parser, tuple_awaitable);
    error_code ec = hec;
    if (!ec) {
        // curl and others wait a second for this before sending a body they think large.
        const auto& h = parser.get();
        if (beast::iequals(h[bhttp::field::expect], "100-continue")) {
            if (!co_await write_all(sock, continue_line)) {
                deadline.cancel();
                co_return false;
            }
        }
        auto [bec, bn] = co_await bhttp::async_read(sock, buf, parser, tuple_awaitable);
        ec = bec;
    }
    deadline.cancel();
    if (ec) {
        if (ec == bhttp::error::body_limit) {
            rep = error_reply(
                413,
                "the request body is larger than the gateway's limit of " +
                    std::to_string(config->max_body_bytes) + " bytes",
                "invalid_request_error", "payload_too_large");
            co_await write_reply(sock, rep, false);
        } else if (ec == bhttp::error::header_limit) {
            rep = error_reply(431, "the request's headers are larger than 16 KiB",
                              "invalid_request_error", "headers_too_large");
            co_await write_reply(sock, rep, false);
        } else if (ec == bhttp::error::buffer_overflow) {
            rep = error_reply(
                400,
                "a chunk's size line or the trailers of the request body are "
                "longer than the gateway reads",
                "invalid_request_error", "bad_http");
            co_await write_reply(sock, rep, false);
        } else if (
            ec != bhttp::error::end_of_stream && ec != asio::error::eof &&
            ec != asio::error::operation_aborted && ec != asio::error::bad_descriptor &&
            ec != asio::error::connection_reset && buf.size() > 0) {
            rep = error_reply(400, "malformed HTTP request: " + ec.message(),
                              "invalid_request_error", "bad_http");
            co_await write_reply(sock, rep, false);
        }
        co_return false;
    }
    req = parser.release();
    co_return true;
}

// Serves one connection's requests until it closes.
template <class Stream>
asio::awaitable<void> gateway_impl::connection(Stream& sock)
{
    beast::flat_buffer buf;
    reply rep; // named: GCC 12 copies a temporary in a co_await expression bitwise
    bhttp::request<bhttp::string_body> req;
    bool linger = false;
    for (;;) {
        if (!co_await read_request(sock, buf, req, rep)) {
            linger = true;
            break;
        }
        const auto received = steady_clock::now();
        bool keep = false;
        bool go_on = false;
        if (route(req, rep, keep))
            go_on = co_await chat(sock, buf, req, rep, received);
        else
            go_on = co_await write_reply(sock, rep, keep);
        if (!go_on)
            break;
        // An idle connection keeps neither the request nor the reply.
        release_room(req);
        release_room(rep);
    }
    // A refused request's client may still be sending its body, and a client may have sent
    // bytes after a stream's last answer: closing with unread bytes resets the connection, and
    // the reset can drop the end of what was written before the client read it. So the socket
    // closes its sending side (plain TCP: the client sees the end at once) and reads what is
    // left, for a second at most. Over TLS the end is the TLS close that follows.
    constexpr bool plain = std::is_same_v<Stream, tcp::socket>;
    if constexpr (plain)
        linger = true;
    if (linger && beast::get_lowest_layer(sock).is_open())
        co_await drain_before_close(sock, buf);
}

template <class Stream>
asio::awaitable<void> gateway_impl::drain_before_close(Stream& sock, beast::flat_buffer& buf)
{
    if constexpr (std::is_same_v<Stream, tcp::socket>) {
        error_code ignored;
        sock.shutdown(tcp::socket::shutdown_send, ignored);
    }
    asio::steady_timer deadline(executor);
    arm(beast::get_lowest_layer(sock), deadline, std::chrono::seconds(1));
    for (std::size_t total = 0; total < (std::size_t{64} << 20);) {
        buf.clear();
        auto [rec, n] = co_await sock.async_read_some(buf.prepare(16384), tuple_awaitable);
        if (rec)
            break;
        total += n;
    }
    deadline.cancel();
}

asio::awaitable<void> gateway_impl::session(tcp::socket sock)
{
    auto self = shared_from_this();
    ++connections;
    error_code ignored;
    if (!tls) {
        sock.non_blocking(true, ignored); // for write_now; a failure leaves every write async
        co_await connection(sock);
    } else {
        co_await tls_session(sock); // its own frame: a plain connection's holds no TLS stream
    }
    sock.shutdown(tcp::socket::shutdown_both, ignored);
    sock.close(ignored);
    --connections;
}

asio::awaitable<void> gateway_impl::tls_session(tcp::socket& sock)
{
    // HTTPS: the handshake under the client deadline, and a TLS close at the end, which a
    // stream whose body ends with the connection needs to be seen as complete.
    asio::ssl::stream<tcp::socket&> s(sock, *tls);
    asio::steady_timer deadline(executor);
    arm(sock, deadline, config->client_timeout);
    auto [hec] = co_await s.async_handshake(asio::ssl::stream_base::server, tuple_awaitable);
    deadline.cancel();
    if (!hec) {
        co_await connection(s);
        arm(sock, deadline, std::chrono::seconds(1));
        (void)co_await s.async_shutdown(tuple_awaitable);
        deadline.cancel();
    }
}

std::optional<budget_snapshot> gateway_impl::tenant_budget(const std::string& tenant) const
{
    if (!guard)
        return std::nullopt;
    return guard->snapshot("tenant:" + tenant);
}

namespace {

// What a cap leaves, the reservations in flight taken off.
money left_of(const budget_snapshot& b)
{
    const money left = b.cap - b.committed - b.reserved;
    return left < money() ? money() : left;
}

} // namespace

void gateway_impl::budget_headers(const gateway_key& k, std::string& headers) const
{
    if (!k.budget)
        return;
    if (const auto b = tenant_budget(k.tenant))
        headers += "x-frugal-budget-remaining: " + left_of(*b).to_string() + "\r\n";
}

reply gateway_impl::failure_reply(
    const error_code& ec, const cascade_result& res, const gateway_key& k) const
{
    // The last attempt's account of the failure: the upstream's reason, scrubbed of the key by
    // the client.
    std::string detail;
    for (auto it = res.attempts.rbegin(); it != res.attempts.rend(); ++it)
        if (!it->detail.empty()) {
            detail = it->detail;
            break;
        }
    const std::string why = detail.empty() ? ec.message() : detail;
    if (ec == error::budget_exhausted || ec == error::budget_closed) {
        std::string msg = "the budget of tenant \"" + k.tenant + "\" cannot cover this request";
        if (const auto b = tenant_budget(k.tenant)) {
            msg += ": tenant:" + k.tenant + " has $" + left_of(*b).to_string() + " left of its $" +
                   b->cap.to_string() + " cap";
            if (b->period != budget_period::none)
                msg += " (" + std::string(to_string(b->period)) + ", resets at " +
                       iso_time(period_window_end_ms(b->period, b->window)) + ")";
            else
                msg += " (it does not reset)";
        }
        if (!detail.empty())
            msg += "; " + detail;
        auto r = error_reply(402, msg, "budget_exhausted", "budget_exhausted");
        budget_headers(k, r.headers);
        return r;
    }
    if (ec == error::price_unknown)
        return error_reply(
            400, "frugal cannot bound what this request would cost: " + why,
            "invalid_request_error", "price_unknown");
    if (ec == error::rate_limited) {
        auto r = error_reply(429, "the upstream is rate limiting this model: " + why,
                             "rate_limit_error", "upstream_rate_limited");
        // The wait the attempt that ended the cascade was told (or its free quota needs), in
        // whole seconds rounded up, so that a client's retry does not meet the same 429. Only
        // that attempt's: an earlier tier's wait (a free tier's day) is not this answer's.
        if (!res.attempts.empty() && res.attempts.back().error == error::rate_limited &&
            res.attempts.back().retry_after) {
            const auto ms = std::max<std::int64_t>(res.attempts.back().retry_after->count(), 1);
            r.headers += "Retry-After: " + std::to_string((ms + 999) / 1000) + "\r\n";
        }
        return r;
    }
    if (ec == error::timeout || ec == error::upstream_timeout)
        return error_reply(504, "the upstream did not answer in time: " + why, "upstream_error",
                           "upstream_timeout");
    if (ec == error::bad_request || ec == error::bad_request_body ||
        ec == error::context_length_exceeded)
        return error_reply(400, why, "invalid_request_error", "bad_request");
    if (ec == error::moderation)
        return error_reply(403, why, "invalid_request_error", "moderation");
    if (ec == error::not_found)
        return error_reply(404, why, "invalid_request_error", "model_not_found");
    if (ec == asio::error::operation_aborted)
        return error_reply(503, "the gateway is shutting down and cancelled this request",
                           "server_error", "cancelled");
    if (ec == error::budget_store_failed)
        return error_reply(
            503,
            "the budget store cannot record spend, so a paid request is refused until it "
            "answers: " + why,
            "server_error", "budget_store_unavailable");
    return error_reply(502, "the upstream failed: " + why, "upstream_error", "upstream_error");
}

void gateway_impl::count(
    const gateway_key& k,
    const std::string& model,
    std::string_view outcome,
    const cascade_result* res,
    steady_clock::time_point received)
{
    stats.count_request(k.tenant, model, outcome);
    const double total =
        std::chrono::duration<double>(steady_clock::now() - received).count();
    stats.duration.observe(total);
    double upstream = 0;
    if (res != nullptr) {
        for (const auto& a : res->attempts)
            upstream += static_cast<double>(a.latency_us) / 1e6;
        if (res->budget_denied)
            ++stats.budget_denials[k.tenant];
    }
    stats.added.observe(std::max(0.0, total - upstream));
}

const std::string& gateway_impl::hash_of(std::string_view presented)
{
    static const std::string none;
    if (presented.empty())
        return none;
    if (const auto it = known_keys.find(presented); it != known_keys.end())
        return it->second;
    thread_local std::string unknown;
    unknown = sha256_hex(presented);
    if (!config->keys.contains(unknown))
        return unknown;
    return known_keys.emplace(std::string(presented), std::move(unknown)).first->second;
}

void gateway_impl::record_attempt(const attempt_record& r)
{
    // The tenant is the record's budget key "tenant:NAME" (a gateway charges no other).
    std::string_view tenant = r.keys;
    if (const auto at = tenant.find("tenant:"); at != std::string_view::npos) {
        tenant.remove_prefix(at + 7);
        tenant = tenant.substr(0, tenant.find(' '));
    } else {
        tenant = {};
    }
    auto& s = stats.usage_of(tenant, r.model_asked, to_string(r.outcome));
    ++s.attempts;
    // Why the tier was asked, as the ledger (and `frugal report`) counts escalations: one that
    // failed, or that the budget denied, is one too.
    if (!r.reason.empty())
        ++stats.escalations[r.reason];
    s.prompt_tokens += r.prompt_tokens;
    s.completion_tokens += r.completion_tokens;
    s.cost += r.cost;
}

void gateway_impl::request_ended()
{
    --in_flight;
    if (in_flight == 0)
        drained.cancel();
}

// The answer to any request but a chat, which is a coroutine of its own (`chat`): a plain
// function, so a stream's connection holds no frame for it.
bool gateway_impl::route(const bhttp::request<bhttp::string_body>& req, reply& rep, bool& keep)
{
    keep = req.keep_alive() && !draining;
    const std::string_view target(req.target().data(), req.target().size());
    const std::string_view path = target.substr(0, target.find('?'));
    // The endpoints that are read take GET, and HEAD as HTTP asks of a server (RFC 9110 9.3.2).
    const bool get = req.method() == bhttp::verb::get || req.method() == bhttp::verb::head;
    const bool read_only = path == "/healthz" || path == "/readyz" || path == "/metrics" ||
                           path == std::string(api_prefix) + "/models";
    rep = reply{};
    if (read_only && !get) {
        rep = error_reply(405, "use GET", "invalid_request_error", "method_not_allowed");
        rep.headers = "Allow: GET, HEAD\r\n";
    } else if (path == "/healthz") {
        rep.body = "{\"status\":\"ok\"}";
    } else if (path == "/readyz") {
        rep.status = ready && !draining ? 200 : 503;
        rep.body = ready && !draining ? "{\"status\":\"ready\"}"
                                      : (draining ? "{\"status\":\"draining\"}"
                                                  : "{\"status\":\"starting\"}");
    } else if (path == "/metrics") {
        rep.content_type = "text/plain; version=0.0.4; charset=utf-8";
        serve::price_surprises surprises;
        if (guard) {
            surprises.count = guard->price_anomalies();
            surprises.models = guard->unpriced_models();
        }
        rep.body = stats.render(
            guard ? guard->snapshot() : std::vector<budget_snapshot>{}, surprises);
    } else if (path == std::string(api_prefix) + "/models") {
        const std::size_t unpriced = guard ? guard->unpriced_models().size() : 0;
        if (models_listing_unpriced != unpriced) {
            models_listing = models_body();
            models_listing_unpriced = unpriced;
        }
        rep.body = models_listing;
    } else if (path == std::string(api_prefix) + "/chat/completions") {
        if (req.method() != bhttp::verb::post) {
            rep = error_reply(405, "use POST", "invalid_request_error", "method_not_allowed");
            rep.headers = "Allow: POST\r\n";
        } else if (draining) {
            rep = error_reply(503, "the gateway is shutting down", "server_error", "shutting_down");
            keep = false;
        } else {
            return true;
        }
    } else {
        rep = error_reply(404, "no such endpoint: " + std::string(path), "invalid_request_error",
                          "not_found");
    }
    rep.head_only = req.method() == bhttp::verb::head;
    return false;
}

std::string gateway_impl::models_body() const
{
    // OpenRouter's shape, the members @openrouter/sdk requires included, from the typed rows
    // of the upstream's catalog; then each policy as a model priced at its worst case: every
    // tier asked with the same prompt. What the gateway carries is text, with the members of
    // the chat request it types: the rows say so rather than repeat the upstream's claims.
    std::string out = "{\"data\":[";
    bool first = true;
    std::size_t rows = 0;
    auto row = [&](const std::string& id, const std::string& canonical, const std::string& name,
                   std::int64_t created, std::optional<std::uint64_t> context,
                   std::optional<std::uint64_t> max_out, money prompt, money completion,
                   money request) {
        ++rows;
        out += first ? "{\"id\":" : ",{\"id\":";
        first = false;
        serve::append_json_string(out, id);
        out += ",\"canonical_slug\":";
        serve::append_json_string(out, canonical.empty() ? id : canonical);
        out += ",\"object\":\"model\",\"name\":";
        serve::append_json_string(out, name.empty() ? id : name);
        out += ",\"created\":" + std::to_string(created);
        out += ",\"owned_by\":";
        serve::append_json_string(out, id.substr(0, id.find('/')));
        out += ",\"context_length\":" + (context ? std::to_string(*context) : "null");
        out += ",\"architecture\":{\"modality\":\"text->text\",\"input_modalities\":[\"text\"],"
               "\"output_modalities\":[\"text\"],\"instruct_type\":null}";
        out += ",\"pricing\":{\"prompt\":\"" + prompt.to_string() + "\",\"completion\":\"" +
               completion.to_string() + "\",\"request\":\"" + request.to_string() + "\"}";
        out += ",\"top_provider\":{\"context_length\":" +
               (context ? std::to_string(*context) : "null") + ",\"max_completion_tokens\":" +
               (max_out ? std::to_string(*max_out) : "null") + ",\"is_moderated\":false}";
        out += ",\"per_request_limits\":null,\"default_parameters\":null,\"supported_voices\":null"
               ",\"supported_parameters\":[\"max_tokens\",\"max_completion_tokens\",\"temperature\","
               "\"top_p\",\"seed\",\"stop\",\"response_format\"]";
        out += ",\"links\":{\"details\":";
        serve::append_json_string(out, std::string(api_prefix) + "/models/" + id + "/endpoints");
        out += "}}";
    };
    // Only what the gateway would call: a row it cannot price (a price that does not parse,
    // is negative or unbounded, a model listed twice with two prices, one whose bill passed
    // its prices) is refused to every request, so it is not offered, and a row in the
    // gateway's own `frugal/` namespace is not the upstream's to list.
    const auto unpriced = guard ? guard->unpriced_models() : std::vector<std::string>{};
    auto offered = [&](const model_info& m) {
        const auto* p = prices.find(m.id);
        return p != nullptr && p->known() && !m.id.starts_with("frugal/") &&
               !std::binary_search(unpriced.begin(), unpriced.end(), m.id);
    };
    std::unordered_set<std::string_view> listed;
    for (const auto& m : catalog)
        if (offered(m) && listed.insert(m.id).second)
            row(m.id, m.canonical_slug, m.name, m.created, m.context_length,
                m.max_completion_tokens, m.prompt_price, m.completion_price, m.request_price);
    for (const auto& [name, r] : policy_routers) {
        const auto& tiers = r->policy().tiers;
        money prompt, completion, request;
        std::optional<std::uint64_t> context, max_out;
        std::string label = "frugal cascade:";
        for (const auto& t : tiers) {
            label += (&t == &tiers.front() ? " " : " → ") + t;
            for (const auto& m : catalog) {
                if (m.id != t || !offered(m))
                    continue;
                prompt += m.prompt_price;
                completion += m.completion_price;
                request += m.request_price;
                // The last tier takes what no cheaper one can hold.
                context = m.context_length;
                max_out = m.max_completion_tokens;
                break;
            }
        }
        const std::string id = "frugal/" + name;
        row(id, id, label, 0, context, max_out, prompt, completion, request);
    }
    out += "],\"total_count\":" + std::to_string(rows) + ",\"links\":{\"next\":null}}";
    return out;
}

bool gateway_impl::admit(
    const bhttp::request<bhttp::string_body>& http_req, admission& a, reply& rep)
{
    const auto& cfg = *a.config;
    // Who is asking.
    const auto auth = http_req[bhttp::field::authorization];
    std::string_view presented(auth.data(), auth.size());
    if (presented.size() > 7 && beast::iequals(presented.substr(0, 7), "Bearer "))
        presented.remove_prefix(7);
    else
        presented = {};
    const std::string& hash = hash_of(presented);
    const auto kit = hash.empty() ? cfg.keys.end() : cfg.keys.find(hash);
    if (kit == cfg.keys.end()) {
        stats.count_request("", "", "unauthorized");
        rep = error_reply(
            401,
            presented.empty() ? "an API key is required: Authorization: Bearer KEY"
                              : "unknown API key",
            "invalid_request_error", "invalid_api_key");
        return false;
    }
    const gateway_key& key = kit->second;
    a.key = &key;

    serve::wire_problem why;
    a.wire = std::make_unique<serve::wire_request>();
    if (!serve::parse_chat_body(http_req.body(), *a.wire, why)) {
        stats.count_request(key.tenant, "", "bad_request");
        rep = error_reply(400, why.message, "invalid_request_error", "invalid_request", why.param);
        return false;
    }
    a.model = a.wire->req.model;
    const std::string& model = a.model;
    if (model.starts_with("frugal/")) {
        if (const auto it = policy_routers.find(std::string_view(model).substr(7));
            it != policy_routers.end())
            a.r = it->second;
    } else {
        a.r = passthrough(model);
    }
    if (!a.r) {
        stats.count_request(key.tenant, "", "model_not_found");
        rep = error_reply(404, "the model `" + model + "` does not exist here",
                          "invalid_request_error", "model_not_found", "model");
        return false;
    }
    if (!key.allow.empty() &&
        std::find(key.allow.begin(), key.allow.end(), "*") == key.allow.end() &&
        std::find(key.allow.begin(), key.allow.end(), model) == key.allow.end()) {
        stats.count_request(key.tenant, model, "forbidden");
        rep = error_reply(403, "this key may not call `" + model + "`", "permission_error",
                          "model_not_allowed", "model");
        return false;
    }
    if (key.rpm != 0)
        a.rate_key = hash; // the rate is checked after, by `within_rate`
    a.opts.budget_keys.push_back("tenant:" + key.tenant);
    return true;
}

// A key's rate: `shared`, the fleet's answer through the store (Redis), or none when the store
// shares no rates, and this process counts the key's requests.
bool gateway_impl::within_rate(
    const admission& a, std::optional<std::int64_t> shared, reply& rep)
{
    const gateway_key& key = *a.key;
    long wait_s = 0;
    if (shared) {
        wait_s = static_cast<long>((*shared + 999) / 1000);
    } else {
        auto& b = buckets[a.rate_key];
        const auto now = steady_clock::now();
        const double rate = key.rpm / 60.0; // per second
        if (!b.primed) {
            b.tokens = key.rpm;
            b.primed = true;
        } else {
            b.tokens = std::min<double>(
                key.rpm, b.tokens + rate * std::chrono::duration<double>(now - b.last).count());
        }
        b.last = now;
        if (b.tokens < 1)
            wait_s = static_cast<long>(std::ceil((1 - b.tokens) / rate));
        else
            b.tokens -= 1;
    }
    if (wait_s == 0)
        return true;
    stats.count_request(key.tenant, a.model, "rate_limited");
    rep = error_reply(
        429,
        "this key's limit of " + std::to_string(key.rpm) + " requests a minute is reached; retry in " +
            std::to_string(wait_s) + " s",
        "rate_limit_error", "rate_limited");
    rep.headers = "Retry-After: " + std::to_string(wait_s) + "\r\n";
    return false;
}

template <class Stream>
asio::awaitable<bool> gateway_impl::chat(
    Stream& sock,
    beast::flat_buffer& buf,
    bhttp::request<bhttp::string_body>& http_req,
    reply& rep,
    steady_clock::time_point received)
{
    const bool keep = http_req.keep_alive() && !draining;
    // Whatever this request started with is what it finishes with, across a reload.
    admission a{config};
    bool admitted = admit(http_req, a, rep);
    // The request is read: its text (a prompt can be large) and its fields are not kept for
    // the whole answer.
    release_room(http_req);
    if (admitted && !a.rate_key.empty()) {
        // With a shared store (Redis) the key's rate is the fleet's: several gateways on one
        // cap allow the key its rpm together. Asked without holding the thread on the network.
        std::optional<std::int64_t> shared;
        if (guard) {
            auto [ec, wait] = co_await guard->async_take_rated_request(
                "key:" + a.rate_key, a.key->rpm, tuple_awaitable);
            if (!ec)
                shared = wait;
        }
        admitted = within_rate(a, shared, rep);
        // The wait came before the request counts as in flight: a shutdown that began during
        // it neither waited for it nor can cancel it, so it does not start now.
        if (admitted && draining) {
            admitted = false;
            rep = error_reply(503, "the gateway is shutting down", "server_error", "shutting_down");
        }
    }
    if (!admitted)
        co_return co_await write_reply(sock, rep, keep);

    asio::cancellation_signal sig;
    disconnect_watch<Stream> w(sock, buf, sig);
    // The request counts as in flight (shutdown waits for it, and cancels it at the grace's end)
    // until this frame ends, whichever way it ends.
    struct in_flight_mark {
        gateway_impl& g;
        asio::cancellation_signal* sig;
        in_flight_mark(gateway_impl& gi, asio::cancellation_signal* s) : g(gi), sig(s)
        {
            ++g.in_flight;
            g.live.insert(sig);
        }
        ~in_flight_mark()
        {
            g.live.erase(sig);
            g.request_ended();
        }
        in_flight_mark(const in_flight_mark&) = delete;
        in_flight_mark& operator=(const in_flight_mark&) = delete;
    } mark(*this, &sig);
    // A streamed answer ends its connection unless it fails before its head: the request's read
    // buffer is not kept for a next request. Done before the watch starts, which may read into
    // the buffer (over TLS a read is pending in it from then on).
    if (a.wire->stream && buf.size() == 0)
        buf.shrink_to_fit();
    start_watch(w);

    // Not a conditional expression: GCC 12 evaluates both co_awaits of `c ? co_await a :
    // co_await b`.
    exchange<Stream> x{sock, w, sig, a, rep, keep, received};
    if (a.wire->stream)
        co_return co_await answer_stream(x);
    co_return co_await answer_whole(x);
}

// A whole answer. Its own coroutine, as is a stream's, so that a request's frame holds the
// locals of the one it is.
template <class Stream>
asio::awaitable<bool> gateway_impl::answer_whole(exchange<Stream>& x)
{
    auto& [sock, w, sig, a, rep, keep, received] = x;
    router* r = a.r.get();
    const gateway_key& key = *a.key;
    const std::string& model = a.model;
    auto [ec, res] = co_await r->async_complete(
        std::move(a.wire->req), std::move(a.opts), asio::bind_cancellation_slot(sig.slot(), tuple_awaitable));
    co_await stop_watch(w);
    if (w.gone) {
        count(key, model, "client_gone", &res, received);
        co_return false;
    }
    if (ec) {
        count(key, model, outcome_of(ec), &res, received);
        rep = failure_reply(ec, res, key);
        co_return co_await write_reply(sock, rep, keep);
    }
    count(key, model, "ok", &res, received);
    const auto t = totals_of(res, r->policy().tiers[res.tier]);
    rep = reply{};
    rep.body = serve::encode_completion(res.response, t);
    rep.headers = "x-frugal-model: " + header_value(t.model) + "\r\nx-frugal-escalated: " +
                  (res.escalated ? "true" : "false") + "\r\nx-frugal-cost: " +
                  t.cost.to_string() + "\r\n";
    if (res.budget_denied)
        rep.headers += "x-frugal-budget-denied: true\r\n";
    budget_headers(key, rep.headers);
    co_return co_await write_reply(sock, rep, keep);
}

void gateway_impl::append_stream_head(std::string& out, const gateway_key& key, std::string headers)
{
    reply head;
    head.content_type = "text/event-stream";
    head.headers = std::move(headers);
    budget_headers(key, head.headers);
    // The body ends with the connection: no length is known in advance.
    head.close = true;
    append_head(out, head, false, true);
}

void gateway_impl::render_stream_chunk(
    std::string& chunk, stream_text& st, const gateway_key& key, const cascade_event& ev)
{
    const bool first = !st.head_sent;
    if (first) {
        st.shown_model = shown_model(ev.model, st.r->policy().tiers[ev.tier]);
        append_stream_head(
            chunk, key,
            "x-frugal-model: " + header_value(st.shown_model) + "\r\nx-frugal-escalated: " +
                (ev.tier > 0 ? "true" : "false") + "\r\n" +
                (ev.budget_denied ? "x-frugal-budget-denied: true\r\n" : ""));
        st.head_sent = true;
    }
    serve::append_chunk(chunk, st.id, st.created, st.shown_model, ev.text, first);
}

bool gateway_impl::render_stream_end(
    std::string& out,
    reply& rep,
    const stream_text& st,
    const admission& a,
    const std::string& cut_reason,
    const error_code& final_ec,
    const cascade_result* result,
    steady_clock::time_point received)
{
    const gateway_key& key = *a.key;
    static const cascade_result no_result;
    const cascade_result& res = result != nullptr ? *result : no_result;
    // What the stream spent, as the ledger booked it (an attempt whose bill is unknown at its
    // worst case): its last chunk says so, an error chunk too when the cascade's result is known.
    const std::string& tier = a.r->policy().tiers[res.tier];
    auto t = totals_of(res, tier);
    const serve::wire_totals* spent_if_known = result != nullptr ? &t : nullptr;
    if (!cut_reason.empty()) {
        count(key, a.model, "error", nullptr, received);
        serve::append_stream_error(
            out, st.id, st.created, st.shown_model,
            "the answer was cut (" + cut_reason + ") after part of it was sent", 502,
            spent_if_known);
        return true;
    }
    if (final_ec) {
        count(key, a.model, outcome_of(final_ec), &res, received);
        rep = failure_reply(final_ec, res, key);
        if (!st.head_sent)
            return false; // a reply of its own, with its status
        serve::append_stream_error(
            out, st.id, st.created, st.shown_model, rep.message, rep.status, spent_if_known);
        return true;
    }
    count(key, a.model, "ok", &res, received);
    // One name in a stream: its chunks', else the answer's (within bounds), else the tier's.
    t.model = st.head_sent ? st.shown_model : shown_model(t.model, tier);
    if (!st.head_sent) // no text: nothing was shown yet
        append_stream_head(
            out, key,
            "x-frugal-model: " + header_value(t.model) + "\r\nx-frugal-escalated: " +
                (res.escalated ? "true" : "false") + "\r\nx-frugal-cost: " +
                t.cost.to_string() + "\r\n" +
                (res.budget_denied ? "x-frugal-budget-denied: true\r\n" : ""));
    // The cascade streams text alone; an answer's tool calls come whole with its end.
    if (!res.response.tool_calls.empty())
        serve::append_tool_call_chunk(
            out, st.id, st.created, t.model, res.response.tool_calls, !st.head_sent);
    serve::append_finish(out, st.id, st.created, t.model, res.response.finish_reason, &t);
    return true;
}

// A streamed answer. Whatever does not wait (rendering a chunk, the end) is done in plain
// functions: GCC keeps every local of a coroutine in its frame, and an open stream keeps this
// frame for as long as it is open.
template <class Stream>
asio::awaitable<bool> gateway_impl::answer_stream(exchange<Stream>& x)
{
    auto& [sock, w, sig, a, rep, keep, received] = x;
    // The cheap tier's text is held until it is judged (stream_mode::buffer): an OpenAI client
    // cannot take text back. The head waits for the first text, so a cascade that fails
    // before any still gets its status code.
    cascade_stream stream;
    a.r->start_stream(std::move(a.wire->req), stream_mode::buffer, stream, std::move(a.opts));
    a.wire.reset();
    stream_text st{a.r.get(), id_prefix + std::to_string(next_id++), unix_ms() / 1000};
    bool alive = true;
    std::string out; // what a client too slow to take a chunk at once has still to get
    std::shared_ptr<const cascade_result> result;
    error_code final_ec;
    std::string cut_reason;
    for (;;) {
        // Both are sticky: a signal emitted while this loop was writing reached no operation.
        if (w.gone || cancelling) {
            final_ec = asio::error::operation_aborted;
            break;
        }
        auto [ec, ev] = co_await stream.async_next(asio::bind_cancellation_slot(sig.slot(), tuple_awaitable));
        if (ec || ev.type == cascade_event::kind::done) {
            final_ec = ec;
            result = std::move(ev.result);
            break;
        }
        if (ev.type == cascade_event::kind::escalating && st.head_sent) {
            // The live tier failed after its text was sent, and the cascade would put a lower
            // tier's answer in its place: an OpenAI client cannot take text back, so the
            // stream ends with an error instead.
            cut_reason = to_string(ev.reason);
            break;
        }
        if (ev.type != cascade_event::kind::delta || ev.text.empty())
            continue;
        std::string& chunk = chunk_scratch();
        chunk.clear();
        render_stream_chunk(chunk, st, *a.key, ev);
        if (!co_await write_chunk(sock, out)) {
            alive = false;
            break;
        }
    }
    // Ending the stream's handle stops its producer: an attempt still in flight is abandoned
    // and settled as the library settles any cancelled stream.
    if (!alive || w.gone || cancelling || !cut_reason.empty()) {
        cascade_stream gone = std::move(stream);
    }
    co_await stop_watch(w);
    if (!alive || w.gone) {
        count(*a.key, a.model, "client_gone", result.get(), received);
        co_return false;
    }
    out.clear();
    if (!render_stream_end(out, rep, st, a, cut_reason, final_ec, result.get(), received))
        co_return co_await write_reply(sock, rep, keep);
    co_await write_all(sock, out);
    co_return false;
}

} // namespace detail

gateway::gateway(asio::any_io_executor executor, gateway_config config, gateway_params params)
    : impl_(std::make_shared<detail::gateway_impl>(
          std::move(executor), std::move(config), std::move(params)))
{
}

gateway::~gateway()
{
    error_code ignored;
    impl_->acceptor.close(ignored);
}

void gateway::start_impl(diagnostics& diag, asio::any_completion_handler<void(error_code)> h)
{
    auto impl = impl_;
    asio::co_spawn(
        impl->executor, impl->start(diag),
        [h = std::move(h)](std::exception_ptr ep, error_code ec) mutable {
            if (ep)
                ec = error::server_error;
            std::move(h)(ec);
        });
}

void gateway::shutdown_impl(asio::any_completion_handler<void()> h)
{
    auto impl = impl_;
    asio::co_spawn(
        impl->executor,
        [impl]() -> asio::awaitable<void> {
            impl->draining = true;
            error_code ignored;
            impl->acceptor.close(ignored);
            if (impl->in_flight > 0) {
                impl->drained.expires_after(impl->config->grace);
                co_await impl->drained.async_wait(detail::tuple_awaitable);
            }
            // The grace is over: every request still running is cancelled, and settles.
            impl->cancelling = true;
            for (auto* sig : std::vector<asio::cancellation_signal*>(impl->live.begin(), impl->live.end()))
                sig->emit(asio::cancellation_type::terminal);
            while (impl->in_flight > 0) {
                impl->drained.expires_after(std::chrono::seconds(60));
                co_await impl->drained.async_wait(detail::tuple_awaitable);
            }
            if (impl->guard)
                impl->guard->close();
        },
        [h = std::move(h)](std::exception_ptr) mutable { std::move(h)(); });
}

error_code gateway::reload(gateway_config config, diagnostics* diag)
{
    auto& impl = *impl_;
    diagnostics local;
    diagnostics& d = diag != nullptr ? *diag : local;
    const auto& old = *impl.config;
    auto refuse = [&](const std::string& why) {
        d.message = why + "; nothing was reloaded (restart the gateway to change it)";
        return error_code(error::bad_budget_config);
    };
    if (config.base_url != old.base_url || config.ca_file != old.ca_file ||
        config.upstream_timeout != old.upstream_timeout ||
        config.connect_timeout != old.connect_timeout || config.pool_size != old.pool_size)
        return refuse("the upstream changed (its URL, CA file, timeouts or pool size)");
    if (config.ledger != old.ledger || config.budget_store != old.budget_store)
        return refuse("the ledger or the budget store changed");
    if (auto ec = impl.check_models(config, d))
        return ec;
    // The tenants' caps change in the guard, which counts what a tenant that comes with a cap
    // spent before it; a period that changes is refused there, and then nothing is reloaded.
    if (impl.guard) {
        if (auto ec = impl.guard->set_budgets(detail::tenant_budgets(config), &d)) {
            d.message += "; nothing was reloaded";
            return ec;
        }
    }
    auto next = std::make_shared<gateway_config>(std::move(config));
    impl.config = next;
    impl.build_routers(*next);
    // A reload keeps what each key has used of its rate: emptying the buckets refilled them
    // all, so every SIGHUP let each key send a whole minute's requests again. A key gone or
    // without a limit now loses its bucket; a lower limit caps what the bucket holds.
    for (auto it = impl.buckets.begin(); it != impl.buckets.end();) {
        const auto k = next->keys.find(it->first);
        if (k == next->keys.end() || k->second.rpm == 0) {
            it = impl.buckets.erase(it);
        } else {
            it->second.tokens = std::min<double>(it->second.tokens, k->second.rpm);
            ++it;
        }
    }
    impl.known_keys.clear();
    return {};
}

std::uint16_t gateway::port() const noexcept
{
    return impl_->bound_port;
}

std::string gateway::base_url() const
{
    std::string host = impl_->params.host;
    if (host.find(':') != std::string::npos)
        host = "[" + host + "]";
    return (impl_->params.tls_cert.empty() ? "http://" : "https://") + host + ":" +
           std::to_string(impl_->bound_port) + std::string(detail::api_prefix);
}

} // namespace frugal
