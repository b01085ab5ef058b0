#include <frugal/sse_parser.hpp>

#include <algorithm>
#include <bit>
#include <cstring>
#include <limits>

#if defined(__SSE2__)
#include <emmintrin.h>
#endif

// Section numbers refer to the WHATWG HTML Living Standard, 9.2 "Server-sent events".

namespace frugal {
namespace {

constexpr std::string_view utf8_bom = "\xEF\xBB\xBF";

// 9.2.6: a line ends at CRLF, LF or CR. Nearly all parse time is spent here, so the scan looks
// at 16 bytes per step for either byte instead of running memchr twice over each line.
const char* find_line_end(const char* p, const char* end) noexcept
{
#if defined(__SSE2__)
    const __m128i cr = _mm_set1_epi8('\r');
    const __m128i lf = _mm_set1_epi8('\n');
    while (end - p >= 16) {
        const __m128i v = _mm_loadu_si128(reinterpret_cast<const __m128i*>(p));
        const auto mask = static_cast<unsigned>(
            _mm_movemask_epi8(_mm_or_si128(_mm_cmpeq_epi8(v, cr), _mm_cmpeq_epi8(v, lf))));
        if (mask != 0)
            return p + std::countr_zero(mask);
        p += 16;
    }
#endif
    for (; p != end; ++p) {
        if (*p == '\r' || *p == '\n')
            return p;
    }
    return end;
}

// std::string grows by doubling, which could take a buffer to twice its limit; this grows it
// the same way but never past `bound`, so the documented memory bound is a real one.
void reserve_bounded(std::string& s, std::size_t needed, std::size_t bound)
{
    if (needed <= s.capacity())
        return;
    std::string grown;
    grown.reserve(std::min(std::max(needed, s.capacity() * 2), std::max(needed, bound)));
    grown.append(s);
    s.swap(grown);
}

void assign_bounded(std::string& s, std::string_view value, std::size_t bound)
{
    reserve_bounded(s, value.size(), bound);
    s.assign(value);
}

// 9.2.6 "retry": only ASCII digits are accepted; an empty value has no integer to interpret.
std::optional<std::uint64_t> parse_retry(std::string_view value) noexcept
{
    if (value.empty())
        return std::nullopt;
    constexpr auto max = std::numeric_limits<std::uint64_t>::max();
    std::uint64_t n = 0;
    for (const char c : value) {
        if (c < '0' || c > '9')
            return std::nullopt;
        const auto digit = static_cast<std::uint64_t>(c - '0');
        n = n > (max - digit) / 10 ? max : n * 10 + digit;
    }
    return n;
}

} // namespace

sse_parser::sse_parser(sse_parser_params params) : params_(params) {}

void sse_parser::feed(std::string_view bytes)
{
    if (ec_)
        return;
    // The caller may reuse the memory of its previous input once it gets new input to us.
    if (data_in_view_)
        take_view_data();

    // 9.2.6: one UTF-8 byte order mark is ignored at the start of the stream, and only there.
    // It may arrive split across inputs, so matched bytes are held until the decision is made.
    if (!bom_done_) {
        while (!bytes.empty() && bom_seen_ < utf8_bom.size()) {
            if (bytes.front() != utf8_bom[bom_seen_]) {
                tail_.append(utf8_bom.data(), bom_seen_);
                bom_done_ = true;
                break;
            }
            ++bom_seen_;
            bytes.remove_prefix(1);
        }
        if (bom_seen_ == utf8_bom.size()) {
            bom_done_ = true;
            consumed_ += utf8_bom.size();
        }
        if (!bom_done_)
            return;
    }

    if (!in_.empty()) {
        // The previous input was not read to the end: keep its rest ahead of the new bytes.
        tail_.erase(0, tail_pos_);
        tail_pos_ = 0;
        tail_.append(in_);
    }
    in_ = bytes;
}

std::optional<sse_event> sse_parser::next()
{
    if (ec_)
        return std::nullopt;
    if (dispatched_) {
        // 9.2.6 "dispatch the event", final step: the buffers start empty for the next event.
        dispatched_ = false;
        data_.clear();
        data_in_view_ = false;
        has_data_ = false;
        type_.clear();
    }

    const std::size_t max_line = params_.max_line_size;
    for (;;) {
        // A CR ended the previous line; if an LF follows, the pair is one line end (9.2.5).
        if (skip_lf_) {
            if (tail_pos_ < tail_.size()) {
                if (tail_[tail_pos_] == '\n') {
                    ++tail_pos_;
                    ++consumed_;
                }
            } else if (!in_.empty()) {
                if (in_.front() == '\n') {
                    in_.remove_prefix(1);
                    ++consumed_;
                }
            } else {
                break;
            }
            skip_lf_ = false;
        }

        std::string_view line;
        bool stable = false;
        if (tail_pos_ < tail_.size()) {
            const char* begin = tail_.data() + tail_pos_;
            const char* end = tail_.data() + tail_.size();
            const char* eol = find_line_end(begin, end);
            if (eol != end) {
                line = {begin, static_cast<std::size_t>(eol - begin)};
                skip_lf_ = *eol == '\r';
                tail_pos_ += line.size() + 1;
            } else {
                // tail_ ends in an unfinished line: complete it from the new input.
                if (in_.empty())
                    break;
                const char* in_eol = find_line_end(in_.data(), in_.data() + in_.size());
                const auto take = static_cast<std::size_t>(in_eol - in_.data());
                const std::size_t length = (tail_.size() - tail_pos_) + take;
                if (length > max_line) {
                    fail(frugal::error::sse_line_too_long);
                    return std::nullopt;
                }
                reserve_bounded(tail_, tail_.size() + take, tail_pos_ + max_line);
                tail_.append(in_.data(), take);
                in_.remove_prefix(take);
                if (in_.empty())
                    break;
                skip_lf_ = in_.front() == '\r';
                in_.remove_prefix(1);
                line = {tail_.data() + tail_pos_, length};
                tail_pos_ = tail_.size();
            }
        } else {
            if (in_.empty())
                break;
            const char* eol = find_line_end(in_.data(), in_.data() + in_.size());
            const auto length = static_cast<std::size_t>(eol - in_.data());
            if (length == in_.size()) {
                // An unfinished line at the end of the input is the only thing ever copied.
                if (length > max_line) {
                    fail(frugal::error::sse_line_too_long);
                    return std::nullopt;
                }
                tail_pos_ = 0;
                assign_bounded(tail_, in_, max_line);
                in_ = {};
                break;
            }
            line = in_.substr(0, length);
            skip_lf_ = *eol == '\r';
            in_.remove_prefix(length + 1);
            stable = true;
        }

        if (line.size() > max_line) {
            fail(frugal::error::sse_line_too_long);
            return std::nullopt;
        }
        auto event = process_line(line, stable);
        if (ec_)
            return std::nullopt;
        consumed_ += line.size() + 1;
        if (tail_pos_ == tail_.size()) {
            // Nothing refers to tail_ any more: process_line copies what it keeps from there.
            tail_.clear();
            tail_pos_ = 0;
        }
        if (event)
            return event;
    }

    // The input is used up. Data still viewed in it is copied, since the caller may now reuse
    // that memory before the event is complete.
    if (data_in_view_)
        take_view_data();
    return std::nullopt;
}

std::optional<sse_event> sse_parser::process_line(std::string_view line, bool stable)
{
    // 9.2.6: an empty line dispatches the event.
    if (line.empty())
        return dispatch();
    // 9.2.6: a line starting with a colon is a comment.
    if (line.front() == ':')
        return std::nullopt;

    std::string_view name;
    std::string_view value;
    // Fast path: nearly every line of an LLM stream is a data line.
    if (line.size() >= 5 && std::memcmp(line.data(), "data:", 5) == 0) {
        name = line.substr(0, 4);
        value = line.substr(5);
    } else if (const auto colon = line.find(':'); colon != std::string_view::npos) {
        name = line.substr(0, colon);
        value = line.substr(colon + 1);
    } else {
        // 9.2.6: a line with no colon is a field name with an empty value.
        name = line;
    }
    // 9.2.6: one space after the colon is not part of the value.
    if (!value.empty() && value.front() == ' ')
        value.remove_prefix(1);

    // 9.2.6 "process the field".
    if (name == "data") {
        append_data(value, stable);
    } else if (name == "event") {
        assign_bounded(type_, value, params_.max_line_size);
    } else if (name == "id") {
        // An id containing U+0000 NULL is ignored.
        if (value.find('\0') == std::string_view::npos) {
            assign_bounded(id_buffer_, value, params_.max_line_size);
            id_changed_ = true;
        }
    } else if (name == "retry") {
        if (auto ms = parse_retry(value))
            retry_ = ms;
    }
    // Any other field is ignored.
    return std::nullopt;
}

std::optional<sse_event> sse_parser::dispatch()
{
    // 9.2.6 "dispatch the event", step 1: the last event ID is set even if nothing is sent.
    if (id_changed_) {
        assign_bounded(last_event_id_, id_buffer_, params_.max_line_size);
        id_changed_ = false;
    }
    // Step 2: an event whose data buffer is empty is not dispatched.
    if (!has_data_) {
        type_.clear();
        return std::nullopt;
    }
    dispatched_ = true;
    return sse_event{
        type_.empty() ? std::string_view("message") : std::string_view(type_),
        data_in_view_ ? data_view_ : std::string_view(data_), last_event_id_};
}

void sse_parser::append_data(std::string_view value, bool stable)
{
    // 9.2.6: the data buffer gains the value and a LF; dispatch drops the final LF. Joining
    // with LF and remembering that a data line was seen gives the same bytes without the
    // extra copy.
    if (!has_data_) {
        if (value.size() > params_.max_event_size) {
            fail(frugal::error::sse_event_too_large);
            return;
        }
        has_data_ = true;
        if (stable) {
            // The only data line of most events is handed out where it lies in the input.
            data_view_ = value;
            data_in_view_ = true;
        } else {
            assign_bounded(data_, value, params_.max_event_size);
        }
        return;
    }
    if (data_in_view_)
        take_view_data();
    const std::size_t size = data_.size() + 1 + value.size();
    if (size > params_.max_event_size) {
        fail(frugal::error::sse_event_too_large);
        return;
    }
    reserve_bounded(data_, size, params_.max_event_size);
    data_.push_back('\n');
    data_.append(value);
}

void sse_parser::take_view_data()
{
    assign_bounded(data_, data_view_, params_.max_event_size);
    data_view_ = {};
    data_in_view_ = false;
}

void sse_parser::fail(frugal::error e)
{
    ec_ = e;
    in_ = {};
    data_view_ = {};
    data_in_view_ = false;
    // A failed parser holds nothing useful; give back what the oversized input made it hold.
    std::string().swap(tail_);
    std::string().swap(data_);
    tail_pos_ = 0;
}

void sse_parser::reset() noexcept
{
    ec_.clear();
    in_ = {};
    tail_.clear();
    tail_pos_ = 0;
    consumed_ = 0;
    data_.clear();
    data_view_ = {};
    data_in_view_ = false;
    has_data_ = false;
    type_.clear();
    id_buffer_.clear();
    last_event_id_.clear();
    id_changed_ = false;
    retry_.reset();
    dispatched_ = false;
    skip_lf_ = false;
    bom_seen_ = 0;
    bom_done_ = false;
}

bool sse_parser::mid_event() const noexcept
{
    if (!in_.empty() || tail_pos_ < tail_.size() || (!bom_done_ && bom_seen_ != 0))
        return true;
    if (dispatched_)
        return false;
    return has_data_ || !type_.empty() || id_changed_;
}

std::size_t sse_parser::buffered_size() const noexcept
{
    return tail_.capacity() + data_.capacity() + type_.capacity() + id_buffer_.capacity() +
           last_event_id_.capacity();
}

} // namespace frugal
