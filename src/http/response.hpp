#ifndef FRUGAL_HTTP_RESPONSE_HPP
#define FRUGAL_HTTP_RESPONSE_HPP

// The response side of an exchange: Beast's HTTP/1.1 parser (framing, chunked coding, limits,
// keep-alive) with a handler that keeps only the head fields the client reads and hands the body
// to a string or to a sink. Beast's own `parser<>` allocates a node per header field, a reason
// string and a parser object per response; this one lives in its connection and, once the
// connection has carried a response, allocates nothing.

#include <boost/beast/core/flat_buffer.hpp>
#include <boost/beast/http/basic_parser.hpp>

#include <cstdint>
#include <string>
#include <string_view>

namespace frugal::http {

/// The head fields the client reads; the rest are parsed (for framing) and dropped.
/// A field sent twice keeps its first value, as Beast's `fields::operator[]` does.
struct response_head {
    int status = 0;
    std::string content_type;
    std::string generation_id;  // X-Generation-Id
    std::string retry_after;    // Retry-After
    std::string rate_limit;     // X-RateLimit-Limit
    std::string rate_remaining; // X-RateLimit-Remaining
    std::string rate_reset;     // X-RateLimit-Reset

    /// Empties every field and keeps its room.
    void clear() noexcept;
};

class response_reader final : public boost::beast::http::basic_parser<false> {
public:
    /// Bytes of the body, valid only during the call.
    using sink = void (*)(void* context, std::string_view bytes);

    /// Starts a response whose head goes to `head` (cleared now).
    explicit response_reader(response_head& head) noexcept;

    /// Where the body goes, said once the head is read (`async_read_header` stops there, so
    /// no body byte passes before it has somewhere to go). Not eager: with Beast's
    /// `async_read_some`, an eager parser that ends on a chunk boundary asks for more and the
    /// read waits for the next chunk, which would hold a stream's tokens back.
    ///
    /// The body is appended to `out`; more than `limit` bytes fail with `error::body_limit`
    /// (a Content-Length beyond it, at once).
    void body_into(std::string& out, std::uint64_t limit) noexcept;
    /// The body goes to `to`, with no limit of its own (a stream's lines and events have theirs).
    void body_into(sink to, void* context) noexcept;

    /// Parses what `buffer` already holds, consuming it, until the parser wants more bytes or
    /// the message is done: what `async_read_some` would do with them, without its turn of the
    /// scheduler (a whole small body usually arrives with its head). Never `need_more`.
    boost::system::error_code put_buffered(boost::beast::flat_buffer& buffer);

private:
    using error_code = boost::system::error_code;
    using string_view = boost::beast::string_view;

    void
    on_request_impl(boost::beast::http::verb, string_view, string_view, int, error_code&) override;
    void on_response_impl(int code, string_view, int, error_code& ec) override;
    void on_field_impl(
        boost::beast::http::field f, string_view name, string_view value, error_code& ec) override;
    void on_header_impl(error_code& ec) override;
    void on_body_init_impl(
        const boost::optional<std::uint64_t>& content_length, error_code& ec) override;
    std::size_t on_body_impl(string_view body, error_code& ec) override;
    void on_chunk_header_impl(std::uint64_t size, string_view extensions, error_code& ec) override;
    std::size_t on_chunk_body_impl(std::uint64_t remain, string_view body, error_code& ec) override;
    void on_finish_impl(error_code& ec) override;

    std::size_t take(string_view bytes, error_code& ec);
    // What the whole body may still grow by.
    std::uint64_t room() const noexcept;

    response_head& head_;
    std::string* out_ = nullptr;
    std::uint64_t limit_ = 0;
    sink sink_ = nullptr;
    void* context_ = nullptr;
};

} // namespace frugal::http

#endif // FRUGAL_HTTP_RESPONSE_HPP
