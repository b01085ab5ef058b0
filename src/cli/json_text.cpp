#include "cli/json_text.hpp"

#include <boost/json/value.hpp>

#include <array>
#include <charconv>
#include <cmath>

namespace frugal::cli {
namespace {

constexpr std::string_view replacement = "\xEF\xBF\xBD"; // U+FFFD in UTF-8

void append_ascii(std::string& out, unsigned char c)
{
    switch (c) {
    case '"': out += "\\\""; return;
    case '\\': out += "\\\\"; return;
    case '\b': out += "\\b"; return;
    case '\f': out += "\\f"; return;
    case '\n': out += "\\n"; return;
    case '\r': out += "\\r"; return;
    case '\t': out += "\\t"; return;
    default: break;
    }
    if (c < 0x20) {
        constexpr std::array<char, 16> hex{'0', '1', '2', '3', '4', '5', '6', '7',
                                           '8', '9', 'a', 'b', 'c', 'd', 'e', 'f'};
        out += "\\u00";
        out += hex[c >> 4];
        out += hex[c & 0xF];
        return;
    }
    out += static_cast<char>(c);
}

} // namespace

void append_json_string(std::string& out, std::string_view bytes)
{
    out += '"';
    const std::size_t n = bytes.size();
    std::size_t i = 0;
    while (i < n) {
        const auto lead = static_cast<unsigned char>(bytes[i]);
        if (lead < 0x80) {
            append_ascii(out, lead);
            ++i;
            continue;
        }
        // WHATWG Encoding, "UTF-8 decoder": the lead byte fixes the sequence length and the
        // range allowed for the first continuation byte (no overlongs, no surrogates, nothing
        // above U+10FFFF).
        std::size_t needed = 0;
        unsigned char lower = 0x80;
        unsigned char upper = 0xBF;
        if (lead >= 0xC2 && lead <= 0xDF) {
            needed = 1;
        } else if (lead >= 0xE0 && lead <= 0xEF) {
            needed = 2;
            if (lead == 0xE0)
                lower = 0xA0;
            if (lead == 0xED)
                upper = 0x9F;
        } else if (lead >= 0xF0 && lead <= 0xF4) {
            needed = 3;
            if (lead == 0xF0)
                lower = 0x90;
            if (lead == 0xF4)
                upper = 0x8F;
        } else {
            out += replacement;
            ++i;
            continue;
        }
        std::size_t seen = 0;
        while (seen < needed && i + 1 + seen < n) {
            const auto c = static_cast<unsigned char>(bytes[i + 1 + seen]);
            if (c < lower || c > upper)
                break;
            lower = 0x80;
            upper = 0xBF;
            ++seen;
        }
        if (seen == needed) {
            out.append(bytes.substr(i, needed + 1));
        } else {
            // The decoder emits one U+FFFD for the bytes read so far and reads the offending
            // byte again as the start of what follows.
            out += replacement;
        }
        i += seen + 1;
    }
    out += '"';
}

namespace {

void append_value(std::string& out, const boost::json::value& v)
{
    switch (v.kind()) {
    case boost::json::kind::null: out += "null"; return;
    case boost::json::kind::bool_: out += v.get_bool() ? "true" : "false"; return;
    case boost::json::kind::int64: out += std::to_string(v.get_int64()); return;
    case boost::json::kind::uint64: out += std::to_string(v.get_uint64()); return;
    case boost::json::kind::double_: {
        const double d = v.get_double();
        if (!std::isfinite(d)) {
            out += "null"; // JSON has no NaN or infinity
            return;
        }
        // Plain decimal, up to six decimals, trailing zeros dropped.
        char buf[64];
        const auto [end, ec] = std::to_chars(buf, buf + sizeof buf, d, std::chars_format::fixed, 6);
        std::string_view t(buf, ec == std::errc() ? static_cast<std::size_t>(end - buf) : 0);
        if (t.find('.') != std::string_view::npos) {
            while (t.ends_with('0'))
                t.remove_suffix(1);
            if (t.ends_with('.'))
                t.remove_suffix(1);
        }
        out += t == "-0" ? std::string_view("0") : t;
        return;
    }
    case boost::json::kind::string: {
        const auto& s = v.get_string();
        append_json_string(out, std::string_view(s.data(), s.size()));
        return;
    }
    case boost::json::kind::array: {
        out += '[';
        bool first = true;
        for (const auto& e : v.get_array()) {
            if (!first)
                out += ',';
            first = false;
            append_value(out, e);
        }
        out += ']';
        return;
    }
    case boost::json::kind::object: {
        out += '{';
        bool first = true;
        for (const auto& kv : v.get_object()) {
            if (!first)
                out += ',';
            first = false;
            append_json_string(out, std::string_view(kv.key().data(), kv.key().size()));
            out += ':';
            append_value(out, kv.value());
        }
        out += '}';
        return;
    }
    }
}

} // namespace

std::string to_json(const boost::json::value& v)
{
    std::string out;
    append_value(out, v);
    return out;
}

} // namespace frugal::cli
