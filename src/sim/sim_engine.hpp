#ifndef FRUGAL_SIM_SIM_ENGINE_HPP
#define FRUGAL_SIM_SIM_ENGINE_HPP

// The simulator's behaviour without sockets: routing, authentication, limits, answers, faults,
// rendering of bodies and stream events, and the bill. sim_server.cpp only moves bytes and
// keeps time; everything it sends is decided and rendered here, so it can be tested directly.
// The implementation is split by concern into sim_*.cpp files sharing sim_detail.hpp.

#include "sim/sim_money.hpp"

#include <frugal/sim.hpp>

#include <chrono>
#include <cstdint>
#include <deque>
#include <map>
#include <optional>
#include <string>
#include <string_view>
#include <unordered_map>
#include <utility>
#include <variant>
#include <vector>

namespace frugal::sim {

using clock = std::chrono::system_clock;

/// SplitMix64: a tiny, fast generator with a fully specified sequence, so the same seed gives
/// the same answers on every platform (std::mt19937_64 costs ~10k instructions to seed, per
/// request here).
class splitmix64 {
public:
    explicit splitmix64(std::uint64_t seed) : state_(seed) {}
    std::uint64_t operator()()
    {
        std::uint64_t z = (state_ += 0x9e3779b97f4a7c15ULL);
        z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ULL;
        z = (z ^ (z >> 27)) * 0x94d049bb133111ebULL;
        return z ^ (z >> 31);
    }
    /// A uniform double in [0, 1).
    double unit() { return static_cast<double>((*this)() >> 11) * 0x1.0p-53; }

private:
    std::uint64_t state_;
};

/// An HTTP request as the engine needs it.
struct request {
    std::string_view method;
    std::string_view target; // path and query
    std::string_view authorization;
    std::string_view body;
};

/// A complete HTTP response.
struct reply {
    int status = 200;
    std::vector<std::pair<std::string, std::string>> headers;
    std::string body;
    std::string content_type = "application/json";
};

/// What the server does to the connection instead of answering.
enum class fault {
    none,
    reset,                  // connection reset before any response byte
    hang,                   // never answer
    cut,                    // stop after `after` tokens, without the end of the body
    stall,                  // pause `stall` after `after` tokens
    malformed_chunk,        // a data line whose JSON is broken, after `after` tokens
    midstream_error,        // a chunk with a top-level error and finish_reason "error"
    midstream_error_choice, // the same error on the choice only
};

/// One token of an answer: content, or reasoning (shown as `reasoning`, content empty).
struct piece {
    std::string text;
    bool reasoning = false;
};

/// A generation the server delivers over time.
struct completion {
    std::string id;
    std::string model;
    std::string provider;
    std::string key;
    std::int64_t created = 0;
    bool stream = false;
    std::vector<piece> pieces;
    std::string finish_reason;
    std::string native_finish_reason;
    std::uint64_t prompt_tokens = 0;
    std::uint64_t max_tokens = 0; // the effective max_tokens of the request
    attodollars prompt_cost = 0;
    attodollars completion_price = 0;
    attodollars request_price = 0;
    attodollars reasoning_price = 0; // per reasoning piece; 0: the completion price
    attodollars overbill = 0;        // billed on top of the prices (`[sim overbill=USD]`)
    std::string cost_report;         // how `usage.cost` lies (`[sim cost=...]`); empty: truth
    std::string served_as;           // the model the response claims (`[sim served=...]`)
    // The answer is a call of this function (`[sim tool=NAME]`): its text becomes the call's
    // arguments, `{"text": "..."}`, streamed in pieces as providers stream them.
    std::string tool_call;
    bool cancel_supported = true;
    std::chrono::milliseconds time_to_first_token{0};
    std::chrono::milliseconds time_per_token{0};
    bool whitespace_keepalive = false;
    std::string usage_shape = "2026";
    fault injected = fault::none;
    std::size_t after = 0; // token index at which a cut/stall/malformed/error fault strikes
    std::chrono::milliseconds stall{0};

    /// Cost of the first `n` pieces: prompt, request and n completion tokens (reasoning ones
    /// at the reasoning price, when the model has one), plus any overbill.
    attodollars cost(std::size_t n) const
    {
        attodollars c =
            prompt_cost + request_price + overbill + completion_price * static_cast<attodollars>(n);
        if (reasoning_price != 0)
            for (std::size_t i = 0; i < n && i < pieces.size(); ++i)
                c += pieces[i].reasoning ? reasoning_price - completion_price : 0;
        return c;
    }
};

/// The connection is dropped (reset) or left without an answer (hang).
struct drop {
    fault kind = fault::reset;
};

using outcome = std::variant<reply, completion, drop>;

class engine {
public:
    explicit engine(sim_config config);

    /// Decides the response to one request. A whole (non-streamed) completion is billed here in
    /// full: the model runs to the end whatever the client does afterwards.
    outcome handle(const request& req, clock::time_point now);

    /// Bills a streamed completion once its delivery ended: `delivered` pieces were written;
    /// `cancelled` when the client went away. A provider without cancellation bills the
    /// complete response regardless.
    void settle(const completion& c, std::size_t delivered, bool cancelled, clock::time_point now);

    // Rendering (exact bytes on the wire; the server adds only HTTP framing).
    std::string whole_body(const completion& c) const;
    static std::string truncated_body(const completion& c, std::string body);
    std::string stream_comment() const { return ": OPENROUTER PROCESSING\n\n"; }
    std::string stream_event(const completion& c, std::size_t index) const;
    std::string stream_malformed_event(const completion& c) const;
    std::string stream_error_event(const completion& c) const;
    std::string stream_end(const completion& c) const;   // finish and usage chunks, [DONE]
    std::string whole_stream(const completion& c) const; // everything, for zero latency

    const sim_config& config() const noexcept { return config_; }

private:
    struct generation {
        std::string id;
        std::string model;
        std::string provider;
        std::string key;
        std::int64_t created = 0;
        bool streamed = false;
        bool cancelled = false;
        std::string finish_reason;
        std::string native_finish_reason;
        std::uint64_t prompt_tokens = 0;
        std::uint64_t completion_tokens = 0;
        std::uint64_t reasoning_tokens = 0;
        attodollars cost = 0;
        std::int64_t latency_ms = 0;
        clock::time_point visible_at;
    };
    struct model_bill {
        std::uint64_t requests = 0;
        std::uint64_t prompt_tokens = 0;
        std::uint64_t completion_tokens = 0;
        std::uint64_t cancelled = 0;
        attodollars cost = 0;
    };
    struct key_state {
        std::string label = "sim";
        std::optional<attodollars> limit;
        attodollars usage = 0;
        attodollars usage_day = 0;
        attodollars usage_week = 0;
        attodollars usage_month = 0;
        std::int64_t day = -1;   // UTC day number the daily usage belongs to
        std::int64_t week = -1;  // Monday-based week number
        std::int64_t month = -1; // year * 12 + month
        clock::time_point minute_start{};
        std::uint32_t minute_count = 0;
        std::int64_t free_day = -1;
        std::uint32_t free_day_count = 0;
    };

    reply chat(const request& req, clock::time_point now, outcome& out);
    reply models_reply() const;
    reply
    generation_reply(std::string_view target, const std::string& key, clock::time_point now) const;
    reply key_reply(const std::string& key, clock::time_point now);
    reply bill_reply() const;
    key_state* authenticate(std::string_view authorization, std::string& key, reply& failure);
    const sim_model* find_model(std::string_view id) const;
    // A rule may name the model the request asked for (`asked`, an alias) or the one serving it.
    std::string
    choose_fault(const std::string& directive, const sim_model& model, const sim_model* asked);
    // The 429 once a free quota is spent; when there is none, the request is counted against both.
    std::optional<reply> free_tier_limit(key_state& k, clock::time_point now) const;
    void record(
        const completion& c, std::size_t completion_tokens, bool cancelled, clock::time_point now);
    void roll_periods(key_state& k, clock::time_point now) const;
    std::string next_generation_id(std::int64_t created);
    std::int64_t unix_now(clock::time_point now) const;
    void append_usage(std::string& out, const completion& c, std::size_t n) const;
    std::string chunk_prefix(const completion& c) const;
    std::string render_models() const;

    sim_config config_;
    std::vector<sim_model> models_;
    std::unordered_map<std::string, std::size_t> model_index_;
    std::unordered_map<std::string, key_state> keys_;
    std::unordered_map<std::string, generation> generations_;
    std::deque<std::string> generation_order_;
    std::map<std::string, model_bill> bill_;
    std::vector<std::uint64_t> rule_hits_;
    splitmix64 rng_;
    std::uint64_t sequence_ = 0;
    std::string models_body_; // the catalog never changes: rendered once
    // Replays by prompt, then model: the index of each in `config_.replays`.
    std::unordered_map<std::string, std::unordered_map<std::string, std::size_t>> replays_;
};

/// Escapes `text` as the inside of a JSON string. The simulator's own, not the client's
/// `openrouter::append_escaped`: it shares no wire-format code with the client
/// (docs/simulator.md), so a bug in one escaper cannot hide by being mirrored in the other.
void append_json_escaped(std::string& out, std::string_view text);

} // namespace frugal::sim

#endif // FRUGAL_SIM_SIM_ENGINE_HPP
