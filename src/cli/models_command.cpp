// `frugal models`: the catalog as a person (a table, per million tokens) or a program (JSON,
// exact strings) reads it, with which models are free by the money rule, not by their name.
#include "cli/commands.hpp"
#include "cli/json_text.hpp"

#include <frugal/chat_client.hpp>
#include <frugal/prices.hpp>

#include <boost/json/array.hpp>
#include <boost/json/object.hpp>

#include <algorithm>
#include <cstdio>
#include <limits>

namespace frugal::cli {

namespace json = boost::json;

namespace {

// A price per token as dollars per million tokens, exactly ("0.000003" -> "3").
std::string per_million(money per_token)
{
    constexpr money::rep million = 1'000'000;
    const auto units = per_token.units();
    if (units > std::numeric_limits<money::rep>::max() / million ||
        units < std::numeric_limits<money::rep>::min() / million)
        return per_token.to_string() + "/token";
    return money::from_units(units * million).to_string();
}

// Whether a catalog price member is per token (rather than per request, image or search).
bool per_token(std::string_view name)
{
    if (name.starts_with("overrides."))
        name.remove_prefix(10);
    return name == "prompt" || name == "completion" || name == "internal_reasoning" ||
           name.starts_with("input_cache") || name == "image_token" || name == "image_output" ||
           name == "audio" || name == "audio_output" || name == "input_audio_cache";
}

} // namespace

int run_models(const models_options& options)
{
    auto rows = fetch_catalog(options.base_url, "models");
    if (!rows)
        return exit_failure;
    std::sort(rows->begin(), rows->end(), [](const auto& a, const auto& b) { return a.id < b.id; });
    const price_catalog prices(*rows);
    auto is_free = [&](const model_info& m) {
        const auto* p = prices.find(m.id);
        return p != nullptr && p->free();
    };

    if (options.json) {
        json::array out;
        for (const auto& m : *rows) {
            if (options.free_only && !is_free(m))
                continue;
            json::object pricing{
                {"prompt", m.prompt_price.to_string()},
                {"completion", m.completion_price.to_string()},
                {"request", m.request_price.to_string()}};
            for (const auto& [name, price] : m.other_prices)
                pricing[name] = price.to_string();
            const auto* p = prices.find(m.id);
            json::object o{
                {"id", m.id},
                {"name", m.name},
                {"context_length", m.context_length ? json::value(*m.context_length) : nullptr},
                {"max_completion_tokens",
                 m.max_completion_tokens ? json::value(*m.max_completion_tokens) : nullptr},
                {"pricing", std::move(pricing)},
                {"free", is_free(m)},
                {"price_unknown",
                 p == nullptr || p->known() ? json::value(nullptr) : json::value(p->unknown)},
                {"alias_target", m.alias_target.empty() ? json::value(nullptr)
                                                        : json::value(m.alias_target)}};
            out.push_back(std::move(o));
        }
        std::fputs((to_json(json::object{{"models", std::move(out)}}) + '\n').c_str(), stdout);
        return 0;
    }

    std::printf(
        "%-44s %9s %12s %12s %10s %-5s %s\n", "model", "context", "prompt $/M", "output $/M",
        "request $", "free", "other prices ($/M; notes)");
    for (const auto& m : *rows) {
        if (options.free_only && !is_free(m))
            continue;
        std::string other;
        for (const auto& [name, price] : m.other_prices) {
            if (price == money())
                continue;
            // Token prices per million; a search, an image or a discount as it is.
            other += (other.empty() ? "" : " ") + name + "=" +
                     (per_token(name) ? per_million(price) : "$" + price.to_string() + " each");
        }
        if (!m.alias_target.empty())
            other += (other.empty() ? "" : " ") + ("alias of " + m.alias_target);
        if (const auto* p = prices.find(m.id); p != nullptr && !p->known())
            other += (other.empty() ? "" : "; ") + ("price unknown: " + p->unknown);
        std::printf(
            "%-44s %9s %12s %12s %10s %-5s %s\n", m.id.c_str(),
            m.context_length ? std::to_string(*m.context_length).c_str() : "-",
            per_million(m.prompt_price).c_str(), per_million(m.completion_price).c_str(),
            m.request_price.to_string().c_str(), is_free(m) ? "yes" : "no", other.c_str());
    }
    return 0;
}

} // namespace frugal::cli
