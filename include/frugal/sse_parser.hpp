#ifndef FRUGAL_SSE_PARSER_HPP
#define FRUGAL_SSE_PARSER_HPP

/// @file
/// A sans-io parser for `text/event-stream` (Server-Sent Events).
///
/// The parser implements the WHATWG HTML Standard, section 9.2.6 "Parsing an event stream" and
/// 9.2.7 "Interpreting an event stream", byte for byte. It performs no I/O and includes no
/// Asio, so it can be driven by any transport, a file, or a test.

#include <frugal/error.hpp>

#include <boost/system/error_code.hpp>

#include <cstddef>
#include <cstdint>
#include <optional>
#include <string>
#include <string_view>
#include <type_traits>

namespace frugal {

/// Limits that bound an `sse_parser`'s memory.
struct sse_parser_params {
    /// The longest line accepted, in bytes, not counting its line end. A longer line fails the
    /// parser with `error::sse_line_too_long` as soon as its length is known to exceed this,
    /// before the line is complete.
    std::size_t max_line_size = std::size_t{8} * 1024 * 1024;

    /// The largest data buffer one event may build, in bytes: the values of all its `data`
    /// lines and the line feeds that join them. A larger one fails the parser with
    /// `error::sse_event_too_large`.
    std::size_t max_event_size = std::size_t{8} * 1024 * 1024;
};

/// One dispatched event.
///
/// The views stay valid until the next call to `sse_parser::next`, `feed` or `reset`. `data`
/// may point into the bytes most recently passed to `feed`.
struct sse_event {
    /// The event type: the last `event` field's value, or `"message"` when there was none or
    /// it was empty.
    std::string_view type;

    /// The data buffer: each `data` line's value, joined with `'\n'`, without a final `'\n'`.
    std::string_view data;

    /// The stream's last event ID at the moment of dispatch. It persists across events until
    /// an `id` field changes it, and is empty if no `id` field was ever accepted.
    std::string_view id;
};

/// An incremental parser for an event stream.
///
/// Bytes go in with `feed`; complete events come out, one per call, from `next`. Any split of
/// the input, down to one byte at a time, yields the same events as the whole input at once.
///
/// The parser works on bytes. Field names, colons and line ends are ASCII, so UTF-8 needs no
/// decoding to be split correctly; `data`, `type` and `id` are handed out as the raw bytes of
/// the stream (after the leading UTF-8 byte order mark, which is removed). A consumer that
/// needs text decodes them as UTF-8, as the specification's decoder does.
///
/// @par Memory
/// `feed` does not copy its argument; the parser keeps a view of it and copies only a line
/// that is still unfinished when that input runs out. However the input is split, the
/// parser's own buffers (unfinished line, data, event type, ID buffer, last event ID) never
/// hold more than `max_event_size + 4 * max_line_size` bytes; `buffered_size()` reports what
/// they hold. Buffers are reused: after the first few events, parsing allocates nothing.
///
/// @par Errors
/// A breached limit fails the parser: `next` returns no event and `error()` reports
/// `error::sse_line_too_long` or `error::sse_event_too_large` until `reset()`.
///
/// @par Thread safety
/// Distinct objects: safe. Shared objects: unsafe.
///
/// @par Example
/// @code
/// frugal::sse_parser parser;
/// parser.feed(chunk);
/// while (auto event = parser.next())
///     handle(event->type, event->data);
/// if (parser.error())
///     fail(parser.error());
/// @endcode
class sse_parser {
public:
    /// Constructs a parser with the given limits.
    explicit sse_parser(sse_parser_params params = {});

    /// Hands the parser the next piece of the stream.
    ///
    /// @param bytes The next bytes of the stream. They are not copied: they must remain valid
    /// and unchanged until `next()` has returned no event, or until `reset()`. (If `feed` is
    /// called before the previous input was read to the end, its unread rest is copied
    /// instead.)
    void feed(std::string_view bytes);

    /// A temporary string would die while the parser still reads it: rejected at compile time.
    template <class String>
    requires std::is_same_v<String, std::string>
    void feed(String&& temporary) = delete;

    /// Returns the next complete event, or no event when the input fed so far holds no further
    /// complete event or the parser has failed; `error()` tells the two apart.
    std::optional<sse_event> next();

    /// The error that failed the parser, or an empty code.
    const boost::system::error_code& error() const noexcept { return ec_; }

    /// Returns the parser to its initial state: no input, no pending event, no last event ID,
    /// no reconnection time, no error. Buffers keep their capacity.
    void reset() noexcept;

    /// The stream's last event ID, as set by the most recent dispatch.
    std::string_view last_event_id() const noexcept { return last_event_id_; }

    /// The reconnection time in milliseconds, once a valid `retry` field has set it.
    /// Values beyond 2^64-1 saturate.
    std::optional<std::uint64_t> retry() const noexcept { return retry_; }

    /// Whether the input so far ends inside an event: an unfinished line, or fields not yet
    /// dispatched by a blank line. At the end of a stream such an event is discarded.
    bool mid_event() const noexcept;

    /// How many bytes of the stream have been consumed as complete lines (the BOM included).
    /// When the parser fails, this is the offset of the line that broke the limit.
    std::uint64_t bytes_consumed() const noexcept { return consumed_; }

    /// Bytes held in the parser's own buffers (unfinished line, data, type, IDs): a bound
    /// for callers that account for memory per stream.
    std::size_t buffered_size() const noexcept;

    /// The limits this parser was constructed with.
    const sse_parser_params& params() const noexcept { return params_; }

private:
    std::optional<sse_event> process_line(std::string_view line, bool stable);
    std::optional<sse_event> dispatch();
    void append_data(std::string_view value, bool stable);
    void take_view_data();
    void fail(frugal::error e);

    sse_parser_params params_;
    boost::system::error_code ec_;

    std::string_view in_;        // unread part of the caller's latest input
    std::string tail_;           // unfinished line carried from earlier input
    std::size_t tail_pos_ = 0;   // start of the unread part of tail_
    std::uint64_t consumed_ = 0; // stream offset of the first byte not yet consumed

    std::string data_;           // data buffer, used when data_view_ cannot be
    std::string_view data_view_; // zero-copy data: the only data line, inside in_
    bool data_in_view_ = false;
    bool has_data_ = false;     // a data field was seen since the last dispatch
    std::string type_;          // event type buffer
    std::string id_buffer_;     // last event ID buffer (9.2.6: survives dispatch)
    std::string last_event_id_; // last event ID string, set at dispatch
    bool id_changed_ = false;
    std::optional<std::uint64_t> retry_;

    bool dispatched_ = false;    // the previous next() handed out an event
    bool skip_lf_ = false;       // previous line ended with CR: a following LF belongs to it
    unsigned char bom_seen_ = 0; // bytes of the UTF-8 BOM matched so far
    bool bom_done_ = false;      // the stream's first bytes have been checked for a BOM
};

} // namespace frugal

#endif // FRUGAL_SSE_PARSER_HPP
