#include <frugal/prices.hpp>

#include <frugal/error.hpp>

#include "budget/book.hpp"

#include <boost/json/parse.hpp>
#include <boost/json/serialize.hpp>
#include <boost/json/value.hpp>

#include <algorithm>
#include <string>
#include <unordered_map>

namespace frugal {

namespace json = boost::json;

namespace {

struct hash {
    using is_transparent = void;
    std::size_t operator()(std::string_view s) const noexcept
    {
        return std::hash<std::string_view>{}(s);
    }
};

bool is_free_variant(std::string_view id) noexcept
{
    return id.size() >= 5 && id.substr(id.size() - 5) == ":free";
}

// The catalog's price members by what the bound does with them.
enum class role : std::uint8_t {
    prompt,
    completion,
    request,
    internal_reasoning,
    cache_read,
    cache_write,
    media_output,
    web_search,
    media_input, // a medium frugal's typed requests cannot carry (images, audio)
    unknown,
};

role role_of(std::string_view name) noexcept
{
    if (name == "prompt")
        return role::prompt;
    if (name == "completion")
        return role::completion;
    if (name == "request")
        return role::request;
    if (name == "internal_reasoning")
        return role::internal_reasoning;
    if (name == "input_cache_read")
        return role::cache_read;
    if (name == "input_cache_write" || name == "input_cache_write_1h" ||
        name == "input_cache_write_5m")
        return role::cache_write;
    if (name == "image_output" || name == "audio_output")
        return role::media_output;
    if (name == "web_search")
        return role::web_search;
    if (name == "image" || name == "image_token" || name == "audio" || name == "input_audio_cache")
        return role::media_input;
    return role::unknown;
}

void raise(money& to, money m) noexcept
{
    to = std::max(to, m);
}

// The prices of row `src`, for a lookup under `id`.
model_price price_of_row(const model_info& src)
{
    model_price p;
    p.id = src.id;
    p.context_length = src.context_length;
    p.max_completion_tokens = src.max_completion_tokens;
    if (!src.price_problem.empty()) {
        p.unknown = src.price_problem;
        return p;
    }
    bool zero = true;
    auto add = [&](std::string_view name, money m) {
        if (m < money()) {
            // OpenRouter writes "-1" for a price that varies by request.
            if (p.unknown.empty())
                p.unknown = "pricing." + std::string(name) + " is " + m.to_string() +
                            " (a price that varies by request)";
            return;
        }
        zero = zero && m == money();
        switch (role_of(name)) {
        case role::prompt: raise(p.prompt, m); break;
        case role::completion: raise(p.completion, m); break;
        case role::request: raise(p.request, m); break;
        case role::internal_reasoning: raise(p.internal_reasoning, m); break;
        case role::cache_read: raise(p.cache_read, m); break;
        case role::cache_write: raise(p.cache_write, m); break;
        case role::media_output: raise(p.media_output, m); break;
        case role::web_search: raise(p.web_search, m); break;
        case role::media_input: break;
        case role::unknown:
            if (m != money() && p.unknown.empty())
                p.unknown = "pricing." + std::string(name) + " is a price frugal cannot bound";
            break;
        }
    };
    add("prompt", src.prompt_price);
    add("completion", src.completion_price);
    add("request", src.request_price);
    for (const auto& [name, m] : src.other_prices) {
        std::string_view n = name;
        if (n.starts_with("overrides."))
            n.remove_prefix(10); // a conditional price: the bound takes the dearest
        add(n, m);
    }
    // `:online` is OpenRouter's web plugin on every request: a search fee the bound cannot hold.
    if (p.unknown.empty() && src.id.ends_with(":online"))
        p.unknown = "an :online model searches the web on every request, for fees frugal cannot "
                    "bound";
    p.all_zero = zero && p.unknown.empty();
    return p;
}

bool same_prices(const model_price& a, const model_price& b) noexcept
{
    return a.prompt == b.prompt && a.completion == b.completion && a.request == b.request &&
           a.internal_reasoning == b.internal_reasoning && a.cache_read == b.cache_read &&
           a.cache_write == b.cache_write && a.media_output == b.media_output &&
           a.web_search == b.web_search && a.all_zero == b.all_zero && a.unknown == b.unknown;
}

} // namespace

money model_price::input_rate() const noexcept
{
    return std::max({prompt, cache_read, cache_write});
}

money model_price::output_rate() const noexcept
{
    return std::max({completion, internal_reasoning, media_output});
}

struct price_catalog::rep {
    std::vector<model_price> prices;
    // exact id → index into prices (transparent lookup: no string per find)
    std::unordered_map<std::string, std::size_t, hash, std::equal_to<>> by_id;
    // canonical slug → index, separately for `:free` rows and the others
    std::unordered_map<std::string, std::size_t, hash, std::equal_to<>> by_slug[2];
};

price_catalog::price_catalog() : rep_(std::make_shared<rep>()) {}

price_catalog::price_catalog(const std::vector<model_info>& rows)
{
    auto r = std::make_shared<rep>();
    std::unordered_map<std::string_view, const model_info*> rows_by_id;
    for (const auto& m : rows)
        rows_by_id.emplace(m.id, &m);
    for (const auto& m : rows) {
        model_price p;
        if (!m.alias_target.empty()) {
            // An alias row is priced as the model it points at (one hop: OpenRouter's aliases
            // name concrete models).
            const auto t = rows_by_id.find(m.alias_target);
            if (t == rows_by_id.end()) {
                p.id = m.alias_target;
                p.unknown = "an alias of " + m.alias_target + ", which the catalog does not list";
            } else {
                p = price_of_row(*t->second);
            }
        } else {
            p = price_of_row(m);
        }
        const auto [it, added] = r->by_id.emplace(m.id, r->prices.size());
        if (!added) {
            // One id listed twice: usable only if both rows say the same.
            auto& first = r->prices[it->second];
            if (!same_prices(first, p) && first.known())
                first.unknown = "listed twice with different prices";
            continue;
        }
        r->prices.push_back(std::move(p));
    }
    // The canonical slug, a fallback for a served model reported by it: among rows of the same
    // kind (free or not) only, and only when they agree.
    const auto listed = r->prices.size();
    for (const auto& m : rows) {
        if (m.canonical_slug.empty() || m.canonical_slug == m.id)
            continue;
        const auto i = r->by_id.at(m.id);
        auto& slugs = r->by_slug[is_free_variant(m.id) ? 1 : 0];
        const auto [it, added] = slugs.emplace(m.canonical_slug, i);
        if (added || it->second == i || same_prices(r->prices[it->second], r->prices[i]))
            continue;
        if (it->second < listed) {
            model_price ambiguous = r->prices[it->second];
            ambiguous.id = m.canonical_slug;
            ambiguous.unknown =
                "canonical slug " + m.canonical_slug + " names rows of different prices";
            it->second = r->prices.size();
            r->prices.push_back(std::move(ambiguous));
        }
    }
    rep_ = std::move(r);
}

const model_price* price_catalog::find(std::string_view model) const noexcept
{
    if (const auto it = rep_->by_id.find(model); it != rep_->by_id.end())
        return &rep_->prices[it->second];
    const auto& slugs = rep_->by_slug[is_free_variant(model) ? 1 : 0];
    if (const auto it = slugs.find(model); it != slugs.end())
        return &rep_->prices[it->second];
    return nullptr;
}

std::size_t price_catalog::size() const noexcept
{
    return rep_->by_id.size();
}

boost::system::result<money> price_catalog::token_cost(std::string_view model, const usage& u) const
{
    return detail::token_cost(find(model), u);
}

boost::system::result<money> detail::token_cost(const model_price* p, const usage& u)
{
    if (p == nullptr || !p->known())
        return boost::system::error_code(error::price_unknown);
    if (p->free())
        return money();
    if (!u.tokens_rejected.empty()) // counts that are a lie or a fault price nothing
        return boost::system::error_code(error::protocol_error);
    // prompt × price (+ the cache-write premium) + output × the dearest output rate (usage
    // does not say which output was reasoning, image or audio at each rate) + request, exactly
    // (saturating far beyond any bill): never below what the catalog's prices can bill.
    auto c = detail::saturating_fma(p->prompt, u.prompt_tokens, p->request);
    if (u.cache_write_tokens && p->cache_write > p->prompt)
        c = detail::saturating_fma(p->cache_write - p->prompt, *u.cache_write_tokens, c);
    return detail::saturating_fma(p->output_rate(), u.completion_tokens, c);
}

boost::system::result<money>
price_catalog::cost_of(std::string_view served_model, const std::optional<usage>& u) const
{
    if (u && u->cost)
        return *u->cost;
    if (!u) {
        const auto* p = find(served_model);
        if (p != nullptr && p->free())
            return money();
        return boost::system::error_code(error::price_unknown);
    }
    return token_cost(served_model, *u);
}

cost_bound
worst_case(const model_price& p, std::uint64_t prompt_bytes, const request_features& f) noexcept
{
    const money out = p.output_rate();
    auto fixed = detail::saturating_fma(p.input_rate(), prompt_bytes, p.request);
    fixed = detail::saturating_fma(out, f.reasoning_tokens, fixed);
    fixed = detail::saturating_fma(out, f.prediction_bytes, fixed);
    return {fixed, out};
}

namespace {

// Plugins that add no fee of their own.
bool fee_free_plugin(std::string_view id) noexcept
{
    return id == "context-compression" || id == "response-healing";
}

} // namespace

request_features inspect_extra_body(std::string_view extra_body)
{
    request_features f;
    if (extra_body.empty())
        return f;
    boost::system::error_code ec;
    const json::value v = json::parse(extra_body, ec);
    if (ec || !v.is_object()) {
        f.invalid = true;
        return f;
    }
    auto fee = [&f](std::string what) {
        if (f.unbounded_fee.empty())
            f.unbounded_fee = std::move(what);
    };
    for (const auto& kv : v.get_object()) {
        const std::string_view k(kv.key().data(), kv.key().size());
        const json::value& m = kv.value();
        if (k == "plugins") {
            if (!m.is_array()) {
                fee("plugins that are not an array");
                continue;
            }
            for (const auto& p : m.get_array()) {
                const auto* o = p.if_object();
                const auto* id = o != nullptr ? o->if_contains("id") : nullptr;
                const auto* enabled = o != nullptr ? o->if_contains("enabled") : nullptr;
                if (enabled != nullptr && enabled->is_bool() && !enabled->get_bool())
                    continue;
                if (id == nullptr || !id->is_string())
                    fee("a plugin without an id");
                else if (!fee_free_plugin(id->get_string()))
                    fee("the plugin \"" + std::string(id->get_string()) + "\"");
            }
        } else if (k == "web_search_options") {
            fee("web_search_options (web search)");
        } else if (k == "tools") {
            if (!m.is_array())
                continue; // the provider rejects it; nothing is billed
            for (const auto& t : m.get_array()) {
                const auto* o = t.if_object();
                const auto* type = o != nullptr ? o->if_contains("type") : nullptr;
                if (type != nullptr && type->is_string() && type->get_string() != "function")
                    fee("the server tool \"" + std::string(type->get_string()) + "\"");
            }
        } else if (k == "service_tier") {
            if (!m.is_string() || !(m.get_string() == "auto" || m.get_string() == "default" ||
                                    m.get_string() == "flex"))
                fee("service_tier (priority tiers bill above the listed prices)");
        } else if (k == "reasoning") {
            const auto* o = m.if_object();
            const auto* max = o != nullptr ? o->if_contains("max_tokens") : nullptr;
            if (max != nullptr) {
                if (max->is_uint64())
                    f.reasoning_tokens = max->get_uint64();
                else if (max->is_int64() && max->get_int64() >= 0)
                    f.reasoning_tokens = static_cast<std::uint64_t>(max->get_int64());
                else
                    fee("reasoning.max_tokens that is not a count");
            }
        } else if (k == "prediction") {
            f.prediction_bytes = json::serialize(m).size();
        }
    }
    return f;
}

} // namespace frugal
