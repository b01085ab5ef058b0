// The body of `POST /chat/completions`, written by hand into one flat buffer: the DOM only
// checks what the caller passes as JSON text (extra_body, response_schema).
#include "openrouter/codec.hpp"

#include <frugal/error.hpp>

#include <boost/json/parse.hpp>
#include <boost/json/serialize.hpp>
#include <boost/json/value.hpp>

#include <charconv>
#include <cstdio>
#include <iterator>

namespace frugal::openrouter {

namespace json = boost::json;
using boost::system::error_code;

void append_escaped(std::string& out, std::string_view text)
{
    std::size_t start = 0;
    for (std::size_t i = 0; i < text.size(); ++i) {
        const auto c = static_cast<unsigned char>(text[i]);
        if (c >= 0x20 && c != '"' && c != '\\')
            continue;
        out.append(text.data() + start, i - start);
        start = i + 1;
        switch (c) {
        case '"': out += "\\\""; break;
        case '\\': out += "\\\\"; break;
        case '\n': out += "\\n"; break;
        case '\r': out += "\\r"; break;
        case '\t': out += "\\t"; break;
        default: {
            char buf[8];
            std::snprintf(buf, sizeof buf, "\\u%04x", c);
            out += buf;
        }
        }
    }
    out.append(text.data() + start, text.size() - start);
}

void append_tool_calls(std::string& out, const std::vector<tool_call>& calls, bool stream_delta)
{
    out += '[';
    for (std::size_t k = 0; k < calls.size(); ++k) {
        const tool_call& t = calls[k];
        out += k == 0 ? "{" : ",{";
        if (stream_delta) {
            out += "\"index\":";
            out += std::to_string(k);
            out += ',';
        }
        out += "\"id\":\"";
        append_escaped(out, t.id);
        out += "\",\"type\":\"";
        append_escaped(out, stream_delta && t.type.empty() ? std::string_view("function") : t.type);
        out += "\",\"function\":{\"name\":\"";
        append_escaped(out, t.name);
        out += "\",\"arguments\":\"";
        append_escaped(out, t.arguments);
        out += "\"}}";
    }
    out += ']';
}

namespace {

void string_field(std::string& out, std::string_view name, std::string_view value)
{
    out += ",\"";
    out += name;
    out += "\":\"";
    append_escaped(out, value);
    out += '"';
}

void string_array(std::string& out, std::string_view name, const std::vector<std::string>& values)
{
    out += ",\"";
    out += name;
    out += "\":[";
    for (std::size_t i = 0; i < values.size(); ++i) {
        if (i != 0)
            out += ',';
        out += '"';
        append_escaped(out, values[i]);
        out += '"';
    }
    out += ']';
}

void number_field(std::string& out, std::string_view name, double value)
{
    char buf[32];
    const auto [end, ec] = std::to_chars(buf, buf + sizeof buf, value);
    out += ",\"";
    out += name;
    out += "\":";
    out.append(buf, ec == std::errc() ? static_cast<std::size_t>(end - buf) : 0);
}

void bool_field(std::string& out, std::string_view name, bool value)
{
    out += ",\"";
    out += name;
    out += value ? "\":true" : "\":false";
}

// Whether extra_body may not set member `k` of `req`: the guard owns the model, the output
// bound and the stream (the server takes the last of two keys, so a repeat would undo a
// clamped max_tokens or the router's cleared fallback list), frugal reads one choice, and a
// typed field the request sets may not be set twice.
bool owned_member(const chat_request& req, std::string_view k) noexcept
{
    if (k == "model" || k == "models" || k == "messages" || k == "max_tokens" ||
        k == "max_completion_tokens" || k == "stream" || k == "stream_options" || k == "usage" ||
        k == "n" || k == "best_of")
        return true;
    return (k == "temperature" && req.temperature) || (k == "top_p" && req.top_p) ||
           (k == "seed" && req.seed) || (k == "stop" && !req.stop.empty()) ||
           (k == "response_format" && !req.response_format.empty()) ||
           (k == "provider" && req.provider) || (k == "user" && !req.user.empty());
}

// `req.extra_body` must be one JSON object setting no member `req` owns; its members are
// appended (with a leading comma each).
bool append_members(std::string& out, const chat_request& req, std::string* detail)
{
    error_code ec;
    const json::value v = json::parse(req.extra_body, ec);
    if (ec || !v.is_object()) {
        if (detail != nullptr)
            *detail = "extra_body must be a JSON object";
        return false;
    }
    for (const auto& member : v.get_object()) {
        if (owned_member(req, member.key())) {
            if (detail != nullptr)
                *detail = "extra_body may not set \"" + std::string(member.key()) +
                          "\": the typed request or the budget guard owns it";
            return false;
        }
    }
    for (const auto& member : v.get_object()) {
        out += ',';
        out += json::serialize(member.key());
        out += ':';
        out += json::serialize(member.value());
    }
    return true;
}

} // namespace

error_code
encode_chat_request(const chat_request& req, bool stream, std::string& out, std::string* detail)
{
    out.clear();
    // Room for the usual request at once (a few escapes included): one allocation, not one
    // per doubling.
    std::size_t room = 256 + req.model.size() + req.extra_body.size() + req.response_schema.size();
    for (const auto& m : req.messages) {
        room += 48 + m.role.size() + m.content.size() + m.name.size() + m.tool_call_id.size();
        for (const auto& t : m.tool_calls)
            room += 64 + t.id.size() + t.type.size() + t.name.size() + t.arguments.size();
    }
    for (const auto& m : req.models)
        room += 4 + m.size();
    out.reserve(room + room / 16);
    out += "{\"model\":\"";
    append_escaped(out, req.model);
    out += "\",\"messages\":[";
    for (std::size_t i = 0; i < req.messages.size(); ++i) {
        const chat_message& m = req.messages[i];
        out += i == 0 ? "{\"role\":\"" : ",{\"role\":\"";
        append_escaped(out, m.role);
        out += "\",\"content\":\"";
        append_escaped(out, m.content);
        out += '"';
        if (!m.name.empty())
            string_field(out, "name", m.name);
        if (!m.tool_call_id.empty())
            string_field(out, "tool_call_id", m.tool_call_id);
        if (!m.tool_calls.empty()) {
            out += ",\"tool_calls\":";
            append_tool_calls(out, m.tool_calls);
        }
        out += '}';
    }
    out += ']';
    if (!req.models.empty())
        string_array(out, "models", req.models);
    if (stream)
        out += ",\"stream\":true";
    if (req.max_tokens) {
        out += ",\"max_tokens\":";
        char digits[24];
        out.append(digits, std::to_chars(std::begin(digits), std::end(digits), *req.max_tokens).ptr);
    }
    if (req.temperature)
        number_field(out, "temperature", *req.temperature);
    if (req.top_p)
        number_field(out, "top_p", *req.top_p);
    if (req.seed)
        out += ",\"seed\":" + std::to_string(*req.seed);
    if (!req.stop.empty())
        string_array(out, "stop", req.stop);
    if (!req.response_format.empty()) {
        out += ",\"response_format\":{\"type\":\"";
        append_escaped(out, req.response_format);
        out += '"';
        if (!req.response_schema.empty()) {
            error_code ec;
            const json::value schema = json::parse(req.response_schema, ec);
            if (ec || !schema.is_object()) {
                if (detail != nullptr)
                    *detail = "response_schema must be a JSON object";
                return error::bad_request_body;
            }
            out += ",\"json_schema\":";
            out += json::serialize(schema);
        }
        out += '}';
    }
    if (req.provider) {
        const provider_preferences& p = *req.provider;
        out += ",\"provider\":{";
        const std::size_t open = out.size();
        if (!p.order.empty())
            string_array(out, "order", p.order);
        if (p.allow_fallbacks)
            bool_field(out, "allow_fallbacks", *p.allow_fallbacks);
        if (!p.only.empty())
            string_array(out, "only", p.only);
        if (!p.ignore.empty())
            string_array(out, "ignore", p.ignore);
        if (!p.sort.empty())
            string_field(out, "sort", p.sort);
        if (p.require_parameters)
            bool_field(out, "require_parameters", *p.require_parameters);
        if (!p.data_collection.empty())
            string_field(out, "data_collection", p.data_collection);
        if (p.zdr)
            bool_field(out, "zdr", *p.zdr);
        if (out.size() > open)
            out.erase(open, 1); // the first member's leading comma
        out += '}';
    }
    if (!req.user.empty())
        string_field(out, "user", req.user);
    if (!req.extra_body.empty() && !append_members(out, req, detail))
        return error::bad_request_body;
    out += '}';
    return {};
}

} // namespace frugal::openrouter
