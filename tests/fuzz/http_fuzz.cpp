// Fuzz target for the response parser each connection keeps (src/http/response.cpp): whatever
// a hostile server sends, fed in pieces whose size the first byte picks, to a whole body with a
// limit or to a stream's sink (the second byte picks), the body by `put` or, as the client does
// with bytes already read, by `put_buffered` (the second byte again). Besides not crashing,
// leaking or reading out of bounds, a whole body never grows past its limit, `put_buffered`
// never reports `need_more`, and the head holds only what a response can say.
#include "http/response.hpp"

#include <boost/asio/buffer.hpp>
#include <boost/beast/core/flat_buffer.hpp>
#include <boost/beast/http/error.hpp>

#include <cstdint>
#include <cstdlib>
#include <cstring>
#include <string>
#include <string_view>

namespace {

void require(bool ok)
{
    if (!ok)
        std::abort();
}

void count(void* total, std::string_view bytes)
{
    *static_cast<std::size_t*>(total) += bytes.size();
}

} // namespace

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size)
{
    if (size < 2)
        return 0;
    const std::size_t piece = 1 + data[0] % 64;
    const bool stream = (data[1] & 1) != 0;
    const bool buffered = (data[1] & 2) != 0;
    const std::uint64_t limit = 1 + std::uint64_t{data[1]} * 8;
    const std::string_view bytes(reinterpret_cast<const char*>(data + 2), size - 2);

    frugal::http::response_head head;
    frugal::http::response_reader reader(head);
    reader.header_limit(2048);
    reader.body_limit(stream ? boost::none : boost::optional<std::uint64_t>(limit));
    std::string body;
    std::size_t streamed = 0;
    bool sink_set = false;
    std::string pending;
    boost::beast::flat_buffer read;
    boost::system::error_code ec;
    for (std::size_t at = 0; at < bytes.size() && !ec && !reader.is_done(); at += piece) {
        pending.append(bytes.substr(at, piece));
        for (std::size_t used = 1; used != 0 && !pending.empty() && !reader.is_done();) {
            // Where the body goes is said once the head is read, as the client does.
            if (!sink_set && reader.is_header_done()) {
                if (stream)
                    reader.body_into(&count, &streamed);
                else
                    reader.body_into(body, limit);
                sink_set = true;
            }
            if (buffered && sink_set) {
                // What is left of a piece is kept in the buffer for the next one.
                const auto room = read.prepare(pending.size());
                std::memcpy(room.data(), pending.data(), pending.size());
                read.commit(pending.size());
                pending.clear();
                ec = reader.put_buffered(read);
                require(ec != boost::beast::http::error::need_more);
                break;
            }
            ec = {};
            used = reader.put(boost::asio::buffer(pending), ec);
            pending.erase(0, used);
            if (ec == boost::beast::http::error::need_more)
                ec = {};
            else if (ec)
                break;
        }
    }
    if (!ec && !reader.is_done() && reader.is_header_done()) {
        if (!sink_set) {
            if (stream)
                reader.body_into(&count, &streamed);
            else
                reader.body_into(body, limit);
        }
        reader.put_eof(ec);
    }
    require(body.size() <= limit);
    require(head.status >= 0 && head.status <= 999);
    require(head.content_type.size() <= 2048 && head.generation_id.size() <= 2048);
    (void)streamed;
    return 0;
}
