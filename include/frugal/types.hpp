#ifndef FRUGAL_TYPES_HPP
#define FRUGAL_TYPES_HPP

/// @file
/// The value types of OpenRouter's API as frugal uses them: chat requests and responses,
/// stream deltas, usage, the model catalog, generation lookups and key information.
///
/// They are plain aggregates: copyable, comparable with `==`, with no I/O. Everything the
/// provider may leave out is a `std::optional` (or empty), because OpenRouter's responses
/// have changed shape over time and differ between models.

#include <frugal/money.hpp>

#include <cstdint>
#include <optional>
#include <string>
#include <utility>
#include <vector>

namespace frugal {

/// A tool call made by the model (OpenAI's function-calling shape).
struct tool_call {
    std::string id;
    std::string type = "function";
    std::string name;      ///< the function's name
    std::string arguments; ///< the arguments, as the JSON text the model produced
    bool operator==(const tool_call&) const = default;
};

/// One message of a conversation.
struct chat_message {
    std::string role; ///< "system", "user", "assistant" or "tool"
    std::string content;
    std::string name;                  ///< optional participant name
    std::string tool_call_id;          ///< for role "tool": the call this answers
    std::vector<tool_call> tool_calls; ///< for role "assistant": calls it made
    bool operator==(const chat_message&) const = default;
};

/// OpenRouter's provider routing preferences (the request's `provider` object).
struct provider_preferences {
    std::vector<std::string> order; ///< provider slugs to try in order
    std::optional<bool> allow_fallbacks;
    std::vector<std::string> only;   ///< only these providers
    std::vector<std::string> ignore; ///< never these providers
    std::string sort;                ///< "price", "throughput", "latency" or empty
    std::optional<bool> require_parameters;
    std::string data_collection; ///< "allow", "deny" or empty
    std::optional<bool> zdr;
    bool operator==(const provider_preferences&) const = default;
};

/// A chat completion request.
struct chat_request {
    std::string model;               ///< e.g. "google/gemma-4-31b-it:free"
    std::vector<std::string> models; ///< OpenRouter's fallback list, tried in order
    std::vector<chat_message> messages;
    std::optional<std::uint32_t> max_tokens;
    std::optional<double> temperature;
    std::optional<double> top_p;
    std::optional<std::uint64_t> seed;
    std::vector<std::string> stop;
    /// "json_object", "json_schema" or empty for text.
    std::string response_format;
    /// For "json_schema": the `json_schema` object, as JSON text ({"name":..,"schema":..}).
    std::string response_schema;
    std::optional<provider_preferences> provider;
    std::string user; ///< the end user, for abuse isolation
    /// JSON object text whose members are added to the request body untouched (tools,
    /// plugins, reasoning settings...). It may not set what the typed request or the budget
    /// guard owns (`model`, `models`, `messages`, `max_tokens`, `max_completion_tokens`,
    /// `stream`, `stream_options`, `usage`, `n`, `best_of`, or a typed field this request
    /// sets): such a request fails with `error::bad_request_body` before anything is sent.
    /// Under a cap, members that add fees the catalog cannot bound are refused (docs/budget.md).
    std::string extra_body;
    bool operator==(const chat_request&) const = default;
};

/// The largest cost frugal takes from a provider's report of one generation: $1,000, ten
/// times what the costliest model OpenRouter lists charges for its whole context and output.
/// A reported cost above it is a lie or a bug, never a bill to book at face value.
inline constexpr money max_reported_cost = money::from_units(1000 * money::units_per_usd);

/// Token counts and cost of one generation. Every field but the three counts may be absent.
struct usage {
    std::uint64_t prompt_tokens = 0;
    std::uint64_t completion_tokens = 0;
    std::uint64_t total_tokens = 0;
    /// What OpenRouter billed, exactly as it reported it (0 for free models and BYOK); a
    /// number finer than a picodollar is rounded up. Absent when the response had no `cost`
    /// (or a null one) and when the one it had is rejected (see `cost_rejected`).
    std::optional<money> cost;
    /// When the response's `cost` is not a bill frugal can book, why: frugal's own words
    /// ("negative (-0.99)", "a string", "above $1000 (1e300)"), never the provider's text.
    std::string cost_rejected;
    /// When the token counts cannot price the generation, why, in frugal's words
    /// ("usage.prompt_tokens was negative (-5)", "usage.completion_tokens was missing or not a
    /// number"): the counts then read 0, and without `cost` the generation's bill is unknown
    /// (booked at its reservation), never priced from them.
    std::string tokens_rejected;
    std::optional<bool> is_byok;
    std::optional<money> upstream_inference_cost;
    std::optional<std::uint64_t> cached_tokens;
    std::optional<std::uint64_t> cache_write_tokens;
    std::optional<std::uint64_t> reasoning_tokens;
    bool operator==(const usage&) const = default;
};

/// A complete chat response, or what a stream added up to when it ended.
struct chat_response {
    std::string id;       ///< the generation id ("gen-...")
    std::string model;    ///< the model that served (the concrete one for an alias)
    std::string provider; ///< the provider that served, e.g. "Anthropic"
    std::int64_t created = 0;
    std::string content;
    std::string reasoning;
    std::string refusal;
    std::vector<tool_call> tool_calls;
    std::string finish_reason;        ///< "stop", "length", "tool_calls", "content_filter", "error"
    std::string native_finish_reason; ///< the provider's own
    std::optional<frugal::usage> usage;
    bool operator==(const chat_response&) const = default;
};

/// A piece of a tool call, as a stream delivers it.
struct tool_call_delta {
    std::uint32_t index = 0;
    std::string id;
    std::string name;
    std::string arguments; ///< a fragment to append
    bool operator==(const tool_call_delta&) const = default;
};

/// What a stream added since the previous read: one event's worth when the reader keeps up
/// with the stream, the events that arrived meanwhile, joined in order, when it does not.
struct chat_delta {
    std::string content;
    std::string reasoning;
    /// Tool-call fragments in arrival order (consecutive fragments of one call are joined).
    std::vector<tool_call_delta> tool_calls;
    /// How many stream events this delta joins (0 for the read that meets `[DONE]` alone).
    std::uint32_t events = 0;
    bool operator==(const chat_delta&) const = default;
};

/// A row of the models catalog.
struct model_info {
    std::string id;
    std::string name;
    std::string canonical_slug;
    std::int64_t created = 0;
    std::optional<std::uint64_t> context_length;
    std::optional<std::uint64_t> max_completion_tokens;
    /// Prices in USD per token (and per request), exactly as listed. A price OpenRouter marks
    /// as variable ("-1") is kept as -1 USD.
    money prompt_price;
    money completion_price;
    money request_price;
    /// Every other price the row lists, by its `pricing` member's name ("internal_reasoning",
    /// "web_search", "input_cache_read", ...), exactly as listed; a price of an entry of
    /// `pricing.overrides` is named "overrides.NAME".
    std::vector<std::pair<std::string, money>> other_prices;
    /// Why the row's prices cannot be used, when one of them could not be read (not a number,
    /// finer than a picodollar, a `discount` that is not a fraction): frugal's own words naming
    /// the member. Empty when every price was read.
    std::string price_problem;
    std::string alias_target; ///< for `~author/family-latest` rows: the concrete model id
    bool operator==(const model_info&) const = default;
};

/// The provider's record of one generation (`GET /generation?id=`).
struct generation_info {
    std::string id;
    std::string model;
    std::string provider;
    /// What the provider billed; absent when not reported or rejected (`total_cost_rejected`).
    std::optional<money> total_cost;
    /// When `total_cost` is not a bill frugal can book, why (as `usage::cost_rejected`).
    std::string total_cost_rejected;
    std::uint64_t tokens_prompt = 0;
    std::uint64_t tokens_completion = 0;
    /// When `tokens_prompt` or `tokens_completion` is missing or not a whole number of zero or
    /// more, why (as `usage::tokens_rejected`); they then read 0, and prove nothing was served.
    std::string tokens_rejected;
    /// Whether the generation ran on the user's own provider key (its `total_cost` is then
    /// OpenRouter's fee alone, which may be 0).
    std::optional<bool> is_byok;
    std::optional<std::uint64_t> native_tokens_prompt;
    std::optional<std::uint64_t> native_tokens_completion;
    std::optional<bool> cancelled;
    std::optional<bool> streamed;
    std::string finish_reason;
    std::string created_at;
    bool operator==(const generation_info&) const = default;
};

/// The API key's limits and spend (`GET /key`).
struct key_info {
    std::string label;
    std::optional<money> limit; ///< none: unlimited
    std::optional<money> limit_remaining;
    money usage;
    std::optional<money> usage_daily;
    std::optional<money> usage_weekly;
    std::optional<money> usage_monthly;
    bool is_free_tier = false;
    bool operator==(const key_info&) const = default;
};

} // namespace frugal

#endif // FRUGAL_TYPES_HPP
