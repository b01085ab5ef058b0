#ifndef FRUGAL_SRC_CASCADE_DECIDE_HPP
#define FRUGAL_SRC_CASCADE_DECIDE_HPP

// The cascade's decisions as a sans-io state machine. The whole and the streamed router drive
// the same machine: they do the I/O (the free quota's wait, reservations, requests, streams,
// hedges) and report how each step ended; the machine says what comes next. So the two forms
// cannot disagree about a skipped tier, a denial or a 429, and a table test can pin every
// decision without a socket.

#include <frugal/router.hpp>

#include <boost/system/error_code.hpp>

#include <cstdint>
#include <optional>
#include <span>
#include <vector>

namespace frugal::detail {

// What the driver does next.
struct cascade_step {
    enum class kind {
        ask_free, // wait for the free quota of `tier`, then report it with `gated`
        send,     // reserve and send `tier`, asked because of `arrived_by`; hedge if `hedge`
        accept,   // `tier`'s answer is the result
        keep,     // the budget refused to go up: `tier`'s earlier answer is the result
        fail,     // the cascade failed with `error`
    };
    kind what = kind::fail;
    std::uint32_t tier = 0;
    escalation_reason arrived_by = escalation_reason::none;
    bool hedge = false; // start `tier + 1` too if `tier` is slower than the policy's hedge_after
    boost::system::error_code error;
    // A free tier's 429 that the wait could not outlast (the driver says so on the attempt).
    bool free_wait_over = false;
};

// How the free quota's wait ended.
enum class quota_wait { go, skip, fail };

// How an attempt ended, as the driver saw it.
struct attempt_end {
    enum class how {
        answered,  // a whole answer; `verdict` is the judge's (none: acceptable)
        abandoned, // a stream given up early: `verdict` says why
        failed,    // an error (`error`), the reservation's refusal other than the budget's included
        denied,    // the budget refused its reservation (`error`: budget_exhausted or _closed)
        cancelled, // the caller (or the consumer) stopped it
        // A streamed hedge's stream stopped because the other one yielded content first: it
        // decides nothing (the winner does); its reason is `timeout` when it is the slower tier
        // the hedge went around.
        lost,
    };
    std::uint32_t tier = 0;
    how ended = how::failed;
    escalation_reason verdict = escalation_reason::none;
    boost::system::error_code error;
    escalation_reason arrived_by = escalation_reason::none; // why this tier was asked
    bool shown = false; // a stream's text reached the consumer: it cannot be retried unseen
    // Filled by the machine: the reason recorded on the attempt (why it went up from it).
    escalation_reason recorded = escalation_reason::none;
};

class cascade_machine {
public:
    // `free_tier[i]`: tier i costs nothing and has the free quota. `first` and `pre`: the
    // tier a request starts at and why (a route rule, a context too small).
    cascade_machine(
        const cascade_policy& policy,
        const std::vector<bool>& free_tier,
        std::uint32_t first,
        escalation_reason pre);

    cascade_step start();

    // The free quota's wait for the tier of the last `ask_free`.
    cascade_step gated(quota_wait g);

    // The caller cancelled the cascade before a step.
    cascade_step cancelled();

    // The hedge of the last `send` started: `tier + 1`, asked because `tier` was slow.
    escalation_reason hedged();

    // The attempts of the last `send` ended: one, or two when hedged (the one to prefer last;
    // a streamed hedge's loser is `lost`). `free_time_left`: the free quota's wait has not run
    // out.
    cascade_step ended(std::span<attempt_end> ends, bool free_time_left);

    // The result's fields the decisions own, once a step ended it (accept, keep or fail).
    void fill(cascade_result& out, const cascade_step& last) const;

    // The tier whose answer was judged not good enough last (the budget may keep it).
    std::optional<std::uint32_t> fallback() const noexcept { return fallback_; }

private:
    cascade_step next();
    cascade_step finish_unanswered(bool free_wait_over = false);
    escalation_reason failure_reason(std::uint32_t tier, const boost::system::error_code& ec) const;
    bool retry_free(std::uint32_t tier, const boost::system::error_code& ec) const;

    const cascade_policy* policy_;
    const std::vector<bool>* free_;
    std::uint32_t n_;
    std::uint32_t t_;
    escalation_reason arrived_by_;
    escalation_reason reason_ = escalation_reason::none; // why it went up first
    escalation_reason wanted_ = escalation_reason::none; // why it wanted to, when refused
    bool budget_denied_ = false;
    std::optional<std::uint32_t> fallback_;
    boost::system::error_code last_error_;
};

} // namespace frugal::detail

#endif // FRUGAL_SRC_CASCADE_DECIDE_HPP
