// The rarer endpoints, through Boost.JSON's DOM: the model catalog (`GET /models`), a
// generation's record (`GET /generation`) and the key's (`GET /key`); and the reading of a
// reported bill, which the chunk decoder shares.
#include "openrouter/codec.hpp"
#include "openrouter/codec_detail.hpp"

#include <frugal/chat_client.hpp>
#include <frugal/error.hpp>

#include <boost/json/parse.hpp>
#include <boost/json/serialize.hpp>
#include <boost/json/value.hpp>

namespace frugal::openrouter {

namespace json = boost::json;
using boost::system::error_code;
using codec_detail::reported_cost;

std::optional<money> codec_detail::reported_cost(std::string_view text, std::string& rejected)
{
    rejected.clear();
    const auto m = money::parse_ceil(text);
    if (m && *m > money() && *m <= max_reported_cost)
        return m; // the common case, before any text is built for a rejection
    // What the server wrote, cut short, for a rejection's message.
    const auto shown = [text] {
        return text.size() > 32 ? std::string(text.substr(0, 32)) + "..." : std::string(text);
    };
    // A negative amount too small for a picodollar rounds up to zero: the sign still says it.
    const auto mantissa = text.substr(0, text.find_first_of("eE"));
    const bool negative =
        text.starts_with('-') && mantissa.find_first_of("123456789") != std::string_view::npos;
    if (!m)
        rejected = "out of range (" + shown() + ")";
    else if (negative && *m == money())
        rejected = "negative (" + shown() + ")";
    else if (*m < money())
        rejected = "negative (" + m->to_string() + ")";
    else if (*m > max_reported_cost)
        rejected = "above $" + max_reported_cost.to_string() + " (" + m->to_string() + ")";
    else
        return m;
    return std::nullopt;
}

namespace {

std::string str(const json::object& o, std::string_view key)
{
    const auto* v = o.if_contains(key);
    return v != nullptr && v->is_string() ? std::string(v->get_string()) : std::string();
}

std::optional<std::uint64_t> count(const json::object& o, std::string_view key)
{
    const auto* v = o.if_contains(key);
    if (v == nullptr)
        return std::nullopt;
    if (v->is_uint64())
        return v->get_uint64();
    if (v->is_int64() && v->get_int64() >= 0)
        return static_cast<std::uint64_t>(v->get_int64());
    return std::nullopt;
}

// A price is a decimal string in the catalog; costs and balances are JSON numbers, which the DOM
// holds as doubles. Boost.JSON writes a double in its shortest round-trip form, which gives
// back the decimal the server wrote whenever it had at most 15 significant digits.
std::optional<money> amount(const json::object& o, std::string_view key)
{
    const auto* v = o.if_contains(key);
    if (v == nullptr || v->is_null())
        return std::nullopt;
    if (v->is_string())
        return money::parse(v->get_string());
    if (v->is_number())
        return money::parse(json::serialize(*v));
    return std::nullopt;
}

std::optional<bool> flag(const json::object& o, std::string_view key)
{
    const auto* v = o.if_contains(key);
    return v != nullptr && v->is_bool() ? std::optional<bool>(v->get_bool()) : std::nullopt;
}

// The `data` object of an envelope `{"data": {...}}`, or null.
const json::object* data_object(const json::value& v)
{
    if (!v.is_object())
        return nullptr;
    const auto* d = v.get_object().if_contains("data");
    return d != nullptr && d->is_object() ? &d->get_object() : nullptr;
}

// What a JSON value that should be a price is, in frugal's words (a string's text is never
// repeated: it is the provider's).
std::string describe_value(const json::value& v)
{
    if (v.is_string())
        return "a string that is not a decimal amount";
    if (v.is_number()) {
        std::string t = json::serialize(v);
        if (t.size() > 32)
            t = t.substr(0, 32) + "...";
        return t + ", not an exact amount of USD";
    }
    if (v.is_bool())
        return "a boolean";
    if (v.is_object())
        return "an object";
    if (v.is_array())
        return "an array";
    return "null";
}

// A price: a decimal string as OpenRouter writes them, or a JSON number as some SDKs do.
std::optional<money> price_value(const json::value& v)
{
    if (v.is_string())
        return money::parse(v.get_string());
    if (v.is_number())
        return money::parse(json::serialize(v));
    return std::nullopt;
}

// The members of `pricing.overrides[]` that are conditions, not prices.
bool is_condition(std::string_view k)
{
    return k == "min_prompt_tokens" || k == "utc_start" || k == "utc_end";
}

// Reads a row's `pricing` into `m`. A member that cannot be read does not fail the catalog: it
// makes the row's prices unusable (`price_problem`), and the first such member is named.
void read_pricing(const json::object& p, model_info& m)
{
    auto problem = [&m](std::string what) {
        if (m.price_problem.empty())
            m.price_problem = std::move(what);
    };
    bool prompt = false, completion = false;
    for (const auto& kv : p) {
        const std::string_view k(kv.key().data(), kv.key().size());
        const json::value& v = kv.value();
        if (k == "discount") {
            // A discount can only lower a bill: ignored, unless it is not a fraction.
            const bool fraction =
                v.is_number() && v.to_number<double>() >= 0.0 && v.to_number<double>() <= 1.0;
            if (!fraction && !v.is_null())
                problem("pricing.discount is " + describe_value(v) + ", not a fraction");
            continue;
        }
        if (k == "overrides") {
            if (v.is_null())
                continue;
            if (!v.is_array()) {
                problem("pricing.overrides is " + describe_value(v) + ", not an array");
                continue;
            }
            for (const auto& o : v.get_array()) {
                if (!o.is_object()) {
                    problem("an entry of pricing.overrides is " + describe_value(o));
                    continue;
                }
                for (const auto& ov : o.get_object()) {
                    const std::string_view ok(ov.key().data(), ov.key().size());
                    if (is_condition(ok))
                        continue;
                    const auto price = price_value(ov.value());
                    if (!price) {
                        problem(
                            "pricing.overrides[]." + std::string(ok) + " is " +
                            describe_value(ov.value()));
                        continue;
                    }
                    m.other_prices.emplace_back("overrides." + std::string(ok), *price);
                }
            }
            continue;
        }
        if (v.is_null())
            continue; // an absent price
        const auto price = price_value(v);
        if (!price) {
            problem("pricing." + std::string(k) + " is " + describe_value(v));
            continue;
        }
        if (k == "prompt") {
            m.prompt_price = *price;
            prompt = true;
        } else if (k == "completion") {
            m.completion_price = *price;
            completion = true;
        } else if (k == "request") {
            m.request_price = *price;
        } else {
            m.other_prices.emplace_back(std::string(k), *price);
        }
    }
    if (!prompt || !completion)
        problem(std::string("pricing.") + (prompt ? "completion" : "prompt") + " is missing");
}

} // namespace

error_code decode_models(std::string_view text, std::vector<model_info>& out)
{
    out.clear();
    error_code ec;
    const json::value v = json::parse(text, ec);
    if (ec || !v.is_object())
        return error::protocol_error;
    const auto* data = v.get_object().if_contains("data");
    if (data == nullptr || !data->is_array())
        return error::protocol_error;
    for (const auto& row : data->get_array()) {
        // A row frugal cannot route to (no id) is left out; a row whose prices cannot be read
        // is kept, marked, so that it is refused by name rather than unknown.
        if (!row.is_object())
            continue;
        const auto& o = row.get_object();
        model_info m;
        m.id = str(o, "id");
        if (m.id.empty())
            continue;
        m.name = str(o, "name");
        m.canonical_slug = str(o, "canonical_slug");
        m.created = static_cast<std::int64_t>(count(o, "created").value_or(0));
        m.context_length = count(o, "context_length");
        if (const auto* tp = o.if_contains("top_provider"); tp != nullptr && tp->is_object())
            m.max_completion_tokens = count(tp->get_object(), "max_completion_tokens");
        const auto* pricing = o.if_contains("pricing");
        if (pricing == nullptr || !pricing->is_object())
            m.price_problem = "the row has no pricing object";
        else
            read_pricing(pricing->get_object(), m);
        if (const auto* alias = o.if_contains("alias_target");
            alias != nullptr && alias->is_object())
            m.alias_target = str(alias->get_object(), "slug");
        out.push_back(std::move(m));
    }
    return {};
}

error_code decode_generation(std::string_view text, generation_info& out)
{
    error_code ec;
    const json::value v = json::parse(text, ec);
    const json::object* d = ec ? nullptr : data_object(v);
    if (d == nullptr)
        return error::protocol_error;
    out = {};
    out.id = str(*d, "id");
    out.model = str(*d, "model");
    out.provider = str(*d, "provider_name");
    if (const auto* c = d->if_contains("total_cost"); c != nullptr && !c->is_null()) {
        if (c->is_number())
            out.total_cost = reported_cost(json::serialize(*c), out.total_cost_rejected);
        else
            out.total_cost_rejected = c->is_string() ? "a string" : "not a number";
    }
    for (const auto& [key, to] :
         {std::pair{"tokens_prompt", &out.tokens_prompt},
          std::pair{"tokens_completion", &out.tokens_completion}}) {
        if (const auto n = count(*d, key))
            *to = *n;
        else if (out.tokens_rejected.empty())
            out.tokens_rejected = std::string(key) + " was missing or not a whole number";
    }
    out.is_byok = flag(*d, "is_byok");
    out.native_tokens_prompt = count(*d, "native_tokens_prompt");
    out.native_tokens_completion = count(*d, "native_tokens_completion");
    out.cancelled = flag(*d, "cancelled");
    out.streamed = flag(*d, "streamed");
    out.finish_reason = str(*d, "finish_reason");
    out.created_at = str(*d, "created_at");
    return {};
}

error_code decode_key_info(std::string_view text, key_info& out)
{
    error_code ec;
    const json::value v = json::parse(text, ec);
    const json::object* d = ec ? nullptr : data_object(v);
    if (d == nullptr)
        return error::protocol_error;
    out = {};
    out.label = str(*d, "label");
    out.limit = amount(*d, "limit");
    out.limit_remaining = amount(*d, "limit_remaining");
    out.usage = amount(*d, "usage").value_or(money());
    out.usage_daily = amount(*d, "usage_daily");
    out.usage_weekly = amount(*d, "usage_weekly");
    out.usage_monthly = amount(*d, "usage_monthly");
    out.is_free_tier = flag(*d, "is_free_tier").value_or(false);
    return {};
}

} // namespace frugal::openrouter

namespace frugal {

boost::system::result<std::vector<model_info>> parse_models(std::string_view json)
{
    std::vector<model_info> rows;
    if (auto ec = openrouter::decode_models(json, rows))
        return ec;
    return rows;
}

} // namespace frugal
