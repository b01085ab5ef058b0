#include "serve/wire.hpp"

#include "openrouter/codec.hpp"

#include <boost/json.hpp>

#include <cmath>

namespace frugal::serve {

namespace json = boost::json;

void append_json_string(std::string& out, std::string_view text)
{
    out += '"';
    openrouter::append_escaped(out, text);
    out += '"';
}

namespace {

bool fail(wire_problem& why, std::string param, std::string message)
{
    why.param = std::move(param);
    why.message = std::move(message);
    return false;
}

// No double past its range: one parses as infinity, which no JSON can carry on, so the
// upstream would be sent a body it cannot read. (The parser's depth limit bounds the walk.)
bool finite_numbers(const json::value& v)
{
    switch (v.kind()) {
    case json::kind::double_: return std::isfinite(v.get_double());
    case json::kind::array:
        for (const auto& e : v.get_array())
            if (!finite_numbers(e))
                return false;
        return true;
    case json::kind::object:
        for (const auto& [k, e] : v.get_object())
            if (!finite_numbers(e))
                return false;
        return true;
    default: return true;
    }
}

// null is "not given", as the SDKs of some languages send it.
const json::value* member(const json::object& o, std::string_view key)
{
    const auto* v = o.if_contains(key);
    return v == nullptr || v->is_null() ? nullptr : v;
}

bool text_of(const json::value& v, std::string& out)
{
    if (!v.is_string())
        return false;
    out = std::string(v.get_string());
    return true;
}

bool strings_of(const json::value& v, std::vector<std::string>& out)
{
    if (!v.is_array())
        return false;
    for (const auto& e : v.get_array()) {
        if (!e.is_string())
            return false;
        out.emplace_back(e.get_string());
    }
    return true;
}

// A message's content: a string, or parts of which only text can be carried.
bool content_of(const json::value& v, std::string& out, wire_problem& why, const std::string& at)
{
    if (v.is_string()) {
        out = std::string(v.get_string());
        return true;
    }
    if (!v.is_array())
        return fail(why, at, "content must be a string or an array of text parts");
    for (const auto& part : v.get_array()) {
        const auto* p = part.if_object();
        const auto* type = p != nullptr ? p->if_contains("type") : nullptr;
        const auto* text = p != nullptr ? p->if_contains("text") : nullptr;
        if (type == nullptr || !type->is_string() || type->get_string() != "text" ||
            text == nullptr || !text->is_string())
            return fail(
                why, at,
                "only text content parts ({\"type\": \"text\", \"text\": ...}) pass through the "
                "gateway");
        out += text->get_string();
    }
    return true;
}

bool message_of(const json::value& v, chat_message& m, wire_problem& why, const std::string& at)
{
    const auto* o = v.if_object();
    if (o == nullptr)
        return fail(why, at, "each message must be an object");
    const auto* role = member(*o, "role");
    if (role == nullptr || !text_of(*role, m.role) || m.role.empty())
        return fail(why, at + ".role", "each message needs a role");
    for (const auto& [k, val] : *o) {
        if (val.is_null())
            continue;
        const std::string here = at + "." + std::string(k);
        if (k == "role")
            continue;
        if (k == "content") {
            if (!content_of(val, m.content, why, here))
                return false;
        } else if (k == "name") {
            if (!text_of(val, m.name))
                return fail(why, here, "name must be a string");
        } else if (k == "tool_call_id") {
            if (!text_of(val, m.tool_call_id))
                return fail(why, here, "tool_call_id must be a string");
        } else if (k == "tool_calls") {
            if (!val.is_array())
                return fail(why, here, "tool_calls must be an array");
            for (const auto& c : val.get_array()) {
                const auto* co = c.if_object();
                const auto* fn = co != nullptr ? co->if_contains("function") : nullptr;
                const auto* fo = fn != nullptr ? fn->if_object() : nullptr;
                tool_call tc;
                if (fo == nullptr || !text_of(fo->contains("name") ? fo->at("name") : json::value(), tc.name))
                    return fail(why, here, "each tool call needs function.name");
                if (const auto* id = co->if_contains("id"); id != nullptr && !text_of(*id, tc.id))
                    return fail(why, here, "a tool call's id must be a string");
                if (const auto* a = fo->if_contains("arguments");
                    a != nullptr && !text_of(*a, tc.arguments))
                    return fail(why, here, "function.arguments must be a string");
                m.tool_calls.push_back(std::move(tc));
            }
        } else {
            return fail(why, here, "this message member does not pass through the gateway");
        }
    }
    return true;
}

bool provider_of(const json::value& v, provider_preferences& p, wire_problem& why)
{
    const auto* o = v.if_object();
    if (o == nullptr)
        return fail(why, "provider", "provider must be an object");
    for (const auto& [k, val] : *o) {
        if (val.is_null())
            continue;
        const std::string here = "provider." + std::string(k);
        bool ok = true;
        if (k == "order")
            ok = strings_of(val, p.order);
        else if (k == "only")
            ok = strings_of(val, p.only);
        else if (k == "ignore")
            ok = strings_of(val, p.ignore);
        else if (k == "sort")
            ok = text_of(val, p.sort);
        else if (k == "data_collection")
            ok = text_of(val, p.data_collection);
        else if (k == "allow_fallbacks" && val.is_bool())
            p.allow_fallbacks = val.get_bool();
        else if (k == "require_parameters" && val.is_bool())
            p.require_parameters = val.get_bool();
        else if (k == "zdr" && val.is_bool())
            p.zdr = val.get_bool();
        else
            return fail(why, here, "unsupported or mistyped provider preference");
        if (!ok)
            return fail(why, here, "mistyped provider preference");
    }
    return true;
}

bool number_of(const json::value& v, double& out)
{
    if (!v.is_number())
        return false;
    out = v.to_number<double>();
    return true;
}

bool tokens_of(const json::value& v, std::uint32_t& out)
{
    std::uint64_t n = 0;
    if (v.is_uint64())
        n = v.get_uint64();
    else if (v.is_int64() && v.get_int64() > 0)
        n = static_cast<std::uint64_t>(v.get_int64());
    else
        return false;
    if (n == 0 || n > 0xffffffffu)
        return false;
    out = static_cast<std::uint32_t>(n);
    return true;
}

} // namespace

bool parse_chat_body(std::string_view body, wire_request& out, wire_problem& why)
{
    // The DOM lives for this call only: it is built in a per-thread arena, spilling to the
    // heap only for bodies larger than the arena.
    thread_local unsigned char arena[16384];
    json::monotonic_resource mr(arena, sizeof arena);
    const json::storage_ptr sp(&mr);
    boost::system::error_code ec;
    json::value v = json::parse(body, ec, sp);
    if (ec)
        return fail(why, "", "the body is not JSON: " + ec.message());
    auto* o = v.if_object();
    if (o == nullptr)
        return fail(why, "", "the body must be a JSON object");
    for (const auto& [k, val] : *o)
        if (!finite_numbers(val))
            return fail(why, std::string(k), std::string(k) + " holds a number out of range");
    auto& req = out.req;
    const auto* model = member(*o, "model");
    if (model == nullptr || !text_of(*model, req.model) || req.model.empty())
        return fail(why, "model", "model is required: a model id or \"frugal/POLICY\"");
    const auto* messages = member(*o, "messages");
    if (messages == nullptr || !messages->is_array() || messages->get_array().empty())
        return fail(why, "messages", "messages must be a non-empty array");
    const auto& ms = messages->get_array();
    req.messages.resize(ms.size());
    for (std::size_t i = 0; i < ms.size(); ++i)
        if (!message_of(ms[i], req.messages[i], why, "messages[" + std::to_string(i) + "]"))
            return false;

    json::object extra(sp);
    std::optional<std::uint32_t> max_tokens;
    for (const auto& [k, val] : *o) {
        if (val.is_null() || k == "model" || k == "messages")
            continue;
        const std::string key(k);
        if (k == "stream") {
            if (!val.is_bool())
                return fail(why, key, "stream must be true or false");
            out.stream = val.get_bool();
        } else if (k == "stream_options") {
            const auto* so = val.if_object();
            if (so == nullptr)
                return fail(why, key, "stream_options must be an object");
            if (const auto* iu = member(*so, "include_usage")) {
                if (!iu->is_bool())
                    return fail(why, key + ".include_usage", "include_usage must be true or false");
                out.include_usage = iu->get_bool();
            }
        } else if (k == "max_tokens" || k == "max_completion_tokens") {
            std::uint32_t n = 0;
            if (!tokens_of(val, n))
                return fail(why, key, key + " must be a whole number from 1 to 4294967295");
            if (max_tokens && *max_tokens != n)
                return fail(why, key, "max_tokens and max_completion_tokens differ");
            max_tokens = n;
        } else if (k == "temperature" || k == "top_p") {
            double d = 0;
            if (!number_of(val, d))
                return fail(why, key, key + " must be a number");
            (k == "temperature" ? req.temperature : req.top_p) = d;
        } else if (k == "seed") {
            if (val.is_uint64())
                req.seed = val.get_uint64();
            else if (val.is_int64() && val.get_int64() >= 0)
                req.seed = static_cast<std::uint64_t>(val.get_int64());
            else
                return fail(why, key, "seed must be a whole number ≥ 0");
        } else if (k == "stop") {
            if (val.is_string())
                req.stop.emplace_back(val.get_string());
            else if (!strings_of(val, req.stop))
                return fail(why, key, "stop must be a string or an array of strings");
        } else if (k == "response_format") {
            const auto* rf = val.if_object();
            const auto* type = rf != nullptr ? member(*rf, "type") : nullptr;
            if (type == nullptr || !type->is_string())
                return fail(why, key, "response_format needs a type");
            const std::string_view t = type->get_string();
            if (t == "json_schema") {
                const auto* js = member(*rf, "json_schema");
                if (js == nullptr || !js->is_object())
                    return fail(why, key + ".json_schema", "json_schema must be an object");
                req.response_schema = json::serialize(*js);
            } else if (t != "json_object" && t != "text") {
                return fail(why, key + ".type", "type must be text, json_object or json_schema");
            }
            if (t != "text")
                req.response_format = std::string(t);
        } else if (k == "provider") {
            provider_preferences p;
            if (!provider_of(val, p, why))
                return false;
            req.provider = std::move(p);
        } else if (k == "user") {
            if (!text_of(val, req.user))
                return fail(why, key, "user must be a string");
        } else if (k == "models") {
            return fail(
                why, key,
                "models (OpenRouter's fallback list) does not pass through the gateway: the "
                "budget reserves for the model asked; use a \"frugal/POLICY\" model to fall back");
        } else if (k == "usage") {
            // OpenRouter's {"include": true}: every answer through the gateway carries its usage.
            if (!val.is_object())
                return fail(why, key, "usage must be an object such as {\"include\": true}");
        } else if (k == "n") {
            if (!(val.is_int64() && val.get_int64() == 1) && !(val.is_uint64() && val.get_uint64() == 1))
                return fail(why, key, "only n = 1 is supported");
        } else if ((k == "logprobs" && !(val.is_bool() && !val.get_bool())) || k == "top_logprobs") {
            // The answer goes back through frugal's typed response, which has no place for
            // them: asked for, they would be paid for and then dropped without a word.
            return fail(why, key, key + " is not supported: the gateway does not return logprobs");
        } else {
            extra.emplace(k, val);
        }
    }
    req.max_tokens = max_tokens;
    if (!extra.empty())
        req.extra_body = json::serialize(extra);
    return true;
}

namespace {

void append_usage(std::string& out, const wire_totals& t)
{
    out += "\"usage\":{\"prompt_tokens\":";
    out += std::to_string(t.prompt_tokens);
    out += ",\"completion_tokens\":";
    out += std::to_string(t.completion_tokens);
    out += ",\"total_tokens\":";
    out += std::to_string(t.prompt_tokens + t.completion_tokens);
    // A number, as OpenRouter sends it; written from the exact decimal, never through a double.
    out += ",\"cost\":";
    out += t.cost.to_string();
    out += '}';
}

} // namespace

std::string encode_completion(const chat_response& r, const wire_totals& t)
{
    std::string out;
    out.reserve(256 + r.content.size() + r.reasoning.size());
    out += "{\"id\":";
    append_json_string(out, r.id);
    // system_fingerprint: OpenRouter sends it, null or not, and @openrouter/sdk requires it.
    out += ",\"object\":\"chat.completion\",\"system_fingerprint\":null,\"created\":";
    out += std::to_string(r.created);
    out += ",\"model\":";
    append_json_string(out, t.model);
    if (!r.provider.empty()) {
        out += ",\"provider\":";
        append_json_string(out, r.provider);
    }
    out += ",\"choices\":[{\"index\":0,\"message\":{\"role\":\"assistant\",\"content\":";
    append_json_string(out, r.content);
    if (!r.reasoning.empty()) {
        out += ",\"reasoning\":";
        append_json_string(out, r.reasoning);
    }
    if (!r.refusal.empty()) {
        out += ",\"refusal\":";
        append_json_string(out, r.refusal);
    }
    if (!r.tool_calls.empty()) {
        out += ",\"tool_calls\":";
        openrouter::append_tool_calls(out, r.tool_calls);
    }
    out += "},\"finish_reason\":";
    if (r.finish_reason.empty())
        out += "null";
    else
        append_json_string(out, r.finish_reason);
    if (!r.native_finish_reason.empty()) {
        out += ",\"native_finish_reason\":";
        append_json_string(out, r.native_finish_reason);
    }
    out += "}],";
    append_usage(out, t);
    out += '}';
    return out;
}

namespace {

void chunk_head(std::string& out, std::string_view id, std::int64_t created, std::string_view model)
{
    out += "data: {\"id\":";
    append_json_string(out, id);
    out += ",\"object\":\"chat.completion.chunk\",\"created\":";
    out += std::to_string(created);
    out += ",\"model\":";
    append_json_string(out, model);
}

} // namespace

void append_chunk(
    std::string& out,
    std::string_view id,
    std::int64_t created,
    std::string_view model,
    std::string_view content,
    bool first)
{
    chunk_head(out, id, created, model);
    out += first ? ",\"choices\":[{\"index\":0,\"delta\":{\"role\":\"assistant\",\"content\":"
                 : ",\"choices\":[{\"index\":0,\"delta\":{\"content\":";
    append_json_string(out, content);
    out += "},\"finish_reason\":null}]}\n\n";
}

void append_finish(
    std::string& out,
    std::string_view id,
    std::int64_t created,
    std::string_view model,
    std::string_view finish_reason,
    const wire_totals* totals)
{
    chunk_head(out, id, created, model);
    out += ",\"choices\":[{\"index\":0,\"delta\":{},\"finish_reason\":";
    if (finish_reason.empty())
        out += "null";
    else
        append_json_string(out, finish_reason);
    out += "}]";
    if (totals != nullptr) {
        out += ',';
        append_usage(out, *totals);
    }
    out += "}\n\ndata: [DONE]\n\n";
}

void append_tool_call_chunk(
    std::string& out,
    std::string_view id,
    std::int64_t created,
    std::string_view model,
    const std::vector<tool_call>& calls,
    bool first)
{
    chunk_head(out, id, created, model);
    out += first ? ",\"choices\":[{\"index\":0,\"delta\":{\"role\":\"assistant\",\"tool_calls\":"
                 : ",\"choices\":[{\"index\":0,\"delta\":{\"tool_calls\":";
    openrouter::append_tool_calls(out, calls, true);
    out += "},\"finish_reason\":null}]}\n\n";
}

void append_stream_error(
    std::string& out,
    std::string_view id,
    std::int64_t created,
    std::string_view model,
    std::string_view message,
    int code,
    const wire_totals* totals)
{
    chunk_head(out, id, created, model);
    out += ",\"error\":{\"message\":";
    append_json_string(out, message);
    out += ",\"code\":";
    out += std::to_string(code);
    out += "},\"choices\":[{\"index\":0,\"delta\":{\"content\":\"\"},\"finish_reason\":\"error\"}]";
    if (totals != nullptr) {
        out += ',';
        append_usage(out, *totals);
    }
    out += "}\n\ndata: [DONE]\n\n";
}

std::string error_body(
    int status,
    std::string_view message,
    std::string_view type,
    std::string_view reason,
    std::string_view param)
{
    // OpenRouter's shape, which is OpenAI's plus an integer `code` (the status) and
    // `metadata`: @openrouter/sdk requires the integer, the openai SDKs take either.
    std::string out = "{\"error\":{\"message\":";
    append_json_string(out, message);
    out += ",\"code\":";
    out += std::to_string(status);
    out += ",\"type\":";
    append_json_string(out, type);
    out += ",\"param\":";
    if (param.empty())
        out += "null";
    else
        append_json_string(out, param);
    out += ",\"metadata\":{\"reason\":";
    append_json_string(out, reason);
    out += "}}}";
    return out;
}

} // namespace frugal::serve
