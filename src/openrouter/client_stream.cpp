// The stream: the start-stream operation (a whole exchange with retries that ends at the head of
// an event stream), the stream's state decoding events as the body arrives, the read of the
// next delta, and the chat_stream members.
#include "openrouter/client_impl.hpp"

#include <frugal/sse_parser.hpp>

#include <boost/asio/append.hpp>
#include <boost/asio/bind_cancellation_slot.hpp>
#include <boost/asio/co_spawn.hpp>
#include <boost/asio/compose.hpp>
#include <boost/asio/dispatch.hpp>
#include <boost/asio/post.hpp>
#include <boost/asio/steady_timer.hpp>
#include <boost/asio/system_executor.hpp>
#include <boost/asio/this_coro.hpp>
#include <boost/beast/http/read.hpp>

namespace frugal {

using namespace client_detail;

namespace {

// A stream reports its usage once, in its last chunk; some servers report it in every chunk,
// as it grows. Whichever they do, a later report never lowers the bill an earlier one made:
// each count and the cost are the largest reported, a rejection stays, and BYOK holds only
// when every report says so.
void merge_usage(std::optional<usage>& into, const usage& u)
{
    if (!into) {
        into = u;
        return;
    }
    auto& m = *into;
    m.prompt_tokens = std::max(m.prompt_tokens, u.prompt_tokens);
    m.completion_tokens = std::max(m.completion_tokens, u.completion_tokens);
    m.total_tokens = std::max(m.total_tokens, u.total_tokens);
    if (u.cost && (!m.cost || *u.cost > *m.cost))
        m.cost = u.cost;
    if (m.cost_rejected.empty())
        m.cost_rejected = u.cost_rejected;
    // A count one report left out and a later one gives is given (usage as it grows may lack
    // one at first); a count that was no count stays a rejection.
    const auto missing = [](const std::string& why) {
        return why.ends_with(openrouter::count_missing);
    };
    if (m.tokens_rejected.empty() || (missing(m.tokens_rejected) && !missing(u.tokens_rejected)))
        m.tokens_rejected = u.tokens_rejected;
    if (u.is_byok)
        m.is_byok = m.is_byok.value_or(true) && *u.is_byok;
    const auto larger = [](auto& to, const auto& from) {
        if (from && (!to || *from > *to))
            to = from;
    };
    larger(m.upstream_inference_cost, u.upstream_inference_cost);
    larger(m.cache_write_tokens, u.cache_write_tokens);
    larger(m.cached_tokens, u.cached_tokens);
    larger(m.reasoning_tokens, u.reasoning_tokens);
}

// What a stream grows as it reads, kept per thread when it ends (a few, none holding more than
// 64 KiB), for the next stream to start with: its parser (line and data buffers), its whole
// text and its pending text. Otherwise each would grow from nothing, allocating, stream after
// stream. They are kept by the thread that releases the stream's state, and taken by the one
// that starts a stream: the same thread for a client on one io thread.
class stream_spares {
public:
    struct kept {
        sse_parser parser;
        std::string text, pending;
    };
    // The spares of a parser with limits `p`, or a new parser and empty texts.
    static kept take(const sse_parser_params& p)
    {
        auto* list = kept_here();
        if (list == nullptr)
            return {sse_parser(p), {}, {}};
        auto& k = *list;
        for (auto it = k.rbegin(); it != k.rend(); ++it) {
            if (it->parser.params().max_line_size == p.max_line_size &&
                it->parser.params().max_event_size == p.max_event_size) {
                kept out = std::move(*it);
                k.erase(std::next(it).base());
                return out;
            }
        }
        return {sse_parser(p), {}, {}};
    }
    static void give(sse_parser&& parser, std::string&& text, std::string&& pending) noexcept
    {
        auto* list = kept_here();
        if (list == nullptr ||
            parser.buffered_size() + text.capacity() + pending.capacity() > largest ||
            list->size() >= most)
            return; // freed with their owner
        auto& k = *list;
        try {
            if (k.capacity() == 0)
                k.reserve(most);
            parser.reset();
            text.clear();
            pending.clear();
            k.push_back({std::move(parser), std::move(text), std::move(pending)});
        } catch (...) { // reserve's bad_alloc: they are freed instead
        }
    }

private:
    static constexpr std::size_t most = 8;
    static constexpr std::size_t largest = std::size_t{64} * 1024;
    // This thread's spares, or none once they are destroyed: a stream's state may be
    // released while the thread's or the program's objects are (a client or io_context of
    // static storage, its handlers holding states), and must not touch them then.
    static std::vector<kept>* kept_here() noexcept
    {
        thread_local bool gone = false; // trivially destructible: valid to the thread's end
        struct holder {
            bool& gone;
            std::vector<kept> list;
            ~holder() { gone = true; }
        };
        if (gone)
            return nullptr;
        thread_local holder h{gone, {}};
        return &h.list;
    }
};

} // namespace

struct chat_stream::state : std::enable_shared_from_this<state> {
    std::shared_ptr<client_impl> client;
    http::pool::lease conn; // given back closed if the stream is dropped; its reader feeds us
    sse_parser sse;
    // Decoded and not yet handed out: a read takes everything that arrived since the previous
    // one, so a stream that outpaces its reader costs one completion per batch, not per event.
    chat_delta pending;
    chat_response response;
    std::string model_seen, provider_seen; // as the provider wrote them, before scrubbing
    bool model_changed = false;            // a chunk named another model than one before it
    // The last characters of the text handed out, as the provider sent them (see take()).
    std::string content_tail, reasoning_tail;
    std::vector<std::string> arguments_tails; // by tool call index

    static void
    scrub_piece(const openrouter::key_scrubber& k, std::string& piece, std::string& tail)
    {
        if (piece.empty())
            return;
        constexpr std::size_t keep = openrouter::key_scrubber::window - 1;
        // The next tail, never longer than `keep` (the string's own room: no allocation).
        std::string next;
        if (piece.size() >= keep) {
            next.assign(piece, piece.size() - keep, keep);
        } else {
            const std::size_t from_tail = std::min(tail.size(), keep - piece.size());
            next.assign(tail, tail.size() - from_tail, from_tail);
            next += piece;
        }
        k.scrub_after(piece, tail);
        tail.swap(next);
    }
    frugal::diagnostics diag;
    error_code error; // the stream failed (handed out once the pending deltas are)
    steady_clock::time_point total{};
    std::size_t read_size = min_stream_read; // room given to the next read; adapts to the pace
    bool started = false;
    bool keep_alive = false; // the response allows the connection to be reused
    bool done_seen = false;  // data: [DONE] was read
    bool done = false;       // the caller was told
    bool reading = false;

    ~state()
    {
        abandon();
        stream_spares::give(
            std::move(sse), std::move(response.content), std::move(pending.content));
    }

    // Gives the connection back: reusable only after a clean end of the HTTP message.
    void release(bool reusable) { conn.give_back(reusable); }
    void abandon()
    {
        if (conn) {
            conn->close();
            release(false);
        }
    }
    void fail(error_code ec)
    {
        if (!error)
            error = ec;
        abandon();
    }

    // Body bytes, straight from the connection's read buffer: every event they complete is
    // decoded now (the bytes do not outlive this call) and joined into `pending`.
    void ingest(std::string_view bytes)
    {
        if (error || done_seen)
            return; // after [DONE] only the end of the chunked body may follow
        sse.feed(bytes);
        auto& [decoder, chunk] = scratch();
        while (auto event = sse.next()) {
            if (event->data == "[DONE]") {
                done_seen = true;
                break;
            }
            if (decoder.decode(event->data, chunk)) {
                diag.message = "a stream event is not JSON: " + snippet(event->data);
                error = error::protocol_error;
                break;
            }
            // What the router writes to the ledger before the stream ends: scrubbed as it
            // arrives (rarely: a stream repeats the same values).
            const auto& k = client->scrubber;
            if (response.id.empty() && !chunk.id.empty()) {
                response.id = chunk.id;
                k.scrub(response.id);
                response.created = chunk.created;
                diag.generation_id = response.id;
            }
            if (!chunk.model.empty() && chunk.model != model_seen) {
                model_changed = model_changed || !model_seen.empty();
                model_seen = chunk.model;
                response.model = chunk.model;
                k.scrub(response.model);
            }
            if (!chunk.provider.empty() && chunk.provider != provider_seen) {
                provider_seen = chunk.provider;
                response.provider = diag.provider = chunk.provider;
                k.scrub(response.provider);
                k.scrub(diag.provider);
            }
            if (!chunk.finish_reason.empty() || !chunk.native_finish_reason.empty()) {
                k.scrub(chunk.finish_reason);
                k.scrub(chunk.native_finish_reason);
            }
            if (chunk.error.present || chunk.finish_reason == "error") {
                // OpenRouter reports a failure after the 200 in the stream itself.
                fill(diag, chunk.error.present ? chunk.error : chunk.choice_error);
                scrub(client->scrubber, diag);
                if (diag.message.empty()) {
                    diag.message = "the provider ended the stream with finish_reason \"error\"" +
                                   (chunk.native_finish_reason.empty()
                                        ? std::string()
                                        : " (" + chunk.native_finish_reason + ")");
                }
                response.finish_reason = "error";
                response.native_finish_reason = chunk.native_finish_reason;
                error = error::midstream_error;
                break;
            }
            // A tool call's index is the provider's word, and the response holds a call for
            // each index up to it: one far past any real answer's calls would have it hold
            // billions of empty ones.
            if (const auto far = std::find_if(
                    chunk.tool_calls.begin(), chunk.tool_calls.end(),
                    [](const tool_call_delta& t) { return t.index >= max_stream_tool_calls; });
                far != chunk.tool_calls.end()) {
                diag.message = "a stream's tool call index is " + std::to_string(far->index) +
                               ", past the " + std::to_string(max_stream_tool_calls) +
                               " calls a response may hold";
                error = error::protocol_error;
                break;
            }
            // The usage chunk may repeat the finish choice: the finish reason is set, not counted.
            if (!chunk.finish_reason.empty())
                response.finish_reason = chunk.finish_reason;
            if (!chunk.native_finish_reason.empty())
                response.native_finish_reason = chunk.native_finish_reason;
            if (chunk.usage)
                merge_usage(response.usage, *chunk.usage);
            // Tokens are priced at the model the answer names: one that named two names no
            // model they can be priced at (its cost, when it has one, is still the bill).
            if (model_changed && response.usage && response.usage->tokens_rejected.empty())
                response.usage->tokens_rejected = "the stream named another model part-way";
            response.content += chunk.content;
            response.reasoning += chunk.reasoning;
            response.refusal += chunk.refusal;
            for (const auto& t : chunk.tool_calls) {
                if (response.tool_calls.size() <= t.index)
                    response.tool_calls.resize(t.index + 1);
                auto& call = response.tool_calls[t.index];
                if (!t.id.empty())
                    call.id = t.id;
                if (!t.name.empty())
                    call.name = t.name;
                call.arguments += t.arguments;
            }
            if (!chunk.content.empty() || !chunk.reasoning.empty() || !chunk.tool_calls.empty()) {
                pending.content += chunk.content;
                pending.reasoning += chunk.reasoning;
                for (auto& t : chunk.tool_calls) {
                    auto& list = pending.tool_calls;
                    if (!list.empty() && list.back().index == t.index && t.id.empty() &&
                        t.name.empty())
                        list.back().arguments += t.arguments;
                    else
                        list.push_back(std::move(t));
                }
                ++pending.events;
            }
        }
        if (!error && sse.error()) {
            diag.message = sse.error() == frugal::error::sse_line_too_long
                               ? "a stream line is longer than max_sse_line_size"
                               : "a stream event is larger than max_sse_event_size";
            error = sse.error();
        }
    }

    // What the next read can complete with without reading: pending text, the end, or the
    // failure (after the text decoded before it).
    bool ready() const { return pending.events != 0 || done_seen || error; }

    error_code take(chat_delta& out)
    {
        const auto& k = client->scrubber;
        if (pending.events != 0) {
            // Copied, not moved: the pending strings keep their room for the next read's events,
            // and a delta of a token or two fits in its own strings without a heap allocation.
            out.content.assign(pending.content);
            out.reasoning.assign(pending.reasoning);
            // Swapped: the caller's vector (cleared when its read started) keeps its room
            // for the events of the next read.
            out.tool_calls.swap(pending.tool_calls);
            out.events = pending.events;
            // Room past a kilobyte is given back: ten thousand open streams hold little.
            constexpr std::size_t kept_room = 1024;
            for (std::string* p : {&pending.content, &pending.reasoning}) {
                if (p->capacity() > kept_room)
                    std::string().swap(*p);
                else
                    p->clear();
            }
            pending.tool_calls.clear();
            pending.events = 0;
            if (k) {
                // Each piece is scrubbed with the end of the text shown before it, so a key cut
                // into pieces shows at most a window's worth, however small the pieces.
                scrub_piece(k, out.content, content_tail);
                scrub_piece(k, out.reasoning, reasoning_tail);
                for (auto& t : out.tool_calls) {
                    k.scrub(t.id);
                    k.scrub(t.name);
                    // A call's arguments arrive in pieces, as text does (indices are bounded).
                    if (t.index >= arguments_tails.size())
                        arguments_tails.resize(t.index + 1);
                    scrub_piece(k, t.arguments, arguments_tails[t.index]);
                }
            }
            return {};
        }
        done = true;
        scrub(k, diag);
        scrub(k, response);
        if (error) {
            abandon();
            return error;
        }
        return {}; // [DONE]: an empty delta, and done() is now true
    }
};

namespace {

// The body of the stream's response, straight out of the connection's read buffer.
void ingest(void* stream, std::string_view bytes)
{
    static_cast<chat_stream::state*>(stream)->ingest(bytes);
}

// After [DONE], reads the rest of the HTTP message (the chunked body's end) in the background,
// so the connection can go back to the pool; the caller already has its answer.
void drain(const std::shared_ptr<chat_stream::state>& s)
{
    if (!s->conn)
        return;
    if (s->conn->reader->is_done()) {
        s->release(s->keep_alive && s->conn->buffer.size() == 0);
        return;
    }
    s->client->pool.resume(*s->conn);
    s->conn->arm(
        std::min(steady_clock::now() + s->client->params.timeouts.stall, s->total), "stream end");
    // The read keeps its connection alive even if the stream gives it up meanwhile.
    auto conn = s->conn.shared();
    conn->buffer.max_size(read_buffer_limit(s->client->params.limits.max_header_size));
    bhttp::async_read_some(
        *conn, conn->buffer, *conn->reader, [s, conn](error_code ec, std::size_t) {
            if (!s->conn)
                return;
            if (ec)
                return s->abandon();
            drain(s);
        });
}

// Parses what the buffer already holds, without waiting for the network: the delta handed out
// carries everything that arrived, and the buffer is left empty to be given back between reads
// (a stream held by a slow caller holds no read buffer). Beast's parser takes one element (a
// chunk's size line, its data) per call, so it is called until it asks for more.
void parse_buffered(chat_stream::state& s)
{
    auto& c = *s.conn;
    if (s.error || c.buffer.size() == 0)
        return;
    // An event that failed while these bytes were parsed (a provider's error, a chunk that is
    // not JSON) keeps its message: broken framing after it is not the news.
    if (const error_code ec = c.reader->put_buffered(c.buffer); ec && !s.error) {
        s.diag.message = "the stream's HTTP framing is broken: " + ec.message();
        s.fail(error::stream_truncated);
    }
}

// Takes what a read completes with into `out`; a stream that is done lets its connection drain.
error_code finish_read(const std::shared_ptr<chat_stream::state>& s, chat_delta& out)
{
    const error_code result = s->take(out);
    s->reading = false;
    if (s->done && !result)
        drain(s);
    return result;
}

// One async_read_delta that has to wait for the network: reads until the body yields a delta,
// the end or a failure. A hand-written composed operation: a stream delivers hundreds of deltas.
// `Into`: the delta goes into the caller's (`into`), not to the handler.
template <bool Into>
struct read_delta_op {
    std::shared_ptr<chat_stream::state> s;
    chat_delta* into = nullptr;
    // The connection being read: kept alive here even if the stream abandons it meanwhile.
    std::shared_ptr<http::connection> conn;
    bool reading = false;

    template <class Self>
    void operator()(Self& self, error_code ec = {}, std::size_t n = 0)
    {
        if (reading) {
            reading = false;
            // A read that filled its room asks for more next time; one that used a quarter, less.
            if (n >= s->read_size)
                s->read_size = std::min(s->read_size * 2, max_stream_read);
            else if (n < s->read_size / 4)
                s->read_size = std::max(s->read_size / 2, min_stream_read);
            if (ec) {
                const bool timed_out = conn && conn->timed_out();
                if (ec == asio::error::operation_aborted && !timed_out) {
                    s->fail(ec);
                } else if (timed_out) {
                    s->diag.message = steady_clock::now() >= s->total
                                          ? "the whole-request deadline passed mid-stream"
                                          : "the stream stalled";
                    s->fail(error::timeout);
                } else if (ec == bhttp::error::buffer_overflow) {
                    s->diag.message = "a chunk's size line or the trailers of the stream are "
                                      "longer than max_header_size allows";
                    s->fail(error::stream_truncated);
                } else {
                    s->diag.message = "the connection ended mid-stream: " + ec.message();
                    s->fail(error::stream_truncated);
                }
            }
        }
        // The stream gave its connection up (dropped, moved over, restarted) while this read
        // was under way, and the read had completed without an error before it could see.
        if (!s->ready() && !s->conn)
            s->fail(asio::error::operation_aborted);
        // The body ended without [DONE]: in this read, or with the bytes parsed before it (an
        // event cut short, then the body's last chunk), when no read would ever bring more.
        if (!s->ready() && s->conn && s->conn->reader->is_done()) {
            s->diag.message = "the response body ended without [DONE]";
            s->fail(error::stream_truncated);
        }
        if (!s->ready()) {
            reading = true;
            conn = s->conn.shared();
            // Bytes already buffered (those that came with the head) are parsed before any
            // read; room is made only for a read from the socket.
            if (conn->buffer.size() == 0) {
                s->client->pool.lend_buffer(*conn, 2 * s->read_size);
                conn->buffer.reserve(s->read_size);
            } else if (conn->buffer.capacity() > 2 * s->read_size) {
                // The head's room (4 KiB) around the end of a chunk's framing: a slow stream
                // does not wait with it.
                s->client->pool.lend_buffer(*conn, 2 * s->read_size);
            }
            s->client->pool.resume(*conn);
            conn->arm(
                std::min(steady_clock::now() + s->client->params.timeouts.stall, s->total),
                "stream");
            auto& c = *conn;
            c.buffer.max_size(read_buffer_limit(s->client->params.limits.max_header_size));
            return bhttp::async_read_some(c, c.buffer, *c.reader, std::move(self));
        }
        if (s->conn) {
            s->client->pool.pause(*s->conn); // between reads the caller sets the pace
            parse_buffered(*s);
            if (s->conn)
                s->client->pool.take_buffer(*s->conn);
        }
        if constexpr (Into) {
            self.complete(finish_read(s, *into));
        } else {
            chat_delta delta;
            const error_code result = finish_read(s, delta);
            self.complete(result, std::move(delta));
        }
    }
};

// Completes `h`: called now when it runs on `ex`, where the operation ends (`here`, from
// `detail::runs_on`), else dispatched through its own executor.
template <class Handler, class... Args>
void complete_on(bool here, const asio::any_io_executor& ex, Handler&& h, Args&&... args)
{
    if (here)
        std::move(h)(std::forward<Args>(args)...);
    else
        asio::dispatch(ex, asio::append(std::move(h), std::forward<Args>(args)...));
}

// The handler of a read, as Beast's composed operations need it: they post intermediate steps
// to the handler's executor with blocking.never, which the type-erased any_completion_executor
// of Asio 1.26 cannot take. So the operation runs on the client's executor, and the final
// completion goes to the caller's handler through its own associated executor. `Args`: what
// the read completes with after its error (the delta, or nothing when it went into the
// caller's).
template <class... Args>
struct delta_completion {
    asio::any_completion_handler<void(error_code, Args...)> handler;
    // The client's executor, where the operation runs: held by the client, which the stream's
    // state keeps alive, and not copied into every read that waits.
    const asio::any_io_executor* executor;
    bool here = false; // the handler runs there too (`detail::runs_on`)

    using executor_type = asio::any_io_executor;
    executor_type get_executor() const noexcept { return *executor; }
    using cancellation_slot_type = asio::cancellation_slot;
    cancellation_slot_type get_cancellation_slot() const noexcept
    {
        return asio::get_associated_cancellation_slot(handler);
    }

    void operator()(error_code ec, Args... args)
    {
        complete_on(here, *executor, std::move(handler), ec, std::move(args)...);
    }
};

// Posts `handler`'s completion with `ec` and, when it takes one, `delta`. `here`: the handler
// runs on `ex` (no work guard on its type-erased executor then: it is this one).
template <class... Args>
void post_read(
    const asio::any_io_executor& ex,
    bool here,
    asio::any_completion_handler<void(error_code, Args...)> handler,
    error_code ec,
    chat_delta&& delta)
{
    if constexpr (sizeof...(Args) == 0) {
        if (here)
            asio::post(ex, [h = std::move(handler), ec]() mutable { std::move(h)(ec); });
        else
            asio::post(ex, asio::append(std::move(handler), ec));
    } else if (here) {
        asio::post(ex, [h = std::move(handler), ec, d = std::move(delta)]() mutable {
            std::move(h)(ec, std::move(d));
        });
    } else {
        asio::post(ex, asio::append(std::move(handler), ec, std::move(delta)));
    }
}

// Starts a read of `st` (null: a stream never started) completing `handler` with
// `(error, Args...)`: with the delta, or with nothing when the delta goes into `*into`.
template <class... Args>
void start_read(
    const std::shared_ptr<chat_stream::state>& st,
    chat_delta* into,
    asio::any_completion_handler<void(error_code, Args...)> handler,
    bool here)
{
    constexpr bool to_caller = sizeof...(Args) == 0;
    chat_delta own; // the delta handed over by value
    if (!st || !st->started || st->done || st->reading) {
        // Refused before it started: the caller's delta is left as it was.
        const error_code ec = st && st->reading ? error_code(frugal::error::operation_in_progress)
                                                : error_code(frugal::error::stream_not_readable);
        // A stream that was never started has no executor of its own.
        const auto fallback =
            st ? st->client->executor : asio::any_io_executor(asio::system_executor());
        post_read(fallback, false, std::move(handler), ec, std::move(own));
        return;
    }
    chat_delta& out = to_caller ? *into : own;
    if constexpr (to_caller) { // cleared, its room kept
        out.content.clear();
        out.reasoning.clear();
        out.tool_calls.clear();
        out.events = 0;
    }
    auto& s = *st;
    if (s.ready() || steady_clock::now() >= s.total) {
        // Already decoded (most deltas are: one read brings many events), or past the deadline:
        // complete without touching the network, but never inside this call.
        if (!s.ready()) {
            s.diag.message = "the whole-request deadline passed before this read";
            s.fail(error::timeout);
        }
        const error_code ec = finish_read(st, out);
        post_read(s.client->executor, here, std::move(handler), ec, std::move(own));
        return;
    }
    s.reading = true;
    delta_completion<Args...> completion{std::move(handler), &s.client->executor, here};
    // No work guard of its own: Beast's read below tracks work on the connection's executor,
    // and the completion runs on the client's executor (delta_completion).
    asio::async_compose<delta_completion<Args...>, void(error_code, Args...)>(
        read_delta_op<to_caller>{st, into}, completion);
}

// `body` is the request, encoded before the coroutine starts (a request in the frame would
// take it over Asio's recycling limit); `unsent`, why it could not be encoded (said in the
// stream's diagnostics).
asio::awaitable<std::tuple<error_code, bool>> start_stream_op(
    std::shared_ptr<client_impl> c,
    std::string body,
    error_code unsent,
    std::shared_ptr<chat_stream::state> s,
    bool retry_rate_limited)
{
    co_await asio::this_coro::throw_if_cancelled(false); // as deliver_into: errors, not throws
    diagnostics& diag = s->diag;
    if (c->config_error) {
        diag.message = c->config_detail;
        s->fail(c->config_error);
        s->done = true;
        co_return std::tuple{s->error, false};
    }
    if (unsent) {
        s->fail(unsent);
        s->done = true;
        co_return std::tuple{unsent, false};
    }
    s->total = steady_clock::now() + c->params.timeouts.total;
    diag.request_sent = false;
    for (int attempt = 1;; ++attempt) {
        const bool sent_before = diag.request_sent; // by an earlier attempt
        diag.clear();
        diag.request_sent = sent_before;
        diag.attempts = attempt;
        attempt_state st;
        http::pool::lease conn;
        error_code ec = co_await start_exchange(
            c, "POST", "/chat/completions", &body, "text/event-stream", s->total, false, conn, st,
            diag);
        if (!ec) {
            if (diag.http_status == 200 &&
                conn->head.content_type.starts_with("text/event-stream")) {
                conn->reader->body_into(&ingest, s.get());
                c->pool.pause(*conn); // between reads the caller sets the pace
                c->pool.take_buffer(*conn);
                s->keep_alive = conn->reader->keep_alive();
                s->conn = std::move(conn);
                s->started = true;
                text_spares::give(std::move(body));
                co_return std::tuple{error_code{}, true};
            }
            // An error answer (or a 200 that is not a stream): read it whole, then map it.
            const std::string content_type = conn->head.content_type;
            std::string text;
            ec = co_await finish_whole(c, conn, text, s->total, diag);
            if (!ec)
                ec = response_error(diag.http_status, text, diag);
            if (!ec) {
                ec = error::protocol_error;
                diag.message = "expected an event stream, got " + content_type;
            }
        }
        const auto delay = retry_delay(*c, ec, st, diag, attempt, s->total, retry_rate_limited);
        if (!delay) {
            scrub(c->scrubber, diag);
            s->fail(ec);
            s->done = true;
            co_return std::tuple{ec, false};
        }
        if (const error_code tec = co_await wait_before_retry(c->executor, *delay)) {
            s->fail(tec);
            s->done = true;
            co_return std::tuple{tec, false};
        }
    }
}

} // namespace

namespace {

// A start's stream state: the thread's spares taken, the stream (`slot`) pointed at it, and
// `body` taken as the request; one that could not be encoded (`invalid`) says why in the
// stream's diagnostics, and is `unsent`.
std::shared_ptr<chat_stream::state> begin_stream(
    const std::shared_ptr<client_impl>& c,
    std::shared_ptr<chat_stream::state>& slot,
    std::string& body,
    bool invalid,
    error_code& unsent)
{
    auto s = std::make_shared<chat_stream::state>();
    s->client = c;
    {
        auto spare =
            stream_spares::take({c->params.limits.max_sse_line_size, c->params.limits.max_sse_event_size});
        s->sse = std::move(spare.parser);
        s->response.content = std::move(spare.text);
        s->pending.content = std::move(spare.pending);
    }
    if (slot)
        slot->abandon();
    slot = s;
    if (invalid && !c->config_error) {
        unsent = error::bad_request_body;
        s->diag.message = std::move(body); // what encode found wrong
        body.clear();
    }
    return s;
}

} // namespace

void chat_client::async_start_stream_impl(
    encoded_request req,
    chat_stream* stream,
    asio::any_completion_handler<void(error_code)> handler,
    bool retry_rate_limited,
    bool here)
{
    error_code unsent;
    auto s = begin_stream(impl_, stream->state_, req.body, req.invalid, unsent);
    auto slot = asio::get_associated_cancellation_slot(handler);
    auto ex = impl_->executor;
    asio::co_spawn(
        ex, start_stream_op(impl_, std::move(req.body), unsent, std::move(s), retry_rate_limited),
        asio::bind_cancellation_slot(
            slot, [ex, here, h = std::move(handler)](
                      const std::exception_ptr& ep, std::tuple<error_code, bool> r) mutable {
                error_code ec = std::get<0>(r);
                if (ep)
                    ec = asio::error::no_memory;
                complete_on(here, ex, std::move(h), ec); // co_spawn completes on `ex`
            }));
}

asio::awaitable<std::tuple<error_code>>
chat_client::stream_encoded(encoded_request req, chat_stream* stream, bool retry_rate_limited)
{
    error_code unsent;
    auto s = begin_stream(impl_, stream->state_, req.body, req.invalid, unsent);
    // start_stream_op ends with an error code, never an exception, when it is cancelled: it
    // turns the awaiting thread's throwing off, and the caller's choice is put back after.
    const bool throws = co_await asio::this_coro::throw_if_cancelled();
    error_code ec;
    try {
        ec = std::get<0>(co_await start_stream_op(
            impl_, std::move(req.body), unsent, std::move(s), retry_rate_limited));
    } catch (const std::exception&) {
        ec = asio::error::no_memory; // as the initiating form reports it
    }
    co_await asio::this_coro::throw_if_cancelled(throws);
    co_return std::tuple{ec};
}

chat_stream::chat_stream() = default;
chat_stream::~chat_stream()
{
    // A stream that reached [DONE] may still be reading the end of its HTTP message so that its
    // connection can go back to the pool; any other stream gives its connection up now.
    if (state_ && !state_->done_seen)
        state_->abandon();
}
chat_stream::chat_stream(chat_stream&&) noexcept = default;
chat_stream& chat_stream::operator=(chat_stream&& other) noexcept
{
    if (this != &other) {
        if (state_ && !state_->done_seen)
            state_->abandon();
        state_ = std::move(other.state_);
    }
    return *this;
}

chat_stream::executor_type chat_stream::get_executor() const
{
    return state_ ? state_->client->executor : asio::any_io_executor();
}

bool chat_stream::done() const noexcept
{
    return state_ && state_->done;
}
error_code chat_stream::error() const noexcept
{
    return state_ ? state_->error : error_code();
}

const chat_response& chat_stream::response() const noexcept
{
    static const chat_response empty;
    return state_ ? state_->response : empty;
}

const frugal::diagnostics& chat_stream::diagnostics() const noexcept
{
    static const frugal::diagnostics empty;
    return state_ ? state_->diag : empty;
}

void chat_stream::async_read_delta_impl(
    asio::any_completion_handler<void(error_code, chat_delta)> handler, bool here)
{
    start_read(state_, nullptr, std::move(handler), here);
}

void chat_stream::async_read_delta_impl(
    chat_delta& into, asio::any_completion_handler<void(error_code)> handler, bool here)
{
    start_read(state_, &into, std::move(handler), here);
}

} // namespace frugal
