// The exact bytes on the wire: JSON bodies, stream chunks, error bodies and the models catalog,
// written by hand so that every byte is the simulator's choice (sim_server.cpp adds only HTTP
// framing).

#include "sim/sim_detail.hpp"

#include <algorithm>
#include <cstdio>

namespace frugal::sim {
namespace {

// The members of a row's pricing after prompt, completion and request: OpenRouter's usual
// zero prices for images, web search and reasoning, then the row's own extras (which replace
// those of the same name).
std::string pricing_tail(const sim_model& m)
{
    std::string b;
    for (const char* name : {"image", "web_search", "internal_reasoning"}) {
        const bool own = std::any_of(m.pricing_extra.begin(), m.pricing_extra.end(), [&](auto& e) {
            return e.first == name;
        });
        if (!own)
            b += std::string(",\"") + name + "\":\"0\"";
    }
    for (const auto& [name, value] : m.pricing_extra) {
        b += ",\"";
        append_json_escaped(b, name);
        b += "\":";
        b += value;
    }
    return b;
}

std::string error_body(int code, std::string_view message, std::string_view metadata = {})
{
    std::string b = "{\"error\":{\"message\":\"";
    append_json_escaped(b, message);
    b += "\",\"code\":" + std::to_string(code);
    if (!metadata.empty()) {
        b += ",\"metadata\":";
        b += metadata;
    }
    b += "},\"user_id\":\"user_sim\"}";
    return b;
}

} // namespace

void append_json_escaped(std::string& out, std::string_view text)
{
    // Runs of plain bytes are appended whole; only quotes, backslashes and controls are escaped.
    std::size_t start = 0;
    for (std::size_t i = 0; i < text.size(); ++i) {
        const auto c = static_cast<unsigned char>(text[i]);
        if (c >= 0x20 && c != '"' && c != '\\')
            continue;
        out.append(text.data() + start, i - start);
        start = i + 1;
        if (c == '"' || c == '\\') {
            out += '\\';
            out += static_cast<char>(c);
        } else if (c == '\n') {
            out += "\\n";
        } else {
            char buf[8];
            std::snprintf(buf, sizeof buf, "\\u%04x", c);
            out += buf;
        }
    }
    out.append(text.data() + start, text.size() - start);
}

reply error_reply(int status, std::string_view message, std::string_view metadata)
{
    reply r;
    r.status = status;
    r.body = error_body(status, message, metadata);
    return r;
}

std::string provider_metadata(const sim_model& m, std::string_view raw, std::string_view type)
{
    std::string md = "{\"raw\":\"";
    append_json_escaped(md, raw);
    md += "\",\"provider_name\":\"";
    append_json_escaped(md, m.provider);
    md += "\",\"error_type\":\"";
    md += type;
    md += "\"}";
    return md;
}

std::string engine::render_models() const
{
    // GET /api/v1/models: OpenRouter's shape, prices as decimal strings in USD per token.
    std::string b = "{\"data\":[";
    for (std::size_t i = 0; i < models_.size(); ++i) {
        const auto& m = models_[i];
        // An alias row mirrors its target's prices and limits.
        const sim_model* priced = &m;
        if (!m.alias_target.empty()) {
            if (const auto* t = find_model(m.alias_target))
                priced = t;
        }
        if (i != 0)
            b += ',';
        b += "{\"id\":\"" + m.id + "\",\"canonical_slug\":\"";
        b += m.canonical_slug.empty() ? m.id.substr(0, m.id.find(':')) : m.canonical_slug;
        b += "\",\"hugging_face_id\":null,\"name\":\"";
        append_json_escaped(b, m.name);
        b += "\",\"created\":" + std::to_string(m.created) + ",\"description\":\"";
        append_json_escaped(b, m.name + ", served by the frugal simulator.");
        b += "\",\"context_length\":" + std::to_string(priced->context_length);
        b += ",\"architecture\":{\"modality\":\"text->text\",\"input_modalities\":[\"text\"],"
             "\"output_modalities\":[\"text\"],\"tokenizer\":\"Other\",\"instruct_type\":null},"
             "\"pricing\":{\"prompt\":\"" +
             priced->prompt_price + "\",\"completion\":\"" + priced->completion_price +
             "\",\"request\":\"" + priced->request_price + '"' + pricing_tail(*priced) +
             "},\"top_provider\":{\"context_length\":" + std::to_string(priced->context_length) +
             ",\"max_completion_tokens\":" + std::to_string(priced->max_completion_tokens) +
             ",\"is_moderated\":false},\"per_request_limits\":null,\"supported_parameters\":"
             "[\"max_tokens\",\"temperature\",\"top_p\",\"stop\",\"seed\",\"response_format\"],"
             "\"default_parameters\":null,\"supported_voices\":null,\"expiration_date\":null,"
             "\"knowledge_cutoff\":null,\"links\":{\"details\":\"/api/v1/models/" +
             m.id + "/endpoints\"}";
        if (!m.alias_target.empty()) {
            b += ",\"alias_target\":{\"slug\":\"" + m.alias_target + "\",\"name\":\"";
            append_json_escaped(b, priced->name);
            b += "\"}";
        }
        b += '}';
    }
    b += "],\"total_count\":" + std::to_string(models_.size()) + ",\"links\":{\"next\":null}}";
    return b;
}

reply engine::models_reply() const
{
    reply r;
    r.body = models_body_;
    return r;
}

void engine::append_usage(std::string& b, const completion& c, std::size_t n) const
{
    std::size_t reasoning = 0;
    for (std::size_t i = 0; i < n; ++i)
        reasoning += c.pieces[i].reasoning ? 1 : 0;
    const attodollars billed = c.cost(n);
    const std::string cost = to_string(billed);
    b += "{\"prompt_tokens\":";
    b += std::to_string(c.prompt_tokens);
    b += ",\"completion_tokens\":";
    b += std::to_string(n);
    b += ",\"total_tokens\":";
    b += std::to_string(c.prompt_tokens + n);
    // `[sim cost=...]`: how a provider's report can lie; the bill stays the truth.
    if (c.cost_report != "missing") {
        b += ",\"cost\":";
        if (c.cost_report == "null")
            b += "null";
        else if (c.cost_report == "negative")
            b += "-" + to_string(billed + parse_usd("0.01").value_or(0));
        else if (c.cost_report == "string")
            b += "\"" + cost + "\"";
        else if (c.cost_report == "huge")
            b += "1e300";
        else if (c.cost_report == "bool")
            b += "true";
        else if (c.cost_report == "float") // the bill plus floating-point residue
            b += cost.find('.') == std::string::npos ? cost + ".000000000000000001"
                                                     : cost + "000000000000000001";
        else if (c.cost_report == "zero")
            b += "0";
        else
            b += cost;
    }
    b += ",\"is_byok\":false,\"prompt_tokens_details\":{\"cached_tokens\":0,\"cache_write_tokens\":"
         "0,"
         "\"audio_tokens\":0,\"video_tokens\":0},\"cost_details\":{\"upstream_inference_cost\":";
    b += cost;
    b += ",\"upstream_inference_prompt_cost\":";
    b += to_string(c.prompt_cost + c.request_price);
    b += ",\"upstream_inference_completions_cost\":";
    b += to_string(billed - c.prompt_cost - c.request_price - c.overbill);
    b += "},\"completion_tokens_details\":{\"reasoning_tokens\":";
    b += std::to_string(reasoning);
    b += ",\"image_tokens\":0,\"audio_tokens\":0}}";
}

namespace {

// A tool call's arguments as the pieces carry them: piece `index`'s share of `{"text": "..."}`.
std::string tool_arguments(const completion& c, std::size_t index)
{
    std::string a = index == 0 ? "{\"text\":\"" : "";
    if (!c.pieces[index].reasoning)
        append_json_escaped(a, c.pieces[index].text);
    if (index + 1 == c.pieces.size())
        a += "\"}";
    return a;
}

void append_tool_call_head(std::string& b, const completion& c)
{
    b += "{\"index\":0,\"id\":\"call_";
    b += c.id;
    b += "\",\"type\":\"function\",\"function\":{\"name\":\"";
    append_json_escaped(b, c.tool_call);
    b += "\",\"arguments\":\"";
}

} // namespace

std::string engine::whole_body(const completion& c) const
{
    std::size_t text = 0;
    for (const auto& p : c.pieces)
        text += p.text.size();
    std::string b;
    b.reserve(1024 + text + text / 8);
    b += "{\"id\":\"";
    b += c.id;
    b += "\",\"provider\":\"";
    append_json_escaped(b, c.provider);
    b += "\",\"model\":\"";
    b += c.served_as.empty() ? c.model : c.served_as;
    b += "\",\"object\":\"chat.completion\",\"created\":";
    b += std::to_string(c.created);
    b += ",\"choices\":[{\"logprobs\":null,\"finish_reason\":\"";
    b += c.finish_reason;
    b += "\",\"native_finish_reason\":\"";
    b += c.native_finish_reason;
    b += "\",\"index\":0,\"message\":{\"role\":\"assistant\",\"content\":\"";
    if (c.tool_call.empty()) {
        for (const auto& p : c.pieces) {
            if (!p.reasoning)
                append_json_escaped(b, p.text);
        }
    }
    b += '"';
    if (!c.tool_call.empty()) {
        b += ",\"tool_calls\":[";
        append_tool_call_head(b, c);
        std::string args;
        for (std::size_t i = 0; i < c.pieces.size(); ++i)
            args += tool_arguments(c, i);
        append_json_escaped(b, c.pieces.empty() ? "{\"text\":\"\"}" : args);
        b += "\"}}]";
    }
    b += ",\"refusal\":null,\"reasoning\":";
    if (std::none_of(
            c.pieces.begin(), c.pieces.end(), [](const piece& p) { return p.reasoning; })) {
        b += "null";
    } else {
        b += '"';
        for (const auto& p : c.pieces) {
            if (p.reasoning)
                append_json_escaped(b, p.text);
        }
        b += '"';
    }
    b += "}}],\"system_fingerprint\":null,\"usage\":";
    append_usage(b, c, c.pieces.size());
    b += '}';
    return b;
}

std::string engine::truncated_body(const completion& /*c*/, std::string body)
{
    body.resize(body.size() / 2);
    return body;
}

std::string engine::chunk_prefix(const completion& c) const
{
    std::string b =
        "data: {\"id\":\"" + c.id +
        "\",\"object\":\"chat.completion.chunk\",\"created\":" + std::to_string(c.created) +
        ",\"model\":\"" + (c.served_as.empty() ? c.model : c.served_as) + "\",\"provider\":\"";
    append_json_escaped(b, c.provider);
    b += "\",";
    return b;
}

std::string engine::stream_event(const completion& c, std::size_t index) const
{
    const piece& p = c.pieces[index];
    std::string b = chunk_prefix(c);
    b += "\"choices\":[{\"index\":0,\"delta\":{\"content\":\"";
    if (!p.reasoning && c.tool_call.empty())
        append_json_escaped(b, p.text);
    b += "\",\"role\":\"assistant\"";
    if (!c.tool_call.empty()) {
        // The first piece names the call; the others add to its arguments, by its index.
        b += ",\"tool_calls\":[";
        if (index == 0)
            append_tool_call_head(b, c);
        else
            b += "{\"index\":0,\"function\":{\"arguments\":\"";
        append_json_escaped(b, tool_arguments(c, index));
        b += "\"}}]";
    }
    if (p.reasoning) {
        b += ",\"reasoning\":\"";
        append_json_escaped(b, p.text);
        b += "\",\"reasoning_details\":[{\"type\":\"reasoning.text\",\"text\":\"";
        append_json_escaped(b, p.text);
        b += "\",\"format\":\"unknown\",\"index\":0}]";
    }
    b += "},\"finish_reason\":null,\"native_finish_reason\":null}]}\n\n";
    return b;
}

std::string engine::stream_malformed_event(const completion& c) const
{
    // A chunk cut inside its JSON, as a broken proxy or provider would leave it.
    std::string b = chunk_prefix(c);
    b += "\"choices\":[{\"index\":0,\"delta\":{\"content\":\"tru\n\n";
    return b;
}

std::string engine::stream_error_event(const completion& c) const
{
    std::string b = chunk_prefix(c);
    if (c.injected == fault::midstream_error) {
        b +=
            "\"error\":{\"code\":502,\"message\":\"Provider returned error\",\"metadata\":{\"raw\":"
            "\"upstream connect error\",\"provider_name\":\"";
        append_json_escaped(b, c.provider);
        b += "\",\"error_type\":\"provider_unavailable\"}},";
    }
    b += "\"choices\":[{\"index\":0,\"delta\":{\"content\":\"\",\"role\":\"assistant\"},\"finish_"
         "reason\":"
         "\"error\",\"native_finish_reason\":\"error\"}]}\n\ndata: [DONE]\n\n";
    return b;
}

std::string engine::stream_end(const completion& c) const
{
    const std::string finish =
        "\"choices\":[{\"index\":0,\"delta\":{\"content\":\"\",\"role\":\"assistant\"},"
        "\"finish_reason\":\"" +
        c.finish_reason + "\",\"native_finish_reason\":\"" + c.native_finish_reason + "\"}]";
    std::string b = chunk_prefix(c) + finish + "}\n\n" + chunk_prefix(c);
    if (c.usage_shape == "empty_choices") {
        b += "\"choices\":[]";
    } else if (c.usage_shape == "null_finish") {
        b += "\"choices\":[{\"index\":0,\"delta\":{\"content\":\"\",\"role\":\"assistant\"},"
             "\"finish_reason\":null,\"native_finish_reason\":null}]";
    } else {
        b += finish;
    }
    b += ",\"usage\":";
    append_usage(b, c, c.pieces.size());
    b += "}\n\ndata: [DONE]\n\n";
    return b;
}

std::string engine::whole_stream(const completion& c) const
{
    std::string b = stream_comment();
    const std::size_t n = c.pieces.size();
    for (std::size_t i = 0; i < n; ++i) {
        if (c.injected != fault::none && c.injected != fault::stall && i == c.after)
            break;
        b += stream_event(c, i);
    }
    switch (c.injected) {
    case fault::malformed_chunk:
        b += stream_malformed_event(c);
        for (std::size_t i = c.after; i < n; ++i)
            b += stream_event(c, i);
        b += stream_end(c);
        break;
    case fault::midstream_error:
    case fault::midstream_error_choice: b += stream_error_event(c); break;
    case fault::cut: break;
    default: b += stream_end(c); break;
    }
    return b;
}

} // namespace frugal::sim
