#include "sim/sim_money.hpp"

#include <frugal/sim.hpp>

#include "json/strict.hpp"

#include <boost/json.hpp>

#include <functional>
#include <map>

namespace frugal {

namespace json = boost::json;
using namespace std::chrono_literals;

std::vector<sim_model> standard_sim_models()
{
    // Prices are USD per token, as OpenRouter's catalog lists them. Providers are chosen so that
    // both kinds of cancellation billing occur (OpenRouter lists Google AI Studio, Google, Groq
    // and Perplexity as unable to cancel).
    std::vector<sim_model> m;
    m.push_back(
        {.id = "google/gemma-4-31b-it:free",
         .name = "Google: Gemma 4 31B (free)",
         .provider = "Google AI Studio",
         .cancel_supported = false,
         .context_length = 131072,
         .max_completion_tokens = 8192,
         .capability = 3});
    m.push_back(
        {.id = "meta-llama/llama-4-maverick:free",
         .name = "Meta: Llama 4 Maverick (free)",
         .provider = "Chutes",
         .context_length = 131072,
         .max_completion_tokens = 4096,
         .capability = 4});
    m.push_back(
        {.id = "google/gemma-4-31b-it",
         .name = "Google: Gemma 4 31B",
         .provider = "DeepInfra",
         .prompt_price = "0.00000004",
         .completion_price = "0.00000015",
         .context_length = 131072,
         .max_completion_tokens = 8192,
         .capability = 3});
    m.push_back(
        {.id = "meta-llama/llama-4-scout",
         .name = "Meta: Llama 4 Scout",
         .provider = "Groq",
         .cancel_supported = false,
         .prompt_price = "0.0000000375",
         .completion_price = "0.00000015",
         .context_length = 131072,
         .max_completion_tokens = 8192,
         .capability = 4});
    m.push_back(
        {.id = "deepseek/deepseek-v3.2",
         .name = "DeepSeek: DeepSeek V3.2",
         .provider = "DeepSeek",
         .prompt_price = "0.00000027",
         .completion_price = "0.0000004",
         .context_length = 163840,
         .max_completion_tokens = 16384,
         .capability = 6});
    m.push_back(
        {.id = "google/gemini-3-flash",
         .name = "Google: Gemini 3 Flash",
         .provider = "Google",
         .cancel_supported = false,
         .prompt_price = "0.0000003",
         .completion_price = "0.0000025",
         .context_length = 1048576,
         .max_completion_tokens = 65536,
         .capability = 7});
    m.push_back(
        {.id = "openai/gpt-5-mini",
         .name = "OpenAI: GPT-5 Mini",
         .provider = "OpenAI",
         .prompt_price = "0.00000025",
         .completion_price = "0.000002",
         .context_length = 400000,
         .max_completion_tokens = 128000,
         .capability = 7});
    m.push_back(
        {.id = "perplexity/sonar",
         .name = "Perplexity: Sonar",
         .provider = "Perplexity",
         .cancel_supported = false,
         .prompt_price = "0.000001",
         .completion_price = "0.000001",
         .request_price = "0.005",
         .context_length = 127072,
         .max_completion_tokens = 8192,
         .capability = 6});
    m.push_back(
        {.id = "anthropic/claude-fable-5",
         .name = "Anthropic: Claude Fable 5",
         .provider = "Anthropic",
         .prompt_price = "0.000003",
         .completion_price = "0.000015",
         .context_length = 200000,
         .max_completion_tokens = 32000,
         .capability = 10});
    m.push_back(
        {.id = "~anthropic/claude-fable-latest",
         .name = "Anthropic: Claude Fable (latest)",
         .provider = "Anthropic",
         .prompt_price = "0.000003",
         .completion_price = "0.000015",
         .context_length = 200000,
         .max_completion_tokens = 32000,
         .capability = 10,
         .alias_target = "anthropic/claude-fable-5"});
    // Two ids OpenRouter lists too, so the quickstart runs unchanged against either.
    m.push_back(
        {.id = "openai/gpt-oss-120b:free",
         .name = "OpenAI: gpt-oss-120b (free)",
         .provider = "Chutes",
         .context_length = 131072,
         .max_completion_tokens = 8192,
         .capability = 3});
    m.push_back(
        {.id = "anthropic/claude-sonnet-4.5",
         .name = "Anthropic: Claude Sonnet 4.5",
         .provider = "Anthropic",
         .prompt_price = "0.000003",
         .completion_price = "0.000015",
         .context_length = 1000000,
         .max_completion_tokens = 64000,
         .capability = 10});
    return m;
}

void sim_config::apply_demo_latency()
{
    if (models.empty())
        models = standard_sim_models();
    for (auto& m : models) {
        if (m.time_to_first_token.count() != 0 || m.time_per_token.count() != 0)
            continue;
        const bool free = m.id.ends_with(":free");
        const bool flagship = m.capability >= 10;
        m.time_to_first_token = free ? 350ms : flagship ? 600ms : 250ms;
        m.time_per_token = free ? 12ms : flagship ? 15ms : 10ms;
    }
}

sim_config sim_config::demo()
{
    sim_config c;
    c.apply_demo_latency();
    return c;
}

namespace {

// Reads fields of one JSON object by name; any field left unread is reported as unknown.
class reader {
public:
    reader(const json::object& o, std::string path, std::string& error)
        : o_(o), path_(std::move(path)), error_(error)
    {
    }

    template <class F>
    void field(std::string_view name, F&& read)
    {
        seen_.emplace(name, true);
        if (const auto* v = o_.if_contains(name); v != nullptr && error_.empty())
            read(*v, path_ + "." + std::string(name));
    }

    bool finish()
    {
        for (const auto& [k, v] : o_) {
            if (!seen_.contains(std::string(k)) && error_.empty())
                error_ = path_ + "." + std::string(k) + ": unknown field";
        }
        return error_.empty();
    }

private:
    const json::object& o_;
    std::string path_;
    std::string& error_;
    std::map<std::string, bool, std::less<>> seen_;
};

// Boost.JSON writes a double in its shortest exact form, but with an exponent ("2E-5");
// prices are plain decimals, so the exponent is expanded ("0.00002").
std::string plain_decimal(const std::string& shortest)
{
    const auto e = shortest.find_first_of("eE");
    if (e == std::string::npos)
        return shortest;
    std::string mantissa = shortest.substr(0, e);
    const int exponent = std::stoi(shortest.substr(e + 1));
    std::string sign;
    if (!mantissa.empty() && mantissa[0] == '-') {
        sign = "-";
        mantissa.erase(0, 1);
    }
    const auto dot = mantissa.find('.');
    int point = static_cast<int>(dot == std::string::npos ? mantissa.size() : dot);
    if (dot != std::string::npos)
        mantissa.erase(dot, 1);
    point += exponent;
    if (point <= 0) {
        mantissa.insert(0, static_cast<std::size_t>(-point) + 1, '0');
        point = 1;
    }
    if (point >= static_cast<int>(mantissa.size()))
        mantissa.append(static_cast<std::size_t>(point) - mantissa.size(), '0');
    std::string out = mantissa.substr(0, static_cast<std::size_t>(point));
    std::string fraction = mantissa.substr(static_cast<std::size_t>(point));
    fraction.erase(fraction.find_last_not_of('0') + 1);
    if (!fraction.empty())
        out += "." + fraction;
    return sign + out;
}

struct sink {
    std::string& error;

    void fail(const std::string& where, std::string_view what)
    {
        if (error.empty())
            error = where + ": " + std::string(what);
    }
    void get(const json::value& v, const std::string& where, std::string& out)
    {
        if (v.is_string())
            out = std::string(v.get_string());
        else
            fail(where, "expected a string");
    }
    void get(const json::value& v, const std::string& where, bool& out)
    {
        if (v.is_bool())
            out = v.get_bool();
        else
            fail(where, "expected true or false");
    }
    template <class Int>
    requires std::is_integral_v<Int>
    void get(const json::value& v, const std::string& where, Int& out)
    {
        if (v.is_int64() && v.get_int64() >= 0)
            out = static_cast<Int>(v.get_int64());
        else if (v.is_uint64())
            out = static_cast<Int>(v.get_uint64());
        else
            fail(where, "expected a non-negative integer");
    }
    void get(const json::value& v, const std::string& where, double& out)
    {
        if (v.is_number())
            out = v.to_number<double>();
        else
            fail(where, "expected a number");
    }
    void get(const json::value& v, const std::string& where, std::chrono::milliseconds& out)
    {
        std::uint64_t ms = 0;
        get(v, where, ms);
        out = std::chrono::milliseconds(ms);
    }
    // A price or limit in USD: a decimal string, or a number (taken in its shortest exact form).
    void price(const json::value& v, const std::string& where, std::string& out)
    {
        std::string text;
        if (v.is_string())
            text = std::string(v.get_string());
        else if (v.is_number())
            text = plain_decimal(json::serialize(v));
        else
            return fail(where, "expected a decimal string such as \"0.000003\"");
        if (!sim::parse_usd(text))
            return fail(
                where, "\"" + text + "\" is not a plain decimal with at most 18 fractional digits");
        out = text;
    }
};

void read_model(const json::value& v, const std::string& where, sim_model& m, std::string& error)
{
    if (!v.is_object()) {
        error = where + ": expected an object";
        return;
    }
    sink s{error};
    reader r(v.get_object(), where, error);
    r.field("id", [&](auto& x, auto w) { s.get(x, w, m.id); });
    r.field("name", [&](auto& x, auto w) { s.get(x, w, m.name); });
    r.field("provider", [&](auto& x, auto w) { s.get(x, w, m.provider); });
    r.field("cancel_supported", [&](auto& x, auto w) { s.get(x, w, m.cancel_supported); });
    r.field("prompt_price", [&](auto& x, auto w) { s.price(x, w, m.prompt_price); });
    r.field("completion_price", [&](auto& x, auto w) { s.price(x, w, m.completion_price); });
    r.field("request_price", [&](auto& x, auto w) { s.price(x, w, m.request_price); });
    r.field("context_length", [&](auto& x, auto w) { s.get(x, w, m.context_length); });
    r.field(
        "max_completion_tokens", [&](auto& x, auto w) { s.get(x, w, m.max_completion_tokens); });
    r.field("capability", [&](auto& x, auto w) { s.get(x, w, m.capability); });
    r.field("time_to_first_token_ms", [&](auto& x, auto w) { s.get(x, w, m.time_to_first_token); });
    r.field("time_per_token_ms", [&](auto& x, auto w) { s.get(x, w, m.time_per_token); });
    r.field("alias_target", [&](auto& x, auto w) { s.get(x, w, m.alias_target); });
    r.field("fault", [&](auto& x, auto w) { s.get(x, w, m.fault); });
    r.field("created", [&](auto& x, auto w) { s.get(x, w, m.created); });
    r.field("canonical_slug", [&](auto& x, auto w) { s.get(x, w, m.canonical_slug); });
    r.field("pricing_extra", [&](auto& x, const std::string& w) {
        if (!x.is_object())
            return s.fail(w, "expected an object of pricing members");
        m.pricing_extra.clear();
        for (const auto& kv : x.get_object())
            m.pricing_extra.emplace_back(std::string(kv.key()), json::serialize(kv.value()));
    });
    r.finish();
}

// The parse proper: on failure `error` names the field.
std::optional<sim_config> read_sim_config(std::string_view text, std::string& error)
{
    boost::system::error_code ec;
    std::string why;
    const json::value root = frugal::detail::parse_strict(text, ec, why);
    if (ec) {
        error = "not valid JSON as it must be: " + why;
        return std::nullopt;
    }
    if (!root.is_object()) {
        error = "expected a JSON object at the top level";
        return std::nullopt;
    }
    sim_config c;
    sink s{error};
    reader r(root.get_object(), "config", error);
    bool demo_latency = false;
    r.field("latency", [&](auto& x, auto w) {
        std::string preset;
        s.get(x, w, preset);
        if (preset == "demo")
            demo_latency = true;
        else if (preset != "none")
            s.fail(w, "expected \"none\" or \"demo\"");
    });
    r.field("seed", [&](auto& x, auto w) { s.get(x, w, c.seed); });
    r.field("models", [&](auto& x, const std::string& w) {
        if (!x.is_array())
            return s.fail(w, "expected an array of models");
        std::size_t i = 0;
        for (const auto& item : x.get_array()) {
            sim_model m;
            read_model(item, w + "[" + std::to_string(i++) + "]", m, error);
            if (m.id.empty())
                s.fail(w + "[" + std::to_string(i - 1) + "].id", "required");
            c.models.push_back(std::move(m));
        }
    });
    r.field("model_overrides", [&](auto& x, const std::string& w) {
        if (!x.is_object())
            return s.fail(w, "expected an object keyed by model id");
        if (c.models.empty())
            c.models = standard_sim_models();
        for (const auto& entry : x.get_object()) {
            // A named copy: Clang 14 cannot capture structured bindings in a lambda.
            const std::string_view id = entry.key();
            const json::value& item = entry.value();
            auto it = std::find_if(
                c.models.begin(), c.models.end(), [&](const sim_model& m) { return m.id == id; });
            if (it == c.models.end())
                return s.fail(w + "." + std::string(id), "no such model in the catalog");
            read_model(item, w + "." + std::string(id), *it, error);
        }
    });
    r.field("keys", [&](auto& x, const std::string& w) {
        if (!x.is_array())
            return s.fail(w, "expected an array of keys");
        std::size_t i = 0;
        for (const auto& item : x.get_array()) {
            const std::string where = w + "[" + std::to_string(i++) + "]";
            if (!item.is_object())
                return s.fail(where, "expected an object");
            sim_key k;
            reader kr(item.get_object(), where, error);
            kr.field("key", [&](auto& y, auto wy) { s.get(y, wy, k.key); });
            kr.field("label", [&](auto& y, auto wy) { s.get(y, wy, k.label); });
            kr.field("limit", [&](auto& y, auto wy) {
                if (y.is_null())
                    return;
                std::string limit;
                s.price(y, wy, limit);
                k.limit = limit;
            });
            kr.finish();
            if (k.key.empty())
                s.fail(where + ".key", "required");
            c.keys.push_back(std::move(k));
        }
    });
    r.field("accept_any_key", [&](auto& x, auto w) { s.get(x, w, c.accept_any_key); });
    r.field("free_window_ms", [&](auto& x, auto w) { s.get(x, w, c.free_window); });
    r.field("free_requests_per_minute", [&](auto& x, auto w) {
        s.get(x, w, c.free_requests_per_minute);
    });
    r.field(
        "free_requests_per_day", [&](auto& x, auto w) { s.get(x, w, c.free_requests_per_day); });
    r.field("fixed_time", [&](auto& x, auto w) {
        std::int64_t t = 0;
        s.get(x, w, t);
        c.fixed_time = t;
    });
    r.field("whitespace_keepalive", [&](auto& x, auto w) { s.get(x, w, c.whitespace_keepalive); });
    r.field("usage_chunk", [&](auto& x, auto w) {
        s.get(x, w, c.usage_chunk);
        if (c.usage_chunk != "2026" && c.usage_chunk != "empty_choices" &&
            c.usage_chunk != "null_finish")
            s.fail(w, "expected \"2026\", \"empty_choices\" or \"null_finish\"");
    });
    r.field("keepalive_interval_ms", [&](auto& x, auto w) { s.get(x, w, c.keepalive_interval); });
    r.field("generation_visibility_delay_ms", [&](auto& x, auto w) {
        s.get(x, w, c.generation_visibility_delay);
    });
    r.field("max_request_body", [&](auto& x, auto w) { s.get(x, w, c.max_request_body); });
    r.field("max_generations", [&](auto& x, auto w) { s.get(x, w, c.max_generations); });
    r.field("uncancellable_billing", [&](auto& x, auto w) {
        s.get(x, w, c.uncancellable_billing);
        if (c.uncancellable_billing != "complete_response" &&
            c.uncancellable_billing != "max_tokens")
            s.fail(w, "expected \"complete_response\" or \"max_tokens\"");
    });
    r.field("faults", [&](auto& x, const std::string& w) {
        if (!x.is_array())
            return s.fail(w, "expected an array of fault rules");
        std::size_t i = 0;
        for (const auto& item : x.get_array()) {
            const std::string where = w + "[" + std::to_string(i++) + "]";
            if (!item.is_object())
                return s.fail(where, "expected an object");
            sim_fault_rule f;
            reader fr(item.get_object(), where, error);
            fr.field("model", [&](auto& y, auto wy) { s.get(y, wy, f.model); });
            fr.field("fault", [&](auto& y, auto wy) { s.get(y, wy, f.fault); });
            fr.field("first_n", [&](auto& y, auto wy) { s.get(y, wy, f.first_n); });
            fr.field("probability", [&](auto& y, auto wy) { s.get(y, wy, f.probability); });
            fr.finish();
            if (f.fault.empty())
                s.fail(where + ".fault", "required");
            c.faults.push_back(std::move(f));
        }
    });
    if (!r.finish())
        return std::nullopt;
    if (demo_latency)
        c.apply_demo_latency();
    if (!error.empty())
        return std::nullopt;
    return c;
}

} // namespace

boost::system::result<sim_config> parse_sim_config(std::string_view text, diagnostics* diag)
{
    if (diag != nullptr)
        diag->clear();
    std::string why;
    auto c = read_sim_config(text, why);
    if (!c) {
        if (diag != nullptr)
            diag->message = std::move(why);
        return boost::system::error_code(error::bad_sim_config);
    }
    return std::move(*c);
}

} // namespace frugal
