#include "cascade/decide.hpp"

#include "cascade/judge.hpp"

#include <frugal/error.hpp>

#include <boost/asio/error.hpp>

#include <algorithm>

namespace frugal::detail {

using boost::system::error_code;

cascade_machine::cascade_machine(
    const cascade_policy& policy,
    const std::vector<bool>& free_tier,
    std::uint32_t first,
    escalation_reason pre)
    : policy_(&policy), free_(&free_tier), n_(static_cast<std::uint32_t>(policy.tiers.size())),
      t_(first), arrived_by_(pre)
{
    if (first > 0)
        reason_ = pre;
}

cascade_step cascade_machine::start()
{
    return next();
}

cascade_step cascade_machine::next()
{
    if (t_ >= n_)
        return finish_unanswered();
    cascade_step s;
    s.tier = t_;
    s.arrived_by = arrived_by_;
    if ((*free_)[t_]) {
        s.what = cascade_step::kind::ask_free;
        return s;
    }
    s.what = cascade_step::kind::send;
    s.hedge = policy_->hedge_after.count() > 0 && t_ + 1 < n_;
    return s;
}

cascade_step cascade_machine::gated(quota_wait g)
{
    const bool last = t_ + 1 >= n_;
    if (g == quota_wait::go) {
        cascade_step s;
        s.what = cascade_step::kind::send;
        s.tier = t_;
        s.arrived_by = arrived_by_;
        s.hedge = policy_->hedge_after.count() > 0 && !last;
        return s;
    }
    last_error_ = error::rate_limited;
    if (g == quota_wait::fail || last)
        return finish_unanswered(); // never quietly paid
    // The `escalate` opt-in: the free tier is passed over.
    if (reason_ == escalation_reason::none)
        reason_ = escalation_reason::rate_limited;
    arrived_by_ = escalation_reason::rate_limited;
    ++t_;
    return next();
}

cascade_step cascade_machine::cancelled()
{
    last_error_ = boost::asio::error::operation_aborted;
    return finish_unanswered();
}

escalation_reason cascade_machine::hedged()
{
    if (reason_ == escalation_reason::none)
        reason_ = escalation_reason::timeout; // the cheap tier was slow
    return escalation_reason::timeout;
}

escalation_reason cascade_machine::failure_reason(std::uint32_t tier, const error_code& ec) const
{
    // A free tier's 429 is its quota (under the `escalate` opt-in it moves on as
    // `rate_limited`, whatever `escalate_on` says), never an error.
    if ((*free_)[tier] && ec == error::rate_limited)
        return escalation_reason::rate_limited;
    return judge_error(*policy_, ec);
}

bool cascade_machine::retry_free(std::uint32_t tier, const error_code& ec) const
{
    return (*free_)[tier] && ec == error::rate_limited &&
           (policy_->free_tier.when_empty == on_free_tier_empty::wait || tier + 1 == n_);
}

cascade_step cascade_machine::ended(std::span<attempt_end> ends, bool free_time_left)
{
    using how = attempt_end::how;
    if (ends.size() == 1) {
        auto& e = ends[0];
        if (e.ended == how::failed && !e.shown && retry_free(e.tier, e.error)) {
            // The free tier's own 429: asked again after its reset, within the wait.
            e.recorded = escalation_reason::none;
            last_error_ = error::rate_limited;
            if (!free_time_left)
                return finish_unanswered(true);
            t_ = e.tier;
            cascade_step s;
            s.what = cascade_step::kind::ask_free;
            s.tier = t_;
            s.arrived_by = arrived_by_;
            return s;
        }
    }
    bool accepted = false;
    std::uint32_t accepted_tier = 0;
    bool aborted = false;
    error_code denial;
    bool stop = false;
    bool decided = false;
    std::uint32_t top = 0;
    std::uint32_t highest = 0;
    for (const auto& e : ends)
        highest = std::max(highest, e.tier);
    for (auto& e : ends) {
        if (e.ended == how::lost) {
            e.recorded = e.tier < highest ? escalation_reason::timeout : escalation_reason::none;
            continue;
        }
        if (e.ended == how::denied) {
            budget_denied_ = true;
            wanted_ = e.arrived_by;
            denial = e.error ? e.error : error_code(error::budget_exhausted);
            continue;
        }
        if (e.ended == how::cancelled) {
            aborted = true;
            continue;
        }
        const bool last = e.tier + 1 == n_;
        const bool answered = e.ended == how::answered;
        const auto why = answered || e.ended == how::abandoned ? e.verdict
                                                                : failure_reason(e.tier, e.error);
        bool this_stops = false;
        if (answered && (why == escalation_reason::none || last)) {
            accepted = true;
            accepted_tier = e.tier;
            e.recorded = escalation_reason::none;
        } else {
            e.recorded = last ? escalation_reason::none : why;
            if (e.ended == how::failed)
                last_error_ = e.error ? e.error : error_code(error::provider_error);
            else if (e.ended == how::abandoned)
                last_error_ = error::provider_error; // no answer to keep
            if (answered)
                fallback_ = e.tier;
            this_stops = last || why == escalation_reason::none;
            if (!this_stops && reason_ == escalation_reason::none)
                reason_ = why;
        }
        if (!decided || e.tier >= top) { // the highest tier tried decides what comes next
            decided = true;
            top = e.tier;
            stop = this_stops;
            arrived_by_ = e.recorded;
        }
    }
    cascade_step s;
    if (accepted) {
        s.what = cascade_step::kind::accept;
        s.tier = accepted_tier;
        return s;
    }
    if (aborted)
        return cancelled();
    if (denial) {
        if (policy_->budget_exhausted == on_budget_exhausted::fail || !fallback_) {
            s.what = cascade_step::kind::fail;
            s.error = denial;
            return s;
        }
        s.what = cascade_step::kind::keep; // the lower tier's answer, marked budget_denied
        s.tier = *fallback_;
        return s;
    }
    if (stop || !decided)
        return finish_unanswered();
    t_ = top + 1;
    return next();
}

cascade_step cascade_machine::finish_unanswered(bool free_wait_over)
{
    cascade_step s;
    s.what = cascade_step::kind::fail;
    s.error = last_error_ ? last_error_ : error_code(error::provider_error);
    s.free_wait_over = free_wait_over;
    return s;
}

void cascade_machine::fill(cascade_result& out, const cascade_step& last) const
{
    out.budget_denied = budget_denied_;
    out.wanted = wanted_;
    out.reason = reason_;
    if (last.what == cascade_step::kind::accept || last.what == cascade_step::kind::keep) {
        out.tier = last.tier;
        out.escalated = last.tier > 0; // the answer came from a higher tier
    } else {
        // No answer: the last one judged (if any) is kept for a look, but nothing escalated.
        out.tier = fallback_.value_or(0);
        out.escalated = false;
    }
    if (!out.escalated)
        out.reason = escalation_reason::none;
}

} // namespace frugal::detail
