// The engine's front: routing, authentication, and the order of a chat request's decisions.
// The directives, the answer, the bill and the bytes are in the other sim_*.cpp files (see
// sim_detail.hpp).

#include "sim/sim_detail.hpp"

#include <frugal/eval.hpp>

#include <boost/json.hpp>

#include <algorithm>
#include <cctype>

namespace frugal::sim {
namespace {

namespace json = boost::json;

constexpr std::string_view alnum = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789";

bool is_free(const sim_model& m)
{
    return m.id.size() > 5 && m.id.ends_with(":free");
}

// The content of a message: a string, or an array of parts whose text parts count.
std::string message_text(const json::value& content)
{
    if (const auto* s = content.if_string())
        return std::string(*s);
    std::string out;
    if (const auto* parts = content.if_array()) {
        for (const auto& part : *parts) {
            if (const auto* o = part.if_object()) {
                if (const auto* t = o->if_contains("text"); t && t->is_string())
                    out += std::string(t->get_string());
            }
        }
    }
    return out;
}

} // namespace

std::string lower(std::string_view s)
{
    std::string out(s);
    for (auto& c : out)
        c = static_cast<char>(std::tolower(static_cast<unsigned char>(c)));
    return out;
}

engine::engine(sim_config config) : config_(std::move(config)), rng_(config_.seed)
{
    models_ = config_.models.empty() ? standard_sim_models() : config_.models;
    for (std::size_t i = 0; i < models_.size(); ++i)
        model_index_[models_[i].id] = i;
    for (const auto& k : config_.keys) {
        key_state s;
        s.label = k.label;
        if (k.limit)
            s.limit = parse_usd(*k.limit);
        keys_[k.key] = s;
    }
    rule_hits_.assign(config_.faults.size(), 0);
    for (std::size_t i = 0; i < config_.replays.size(); ++i)
        replays_[config_.replays[i].prompt].emplace(config_.replays[i].model, i);

    models_body_ = render_models();
}

const sim_model* engine::find_model(std::string_view id) const
{
    const auto it = model_index_.find(std::string(id));
    return it == model_index_.end() ? nullptr : &models_[it->second];
}

std::int64_t engine::unix_now(clock::time_point now) const
{
    if (config_.fixed_time)
        return *config_.fixed_time;
    return std::chrono::duration_cast<std::chrono::seconds>(now.time_since_epoch()).count();
}

std::string engine::next_generation_id(std::int64_t created)
{
    // "gen-<unix>-<20 alnum>" as OpenRouter's ids look; drawn from the seeded generator.
    std::string id = "gen-" + std::to_string(created) + "-";
    for (int i = 0; i < 20; ++i)
        id += alnum[rng_() % alnum.size()];
    ++sequence_;
    return id;
}

outcome engine::handle(const request& req, clock::time_point now)
{
    const std::string_view path = req.target.substr(0, req.target.find('?'));
    const bool get = req.method == "GET";
    if (path == "/api/v1/models") {
        if (!get)
            return error_reply(405, "Method not allowed");
        return models_reply();
    }
    if (path == "/__sim/bill") {
        if (!get)
            return error_reply(405, "Method not allowed");
        return bill_reply();
    }
    const bool known = path == "/api/v1/chat/completions" || path == "/api/v1/generation" ||
                       path == "/api/v1/key" || path == "/api/v1/auth/key" ||
                       path == "/api/v1/credits";
    if (!known)
        return error_reply(404, "Not Found");

    std::string key;
    reply failure;
    if (authenticate(req.authorization, key, failure) == nullptr)
        return failure;

    if (path == "/api/v1/chat/completions") {
        if (req.method != "POST")
            return error_reply(405, "Method not allowed");
        outcome out;
        reply r = chat(req, now, out);
        if (std::holds_alternative<reply>(out))
            return r;
        return out;
    }
    if (!get)
        return error_reply(405, "Method not allowed");
    if (path == "/api/v1/generation")
        return generation_reply(req.target, key, now);
    if (path == "/api/v1/credits")
        return error_reply(403, "Only management keys can perform this operation");
    return key_reply(key, now);
}

engine::key_state*
engine::authenticate(std::string_view authorization, std::string& key, reply& failure)
{
    const auto space = authorization.find(' ');
    std::string scheme = lower(authorization.substr(0, space));
    if (authorization.empty() || space == std::string_view::npos || scheme != "bearer" ||
        authorization.substr(space + 1).empty()) {
        failure = error_reply(401, "No auth credentials found");
        return nullptr;
    }
    key = std::string(authorization.substr(space + 1));
    auto it = keys_.find(key);
    if (it == keys_.end()) {
        if (!config_.accept_any_key) {
            failure = error_reply(401, "User not found.");
            return nullptr;
        }
        it = keys_.emplace(key, key_state{}).first;
    }
    return &it->second;
}

reply engine::chat(const request& req, clock::time_point now, outcome& out)
{
    boost::system::error_code ec;
    const json::value body = json::parse(req.body, ec);
    if (ec || !body.is_object())
        return error_reply(400, "Invalid JSON in request body");
    const json::object& o = body.get_object();

    const json::value* messages = o.if_contains("messages");
    if (messages == nullptr || !messages->is_array() || messages->get_array().empty())
        return error_reply(
            400, "messages: expected a non-empty array", "{\"error_type\":\"invalid_request\"}");

    // Token counts of the simulator's tokenizer (docs/simulator.md): 4 per message, plus one
    // per 4 bytes of content (rounded up), plus 3 to prime the reply.
    std::uint64_t prompt_tokens = 3;
    std::string last_user;
    std::string all_text;
    for (const auto& m : messages->get_array()) {
        const auto* mo = m.if_object();
        if (mo == nullptr)
            return error_reply(400, "messages: each message must be an object");
        std::string text;
        if (const auto* c = mo->if_contains("content"))
            text = message_text(*c);
        prompt_tokens += 4 + (text.size() + 3) / 4;
        const auto* role = mo->if_contains("role");
        if (role != nullptr && role->is_string() && role->get_string() == "user")
            last_user = text;
        all_text += text;
        all_text += '\n';
    }
    directives d;
    parse_directives(all_text, d);

    std::optional<std::uint64_t> asked_max;
    for (const char* name : {"max_tokens", "max_completion_tokens"}) {
        if (const auto* v = o.if_contains(name)) {
            if (v->is_int64() && v->get_int64() > 0)
                asked_max = static_cast<std::uint64_t>(v->get_int64());
            else if (v->is_uint64())
                asked_max = v->get_uint64();
            else if (!v->is_null())
                return error_reply(400, std::string(name) + ": expected a positive integer");
        }
    }
    bool stream = false;
    if (const auto* s = o.if_contains("stream"); s != nullptr && s->is_bool())
        stream = s->get_bool();
    bool json_mode = false;
    if (const auto* rf = o.if_contains("response_format"); rf != nullptr && rf->is_object()) {
        if (const auto* t = rf->get_object().if_contains("type"); t != nullptr && t->is_string())
            json_mode = t->get_string() == "json_object" || t->get_string() == "json_schema";
    }

    // The model, then the `models` fallback list: each error a model meets on the platform
    // (its configured fault, a free-tier limit, its context length) moves on to the next.
    std::vector<std::string> candidates;
    if (const auto* m = o.if_contains("model"); m != nullptr && m->is_string())
        candidates.emplace_back(m->get_string());
    if (const auto* ms = o.if_contains("models"); ms != nullptr && ms->is_array()) {
        for (const auto& m : ms->get_array()) {
            if (m.is_string() &&
                std::find(candidates.begin(), candidates.end(), m.get_string()) == candidates.end())
                candidates.emplace_back(m.get_string());
        }
    }
    if (candidates.empty())
        return error_reply(400, "No models provided", "{\"error_type\":\"invalid_request\"}");

    std::string key;
    reply unused;
    key_state& k = *authenticate(req.authorization, key, unused);
    roll_periods(k, now);

    reply last_error;
    const sim_model* model = nullptr;
    const sim_model* asked = nullptr;
    for (std::size_t i = 0; i < candidates.size() && model == nullptr; ++i) {
        const sim_model* m = find_model(candidates[i]);
        if (m == nullptr) {
            last_error = error_reply(
                400, candidates[i] + " is not a valid model ID",
                "{\"error_type\":\"invalid_request\"}");
            continue;
        }
        asked = m;
        // An alias serves, and bills, as its concrete target.
        if (!m->alias_target.empty()) {
            if (const auto* t = find_model(m->alias_target))
                m = t;
        }
        const std::uint64_t max_out =
            std::min(asked_max.value_or(m->max_completion_tokens), m->max_completion_tokens);
        if (!m->fault.empty() && m->fault != "none") {
            const auto status = number<int>(m->fault);
            if (status && *status >= 400) {
                last_error = error_reply(
                    *status, "Provider returned error",
                    provider_metadata(*m, "simulated outage", "provider_unavailable"));
                continue;
            }
        }
        if (d.fault == "context-length" ||
            prompt_tokens + asked_max.value_or(0) > m->context_length) {
            last_error = error_reply(
                400,
                "This endpoint's maximum context length is " + std::to_string(m->context_length) +
                    " tokens. However, you requested about " +
                    std::to_string(prompt_tokens + max_out) + " tokens (" +
                    std::to_string(prompt_tokens) + " of text input, " + std::to_string(max_out) +
                    " in the output). Please reduce the length of either one.",
                "{\"error_type\":\"context_length_exceeded\"}");
            continue;
        }
        if (is_free(*m)) {
            // OpenRouter's platform limits for :free models: per minute and per UTC day.
            if (auto limited = free_tier_limit(k, now)) {
                last_error = std::move(*limited);
                continue;
            }
        }
        model = m;
    }
    if (model == nullptr)
        return last_error;
    const sim_replay* replay = nullptr;
    if (const auto by_prompt = replays_.find(last_user); by_prompt != replays_.end()) {
        for (const auto* m : {model, asked}) {
            if (const auto it = by_prompt->second.find(m->id); it != by_prompt->second.end()) {
                replay = &config_.replays[it->second];
                break;
            }
        }
    }
    if (replay != nullptr)
        prompt_tokens = replay->prompt_tokens; // as recorded (or estimated: docs/eval.md)

    const attodollars prompt_price = parse_usd(model->prompt_price).value_or(0);
    const attodollars completion_price = parse_usd(model->completion_price).value_or(0);
    const attodollars request_price = parse_usd(model->request_price).value_or(0);
    const std::uint64_t max_out =
        std::min(asked_max.value_or(model->max_completion_tokens), model->max_completion_tokens);
    const attodollars prompt_cost = prompt_price * static_cast<attodollars>(prompt_tokens);

    // A key limit is enforced like OpenRouter's: the whole max_tokens is reserved up front.
    if (k.limit) {
        const attodollars remaining = *k.limit - k.usage;
        const bool paid = prompt_price != 0 || completion_price != 0 || request_price != 0;
        if (remaining <= 0 && (paid || remaining < 0))
            return error_reply(
                402, "Key limit exceeded (total limit). Raise the key's limit to continue.");
        const attodollars worst =
            prompt_cost + request_price + completion_price * static_cast<attodollars>(max_out);
        if (paid && worst > remaining) {
            const attodollars left = remaining - prompt_cost - request_price;
            const attodollars affordable =
                completion_price == 0 || left <= 0 ? 0 : left / completion_price;
            return error_reply(
                402,
                "This request requires more credits, or fewer max_tokens. You requested up to " +
                    std::to_string(max_out) + " tokens, but can only afford " +
                    std::to_string(static_cast<std::uint64_t>(affordable)) + ".");
        }
    }
    const std::string fault_name = choose_fault(d.fault, *model, asked);
    if (auto r =
            fault_reply(fault_name, d, *model, req, last_user, config_.whitespace_keepalive, out))
        return std::move(*r);

    completion c;
    c.created = unix_now(now);
    c.id = next_generation_id(c.created);
    c.model = model->id;
    c.provider = model->provider;
    c.key = key;
    c.stream = stream;
    c.prompt_tokens = prompt_tokens;
    c.max_tokens = max_out;
    c.prompt_cost = prompt_cost;
    c.completion_price = completion_price;
    c.request_price = request_price;
    c.reasoning_price = reasoning_price_of(*model);
    c.overbill = d.overbill.empty() ? 0 : parse_usd(d.overbill).value_or(0);
    c.cost_report = d.cost;
    c.served_as = d.served;
    c.cancel_supported = model->cancel_supported;
    c.time_to_first_token = model->time_to_first_token;
    c.time_per_token = model->time_per_token;
    c.whitespace_keepalive = d.keepalive.value_or(config_.whitespace_keepalive);
    c.usage_shape = d.usage.empty() ? config_.usage_chunk : d.usage;

    if (replay != nullptr) {
        // Only what is served is cut out: a recorded count may be far above max_tokens.
        const auto tokens = split_tokens(replay->content, replay->completion_tokens, max_out);
        c.pieces.reserve(tokens.size());
        for (const auto t : tokens)
            c.pieces.push_back({std::string(t), false});
        c.finish_reason = replay->completion_tokens > max_out ? "length" : replay->finish_reason;
        c.native_finish_reason = c.finish_reason;
    } else {
        write_answer(c, *model, d, last_user, json_mode, max_out, config_.seed);
    }
    c.tool_call = d.tool;
    if (!c.tool_call.empty() && c.finish_reason == "stop")
        c.finish_reason = c.native_finish_reason = "tool_calls";
    plan_delivery(c, fault_name, d);

    // A whole response is billed now, in full: the model runs to the end regardless.
    if (!c.stream)
        record(c, c.pieces.size(), false, now);
    out = std::move(c);
    return {};
}

} // namespace frugal::sim
