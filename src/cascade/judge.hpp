#ifndef FRUGAL_SRC_CASCADE_JUDGE_HPP
#define FRUGAL_SRC_CASCADE_JUDGE_HPP

// The cascade's decisions, sans-io: is an answer good enough, can a partial answer already be
// rejected, which tier does a request start at, and the free-tier limiter.

#include <frugal/diagnostics.hpp>
#include <frugal/router.hpp>

#include "budget/free_quota.hpp"

#include <boost/system/error_code.hpp>

#include <cstdint>
#include <limits>
#include <string>
#include <string_view>
#include <vector>

namespace frugal::detail {

// Whether the request asks for JSON (response_format json_object or json_schema).
bool wants_json(const chat_request& req) noexcept;

// A policy's refusal patterns (lower-case ASCII), made ready to search for once: a cascade
// searches every answer it accepts, and a streamed one at every piece. A pattern counts when
// it starts in the text's first 160 bytes (refusals open an answer; one further on is a
// quotation) and may end past them; a typographic apostrophe (U+2019) matches an ASCII one.
class refusal_finder {
public:
    refusal_finder() = default;
    explicit refusal_finder(const std::vector<std::string>& patterns);

    bool in(std::string_view text) const noexcept;

private:
    // A pattern's first two bytes, each with 0x20 set (ASCII folding, and only a filter: a
    // position that passes is then compared exactly), or its first alone (`any`).
    struct opening {
        char first = 0;
        char second = 0;
        bool any = false;
    };
    static constexpr std::size_t most_openings = 16;
    bool starts_at(std::string_view text, std::size_t i) const noexcept;
    bool may_start(std::string_view text, std::size_t i) const noexcept;
    // The 16-byte block scan for N openings (SSE2), from `i`, which it leaves where the blocks
    // end; true when a pattern starts in them.
    template <std::size_t N>
    bool scan(std::string_view text, std::size_t& i, std::size_t window) const noexcept;

    std::vector<std::string> patterns_; // none empty
    opening openings_[most_openings];
    std::size_t n_openings_ = 0;
    bool every_position_ = false; // more openings than the filter holds
};

// Why a complete answer is not good enough, among the policy's conditions (none: accept).
escalation_reason judge(
    const cascade_policy& p,
    const refusal_finder& refusals,
    const chat_request& req,
    const chat_response& r);

// `judge` with the policy's refusal patterns made ready for this one answer.
escalation_reason judge(const cascade_policy& p, const chat_request& req, const chat_response& r);

// Why a failed attempt escalates (error, timeout or rate_limited), if the policy says so.
escalation_reason judge_error(const cascade_policy& p, const boost::system::error_code& ec);

// Whether the text streamed so far already fails (a refusal in its first characters, or JSON
// that cannot be valid), so the stream can be abandoned at once.
escalation_reason judge_early(
    const cascade_policy& p,
    const refusal_finder& refusals,
    bool json_wanted,
    std::string_view text_so_far);
escalation_reason
judge_early(const cascade_policy& p, bool json_wanted, std::string_view text_so_far);

// Whether `text` is JSON and matches the policy's schema (when it has one).
bool json_acceptable(const cascade_policy& p, std::string_view text);

bool enabled(const cascade_policy& p, escalation_reason r) noexcept;

// Whether `text` contains a match of the ECMAScript regular expression `pattern` (false when
// the pattern does not compile or the search passes the engine's complexity limit).
bool contains_match(const std::string& pattern, std::string_view text);

// Why `pattern` does not compile as an ECMAScript regular expression (empty when it does).
std::string pattern_error(std::string_view pattern);


// OpenRouter's free-model limits, counted on this side: a sliding minute and a UTC day. A limit
// the policy leaves at 0 is the server's: OpenRouter's documented 20 a minute and 50 a day
// (until the key says 1,000) when talking to OpenRouter. Another endpoint's limits are not
// OpenRouter's: there only its 429s hold the tier back (until their reset), and the day's limit
// they state, or the key's status, is kept.
class free_tier_limiter {
public:
    static constexpr std::uint32_t unknown = std::numeric_limits<std::uint32_t>::max();

    free_tier_limiter(free_tier_limits l, bool openrouter)
        : per_minute_(l.per_minute != 0 ? l.per_minute : openrouter ? 20 : unknown),
          per_day_(l.per_day != 0 ? l.per_day : openrouter ? 50 : unknown),
          day_fixed_(l.per_day != 0)
    {
    }

    // Takes one request at `now_ms` (Unix), or says how long to wait for one (0: taken).
    std::int64_t acquire(std::int64_t now_ms);

    // How long before a request may go, by what was learnt alone (a block, a day spent),
    // without taking one: 0 when nothing holds it back.
    std::int64_t held_back(std::int64_t now_ms) const;

    // Requests that went without being taken (the client's own retries).
    void count_extra(std::uint32_t n, std::int64_t now_ms);

    // Nothing more until `until_ms`.
    void block_until(std::int64_t until_ms) { window_.block_until(until_ms); }

    // A 429 from a free model: the reset it states (headers, or their echo in the body;
    // Retry-After), else a short pause; a day's limit is learnt too. Returns until when
    // nothing more may go.
    std::int64_t learn(const diagnostics& d, std::int64_t now_ms);

    // The key's free-tier status: 50 requests a day, or 1,000 once credits were bought.
    void learn(const key_info& k);

    // `unknown` when nothing limits it yet.
    std::uint32_t per_minute() const noexcept { return per_minute_; }
    std::uint32_t per_day() const noexcept { return per_day_; }

private:
    std::uint32_t per_minute_;
    std::uint32_t per_day_;
    bool day_fixed_; // the policy set it: the key's status does not change it
    free_window window_;
};

} // namespace frugal::detail

#endif // FRUGAL_SRC_CASCADE_JUDGE_HPP
