#include <frugal/prices.hpp>

#include <frugal/error.hpp>

#include "budget/book.hpp"

#include <string>
#include <unordered_map>

namespace frugal {

struct price_catalog::rep {
    std::vector<model_price> prices;
    // id and canonical slug → index into prices (transparent lookup: no string per find)
    struct hash {
        using is_transparent = void;
        std::size_t operator()(std::string_view s) const noexcept
        {
            return std::hash<std::string_view>{}(s);
        }
    };
    std::unordered_map<std::string, std::size_t, hash, std::equal_to<>> index;
};

price_catalog::price_catalog() : rep_(std::make_shared<rep>()) {}

price_catalog::price_catalog(const std::vector<model_info>& rows)
{
    auto r = std::make_shared<rep>();
    std::unordered_map<std::string_view, const model_info*> by_id;
    for (const auto& m : rows)
        by_id.emplace(m.id, &m);
    for (const auto& m : rows) {
        const model_info* src = &m;
        // An alias row is priced as the model it points at (one hop: OpenRouter's aliases
        // name concrete models).
        if (!m.alias_target.empty()) {
            const auto t = by_id.find(m.alias_target);
            if (t == by_id.end())
                continue;
            src = t->second;
        }
        // OpenRouter writes "-1" for a price that varies by request: not a price frugal knows.
        if (src->prompt_price < money() || src->completion_price < money() ||
            src->request_price < money())
            continue;
        model_price p;
        p.id = src->id;
        p.prompt = src->prompt_price;
        p.completion = src->completion_price;
        p.request = src->request_price;
        p.context_length = src->context_length;
        p.max_completion_tokens = src->max_completion_tokens;
        const auto i = r->prices.size();
        r->prices.push_back(std::move(p));
        r->index.emplace(m.id, i);
        if (!m.canonical_slug.empty())
            r->index.emplace(m.canonical_slug, i);
    }
    rep_ = std::move(r);
}

const model_price* price_catalog::find(std::string_view model) const noexcept
{
    const auto it = rep_->index.find(model);
    return it == rep_->index.end() ? nullptr : &rep_->prices[it->second];
}

std::size_t price_catalog::size() const noexcept
{
    return rep_->prices.size();
}

boost::system::result<money>
price_catalog::cost_of(std::string_view served_model, const std::optional<usage>& u) const
{
    if (u && u->cost)
        return *u->cost;
    const auto* p = find(served_model);
    if (p != nullptr && p->free())
        return money();
    if (p == nullptr || !u)
        return boost::system::error_code(error::price_unknown);
    // prompt × price + completion × price + request, exactly (saturating far beyond any bill).
    const auto c = detail::saturating_fma(p->prompt, u->prompt_tokens, p->request);
    return detail::saturating_fma(p->completion, u->completion_tokens, c);
}

cost_bound worst_case(const model_price& p, std::uint64_t prompt_bytes) noexcept
{
    return {detail::saturating_fma(p.prompt, prompt_bytes, p.request), p.completion};
}

} // namespace frugal
