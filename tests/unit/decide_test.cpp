// The cascade's decisions as a table: for each way an attempt can end (every judge verdict,
// every failure, the budget's refusal, the caller's cancellation, a free tier's 429) and each
// budget verdict on the way up, what `cascade_machine` does next. No socket: the whole and the
// streamed router only carry these decisions out.

#include <frugal/error.hpp>
#include <frugal/router.hpp>

#include "cascade/decide.hpp"
#include "printers.hpp"

#include <boost/asio/error.hpp>
#include <boost/test/unit_test.hpp>

#include <vector>

namespace {

using frugal::escalation_reason;
using frugal::detail::attempt_end;
using frugal::detail::cascade_machine;
using frugal::detail::cascade_step;
using frugal::detail::quota_wait;
using kind = cascade_step::kind;
using how = attempt_end::how;

frugal::cascade_policy paid_pair()
{
    frugal::cascade_policy p;
    p.tiers = {"cheap/model", "flagship/model"};
    p.escalate_on = {
        escalation_reason::length, escalation_reason::empty, escalation_reason::error,
        escalation_reason::refusal, escalation_reason::invalid_json, escalation_reason::too_short,
        escalation_reason::predicate, escalation_reason::timeout};
    return p;
}

attempt_end end(std::uint32_t tier, how h, escalation_reason verdict = escalation_reason::none,
    boost::system::error_code ec = {}, escalation_reason arrived_by = escalation_reason::none)
{
    attempt_end e;
    e.tier = tier;
    e.ended = h;
    e.verdict = verdict;
    e.error = ec;
    e.arrived_by = arrived_by;
    return e;
}

cascade_step report(cascade_machine& m, attempt_end e, bool time_left = true)
{
    return m.ended(std::span<attempt_end>(&e, 1), time_left);
}

} // namespace

BOOST_AUTO_TEST_SUITE(cascade_decisions)

// Every verdict of the judge on the cheap tier × the flagship's outcome × the budget's verdict.
BOOST_AUTO_TEST_CASE(every_verdict_by_every_budget_verdict)
{
    const std::vector<bool> paid{false, false};
    const escalation_reason verdicts[] = {
        escalation_reason::none, escalation_reason::length, escalation_reason::empty,
        escalation_reason::refusal, escalation_reason::invalid_json, escalation_reason::too_short,
        escalation_reason::predicate};
    for (const auto on_denied :
         {frugal::on_budget_exhausted::return_cheap, frugal::on_budget_exhausted::fail}) {
        auto p = paid_pair();
        p.budget_exhausted = on_denied;
        for (const auto v : verdicts) {
            for (const int flagship : {0, 1, 2, 3}) { // answered, exhausted, closed, failed
                BOOST_TEST_CONTEXT("verdict " << to_string(v) << ", flagship " << flagship
                                              << ", fail on denial "
                                              << (on_denied == frugal::on_budget_exhausted::fail))
                {
                    cascade_machine m(p, paid, 0, escalation_reason::none);
                    auto s = m.start();
                    BOOST_TEST((s.what == kind::send && s.tier == 0));
                    BOOST_TEST(!s.hedge);
                    s = report(m, end(0, how::answered, v));
                    frugal::cascade_result r;
                    if (v == escalation_reason::none) {
                        BOOST_TEST((s.what == kind::accept && s.tier == 0));
                        m.fill(r, s);
                        BOOST_TEST(!r.escalated);
                        BOOST_TEST((r.reason == escalation_reason::none));
                        continue;
                    }
                    BOOST_TEST((s.what == kind::send && s.tier == 1));
                    BOOST_TEST((s.arrived_by == v));
                    attempt_end second;
                    if (flagship == 0)
                        second = end(1, how::answered, v, {}, v); // the last tier is kept anyway
                    else if (flagship == 1 || flagship == 2)
                        second = end(1, how::denied, escalation_reason::none,
                            flagship == 1 ? frugal::error::budget_exhausted
                                          : frugal::error::budget_closed,
                            v);
                    else
                        second = end(1, how::failed, escalation_reason::none,
                            frugal::error::server_error, v);
                    s = report(m, second);
                    m.fill(r, s);
                    if (flagship == 0) {
                        BOOST_TEST((s.what == kind::accept && s.tier == 1));
                        BOOST_TEST(r.escalated);
                        BOOST_TEST((r.reason == v));
                        BOOST_TEST(!r.budget_denied);
                    } else if (flagship == 3) {
                        // The flagship failed: the cascade fails, nothing escalated.
                        BOOST_TEST((s.what == kind::fail));
                        BOOST_TEST((s.error == frugal::error::server_error));
                        BOOST_TEST(!r.escalated);
                        BOOST_TEST((r.tier == 0)); // the cheap answer is left for a look
                    } else if (on_denied == frugal::on_budget_exhausted::return_cheap) {
                        BOOST_TEST((s.what == kind::keep && s.tier == 0));
                        BOOST_TEST(!r.escalated);
                        BOOST_TEST(r.budget_denied);
                        BOOST_TEST((r.wanted == v));
                        BOOST_TEST((r.reason == escalation_reason::none));
                    } else {
                        // The denial's own error, whichever form ran: a closed guard stays
                        // budget_closed.
                        BOOST_TEST((s.what == kind::fail));
                        BOOST_TEST((s.error == (flagship == 1 ? frugal::error::budget_exhausted
                                                              : frugal::error::budget_closed)));
                        BOOST_TEST(r.budget_denied);
                        BOOST_TEST(!r.escalated);
                    }
                }
            }
        }
    }
}

// Every failure of the cheap tier, by whether the policy escalates on it.
BOOST_AUTO_TEST_CASE(every_failure_by_the_policy)
{
    const std::vector<bool> paid{false, false};
    struct row {
        boost::system::error_code ec;
        escalation_reason as;
    };
    const row rows[] = {
        {frugal::error::server_error, escalation_reason::error},
        {frugal::error::timeout, escalation_reason::timeout},
        {frugal::error::upstream_timeout, escalation_reason::timeout},
        {frugal::error::rate_limited, escalation_reason::error}, // a paid tier's 429
        {frugal::error::price_unknown, escalation_reason::error}, // a refused reservation
        {boost::asio::error::operation_aborted, escalation_reason::error}, // the guard's stop
    };
    for (const bool escalate_on_errors : {true, false}) {
        auto p = paid_pair();
        if (!escalate_on_errors)
            p.escalate_on = {escalation_reason::length};
        for (const auto& r : rows) {
            BOOST_TEST_CONTEXT(r.ec.message() << ", errors escalate " << escalate_on_errors)
            {
                cascade_machine m(p, paid, 0, escalation_reason::none);
                (void)m.start();
                auto e = end(0, how::failed, escalation_reason::none, r.ec);
                const auto s = m.ended(std::span<attempt_end>(&e, 1), true);
                if (escalate_on_errors) {
                    BOOST_TEST((s.what == kind::send && s.tier == 1));
                    BOOST_TEST((s.arrived_by == r.as));
                    BOOST_TEST((e.recorded == r.as));
                } else {
                    BOOST_TEST((s.what == kind::fail));
                    BOOST_TEST((s.error == r.ec));
                    BOOST_TEST((e.recorded == escalation_reason::none));
                }
            }
        }
    }
}

BOOST_AUTO_TEST_CASE(the_callers_cancellation_ends_the_cascade)
{
    const std::vector<bool> paid{false, false};
    const auto p = paid_pair();
    cascade_machine m(p, paid, 0, escalation_reason::none);
    (void)m.start();
    const auto s = report(m, end(0, how::cancelled, escalation_reason::none,
                                 boost::asio::error::operation_aborted));
    BOOST_TEST((s.what == kind::fail));
    BOOST_TEST((s.error == boost::asio::error::operation_aborted));
}

BOOST_AUTO_TEST_CASE(a_stream_abandoned_early_escalates_with_no_answer_to_keep)
{
    const std::vector<bool> paid{false, false};
    const auto p = paid_pair();
    cascade_machine m(p, paid, 0, escalation_reason::none);
    (void)m.start();
    auto s = report(m, end(0, how::abandoned, escalation_reason::refusal));
    BOOST_TEST((s.what == kind::send && s.tier == 1 && s.arrived_by == escalation_reason::refusal));
    s = report(m, end(1, how::denied, escalation_reason::none, frugal::error::budget_exhausted,
                      escalation_reason::refusal));
    BOOST_TEST((s.what == kind::fail)); // nothing to keep: the cheap stream was given up
    BOOST_TEST((s.error == frugal::error::budget_exhausted));
}

// The free tier: its quota's wait (go, skip under the opt-in, give up) and its own 429.
BOOST_AUTO_TEST_CASE(the_free_tier_is_waited_for_never_paid_around)
{
    const std::vector<bool> free_then_paid{true, false};
    for (const auto when : {frugal::on_free_tier_empty::wait, frugal::on_free_tier_empty::escalate}) {
        auto p = paid_pair();
        p.free_tier.when_empty = when;
        const bool opt_in = when == frugal::on_free_tier_empty::escalate;
        BOOST_TEST_CONTEXT("escalate opt-in " << opt_in)
        {
            {
                cascade_machine m(p, free_then_paid, 0, escalation_reason::none);
                auto s = m.start();
                BOOST_TEST((s.what == kind::ask_free && s.tier == 0));
                s = m.gated(quota_wait::go);
                BOOST_TEST((s.what == kind::send && s.tier == 0));
            }
            {
                // The wait gave up: rate_limited, never the flagship.
                cascade_machine m(p, free_then_paid, 0, escalation_reason::none);
                (void)m.start();
                const auto s = m.gated(quota_wait::fail);
                BOOST_TEST((s.what == kind::fail));
                BOOST_TEST((s.error == frugal::error::rate_limited));
            }
            {
                // Only the opt-in's skip passes the free tier over.
                cascade_machine m(p, free_then_paid, 0, escalation_reason::none);
                (void)m.start();
                const auto s = m.gated(quota_wait::skip);
                BOOST_TEST((s.what == kind::send && s.tier == 1));
                BOOST_TEST((s.arrived_by == escalation_reason::rate_limited));
            }
            for (const bool time_left : {true, false}) {
                // The free tier's own 429.
                cascade_machine m(p, free_then_paid, 0, escalation_reason::none);
                (void)m.start();
                (void)m.gated(quota_wait::go);
                auto e = end(0, how::failed, escalation_reason::none, frugal::error::rate_limited);
                const auto s = m.ended(std::span<attempt_end>(&e, 1), time_left);
                if (opt_in) {
                    BOOST_TEST((s.what == kind::send && s.tier == 1));
                    BOOST_TEST((s.arrived_by == escalation_reason::rate_limited));
                } else if (time_left) {
                    BOOST_TEST((s.what == kind::ask_free && s.tier == 0)); // asked again
                } else {
                    BOOST_TEST((s.what == kind::fail));
                    BOOST_TEST((s.error == frugal::error::rate_limited));
                    BOOST_TEST(s.free_wait_over);
                }
                BOOST_TEST((s.what != kind::send || opt_in)); // never paid around by default
            }
            {
                // A 429 after text was shown cannot be retried unseen: it escalates as the
                // quota (the opt-in) or fails.
                cascade_machine m(p, free_then_paid, 0, escalation_reason::none);
                (void)m.start();
                (void)m.gated(quota_wait::go);
                auto e = end(0, how::failed, escalation_reason::none, frugal::error::rate_limited);
                e.shown = true;
                const auto s = m.ended(std::span<attempt_end>(&e, 1), true);
                BOOST_TEST((s.what == kind::send && s.tier == 1));
                BOOST_TEST((s.arrived_by == escalation_reason::rate_limited));
            }
        }
    }
    // A free last tier: its 429 is waited for even under the opt-in, and skip cannot pass it.
    auto p = paid_pair();
    p.free_tier.when_empty = frugal::on_free_tier_empty::escalate;
    const std::vector<bool> all_free{true, true};
    cascade_machine m(p, all_free, 1, escalation_reason::context);
    auto s = m.start();
    BOOST_TEST((s.what == kind::ask_free && s.tier == 1));
    s = m.gated(quota_wait::skip);
    BOOST_TEST((s.what == kind::fail && s.error == frugal::error::rate_limited));
}

BOOST_AUTO_TEST_CASE(pre_routing_and_the_result_say_where_the_answer_came_from)
{
    const std::vector<bool> paid{false, false};
    const auto p = paid_pair();
    cascade_machine m(p, paid, 1, escalation_reason::context);
    auto s = m.start();
    BOOST_TEST((s.what == kind::send && s.tier == 1 && s.arrived_by == escalation_reason::context));
    s = report(m, end(1, how::answered, escalation_reason::length));
    BOOST_TEST((s.what == kind::accept && s.tier == 1)); // the last tier's answer is kept
    frugal::cascade_result r;
    m.fill(r, s);
    BOOST_TEST(r.escalated);
    BOOST_TEST((r.reason == escalation_reason::context));
}

// A hedge: the slow tier and the next race; the winner is reported last.
BOOST_AUTO_TEST_CASE(a_hedge_is_decided_by_its_winner)
{
    auto p = paid_pair();
    p.tiers.push_back("top/model");
    p.hedge_after = std::chrono::milliseconds(100);
    const std::vector<bool> paid{false, false, false};
    {
        cascade_machine m(p, paid, 0, escalation_reason::none);
        auto s = m.start();
        BOOST_TEST((s.what == kind::send && s.hedge));
        BOOST_TEST((m.hedged() == escalation_reason::timeout));
        attempt_end two[] = {
            end(0, how::cancelled, escalation_reason::none, boost::asio::error::operation_aborted),
            end(1, how::answered, escalation_reason::none, {}, escalation_reason::timeout)};
        // A cancelled loser is the hedge's own doing, reported as a failure, not the caller's.
        two[0].ended = how::failed;
        s = m.ended(two, true);
        BOOST_TEST((s.what == kind::accept && s.tier == 1));
        frugal::cascade_result r;
        m.fill(r, s);
        BOOST_TEST(r.escalated);
        BOOST_TEST((r.reason == escalation_reason::timeout));
    }
    {
        // Both answered badly: the higher tier decides, and the top tier is next.
        cascade_machine m(p, paid, 0, escalation_reason::none);
        (void)m.start();
        (void)m.hedged();
        attempt_end two[] = {end(0, how::answered, escalation_reason::empty),
            end(1, how::answered, escalation_reason::refusal, {}, escalation_reason::timeout)};
        const auto s = m.ended(two, true);
        BOOST_TEST((s.what == kind::send && s.tier == 2));
        BOOST_TEST((s.arrived_by == escalation_reason::refusal));
        BOOST_TEST(!s.hedge); // nothing above the top tier
        BOOST_TEST((m.fallback() == 1u));
    }
}

// A streamed hedge is won by the first stream to yield content, before any answer is judged:
// the stream that lost is reported `lost` and decides nothing, whichever tier it was.
BOOST_AUTO_TEST_CASE(a_lost_stream_of_a_hedge_decides_nothing)
{
    auto p = paid_pair();
    p.tiers.push_back("top/model");
    p.hedge_after = std::chrono::milliseconds(100);
    const std::vector<bool> paid{false, false, false};
    const boost::system::error_code aborted = boost::asio::error::operation_aborted;
    {
        // The slow tier lost: the hedge's answer decides; the slow tier was left for its time.
        cascade_machine m(p, paid, 0, escalation_reason::none);
        (void)m.start();
        const auto arrived = m.hedged();
        attempt_end two[] = {
            end(0, how::lost, escalation_reason::none, aborted),
            end(1, how::answered, escalation_reason::none, {}, arrived)};
        const auto s = m.ended(two, true);
        BOOST_TEST((s.what == kind::accept && s.tier == 1));
        BOOST_TEST((two[0].recorded == escalation_reason::timeout));
        BOOST_TEST((two[1].recorded == escalation_reason::none));
        frugal::cascade_result r;
        m.fill(r, s);
        BOOST_TEST(r.escalated);
        BOOST_TEST((r.reason == escalation_reason::timeout));
    }
    {
        // The hedge lost to the slow tier's first content, which then proved a refusal: the
        // hedge's tier is asked afresh (a failure of the hedge would have passed over it).
        cascade_machine m(p, paid, 0, escalation_reason::none);
        (void)m.start();
        const auto arrived = m.hedged();
        attempt_end two[] = {
            end(1, how::lost, escalation_reason::none, aborted, arrived),
            end(0, how::abandoned, escalation_reason::refusal)};
        const auto s = m.ended(two, true);
        BOOST_TEST((s.what == kind::send && s.tier == 1));
        BOOST_TEST((s.arrived_by == escalation_reason::refusal));
        BOOST_TEST(s.hedge);
        BOOST_TEST((two[0].recorded == escalation_reason::none));
        BOOST_TEST((two[1].recorded == escalation_reason::refusal));
        BOOST_TEST(!m.fallback().has_value());
    }
    {
        // The top tier lost to the middle one, whose whole answer was cut: the top tier next.
        cascade_machine m(p, paid, 1, escalation_reason::rule);
        auto s = m.start();
        BOOST_TEST((s.what == kind::send && s.tier == 1 && s.hedge));
        const auto arrived = m.hedged();
        attempt_end two[] = {
            end(2, how::lost, escalation_reason::none, aborted, arrived),
            end(1, how::answered, escalation_reason::length, {}, escalation_reason::rule)};
        s = m.ended(two, true);
        BOOST_TEST((s.what == kind::send && s.tier == 2 && !s.hedge));
        BOOST_TEST((s.arrived_by == escalation_reason::length));
        BOOST_TEST((m.fallback() == 1u));
    }
    {
        // The caller stopped the winner: the cascade ends cancelled.
        cascade_machine m(p, paid, 0, escalation_reason::none);
        (void)m.start();
        const auto arrived = m.hedged();
        attempt_end two[] = {
            end(0, how::lost, escalation_reason::none, aborted),
            end(1, how::cancelled, escalation_reason::none, aborted, arrived)};
        const auto s = m.ended(two, true);
        BOOST_TEST((s.what == kind::fail && s.error == aborted));
    }
}

BOOST_AUTO_TEST_SUITE_END()
