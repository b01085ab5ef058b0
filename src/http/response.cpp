#include "http/response.hpp"

#include <boost/beast/core/string.hpp>
#include <boost/beast/http/error.hpp>
#include <boost/beast/http/field.hpp>

#include <algorithm>

namespace frugal::http {

namespace bhttp = boost::beast::http;

void response_head::clear() noexcept
{
    status = 0;
    content_type.clear();
    generation_id.clear();
    retry_after.clear();
    rate_limit.clear();
    rate_remaining.clear();
    rate_reset.clear();
}

response_reader::response_reader(response_head& head) noexcept : head_(head)
{
    head_.clear();
}

void response_reader::body_into(std::string& out, std::uint64_t limit) noexcept
{
    out_ = &out;
    limit_ = limit;
    sink_ = nullptr;
}

// Beast's parser takes one element (the head, a chunk's size line, its data) per call.
boost::system::error_code response_reader::put_buffered(boost::beast::flat_buffer& buffer)
{
    error_code ec;
    while (buffer.size() != 0 && !is_done()) {
        const std::size_t used = put(buffer.data(), ec);
        buffer.consume(used);
        if (ec == boost::beast::http::error::need_more)
            return {};
        if (ec || used == 0)
            return ec;
    }
    return ec;
}

void response_reader::body_into(sink to, void* context) noexcept
{
    out_ = nullptr;
    sink_ = to;
    context_ = context;
}

void response_reader::on_request_impl(bhttp::verb, string_view, string_view, int, error_code& ec)
{
    ec = bhttp::error::bad_method; // a response parser never sees a request line
}

void response_reader::on_response_impl(int code, string_view, int, error_code& ec)
{
    head_.status = code;
    ec = {};
}

void response_reader::on_field_impl(
    bhttp::field f, string_view name, string_view value, error_code& ec)
{
    ec = {};
    std::string* to = nullptr;
    if (f == bhttp::field::content_type) {
        to = &head_.content_type;
    } else if (f == bhttp::field::retry_after) {
        to = &head_.retry_after;
    } else if (f == bhttp::field::unknown && name.size() > 2 && (name[0] | 0x20) == 'x') {
        using boost::beast::iequals;
        if (iequals(name, "X-Generation-Id"))
            to = &head_.generation_id;
        else if (iequals(name, "X-RateLimit-Limit"))
            to = &head_.rate_limit;
        else if (iequals(name, "X-RateLimit-Remaining"))
            to = &head_.rate_remaining;
        else if (iequals(name, "X-RateLimit-Reset"))
            to = &head_.rate_reset;
    }
    if (to != nullptr && to->empty())
        to->assign(value.data(), value.size());
}

void response_reader::on_header_impl(error_code& ec)
{
    ec = {};
}

std::uint64_t response_reader::room() const noexcept
{
    return limit_ - std::min<std::uint64_t>(limit_, out_->size());
}

void response_reader::on_body_init_impl(
    const boost::optional<std::uint64_t>& content_length, error_code& ec)
{
    ec = {};
    if (out_ == nullptr || !content_length)
        return;
    if (*content_length > room()) {
        ec = bhttp::error::body_limit;
        return;
    }
    out_->reserve(out_->size() + static_cast<std::size_t>(*content_length));
}

std::size_t response_reader::take(string_view bytes, error_code& ec)
{
    ec = {};
    if (out_ != nullptr) {
        if (bytes.size() > room()) {
            ec = bhttp::error::body_limit;
            return 0;
        }
        out_->append(bytes.data(), bytes.size());
    } else if (sink_ != nullptr) {
        sink_(context_, {bytes.data(), bytes.size()});
    }
    return bytes.size();
}

std::size_t response_reader::on_body_impl(string_view body, error_code& ec)
{
    return take(body, ec);
}

void response_reader::on_chunk_header_impl(std::uint64_t, string_view, error_code& ec)
{
    ec = {};
}

std::size_t response_reader::on_chunk_body_impl(std::uint64_t, string_view body, error_code& ec)
{
    return take(body, ec);
}

void response_reader::on_finish_impl(error_code& ec)
{
    ec = {};
}

} // namespace frugal::http
