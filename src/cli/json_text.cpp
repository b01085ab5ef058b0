// Boost.JSON writes every string; this walk only adds what its serializer does not do:
// plain-decimal doubles, and replacing invalid UTF-8, which it would copy through.
#include "cli/json_text.hpp"

#include <boost/json/serializer.hpp>
#include <boost/json/value.hpp>

#include <charconv>
#include <cmath>
#include <string_view>

namespace frugal::cli {
namespace {

namespace json = boost::json;

constexpr std::string_view replacement = "\xEF\xBF\xBD"; // U+FFFD in UTF-8

struct sequence {
    std::size_t size;
    bool valid;
};

// The UTF-8 sequence at bytes[i], by the WHATWG Encoding Standard's "UTF-8 decoder": an
// invalid one's size is what the decoder consumes for its one U+FFFD (it reads the offending
// byte again as the start of what follows).
sequence next_sequence(std::string_view bytes, std::size_t i)
{
    const auto lead = static_cast<unsigned char>(bytes[i]);
    if (lead < 0x80)
        return {1, true};
    // The lead byte fixes the length and the range of the first continuation byte: no
    // overlongs, no surrogates, nothing above U+10FFFF.
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
        return {1, false};
    }
    std::size_t seen = 0;
    while (seen < needed && i + 1 + seen < bytes.size()) {
        const auto c = static_cast<unsigned char>(bytes[i + 1 + seen]);
        if (c < lower || c > upper)
            break;
        lower = 0x80;
        upper = 0xBF;
        ++seen;
    }
    return {seen + 1, seen == needed};
}

bool valid_utf8(std::string_view bytes)
{
    for (std::size_t i = 0; i < bytes.size();) {
        const auto s = next_sequence(bytes, i);
        if (!s.valid)
            return false;
        i += s.size;
    }
    return true;
}

std::string replace_invalid_utf8(std::string_view bytes)
{
    std::string out;
    out.reserve(bytes.size() + replacement.size());
    for (std::size_t i = 0; i < bytes.size();) {
        const auto s = next_sequence(bytes, i);
        if (s.valid)
            out.append(bytes.substr(i, s.size));
        else
            out += replacement;
        i += s.size;
    }
    return out;
}

void drain(std::string& out, json::serializer& sr)
{
    char buf[512];
    while (!sr.done()) {
        const auto part = sr.read(buf, sizeof buf);
        out.append(part.data(), part.size());
    }
}

void append_string(std::string& out, json::serializer& sr, std::string_view bytes)
{
    if (valid_utf8(bytes)) {
        sr.reset(json::string_view(bytes.data(), bytes.size()));
        drain(out, sr);
        return;
    }
    const std::string valid = replace_invalid_utf8(bytes);
    sr.reset(json::string_view(valid.data(), valid.size()));
    drain(out, sr);
}

// Plain decimal, up to six decimals, trailing zeros dropped: a rate reads as people write it.
void append_double(std::string& out, double d)
{
    if (!std::isfinite(d)) {
        out += "null"; // JSON has no NaN or infinity
        return;
    }
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
}

void append_value(std::string& out, json::serializer& sr, const json::value& v)
{
    switch (v.kind()) {
    case json::kind::double_: append_double(out, v.get_double()); return;
    case json::kind::string: {
        const auto& s = v.get_string();
        append_string(out, sr, std::string_view(s.data(), s.size()));
        return;
    }
    case json::kind::array: {
        out += '[';
        bool first = true;
        for (const auto& e : v.get_array()) {
            if (!first)
                out += ',';
            first = false;
            append_value(out, sr, e);
        }
        out += ']';
        return;
    }
    case json::kind::object: {
        out += '{';
        bool first = true;
        for (const auto& kv : v.get_object()) {
            if (!first)
                out += ',';
            first = false;
            append_string(out, sr, std::string_view(kv.key().data(), kv.key().size()));
            out += ':';
            append_value(out, sr, kv.value());
        }
        out += '}';
        return;
    }
    default: // null, booleans and integers: Boost.JSON's text is already the plain one
        sr.reset(&v);
        drain(out, sr);
        return;
    }
}

} // namespace

std::string to_json(const boost::json::value& v)
{
    std::string out;
    json::serializer sr;
    append_value(out, sr, v);
    return out;
}

} // namespace frugal::cli
