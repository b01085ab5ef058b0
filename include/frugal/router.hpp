#ifndef FRUGAL_ROUTER_HPP
#define FRUGAL_ROUTER_HPP

/// @file
/// The cheap-first cascade: a request goes to the cheapest tier first and escalates only when
/// a condition says its answer is not good enough, inside the budget.

#include <frugal/budget.hpp>
#include <frugal/budget_store.hpp>
#include <frugal/chat_client.hpp>
#include <frugal/diagnostics.hpp>
#include <frugal/money.hpp>
#include <frugal/prices.hpp>
#include <frugal/types.hpp>

#include <boost/asio/any_completion_handler.hpp>
#include <boost/asio/as_tuple.hpp>
#include <boost/asio/async_result.hpp>
#include <boost/asio/awaitable.hpp>
#include <boost/asio/deferred.hpp>
#include <boost/asio/use_awaitable.hpp>
#include <boost/system/error_code.hpp>
#include <boost/system/result.hpp>

#include <chrono>
#include <cstdint>
#include <functional>
#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <tuple>
#include <type_traits>
#include <vector>

namespace frugal {

/// Why a request moved to a higher tier.
enum class escalation_reason : std::uint8_t {
    none,
    length,       ///< finish_reason "length": the answer was cut
    empty,        ///< no content (whitespace only, or reasoning only)
    error,        ///< the tier failed (an error status, a broken or cut stream)
    timeout,      ///< the tier missed a deadline
    rate_limited, ///< the tier's rate limit (a 429, or the free-tier limiter being empty)
    refusal,      ///< the answer matches a refusal pattern
    invalid_json, ///< JSON was asked for and the answer is not JSON (or breaks the schema)
    too_short,    ///< fewer characters than the policy's `min_chars`
    predicate,    ///< a user predicate rejected the answer
    context,      ///< pre-routing: the prompt does not fit the tier's context
    rule,         ///< pre-routing: a user rule sent the request up
    must_match,   ///< the answer does not contain the policy's `must_match` pattern
};

/// The name of `r` as policies and reports write it ("length", "empty", ...).
const char* to_string(escalation_reason r) noexcept;

/// What to do when the budget denies an escalation.
enum class on_budget_exhausted {
    return_cheap, ///< return the last answer, marked `budget_denied` (the default)
    fail,         ///< fail with `error::budget_exhausted`
};

/// What to do when the free tier's quota is used up.
enum class on_free_tier_empty {
    /// Skip the free tier (reason `rate_limited`) and pay the next one: an opt-in, since it
    /// turns free traffic into paid traffic.
    escalate,
    /// Wait for the quota, up to `free_tier_limits::max_wait`, then fail the request with
    /// `error::rate_limited`: it never quietly becomes paid (the default).
    wait,
};

/// OpenRouter's limits on `:free` models, enforced client-side so a cascade waits (or skips)
/// instead of collecting 429s. A limit left at 0 is the server's: talking to openrouter.ai,
/// its documented 20 a minute and 50 a day (1,000 once the key's status says $10 of credits
/// were bought, `router::learn`); elsewhere none until the server states one. Either way the
/// router learns the server's limits from a 429 (its `X-RateLimit-*` headers, their echo in the
/// body, `Retry-After`). With a shared budget store (Redis), the quota is counted in the store,
/// for the whole fleet.
struct free_tier_limits {
    /// Requests a sliding minute; 0: the server's (see above).
    std::uint32_t per_minute = 0;
    /// Requests a UTC day; 0: the server's (see above).
    std::uint32_t per_day = 0;
    on_free_tier_empty when_empty = on_free_tier_empty::wait;
    /// The longest a cascade waits for the free tier, 429s retried included.
    std::chrono::milliseconds max_wait{60'000};
};

/// A user predicate: true when the answer is acceptable.
using answer_predicate = std::function<bool(const chat_request&, const chat_response&)>;

/// A pre-routing rule: the tier to start at (0 = the cheapest).
using routing_rule = std::function<std::uint32_t(const chat_request&)>;

/// How a cascade runs.
struct cascade_policy {
    /// The models from cheapest to the flagship (at least one).
    std::vector<std::string> tiers;
    /// The conditions that escalate (`none`, `context` and `rule` have no meaning here).
    std::vector<escalation_reason> escalate_on{
        escalation_reason::length, escalation_reason::empty, escalation_reason::error,
        escalation_reason::refusal};
    /// The max_tokens of every attempt (a request's own max_tokens wins when set).
    std::uint32_t max_tokens = 512;
    /// Case-insensitive substrings that mark a refusal (starting in the first 160 bytes,
    /// where refusals are).
    std::vector<std::string> refusal_patterns{"i'm sorry, but i can't", "i am sorry, but i can't",
                                              "i cannot help with",     "i can't help with",
                                              "i can't assist with",    "i cannot assist with",
                                              "i'm unable to help",     "as an ai language model"};
    /// For `too_short`: the fewest characters an answer may have.
    std::uint32_t min_chars = 0;
    /// For `must_match`: a regular expression (ECMAScript syntax) that an acceptable answer
    /// contains somewhere, such as a final-answer line. Searched in the whole answer once it
    /// is complete; a pattern that does not compile, or whose search on an answer runs past
    /// the regex engine's complexity limit, counts as not found (`parse_policy` refuses a
    /// pattern that does not compile).
    std::string must_match;
    /// For `invalid_json`: a JSON schema the answer must match (its `type`, `properties`,
    /// `required`, `items` and `enum` are checked); empty means any JSON.
    std::string json_schema;
    on_budget_exhausted budget_exhausted = on_budget_exhausted::return_cheap;
    free_tier_limits free_tier;
    /// Start the next tier in parallel when the current one is slow; zero disables hedging.
    /// The hedge takes its own reservation (refused: no hedge, the slow tier goes on alone).
    ///
    /// `async_complete`: a tier that has not answered after this long is hedged; the first
    /// acceptable answer wins, and the other attempt is cancelled and settled.
    ///
    /// A streamed cascade: a tier is slow when its stream has yielded no content after this long
    /// (its time to first token). The first of the two streams to yield content (or to end with
    /// an acceptable answer that has none) wins: only its text reaches the consumer (held in
    /// `stream_mode::buffer` as any tier's is), and the other is cancelled at once and settled
    /// like any abandoned stream; it never shows text. A stream that fails before its first
    /// content leaves the other to run alone. The race ends with its winner: if that answer then
    /// proves poor, the cascade goes on from it as if it had run alone. Two streams run side by
    /// side only until the first content of either, which comes at most `hedge_after` plus the
    /// hedge's time to first token after the slow stream began. The loser is billed for what it
    /// generated before it was cancelled, and a paid one is charged its whole reservation until
    /// its generation record proves the bill.
    std::chrono::milliseconds hedge_after{0};
    /// C++ only: more conditions, and pre-routing.
    std::vector<answer_predicate> predicates;
    routing_rule route;
};

/// Parses a policy from JSON:
/// `{"cheap":"...","flagship":"...","escalate_on":["length",...],"max_tokens":512}` or
/// `{"tiers":["...","...",...], ...}`, with the optional members `refusal_patterns`,
/// `min_chars`, `must_match`, `json_schema`, `on_budget_exhausted` ("return_cheap" | "fail"),
/// `free_tier` ({"per_minute","per_day","when_empty":"escalate"|"wait","max_wait_ms"}),
/// `hedge_after_ms`. A condition's member (`min_chars` > 0, `must_match`, `json_schema`) turns its
/// condition on when `escalate_on` is absent, and is refused when `escalate_on` is given without
/// it. Fails with `error::bad_policy`; `diag->message`, when `diag` is given, names the member
/// and why (it is cleared first).
boost::system::result<cascade_policy>
parse_policy(std::string_view json, diagnostics* diag = nullptr);

/// One call to one tier, as a cascade made it: the ledger's record of the call, and beside it
/// what the ledger does not keep. The router fills the record's fields once and settles with
/// the attempt itself (`frugal::settle`), so the ledger keeps each attempt as the cascade
/// reports it, and the attempt carries what the ledger wrote (`cost`, `estimated`, `anomaly`,
/// and `record_id`, which `budget_guard::correct` takes). The inherited `reason` is the
/// ledger's: why the cascade asked this tier; `moved_on` is why it went on from it.
///
/// Where the two differ:
/// - `outcome` is the cascade's: an attempt the budget refused (`error::budget_exhausted` or
///   `budget_closed`) says `not_sent`, its ledger record `denied`; a paid answer whose bill is
///   not known says `ok`, its record `unknown` (both `estimated`: the whole reservation);
/// - a reservation refused otherwise (an unknown price, a failed store) is not in the ledger,
///   nor is an attempt whose reservation was released unsent, nor a free tier skipped or given
///   up for its quota: `record_id` is 0;
/// - without a budget guard nothing is written (`record_id` 0): `cost` is priced from the
///   router's catalog, and `estimated` (cost 0) says it could not be.
struct cascade_attempt : attempt_record {
    /// Why the cascade moved on from this attempt (`none` when it did not: the answer was
    /// accepted, or this was the last attempt). Not the ledger's: see `reason`.
    escalation_reason moved_on = escalation_reason::none;
    boost::system::error_code error;
    /// What the provider said about the failure (its message, status, code), or why the
    /// budget refused the attempt; empty when it did not fail.
    std::string detail;
    /// A rate-limited attempt (`error::rate_limited`): how long the provider asked to wait (its
    /// Retry-After), or for a free tier not asked, until its quota comes back; empty when
    /// unknown.
    std::optional<std::chrono::milliseconds> retry_after;
    bool operator==(const cascade_attempt&) const = default;
};

/// What a cascade came to.
struct cascade_result {
    chat_response response; ///< the answer returned (the last acceptable one)
    std::uint32_t tier = 0; ///< the tier that answered
    std::vector<cascade_attempt> attempts;
    /// The answer came from a tier above the first (an escalation, or pre-routing). A denied
    /// escalation keeps the lower tier's answer: `escalated` false, `budget_denied` true.
    bool escalated = false;
    bool budget_denied = false;                         ///< the budget refused an escalation
    escalation_reason reason = escalation_reason::none; ///< why it escalated, when it did
    /// Why it wanted to go up when the budget refused it (`budget_denied`).
    escalation_reason wanted = escalation_reason::none;
    money total_cost;
};

/// An event of a streamed cascade.
struct cascade_event {
    enum class kind {
        delta,      ///< text of the answer (`tier`, `text`)
        escalating, ///< the text shown so far is to be discarded (`reason`, next `tier`)
        done,       ///< the cascade ended (`result`)
    };
    kind type = kind::delta;
    std::uint32_t tier = 0;
    std::string text;
    /// On the first `delta` of a tier's text: the model that served it, as its upstream named
    /// it (an alias or a router such as `openrouter/auto` names the model it chose); empty on
    /// the deltas after it, and when the upstream named none.
    std::string model;
    escalation_reason reason = escalation_reason::none;
    /// On the first `delta` of an answer kept because the budget refused an escalation (the
    /// result's `budget_denied`, known before its text is shown in `stream_mode::buffer`).
    bool budget_denied = false;
    std::shared_ptr<const cascade_result> result;
};

/// How a streamed cascade shows the cheap tiers' answers.
enum class stream_mode {
    buffer, ///< judge a tier's answer before showing any of it (the last tier streams live)
    stream, ///< show every tier's answer as it comes, and `escalating` when it is rejected
};

namespace detail {
struct router_impl;
struct cascade_stream_state;
} // namespace detail

/// A streamed cascade, read with `async_next` until an event of kind `done`.
///
/// @par Thread safety
/// Distinct objects: safe. Shared objects: unsafe. One read at a time.
class cascade_stream {
public:
    cascade_stream();
    ~cascade_stream();
    cascade_stream(cascade_stream&&) noexcept;
    cascade_stream& operator=(cascade_stream&&) noexcept;

    /// Reads the next event.
    ///
    /// @par Completion signature
    /// `void(boost::system::error_code, cascade_event)`. Fails when the cascade as a whole
    /// fails (every tier failed and nothing acceptable remains, `error::rate_limited` when the
    /// free tier did not come back within its wait, `error::budget_exhausted` under
    /// `on_budget_exhausted::fail`), the event then carrying the `result` with every attempt;
    /// `error::stream_not_readable` after `done`.
    ///
    /// @par Per-operation cancellation
    /// Terminal: the attempt in flight is abandoned (its reservation settled as unknown) and
    /// the stream ends with `asio::error::operation_aborted`.
    template <class CompletionToken = boost::asio::deferred_t>
    auto async_next(CompletionToken&& token = {})
    {
        return boost::asio::async_initiate<
            CompletionToken, void(boost::system::error_code, cascade_event)>(
            next_initiation{this}, token);
    }

private:
    friend class router;
    struct next_initiation {
        cascade_stream* self;
        using executor_type = boost::asio::any_io_executor;
        executor_type get_executor() const noexcept { return self->executor(); }
        template <class Handler>
        void operator()(Handler&& handler) const
        {
            boost::asio::any_io_executor ex =
                boost::asio::get_associated_executor(handler, self->executor());
            self->async_next_impl(ex, std::forward<Handler>(handler));
        }
    };
    boost::asio::any_io_executor executor() const;
    void async_next_impl(
        const boost::asio::any_io_executor& ex,
        boost::asio::any_completion_handler<void(boost::system::error_code, cascade_event)> h);
    std::shared_ptr<detail::cascade_stream_state> state_;
};

/// Per-call choices of a cascade beyond its request: passed with the call, never set on the
/// router, so concurrent cascades of one router cannot see each other's.
struct cascade_options {
    /// The budgets this cascade is charged to besides the guard's global ones, e.g.
    /// {"tenant:acme", "user:42"} (see `reserve_request::keys`).
    std::vector<std::string> budget_keys;
    /// The whole cascade's time, every tier, wait and hedge included; zero: none (each request
    /// keeps the client's timeouts). When it passes, the attempt in flight is abandoned and
    /// settled like a cancelled one and the cascade fails with `error::timeout`.
    std::chrono::milliseconds deadline{0};
};

/// Runs cascades: the free or cheap tier first, the next tier only when a condition says the
/// answer is not good enough, every paid attempt inside the budget guard.
///
/// @par Thread safety
/// Distinct objects: safe. Shared objects: unsafe; use it from the client's executor.
/// Thousands of cascades may run at once on that one thread.
class router {
public:
    /// A router over `client` (which must outlive it). `guard` may be null: no budget. The
    /// catalog prices attempts whose responses carry no `usage.cost`.
    router(
        chat_client& client,
        cascade_policy policy,
        price_catalog prices,
        std::optional<budget_guard> guard = std::nullopt);
    ~router();
    router(router&&) noexcept;
    router& operator=(router&&) noexcept;

    const cascade_policy& policy() const noexcept;

    /// Runs one cascade and gives its result.
    ///
    /// @par Completion signature
    /// `void(boost::system::error_code, cascade_result)`. The error is that of the last
    /// attempt when no answer was acceptable and none can be returned,
    /// `error::budget_exhausted` under `on_budget_exhausted::fail`, or `error::timeout` when
    /// `cascade_options::deadline` passed. Otherwise the result holds the answer, every attempt
    /// and the total cost.
    ///
    /// @par Per-operation cancellation
    /// Terminal: the attempt in flight is abandoned and its reservation settled (released when
    /// nothing was sent, otherwise charged whole until proven). Awaited with
    /// `as_tuple(use_awaitable)` from a coroutine on the client's executor, without a deadline,
    /// the cascade runs inside that coroutine, as `chat_client::chat` does, and follows its
    /// cancellation state. A coroutine whose filter lets partial or total cancellation through
    /// (the default lets terminal alone) has them end the cascade as terminal, though an answer
    /// being read without a budget may be read to its end first (the client's reads take
    /// terminal alone). A coroutine that goes on after a cancellation (`throw_if_cancelled`
    /// off) gets a fresh state for its next cascade.
    ///
    /// @par Object lifetimes
    /// The router must outlive the operation.
    ///
    /// Awaited with `as_tuple(use_awaitable)`, the request is copied (or moved, from an rvalue)
    /// into the cascade once; other tokens take it by value, as its own copy.
    template <class CompletionToken = boost::asio::deferred_t>
    auto async_complete(const chat_request& request, CompletionToken&& token = {})
    {
        return start_complete(request, cascade_options{}, std::forward<CompletionToken>(token));
    }

    template <class CompletionToken = boost::asio::deferred_t>
    auto async_complete(chat_request&& request, CompletionToken&& token = {})
    {
        return start_complete(
            std::move(request), cascade_options{}, std::forward<CompletionToken>(token));
    }

    /// `async_complete` with per-call options: the budget keys this cascade is charged to (one
    /// router serves every tenant of a server, sharing its free-tier limiter) and its deadline.
    template <class CompletionToken = boost::asio::deferred_t>
    auto async_complete(
        const chat_request& request, cascade_options options, CompletionToken&& token = {})
    {
        return start_complete(request, std::move(options), std::forward<CompletionToken>(token));
    }

    template <class CompletionToken = boost::asio::deferred_t>
    auto
    async_complete(chat_request&& request, cascade_options options, CompletionToken&& token = {})
    {
        return start_complete(
            std::move(request), std::move(options), std::forward<CompletionToken>(token));
    }

    /// Starts a streamed cascade; read it with `cascade_stream::async_next`. A deadline that
    /// passes ends the stream with `error::timeout` (the `done` event's result holds every
    /// attempt, the one cut short settled).
    void start_stream(
        chat_request request,
        stream_mode mode,
        cascade_stream& out,
        cascade_options options = {});

    /// Learns the free tier's daily quota from the key's status (`chat_client::async_key_info`):
    /// 50 requests a day for a key that never bought credits, 1,000 otherwise. A policy that
    /// sets `free_tier.per_day` keeps its own.
    void learn(const key_info& key);

private:
    // No executor_type: the router offers no executor of its own; the operation completes on
    // the handler's, else on the client's (async_complete_impl).
    struct complete_initiation {
        router* self;
        template <class Handler>
        // NOLINTNEXTLINE(performance-unnecessary-value-param): moved into the operation
        void operator()(Handler&& handler, chat_request req, cascade_options options) const
        {
            const bool here = detail::runs_on(handler, self->client_executor());
            self->async_complete_impl(
                std::move(req), std::move(options), std::forward<Handler>(handler), here);
        }
    };
    // `as_tuple(use_awaitable)`, the token a coroutine most often passes, runs the cascade in
    // the awaiting coroutine where it can: the same result, without a coroutine, a type-erased
    // handler and the layers of an initiation of its own. The request is taken by reference
    // down to the cascade's parameter, copied or moved there, and moved once more into its
    // frame (a move is a score of strings). Other tokens get it as a value, so that a deferred
    // operation's type does not depend on how the request was passed.
    template <class Request, class CompletionToken>
    auto start_complete(Request&& request, cascade_options&& options, CompletionToken&& token)
    {
        if constexpr (std::is_same_v<
                          std::decay_t<CompletionToken>,
                          boost::asio::as_tuple_t<boost::asio::use_awaitable_t<>>>)
            return complete_awaitable(std::forward<Request>(request), std::move(options));
        else
            return boost::asio::async_initiate<
                CompletionToken, void(boost::system::error_code, cascade_result)>(
                complete_initiation{this}, token, chat_request(std::forward<Request>(request)),
                std::move(options));
    }
    boost::asio::any_io_executor client_executor() const;
    boost::asio::awaitable<std::tuple<boost::system::error_code, cascade_result>>
    complete_awaitable(chat_request&& req, cascade_options&& options);
    boost::asio::awaitable<std::tuple<boost::system::error_code, cascade_result>>
    complete_awaitable(const chat_request& req, cascade_options&& options);
    void async_complete_impl(
        chat_request req,
        cascade_options options,
        boost::asio::any_completion_handler<void(boost::system::error_code, cascade_result)> h,
        bool here);
    std::shared_ptr<detail::router_impl> impl_;
};

} // namespace frugal

#endif // FRUGAL_ROUTER_HPP
