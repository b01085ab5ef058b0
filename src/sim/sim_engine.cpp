#include "sim/sim_engine.hpp"

#include <boost/json.hpp>

#include <algorithm>
#include <array>
#include <cctype>
#include <charconv>
#include <cstdio>
#include <ctime>

namespace frugal::sim {
namespace {

namespace json = boost::json;

constexpr std::string_view alnum = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789";

std::string to_string(attodollars a)
{
    return format_usd(a);
}

// 64-bit FNV-1a: a stable hash, so answers depend only on the seed, the model and the prompt.
std::uint64_t fnv1a(std::string_view s, std::uint64_t h = 14695981039346656037ULL)
{
    for (const char c : s) {
        h ^= static_cast<unsigned char>(c);
        h *= 1099511628211ULL;
    }
    return h;
}

bool starts_with(std::string_view s, std::string_view prefix)
{
    return s.substr(0, prefix.size()) == prefix;
}

bool is_free(const sim_model& m)
{
    return m.id.size() > 5 && m.id.ends_with(":free");
}

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

// What a model bills a reasoning token: its `internal_reasoning` extra, when that is a price.
attodollars reasoning_price_of(const sim_model& m)
{
    for (const auto& [name, value] : m.pricing_extra) {
        if (name == "internal_reasoning" && value.size() >= 2 && value.front() == '"')
            return parse_usd(std::string_view(value).substr(1, value.size() - 2)).value_or(0);
    }
    return 0;
}

std::string lower(std::string_view s)
{
    std::string out(s);
    for (auto& c : out)
        c = static_cast<char>(std::tolower(static_cast<unsigned char>(c)));
    return out;
}

// Directives in a prompt: "[sim key=value key=value]". Later ones override earlier ones.
struct directives {
    std::optional<int> difficulty;
    std::string fault;
    std::optional<std::size_t> after;
    std::optional<std::int64_t> ms;
    std::optional<std::int64_t> retry_after;
    std::optional<std::size_t> tokens;
    std::string poor;
    std::optional<bool> keepalive;
    std::string usage;
    std::string overbill; // USD billed on top of the prices
    std::string cost;     // how usage.cost lies
    std::string served;   // the model the response claims to be from
};

template <class T>
std::optional<T> number(std::string_view v)
{
    T n{};
    const auto [p, ec] = std::from_chars(v.data(), v.data() + v.size(), n);
    if (ec != std::errc() || p != v.data() + v.size())
        return std::nullopt;
    return n;
}

void parse_directives(std::string_view text, directives& d)
{
    for (auto at = text.find("[sim "); at != std::string_view::npos;
         at = text.find("[sim ", at + 1)) {
        const auto end = text.find(']', at);
        if (end == std::string_view::npos)
            return;
        std::string_view body = text.substr(at + 5, end - at - 5);
        while (!body.empty()) {
            const auto space = body.find(' ');
            const std::string_view item = body.substr(0, space);
            body = space == std::string_view::npos ? std::string_view() : body.substr(space + 1);
            const auto eq = item.find('=');
            if (eq == std::string_view::npos)
                continue;
            const std::string_view k = item.substr(0, eq);
            const std::string_view v = item.substr(eq + 1);
            if (k == "difficulty")
                d.difficulty = number<int>(v);
            else if (k == "fault")
                d.fault = std::string(v);
            else if (k == "after")
                d.after = number<std::size_t>(v);
            else if (k == "ms")
                d.ms = number<std::int64_t>(v);
            else if (k == "retry_after")
                d.retry_after = number<std::int64_t>(v);
            else if (k == "tokens")
                d.tokens = number<std::size_t>(v);
            else if (k == "poor")
                d.poor = std::string(v);
            else if (k == "keepalive")
                d.keepalive = v == "1" || v == "true";
            else if (k == "usage")
                d.usage = std::string(v);
            else if (k == "overbill")
                d.overbill = std::string(v);
            else if (k == "cost")
                d.cost = std::string(v);
            else if (k == "served")
                d.served = std::string(v);
        }
    }
}

// How hard a prompt is (docs/simulator.md): 1, +1 from 15 words, +2 more from 40 words, +3 when
// it asks for reasoning, +2 more when it asks in several ways; at most 10.
int derive_difficulty(std::string_view prompt)
{
    std::size_t words = 0;
    bool in_word = false;
    for (const char c : prompt) {
        const bool space = std::isspace(static_cast<unsigned char>(c)) != 0;
        if (!space && !in_word)
            ++words;
        in_word = !space;
    }
    int d = 1;
    if (words >= 15)
        d += 1;
    if (words >= 40)
        d += 2;
    static constexpr std::array<std::string_view, 9> markers = {
        "prove",      "derive",   "step by step", "theorem", "optimal",
        "complexity", "rigorous", "analyze",      "analyse"};
    const std::string text = lower(prompt);
    int found = 0;
    for (const auto m : markers)
        found += text.find(m) != std::string::npos ? 1 : 0;
    if (found >= 1)
        d += 3;
    if (found >= 2)
        d += 2;
    return std::min(d, 10);
}

constexpr std::array<std::string_view, 48> vocabulary = {
    "answer", "model", "cost",   "token", "budget", "free",  "cheap",  "first",  "result", "value",
    "simple", "clear", "number", "graph", "route",  "level", "stream", "reply",  "point",  "method",
    "system", "data",  "case",   "rule",  "order",  "price", "share",  "signal", "small",  "large",
    "fast",   "slow",  "in",     "of",    "the",    "and",   "is",     "to",     "with",   "for",
    "this",   "that",  "each",   "every", "most",   "some",  "one",    "two"};

void add_words(std::vector<piece>& out, std::size_t n, splitmix64& rng, bool capitalize)
{
    out.reserve(out.size() + n + 2);
    for (std::size_t i = 0; i < n; ++i) {
        const std::string_view word = vocabulary[rng() % vocabulary.size()];
        piece& p = out.emplace_back();
        if (i == 0 && capitalize) {
            p.text = word;
            p.text[0] = static_cast<char>(std::toupper(static_cast<unsigned char>(p.text[0])));
        } else {
            // Every word fits std::string's small buffer: no allocation per token.
            p.text += ' ';
            p.text += word;
        }
    }
}

std::string iso8601(std::int64_t unix_seconds)
{
    const auto t = static_cast<std::time_t>(unix_seconds);
    std::tm tm{};
    gmtime_r(&t, &tm);
    char buf[40];
    std::strftime(buf, sizeof buf, "%Y-%m-%dT%H:%M:%S.000000+00:00", &tm);
    return buf;
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

reply error_reply(int status, std::string_view message, std::string_view metadata = {})
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

bool native_upper(const std::string& provider)
{
    return starts_with(provider, "Google");
}

std::int64_t days_since_epoch(std::int64_t unix_seconds)
{
    return unix_seconds >= 0 ? unix_seconds / 86400 : (unix_seconds - 86399) / 86400;
}

// Faults answered with a plain error status, in OpenRouter's words.
struct status_fault {
    std::string_view name;
    int status;
    std::string_view message;
    std::string_view error_type;
    bool upstream;        // an upstream provider's error: metadata carries raw and provider_name
    std::string_view raw; // the upstream text
};

constexpr status_fault status_faults[] = {
    {"402", 402, "Insufficient credits. Add more using https://openrouter.ai/credits",
     "payment_required", false, ""},
    {"408", 408, "Operation timed out. Please try again later.", "timeout", false, ""},
    {"500", 500, "Internal Server Error", "server", false, ""},
    {"502", 502, "Provider returned error", "provider_unavailable", true, "upstream connect error"},
    {"503", 503, "No available model provider that meets your routing requirements",
     "provider_overloaded", false, ""},
    {"524", 524, "Request timed out. Please try again later.", "timeout", false, ""},
    {"529", 529, "Provider returned error", "provider_overloaded", true, "overloaded"},
};

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
    models_body_ = std::move(b);
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

void engine::roll_periods(key_state& k, clock::time_point now) const
{
    const std::int64_t t = unix_now(now);
    const std::int64_t day = days_since_epoch(t);
    const std::int64_t week = (day + 3) / 7; // 1970-01-01 was a Thursday; weeks start on Monday
    const auto tt = static_cast<std::time_t>(t);
    std::tm tm{};
    gmtime_r(&tt, &tm);
    const std::int64_t month = static_cast<std::int64_t>(tm.tm_year) * 12 + tm.tm_mon;
    if (day != k.day) {
        k.day = day;
        k.usage_day = 0;
    }
    if (week != k.week) {
        k.week = week;
        k.usage_week = 0;
    }
    if (month != k.month) {
        k.month = month;
        k.usage_month = 0;
    }
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
            if (now - k.minute_start >= config_.free_window) {
                k.minute_start = now;
                k.minute_count = 0;
            }
            const std::int64_t day = days_since_epoch(unix_now(now));
            if (day != k.free_day) {
                k.free_day = day;
                k.free_day_count = 0;
            }
            auto limited = [&](std::string_view message, std::uint32_t limit, std::int64_t reset_ms,
                               std::string_view source) {
                reply r = error_reply(
                    429, message,
                    "{\"headers\":{\"X-RateLimit-Limit\":\"" + std::to_string(limit) +
                        "\",\"X-RateLimit-Remaining\":\"0\",\"X-RateLimit-Reset\":\"" +
                        std::to_string(reset_ms) + "\"},\"limit_source\":\"" + std::string(source) +
                        "\"}");
                r.headers = {
                    {"X-RateLimit-Limit", std::to_string(limit)},
                    {"X-RateLimit-Remaining", "0"},
                    {"X-RateLimit-Reset", std::to_string(reset_ms)}};
                return r;
            };
            if (k.free_day_count >= config_.free_requests_per_day) {
                last_error = limited(
                    "Rate limit exceeded: free-models-per-day. Add 10 credits to unlock 1000 free "
                    "model requests per day",
                    config_.free_requests_per_day, (day + 1) * 86400 * 1000,
                    "openrouter_free_tier_daily");
                continue;
            }
            if (k.minute_count >= config_.free_requests_per_minute) {
                const auto reset =
                    std::chrono::duration_cast<std::chrono::milliseconds>(
                        (k.minute_start + config_.free_window).time_since_epoch())
                        .count();
                last_error = limited(
                    "Rate limit exceeded: free-models-per-min.", config_.free_requests_per_minute,
                    reset, "openrouter_free_tier_minute");
                continue;
            }
            ++k.minute_count;
            ++k.free_day_count;
        }
        model = m;
    }
    if (model == nullptr)
        return last_error;

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
    // Faults: a directive in the prompt wins over configured rules.
    std::string fault_name = d.fault;
    if (fault_name.empty()) {
        for (std::size_t i = 0; i < config_.faults.size(); ++i) {
            const auto& rule = config_.faults[i];
            if (!rule.model.empty() && rule.model != model->id &&
                (asked == nullptr || rule.model != asked->id))
                continue;
            if (rule.first_n != 0 && rule_hits_[i] >= rule.first_n)
                continue;
            if (rule.probability < 1.0 && rng_.unit() >= rule.probability)
                continue;
            ++rule_hits_[i];
            fault_name = rule.fault;
            break;
        }
    }
    if (fault_name.empty() && !model->fault.empty() && !number<int>(model->fault))
        fault_name = model->fault;
    const std::string retry_after = std::to_string(d.retry_after.value_or(1));
    if (fault_name == "429" || fault_name == "429-no-retry-after") {
        reply r = error_reply(
            429, "Provider returned error",
            provider_metadata(
                *model, model->id + " is temporarily rate-limited upstream. Please retry shortly.",
                "rate_limit_exceeded"));
        if (fault_name == "429")
            r.headers.emplace_back("Retry-After", retry_after);
        return r;
    }
    if (fault_name == "echo-key") {
        // A misbehaving upstream that echoes the request's credentials back: plainly in the
        // message, cut short and in base64 in the raw text. A client must never show them.
        const std::string token(
            req.authorization.substr(std::min<std::size_t>(req.authorization.size(), 7)));
        std::string raw = "upstream saw Authorization: ";
        static constexpr char b64[] =
            "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
        const std::string header = "Bearer " + token;
        for (std::size_t i = 0; i + 2 < header.size(); i += 3) {
            const unsigned v = static_cast<unsigned char>(header[i]) << 16 |
                               static_cast<unsigned char>(header[i + 1]) << 8 |
                               static_cast<unsigned char>(header[i + 2]);
            for (const int shift : {18, 12, 6, 0})
                raw += b64[v >> shift & 63];
        }
        raw += " (first part " + token.substr(0, 20) + ")";
        std::string md = "{\"raw\":\"";
        append_json_escaped(md, raw);
        md += "\",\"provider_name\":\"";
        append_json_escaped(md, model->provider);
        md += "\"}";
        return error_reply(400, "Invalid request header Authorization: Bearer " + token, md);
    }
    if (fault_name == "403") {
        std::string md = "{\"reasons\":[\"harassment\"],\"flagged_input\":\"";
        append_json_escaped(md, last_user.substr(0, 100));
        md += "\",\"provider_name\":\"";
        append_json_escaped(md, model->provider);
        md += "\",\"model_slug\":\"";
        md += model->id;
        md += "\",\"error_type\":\"content_policy_violation\"}";
        return error_reply(
            403,
            model->id + " requires moderation on " + model->provider +
                ". Your input was flagged for \"harassment\". No credits were charged.",
            md);
    }
    for (const auto& f : status_faults) {
        if (fault_name != f.name)
            continue;
        const std::string metadata = f.upstream
                                         ? provider_metadata(*model, f.raw, f.error_type)
                                         : "{\"error_type\":\"" + std::string(f.error_type) + "\"}";
        reply r = error_reply(f.status, f.message, metadata);
        // OpenRouter may send Retry-After on a 503; the simulator does when asked to.
        if (f.status == 503 && d.retry_after)
            r.headers.emplace_back("Retry-After", retry_after);
        return r;
    }
    if (fault_name == "error-200") {
        reply r = error_reply(
            502, "Provider returned error",
            provider_metadata(*model, "upstream connect error", "provider_unavailable"));
        r.status = 200;
        if (config_.whitespace_keepalive || d.keepalive.value_or(false))
            r.body.insert(0, "\n\n\n");
        return r;
    }
    if (fault_name == "reset" || fault_name == "hang") {
        out = drop{fault_name == "reset" ? fault::reset : fault::hang};
        return {};
    }

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

    // The answer: deterministic from the seed, the model and the prompt.
    const std::uint64_t h = fnv1a(last_user, fnv1a(model->id, fnv1a(std::to_string(config_.seed))));
    splitmix64 words(h);
    const int difficulty = d.difficulty.value_or(derive_difficulty(last_user));
    std::string poor = d.poor;
    if (poor.empty() && difficulty > model->capability) {
        static constexpr std::array<std::string_view, 3> modes = {"length", "empty", "refusal"};
        poor = json_mode ? "invalid_json" : std::string(modes[h % modes.size()]);
    }
    std::size_t length = d.tokens.value_or(12 + h % 36);
    std::string finish = "stop";
    if (poor == "length") {
        add_words(c.pieces, max_out, words, true);
        finish = "length";
    } else if (poor == "empty") {
        // A reasoning-only answer: the model thought, then said nothing.
        for (const char* t : {"Let", " me", " think", " about", " this", "..."})
            c.pieces.push_back({t, true});
    } else if (poor == "refusal") {
        for (const char* t :
             {"I'm", " sorry", ",", " but", " I", " can't", " help", " with", " that", "."})
            c.pieces.push_back({t, false});
    } else if (json_mode) {
        c.pieces.push_back({"{\"answer\":\"", false});
        add_words(c.pieces, length, words, true);
        if (poor != "invalid_json")
            c.pieces.push_back({"\"}", false});
    } else {
        add_words(c.pieces, length, words, true);
        c.pieces.push_back({".", false});
    }
    if (c.pieces.size() > max_out) {
        c.pieces.resize(max_out);
        finish = "length";
    }
    c.finish_reason = finish;
    if (native_upper(c.provider))
        c.native_finish_reason = finish == "length" ? "MAX_TOKENS" : "STOP";
    else
        c.native_finish_reason = finish;

    const std::size_t n = c.pieces.size();
    const std::size_t default_after = n / 2;
    if (fault_name == "cut")
        c.injected = fault::cut;
    else if (fault_name == "stall")
        c.injected = fault::stall;
    else if (fault_name == "malformed-chunk")
        c.injected = fault::malformed_chunk;
    else if (fault_name == "midstream-error")
        c.injected = fault::midstream_error;
    else if (fault_name == "midstream-error-choice")
        c.injected = fault::midstream_error_choice;
    else if (fault_name == "slow-first-token")
        c.time_to_first_token = std::chrono::milliseconds(d.ms.value_or(5000));
    c.after = std::min(d.after.value_or(default_after), n);
    if (c.injected == fault::stall)
        c.stall = std::chrono::milliseconds(d.ms.value_or(3'600'000));

    // A whole response is billed now, in full: the model runs to the end regardless.
    if (!c.stream)
        record(c, n, false, now);
    out = std::move(c);
    return {};
}

void engine::settle(
    const completion& c, std::size_t delivered, bool cancelled, clock::time_point now)
{
    std::size_t billed = std::min(delivered, c.pieces.size());
    // OpenRouter: a provider that cannot cancel keeps generating, and the complete response is
    // billed; one that can stops billing at the cancel.
    if (cancelled && !c.cancel_supported) {
        billed = config_.uncancellable_billing == "max_tokens"
                     ? std::max<std::size_t>(c.max_tokens, c.pieces.size())
                     : c.pieces.size();
    }
    record(c, billed, cancelled, now);
}

void engine::record(
    const completion& c, std::size_t completion_tokens, bool cancelled, clock::time_point now)
{
    generation g;
    g.id = c.id;
    g.model = c.model;
    g.provider = c.provider;
    g.key = c.key;
    g.created = c.created;
    g.streamed = c.stream;
    g.cancelled = cancelled;
    g.finish_reason = cancelled ? "cancelled" : c.finish_reason;
    g.native_finish_reason = c.native_finish_reason;
    g.prompt_tokens = c.prompt_tokens;
    g.completion_tokens = completion_tokens;
    for (std::size_t i = 0; i < completion_tokens && i < c.pieces.size(); ++i)
        g.reasoning_tokens += c.pieces[i].reasoning ? 1 : 0;
    g.cost = c.cost(completion_tokens);
    const auto latency =
        c.time_to_first_token + c.time_per_token * static_cast<std::int64_t>(c.pieces.size());
    g.latency_ms = latency.count();
    // A whole response is billed when it starts; it becomes visible once it would have ended.
    g.visible_at = now + (c.stream ? std::chrono::milliseconds(0) : latency) +
                   config_.generation_visibility_delay;

    auto& b = bill_[c.model];
    ++b.requests;
    b.prompt_tokens += c.prompt_tokens;
    b.completion_tokens += completion_tokens;
    b.cost += g.cost;
    b.cancelled += cancelled ? 1 : 0;

    auto& k = keys_[c.key];
    roll_periods(k, now);
    k.usage += g.cost;
    k.usage_day += g.cost;
    k.usage_week += g.cost;
    k.usage_month += g.cost;

    // Lookups keep the newest generations only, so a long run holds bounded memory; the bill
    // keeps every one.
    generation_order_.push_back(g.id);
    generations_[g.id] = std::move(g);
    while (generation_order_.size() > config_.max_generations) {
        generations_.erase(generation_order_.front());
        generation_order_.pop_front();
    }
}

reply engine::models_reply() const
{
    reply r;
    r.body = models_body_;
    return r;
}

reply engine::generation_reply(
    std::string_view target, const std::string& key, clock::time_point now) const
{
    std::string id;
    const auto q = target.find('?');
    if (q != std::string_view::npos) {
        std::string_view query = target.substr(q + 1);
        while (!query.empty()) {
            const auto amp = query.find('&');
            const std::string_view item = query.substr(0, amp);
            if (starts_with(item, "id="))
                id = std::string(item.substr(3));
            query = amp == std::string_view::npos ? std::string_view() : query.substr(amp + 1);
        }
    }
    if (id.empty())
        return error_reply(400, "id: required", "{\"error_type\":\"invalid_request\"}");
    const auto it = generations_.find(id);
    // Only the key that made a generation sees it; a fresh one is not visible at once.
    if (it == generations_.end() || it->second.key != key || now < it->second.visible_at)
        return error_reply(
            404, "Generation " + id + " not found", "{\"error_type\":\"not_found\"}");
    const generation& g = it->second;
    const std::string cost = to_string(g.cost);
    std::string b = "{\"data\":{\"id\":\"" + g.id + "\",\"upstream_id\":\"chatcmpl-sim-" +
                    g.id.substr(4) + "\",\"total_cost\":" + cost +
                    ",\"cache_discount\":null,\"upstream_inference_cost\":" + cost +
                    ",\"created_at\":\"" + iso8601(g.created) + "\",\"model\":\"" + g.model +
                    "\",\"app_id\":null,\"streamed\":" + (g.streamed ? "true" : "false") +
                    ",\"cancelled\":" + (g.cancelled ? "true" : "false") + ",\"provider_name\":\"";
    append_json_escaped(b, g.provider);
    b +=
        "\",\"latency\":" + std::to_string(g.latency_ms) +
        ",\"moderation_latency\":null,\"generation_time\":" + std::to_string(g.latency_ms) +
        ",\"finish_reason\":\"" + g.finish_reason +
        "\",\"service_tier\":null,\"tokens_prompt\":" + std::to_string(g.prompt_tokens) +
        ",\"tokens_completion\":" + std::to_string(g.completion_tokens) +
        ",\"native_tokens_prompt\":" + std::to_string(g.prompt_tokens) +
        ",\"native_tokens_completion\":" + std::to_string(g.completion_tokens) +
        ",\"native_tokens_completion_images\":0,\"native_tokens_reasoning\":" +
        std::to_string(g.reasoning_tokens) +
        ",\"native_tokens_cached\":0,\"num_media_prompt\":null,\"num_input_audio_prompt\":null,"
        "\"num_media_completion\":0,\"num_search_results\":null,\"num_fetches\":null,"
        "\"web_search_engine\":null,\"origin\":\"\",\"usage\":" +
        cost + ",\"is_byok\":false,\"native_finish_reason\":\"" + g.native_finish_reason +
        "\",\"external_user\":null,\"api_type\":\"completions\",\"preset_id\":null,\"router\":null,"
        "\"provider_responses\":null,\"user_agent\":null,\"http_referer\":null,\"data_region\":"
        "\"global\","
        "\"workspace_id\":null}}";
    reply r;
    r.body = std::move(b);
    return r;
}

reply engine::key_reply(const std::string& key, clock::time_point now)
{
    key_state& k = keys_[key];
    roll_periods(k, now);
    const std::string limit = k.limit ? to_string(*k.limit) : "null";
    const std::string remaining =
        k.limit ? to_string(std::max<attodollars>(*k.limit - k.usage, 0)) : "null";
    std::string label =
        key.size() > 12 ? key.substr(0, 10) + "..." + key.substr(key.size() - 3) : "sk-or-v1-...";
    std::string b = "{\"data\":{\"label\":\"";
    append_json_escaped(b, label);
    b +=
        "\",\"limit\":" + limit + ",\"limit_remaining\":" + remaining +
        ",\"limit_reset\":null,\"include_byok_in_limit\":false,\"usage\":" + to_string(k.usage) +
        ",\"usage_daily\":" + to_string(k.usage_day) +
        ",\"usage_weekly\":" + to_string(k.usage_week) +
        ",\"usage_monthly\":" + to_string(k.usage_month) +
        ",\"byok_usage\":0,\"byok_usage_daily\":0,\"byok_usage_weekly\":0,\"byok_usage_monthly\":0,"
        // OpenRouter's free tier (never bought credits) is what gives 50 free requests a day:
        // the key's status agrees with the simulator's own daily quota.
        "\"is_free_tier\":" +
        std::string(config_.free_requests_per_day < 1000 ? "true" : "false") +
        ",\"is_management_key\":false,\"is_provisioning_key\":false,\"expires_at\":null,"
        "\"creator_user_id\":\"user_sim\",\"rate_limit\":{\"interval\":\"1h\",\"note\":\"This "
        "field is "
        "deprecated and safe to ignore.\",\"requests\":1000}}}";
    reply r;
    r.body = std::move(b);
    return r;
}

reply engine::bill_reply() const
{
    std::string b = "{\"models\":{";
    model_bill total;
    bool first = true;
    for (const auto& [model, m] : bill_) {
        if (!first)
            b += ',';
        first = false;
        b += "\"" + model + "\":{\"requests\":" + std::to_string(m.requests) +
             ",\"prompt_tokens\":" + std::to_string(m.prompt_tokens) +
             ",\"completion_tokens\":" + std::to_string(m.completion_tokens) +
             ",\"cancelled\":" + std::to_string(m.cancelled) + ",\"cost\":" + to_string(m.cost) +
             ",\"cost_usd\":\"" + to_string(m.cost) + "\"}";
        total.requests += m.requests;
        total.prompt_tokens += m.prompt_tokens;
        total.completion_tokens += m.completion_tokens;
        total.cancelled += m.cancelled;
        total.cost += m.cost;
    }
    b += "},\"total\":{\"requests\":" + std::to_string(total.requests) +
         ",\"prompt_tokens\":" + std::to_string(total.prompt_tokens) +
         ",\"completion_tokens\":" + std::to_string(total.completion_tokens) +
         ",\"cancelled\":" + std::to_string(total.cancelled) +
         ",\"cost\":" + to_string(total.cost) + ",\"cost_usd\":\"" + to_string(total.cost) + "\"}}";
    reply r;
    r.body = std::move(b);
    return r;
}

// Rendering -----------------------------------------------------------------------------------

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
    for (const auto& p : c.pieces) {
        if (!p.reasoning)
            append_json_escaped(b, p.text);
    }
    b += "\",\"refusal\":null,\"reasoning\":";
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
    if (!p.reasoning)
        append_json_escaped(b, p.text);
    b += "\",\"role\":\"assistant\"";
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
