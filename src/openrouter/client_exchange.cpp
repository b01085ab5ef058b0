// The HTTP exchange: one request and its response head over a pooled connection, a whole body,
// the retries around them (with their delays), and the chat operation built on them.
#include "openrouter/client_impl.hpp"

#include <boost/asio/steady_timer.hpp>
#include <boost/asio/write.hpp>
#include <boost/beast/core/read_size.hpp>
#include <boost/beast/http/error.hpp>
#include <boost/beast/http/read.hpp>

#include <array>
#include <charconv>
#include <functional>
#include <iterator>

namespace frugal {

using namespace client_detail;

namespace {

std::string& head_scratch()
{
    thread_local std::string head;
    return head;
}

std::string body_limit_message(std::uint64_t limit)
{
    return "the response body is larger than max_body_size (" + std::to_string(limit) + " bytes)";
}

} // namespace

asio::awaitable<error_code> client_detail::start_exchange(
    std::shared_ptr<client_impl> c,
    std::string_view method,
    std::string_view path,
    const std::string* body,
    std::string_view accept,
    steady_clock::time_point total,
    bool whole,
    http::pool::lease& conn,
    attempt_state& st,
    diagnostics& diag)
{
    const auto& t = c->params.timeouts;
    for (int stale = 0;; ++stale) {
        const std::function<std::shared_ptr<http::connection>()> make = [&c] {
            return c->make_connection();
        };
        if (!c->pool.try_acquire(c->key, make, conn)) {
            if (auto ec = co_await c->pool.acquire(c->key, total, make, conn)) {
                diag.message = ec == error::timeout
                                   ? "no connection became free before the deadline"
                                   : ec.message();
                co_return ec;
            }
        }
        if (!conn.reused()) {
            std::string detail;
            const auto ec =
                co_await conn->establish(c->route, {t.connect, t.tls_handshake, total}, detail);
            if (ec) {
                diag.message = conn->timed_out() ? std::string("timed out: ") + conn->phase() +
                                                       " to " + c->route.target.authority()
                                                 : detail;
                conn.give_back(false);
                co_return ec;
            }
        }
        ++conn->requests;

        // Over plain TCP the head is built in a per-thread string and written at once
        // below: an open stream's connection keeps no copy of it. Over TLS it is written from
        // the connection's own string, whose room outlives the request. Either way, after the
        // first request none allocates.
        std::string& head = conn->encrypted() ? conn->request : head_scratch();
        head.clear();
        head += method;
        head += ' ';
        head += c->base_path;
        head += path;
        head += " HTTP/1.1\r\n";
        head += c->fixed_headers;
        head += "Accept: ";
        head += accept;
        head += "\r\n";
        if (body != nullptr) {
            head += "Content-Type: application/json\r\nContent-Length: ";
            char digits[24];
            const auto end = std::to_chars(std::begin(digits), std::end(digits), body->size()).ptr;
            head.append(digits, end);
            head += "\r\n\r\n";
            // Over plain TCP the body goes from the caller's string in the same write (one
            // writev): the connection keeps no copy of a prompt while its answer streams.
            // Over TLS it joins the head, so that both go in one record.
            if (conn->encrypted())
                head += *body;
        } else {
            head += "\r\n";
        }
        conn->arm(std::min(steady_clock::now() + t.first_byte, total), "waiting for the response");
        std::array<asio::const_buffer, 2> parts{
            asio::buffer(head),
            body != nullptr && !conn->encrypted() ? asio::buffer(*body) : asio::const_buffer()};
        // Almost always the socket takes the whole request now. What it does not take waits
        // in the connection's string (the head's rest) and the caller's body, which outlives
        // the exchange.
        error_code wec;
        if (!conn->encrypted()) {
            const auto n = conn->write_now(parts[0], parts[1], wec);
            const auto in_head = std::min(n, parts[0].size());
            conn->request.assign(head, in_head); // the per-thread head is not kept across a wait
            parts[0] = asio::buffer(conn->request);
            parts[1] += n - in_head;
        }
        if (!wec && parts[0].size() + parts[1].size() > 0) {
            auto [ec, written] = co_await asio::async_write(*conn, parts, tuple_awaitable);
            wec = ec;
            if (!conn->encrypted())
                conn->request.clear(); // what waited is written: the stream keeps none of it
        }
        if (wec) {
            const bool timed_out = conn->timed_out();
            const bool reused = conn.reused();
            conn.give_back(false);
            // A pooled connection the server had closed: no request byte reached a live server,
            // so a fresh connection is safe (and not a retry).
            if (reused && !timed_out && stale < 3)
                continue;
            diag.message = timed_out ? "timed out writing the request"
                                     : "writing the request failed: " + wec.message();
            co_return timed_out ? error_code(error::timeout) : wec;
        }
        st.request_sent = true;
        diag.request_sent = true;

        conn->buffer.max_size(read_buffer_limit(c->params.limits.max_header_size));
        conn->buffer.reserve(whole ? head_reserve : stream_head_reserve);
        // Set before the head is read, so a Content-Length beyond it fails at once. A stream
        // has no overall limit (its lines and events have theirs); Beast's default is 8 MB.
        const auto start_response = [&]() -> http::response_reader& {
            auto& r = conn->start_response();
            r.header_limit(c->params.limits.max_header_size);
            r.body_limit(
                whole ? boost::optional<std::uint64_t>(c->params.limits.max_body_size)
                      : boost::none);
            return r;
        };
        auto& reader = start_response();
        // The head, read in this coroutine as `http::async_read_header` would read it, without
        // its two composed operations around each read (each a work guard: an executor copied,
        // preferred and destroyed, and the handler moved through both).
        error_code rec;
        for (int interim = 0;; ++interim) {
            while (!reader.is_header_done()) {
                if (conn->buffer.size() != 0) {
                    conn->buffer.consume(reader.put(conn->buffer.data(), rec));
                    if (rec != bhttp::error::need_more)
                        break; // the head is done, or the parser failed
                    rec = {};
                }
                const auto room = beast::read_size(conn->buffer, 65536);
                if (room == 0) {
                    rec = bhttp::error::buffer_overflow;
                    break;
                }
                auto [ec, n] =
                    co_await conn->async_read_some(conn->buffer.prepare(room), tuple_awaitable);
                conn->buffer.commit(n);
                if (ec == asio::error::eof) {
                    if (reader.got_some())
                        reader.put_eof(rec); // a head cut short: partial_message
                    else
                        rec = bhttp::error::end_of_stream;
                    break;
                }
                if (ec) {
                    rec = ec;
                    break;
                }
            }
            // An interim response (100 Continue, 103 Early Hints) comes before the final one,
            // which a client reads past (RFC 9110, 15.2). A few at most: a server that sends
            // them without end gets no more reading.
            const int status = conn->head.status;
            if (rec || status < 100 || status >= 200 || status == 101)
                break;
            if (interim == 8) {
                rec = bhttp::error::bad_status;
                break;
            }
            start_response();
        }
        if (rec) {
            const bool timed_out = conn->timed_out();
            if (timed_out) {
                diag.message = "no response within the first-byte deadline";
            } else if (rec == bhttp::error::body_limit) {
                diag.message = body_limit_message(c->params.limits.max_body_size);
            } else if (rec == bhttp::error::header_limit) {
                diag.message = "the response headers are larger than max_header_size (" +
                               std::to_string(c->params.limits.max_header_size) + " bytes)";
            } else {
                diag.message = "reading the response head failed: " + rec.message();
            }
            conn.give_back(false);
            co_return timed_out ? error_code(error::timeout) : rec;
        }
        st.response_started = true;
        const auto& h = conn->head;
        diag.http_status = h.status;
        if (!h.generation_id.empty()) {
            // Written to the ledger before the answer is known (a stream's open reservation).
            diag.generation_id = h.generation_id;
            c->scrubber.scrub(diag.generation_id);
        }
        st.retry_after = parse_retry_after(h.retry_after);
        diag.retry_after = st.retry_after;
        if (!h.rate_limit.empty())
            note_rate_limit(diag, h.rate_limit, h.rate_remaining, h.rate_reset, {}, {});
        co_return error_code{};
    }
}

asio::awaitable<error_code> client_detail::finish_whole(
    std::shared_ptr<client_impl> c,
    http::pool::lease& conn,
    std::string& body,
    steady_clock::time_point total,
    diagnostics& diag)
{
    const auto stall = c->params.timeouts.stall;
    auto& reader = *conn->reader;
    reader.body_into(body, c->params.limits.max_body_size);
    // A small body usually came with the head: parsed here, it needs no read operation.
    error_code ec = reader.put_buffered(conn->buffer);
    while (!ec && !reader.is_done()) {
        conn->arm(std::min(steady_clock::now() + stall, total), "reading the response body");
        conn->buffer.max_size(read_buffer_limit(c->params.limits.max_header_size));
        conn->buffer.reserve(std::min(conn->buffer.size() + read_reserve, conn->buffer.max_size()));
        std::tie(ec, std::ignore) =
            co_await bhttp::async_read_some(*conn, conn->buffer, reader, tuple_awaitable);
    }
    if (ec) {
        const bool timed_out = conn->timed_out();
        if (timed_out) {
            diag.message = steady_clock::now() >= total
                               ? "the whole-request deadline passed while reading the body"
                               : "the response body stalled";
        } else if (ec == bhttp::error::body_limit) {
            diag.message = body_limit_message(c->params.limits.max_body_size);
        } else if (ec == bhttp::error::buffer_overflow) {
            diag.message = "a chunk's size line or the trailers of the response body are longer "
                           "than max_header_size allows";
        } else {
            diag.message = "reading the response body failed: " + ec.message();
        }
        conn.give_back(false);
        co_return timed_out ? error_code(error::timeout) : ec;
    }
    // Reusable only after a clean end: nothing left over that the next response would inherit.
    const bool clean = reader.keep_alive() && conn->buffer.size() == 0;
    conn.give_back(clean);
    co_return error_code{};
}

std::optional<std::chrono::milliseconds> client_detail::retry_delay(
    client_impl& c,
    const error_code& ec,
    const attempt_state& st,
    const diagnostics& diag,
    int attempt,
    steady_clock::time_point total,
    bool retry_rate_limited)
{
    if (ec == error::rate_limited && !retry_rate_limited)
        return std::nullopt;
    const bool complete_response = st.response_started && diag.http_status >= 400;
    const bool before_sent = !st.request_sent;
    const bool sent_no_reply =
        st.request_sent && !st.response_started && c.params.retry.after_request_sent;
    if (!is_retryable(ec) || !(complete_response || before_sent || sent_no_reply) ||
        attempt >= c.params.retry.max_attempts)
        return std::nullopt;
    auto delay = c.backoff(attempt);
    if (st.retry_after)
        delay = std::max(delay, *st.retry_after);
    if (steady_clock::now() + delay >= total)
        return std::nullopt;
    return delay;
}

namespace {

std::vector<std::string>& kept_texts()
{
    thread_local std::vector<std::string> kept;
    return kept;
}

} // namespace

std::string text_spares::take() noexcept
{
    auto& kept = kept_texts();
    if (kept.empty())
        return {};
    std::string s = std::move(kept.back());
    kept.pop_back();
    return s;
}

void text_spares::give(std::string&& s) noexcept
{
    auto& kept = kept_texts();
    if (s.capacity() < 64 || s.capacity() > largest || kept.size() >= most)
        return; // freed with `s`'s owner
    try {
        if (kept.capacity() == 0)
            kept.reserve(most);
        s.clear();
        kept.push_back(std::move(s));
    } catch (...) { // reserve's bad_alloc: the string is freed instead
    }
}

// The timer lives in a frame made only when a request is retried, not in every request's.
asio::awaitable<error_code>
client_detail::wait_before_retry(asio::any_io_executor ex, std::chrono::milliseconds d)
{
    asio::steady_timer timer(ex);
    timer.expires_after(d);
    auto [ec] = co_await timer.async_wait(tuple_awaitable);
    co_return ec;
}

namespace {

// What a request found out goes to the caller (when it asked) with the key scrubbed from it.
void hand_over(const client_impl& c, diagnostics& diag, diagnostics* out)
{
    if (out == nullptr)
        return;
    scrub(c.scrubber, diag);
    *out = std::move(diag);
}

} // namespace

asio::awaitable<std::tuple<error_code, std::string>> client_detail::request_whole(
    std::shared_ptr<client_impl> c,
    std::string_view method,
    std::string_view path,
    std::string body,
    diagnostics* out,
    const generation_hook* on_generation,
    bool retry_rate_limited)
{
    const auto total = steady_clock::now() + c->params.timeouts.total;
    diagnostics diag;
    for (int attempt = 1;; ++attempt) {
        const bool sent_before = diag.request_sent; // by an earlier attempt
        diag.clear();
        diag.request_sent = sent_before;
        diag.attempts = attempt;
        attempt_state st;
        http::pool::lease conn;
        error_code ec = co_await start_exchange(
            c, method, path, method == "POST" ? &body : nullptr, "application/json", total, true,
            conn, st, diag);
        std::string text = text_spares::take();
        if (!ec && on_generation != nullptr && *on_generation && !diag.generation_id.empty()) {
            c->scrubber.scrub(diag.generation_id);
            (*on_generation)(diag.generation_id); // known long before the body ends
        }
        if (!ec) {
            ec = co_await finish_whole(c, conn, text, total, diag);
            if (ec) {
                text.clear(); // a body cut short is no answer
            } else {
                const int status = diag.http_status;
                if (status >= 200 && status < 300) {
                    text_spares::give(std::move(body));
                    hand_over(*c, diag, out);
                    co_return std::tuple{error_code{}, std::move(text)};
                }
                ec = response_error(status, text, diag);
            }
        }
        const auto delay = retry_delay(*c, ec, st, diag, attempt, total, retry_rate_limited);
        if (delay)
            ec = co_await wait_before_retry(c->executor, *delay);
        if (!delay || ec) {
            text_spares::give(std::move(body));
            hand_over(*c, diag, out);
            co_return std::tuple{ec, std::move(text)};
        }
    }
}

namespace {

// Clears an answer for a new one, its strings keeping their room.
void clear_answer(chat_response& r) noexcept
{
    r.id.clear();
    r.model.clear();
    r.provider.clear();
    r.created = 0;
    r.content.clear();
    r.reasoning.clear();
    r.refusal.clear();
    r.tool_calls.clear();
    r.finish_reason.clear();
    r.native_finish_reason.clear();
    r.usage.reset();
}

// The answer of a whole chat request, decoded from its body: synchronous work kept out of
// chat_op's coroutine frame. A frame over Asio's recycling limit (1,020 bytes) is a heap
// allocation per request, and each such allocation also frees one of the thread's cached blocks,
// so one large frame costs the small frames after it theirs too.
//
// Decodes into `response`, which it clears first: a caller's own response keeps its strings'
// room, and no response is moved through the coroutines that await this.
error_code decode_answer(
    const client_impl& c, error_code ec, std::string&& text, diagnostics* out, chat_response& response)
{
    clear_answer(response);
    if (ec) {
        text_spares::give(std::move(text));
        return ec;
    }
    // What decoding finds wrong is news only for a caller who asked for diagnostics.
    diagnostics unused;
    diagnostics& diag = out != nullptr ? *out : unused;
    auto& [decoder, chunk] = scratch();
    if (decoder.decode(text, chunk)) {
        ec = error::protocol_error;
        diag.message = "the response is not a chat completion: " + snippet(text);
    } else if (chunk.error.present) {
        ec = response_error(200, text, diag);
    } else if (chunk.finish_reason == "error" || chunk.choice_error.present) {
        ec = error::provider_error;
        fill(diag, chunk.choice_error);
        if (diag.message.empty()) {
            diag.message = "the provider ended the answer with finish_reason \"error\" (" +
                           chunk.native_finish_reason + ")";
        }
    } else if (!chunk.has_choice) {
        ec = error::protocol_error;
        diag.message = "the response has no choices: " + snippet(text);
    }
    response.id = std::move(chunk.id);
    response.model = std::move(chunk.model);
    response.provider = std::move(chunk.provider);
    response.created = chunk.created;
    response.content = std::move(chunk.content);
    response.reasoning = std::move(chunk.reasoning);
    response.refusal = std::move(chunk.refusal);
    for (auto& t : chunk.tool_calls)
        response.tool_calls.push_back(
            {std::move(t.id), "function", std::move(t.name), std::move(t.arguments)});
    response.finish_reason = std::move(chunk.finish_reason);
    response.native_finish_reason = std::move(chunk.native_finish_reason);
    response.usage = chunk.usage;
    text_spares::give(std::move(text));
    scrub(c.scrubber, response);
    if (out != nullptr) {
        if (ec)
            scrub(c.scrubber, diag);
        if (diag.generation_id.empty())
            diag.generation_id = response.id;
        if (diag.provider.empty())
            diag.provider = response.provider;
    }
    return ec;
}

// The answer handed over: built here, outside chat_op's frame, decoded in the tuple returned
// (a response moved is a score of strings moved).
std::tuple<error_code, chat_response>
answer_of(const client_impl& c, error_code ec, std::string&& text, diagnostics* out)
{
    std::tuple<error_code, chat_response> answer;
    std::get<0>(answer) = decode_answer(c, ec, std::move(text), out, std::get<1>(answer));
    return answer;
}

// What stops a chat before anything is sent (the client's configuration, or a request that
// cannot be encoded, which `body` then explains), told to `*out`; else success.
error_code refused(const client_impl& c, bool invalid, std::string& body, diagnostics* out)
{
    if (!c.config_error && !invalid)
        return {};
    diagnostics diag;
    diag.message = c.config_error ? std::string(c.config_detail) : std::move(body);
    hand_over(c, diag, out);
    return c.config_error ? c.config_error : error_code(error::bad_request_body);
}

} // namespace

asio::awaitable<std::tuple<error_code, chat_response>> client_detail::chat_op(
    std::shared_ptr<client_impl> c,
    std::string body,
    bool invalid,
    diagnostics* out,
    generation_hook on_generation,
    bool retry_rate_limited)
{
    if (const auto ec = refused(*c, invalid, body, out))
        co_return std::tuple{ec, chat_response{}};
    auto result = co_await request_whole(
        c, "POST", "/chat/completions", std::move(body), out, &on_generation, retry_rate_limited);
    co_return answer_of(*c, std::get<0>(result), std::move(std::get<1>(result)), out);
}

asio::awaitable<std::tuple<error_code>> client_detail::chat_into_op(
    std::shared_ptr<client_impl> c,
    std::string body,
    bool invalid,
    diagnostics* out,
    generation_hook on_generation,
    bool retry_rate_limited,
    chat_response& into)
{
    if (const auto ec = refused(*c, invalid, body, out)) {
        clear_answer(into);
        co_return std::tuple{ec};
    }
    auto result = co_await request_whole(
        c, "POST", "/chat/completions", std::move(body), out, &on_generation, retry_rate_limited);
    co_return std::tuple{
        decode_answer(*c, std::get<0>(result), std::move(std::get<1>(result)), out, into)};
}

} // namespace frugal
