#ifndef FRUGAL_PRICES_HPP
#define FRUGAL_PRICES_HPP

/// @file
/// What a model costs, from OpenRouter's models catalog, and what a response cost.

#include <frugal/money.hpp>
#include <frugal/types.hpp>

#include <boost/system/result.hpp>

#include <cstdint>
#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

namespace frugal {

/// The prices of one model, in USD per token and per request.
struct model_price {
    std::string id; ///< the catalog row the prices come from (an alias's target)
    money prompt;
    money completion;
    money request;
    std::optional<std::uint64_t> context_length;
    std::optional<std::uint64_t> max_completion_tokens;

    /// Whether every price is zero (`:free` rows): such calls never touch a budget.
    bool free() const noexcept
    {
        return prompt == money() && completion == money() && request == money();
    }
};

/// An exact cost bound for a request: `fixed + per_completion_token × max_tokens`.
struct cost_bound {
    money fixed;                ///< prompt tokens bound × prompt price + request price
    money per_completion_token; ///< the completion price
};

/// The price list of every model in a catalog, looked up by id.
///
/// Rows are found by `id` and by `canonical_slug` (OpenRouter reports the served model by
/// either). An alias row (`~author/family-latest`) is priced as its `alias_target`. A row that
/// OpenRouter prices as variable ("-1") has no usable price: lookups of it fail, so a price
/// frugal does not know is never taken as $0.
///
/// @par Thread safety
/// Immutable after construction: safe to share across threads.
class price_catalog {
public:
    /// An empty catalog: every lookup fails.
    price_catalog();

    /// The catalog of `rows`, as `async_models` returns them.
    explicit price_catalog(const std::vector<model_info>& rows);

    /// The prices of `model`, or null when the catalog does not price it.
    const model_price* find(std::string_view model) const noexcept;

    /// The cost of a response served by `served_model`: the provider's `usage.cost` when it
    /// is present; otherwise its tokens at the catalog prices of `served_model`; otherwise
    /// `error::price_unknown` (a missing price is never recorded as $0).
    boost::system::result<money>
    cost_of(std::string_view served_model, const std::optional<usage>& u) const;

    /// The number of priced models.
    std::size_t size() const noexcept;

private:
    struct rep;
    std::shared_ptr<const rep> rep_;
};

/// The worst case of a request to a model with prices `p`: `prompt_bytes` is the size of the
/// request body as sent, an upper bound on its prompt tokens (a token of any byte-level or
/// byte-fallback tokenizer covers at least one byte of text, and the JSON framing around each
/// message is longer than the chat template's special tokens).
cost_bound worst_case(const model_price& p, std::uint64_t prompt_bytes) noexcept;

} // namespace frugal

#endif // FRUGAL_PRICES_HPP
