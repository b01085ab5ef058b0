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
///
/// Each price is the highest the row lists for it: its base price or any of its conditional
/// `pricing.overrides` (a long prompt, an hour of the day), since which applies is not known
/// before the request is served.
struct model_price {
    std::string id; ///< the catalog row the prices come from (an alias's target)
    money prompt;
    money completion;
    money request;
    money internal_reasoning; ///< per reasoning token (0: billed as completion)
    money cache_read;         ///< per cached prompt token read
    money cache_write;        ///< per prompt token written to the cache (the dearer lifetime)
    money media_output;       ///< per image or audio output token
    money web_search;         ///< per web search, when the request turns search on
    /// Every price the row lists is zero. Only then is a model free: a `:free` suffix proves
    /// nothing, and a row with, say, a nonzero `image` price is paid.
    bool all_zero = false;
    /// Why frugal cannot bound this model's cost: a price it could not read, one it does not
    /// know, a variable price ("-1"), or a bill above its own prices earlier in this process.
    /// A cap refuses such a model (`error::price_unknown`) with this reason. Empty when known.
    std::string unknown;
    std::optional<std::uint64_t> context_length;
    std::optional<std::uint64_t> max_completion_tokens;

    /// Whether the model costs nothing for any request frugal can send.
    bool free() const noexcept { return all_zero && unknown.empty(); }
    /// Whether its cost can be bounded.
    bool known() const noexcept { return unknown.empty(); }
    /// The highest price a prompt token can be billed at (prompt, cache reads and writes).
    money input_rate() const noexcept;
    /// The highest price an output token can be billed at (completion, internal reasoning,
    /// image and audio output).
    money output_rate() const noexcept;
};

/// An exact cost bound for a request: `fixed + per_completion_token × max_tokens`.
struct cost_bound {
    money fixed;                ///< prompt bytes × input rate, the request fee, feature fees
    money per_completion_token; ///< the output rate
};

/// What a request's `extra_body` turns on that costs more than the catalog's per-token prices.
/// (Members the typed request or the guard owns are refused by the client before anything is
/// sent: `chat_request::extra_body`.)
struct request_features {
    /// What adds fees the catalog cannot bound (a plugin other than `context-compression` and
    /// `response-healing`, `web_search_options`, a server tool, a priority `service_tier`):
    /// empty when nothing does. A cap refuses such a request.
    std::string unbounded_fee;
    /// `reasoning.max_tokens`: reasoning tokens the request allows, priced as output on top of
    /// max_tokens in case a provider does not count them in it.
    std::uint64_t reasoning_tokens = 0;
    /// The size of `prediction`: a rejected prediction is billed as output tokens.
    std::uint64_t prediction_bytes = 0;
    /// `extra_body` is not a JSON object.
    bool invalid = false;
};

/// Reads what `extra_body` (the text of a JSON object, or empty) turns on.
request_features inspect_extra_body(std::string_view extra_body);

/// The price list of every model in a catalog, looked up by id.
///
/// A model is found by its exact `id` first. A `canonical_slug` (OpenRouter may report the
/// served model by it) is only a fallback, and only to rows of the same kind: it never maps a
/// `:free` id to a paid row or a paid id to a `:free` one, and a slug two rows of different
/// prices share is ambiguous, so unknown. An alias row (`~author/family-latest`) is priced as
/// its `alias_target`.
///
/// A row whose prices cannot be bounded stays in the catalog marked `unknown`, so a request to
/// it is refused with the reason rather than priced as $0.
///
/// @par Thread safety
/// Immutable after construction: safe to share across threads.
class price_catalog {
public:
    /// An empty catalog: every lookup fails.
    price_catalog();

    /// The catalog of `rows`, as `async_models` returns them.
    explicit price_catalog(const std::vector<model_info>& rows);

    /// The prices of `model`, or null when the catalog does not list it. A listed model whose
    /// cost cannot be bounded is returned with `unknown` set.
    const model_price* find(std::string_view model) const noexcept;

    /// The cost of a response served by `served_model`: the provider's `usage.cost` when it
    /// reported one it could bill; otherwise its tokens at the catalog prices of
    /// `served_model` (`token_cost`); otherwise `error::price_unknown` (a missing price is
    /// never recorded as $0).
    boost::system::result<money>
    cost_of(std::string_view served_model, const std::optional<usage>& u) const;

    /// The tokens of `u` at the catalog prices of `model`: prompt tokens at the prompt price
    /// (cache writes at their premium), completion tokens at the dearest output rate (usage
    /// does not say which were reasoning, image or audio), plus the request fee: never below
    /// what the catalog's prices can bill. Fails with `error::price_unknown` when the model's
    /// cost is not known.
    boost::system::result<money> token_cost(std::string_view model, const usage& u) const;

    /// What an answered request to `model_asked` is booked at: the provider's `usage.cost`
    /// when frugal can take it as a bill, else the tokens at the dearer of the asked and the
    /// served model's prices (a response naming a cheaper or `:free` model never lowers the
    /// books), else nothing (no usage and no price: the reservation is charged whole).
    /// `anomaly` is set when the provider's report could not be taken (`$0` from a paid model
    /// without BYOK, a rejected `usage.cost`).
    std::optional<money> booked_cost(
        std::string_view model_asked, const chat_response& response, std::string& anomaly) const;

    /// Whether `other` is this very catalog (a copy of it), not another with equal rows.
    bool same_as(const price_catalog& other) const noexcept { return rep_ == other.rep_; }

    /// The number of models listed.
    std::size_t size() const noexcept;

private:
    struct rep;
    std::shared_ptr<const rep> rep_;
};

/// The worst case of a request to a model with prices `p`: `prompt_bytes` is the size of the
/// request body as sent, an upper bound on its prompt tokens (a token of any byte-level or
/// byte-fallback tokenizer covers at least one byte of text, and the JSON framing around each
/// message is longer than the chat template's special tokens). Prompt tokens are priced at the
/// input rate, output tokens at the output rate, and `features` add their output tokens
/// (reasoning, prediction) to the fixed part. Fees in `features.unbounded_fee` are not in it:
/// a guard refuses such requests.
cost_bound worst_case(
    const model_price& p,
    std::uint64_t prompt_bytes,
    const request_features& features = {}) noexcept;

} // namespace frugal

#endif // FRUGAL_PRICES_HPP
