// A policy replayed on recorded answers. The decisions are the live cascade's own: its state
// machine (cascade/decide.hpp) says which tier goes next, and its judge (cascade/judge.hpp)
// says whether an answer is good enough, so what eval reports is what a live request would do
// with the same answer.

#include <frugal/eval.hpp>

#include <frugal/error.hpp>

#include "cascade/decide.hpp"
#include "cascade/judge.hpp"

#include <algorithm>
#include <limits>
#include <numeric>
#include <unordered_set>

namespace frugal {

namespace {

boost::system::error_code fail(diagnostics* diag, std::string why, error e = error::bad_outcomes)
{
    if (diag != nullptr)
        diag->message = std::move(why);
    return e;
}

// SplitMix64: a fully specified sequence, so the random baseline is the same everywhere.
struct splitmix64 {
    std::uint64_t state;
    std::uint64_t operator()()
    {
        std::uint64_t z = (state += 0x9e3779b97f4a7c15ULL);
        z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ULL;
        z = (z ^ (z >> 27)) * 0x94d049bb133111ebULL;
        return z ^ (z >> 31);
    }
};

constexpr std::uint64_t random_seed = 1;

// A sum that saturates: counts and prices come from files, and a total must never wrap small.
money plus(money a, money b) noexcept
{
    money::rep out = 0;
    if (__builtin_add_overflow(a.units(), b.units(), &out))
        return money::from_units(
            b.units() > 0 ? std::numeric_limits<money::rep>::max()
                          : std::numeric_limits<money::rep>::min());
    return money::from_units(out);
}

// One tier's answer to one prompt as the live path would see it: the recorded text, cut at
// max_tokens as the provider would cut it.
struct replayed {
    chat_response response;
    money cost;
    bool correct = false;
    bool cut = false;
};

struct tier_info {
    std::size_t column = 0;
    const model_price* price = nullptr;
    std::uint64_t max_tokens = 0;
};

replayed replay(const recorded_prompt& p, const recorded_answer& a, const tier_info& t, bool text)
{
    replayed r;
    r.correct = a.correct;
    const std::uint64_t prompt_tokens = a.prompt_tokens.value_or(estimate_tokens(p.prompt));
    std::uint64_t completion_tokens = 0;
    if (a.content) {
        completion_tokens = a.completion_tokens.value_or(estimate_tokens(*a.content));
        r.response.finish_reason = a.finish_reason;
        if (completion_tokens > t.max_tokens) {
            r.cut = true;
            r.correct = false; // its recorded verdict was on the whole answer
            r.response.finish_reason = "length";
            if (text) {
                const auto tokens = split_tokens(*a.content, completion_tokens, t.max_tokens);
                if (!tokens.empty()) {
                    const auto end = tokens.back();
                    r.response.content = std::string(
                        a.content->data(), end.data() + end.size() - a.content->data());
                }
            }
            completion_tokens = t.max_tokens;
        } else if (text) {
            r.response.content = *a.content;
        }
    }
    const auto& pr = *t.price;
    r.cost = plus(
        plus(money::saturating_times(pr.prompt, prompt_tokens),
             money::saturating_times(pr.completion, completion_tokens)),
        pr.request);
    return r;
}

void finish(eval_measure& m, std::size_t prompts, std::size_t correct, double cheap, double flagship)
{
    const auto n = static_cast<double>(prompts);
    m.accuracy = static_cast<double>(correct) / n;
    for (auto& s : m.by_tier)
        s /= n;
    for (auto& s : m.sent_to)
        s /= n;
    m.escalated_share = 1.0 - (m.by_tier.empty() ? 1.0 : m.by_tier.front());
    if (flagship != cheap)
        m.pgr = (m.accuracy - cheap) / (flagship - cheap);
}

} // namespace

boost::system::result<eval_report> evaluate(
    const outcome_set& outcomes,
    const cascade_policy& policy,
    const price_catalog& prices,
    diagnostics* diag)
{
    if (diag != nullptr)
        diag->clear();
    if (policy.tiers.empty())
        return fail(diag, "the policy has no tier", error::bad_policy);
    if (outcomes.prompts.empty())
        return fail(diag, "the outcomes hold no prompt");
    std::string columns;
    for (const auto& m : outcomes.models)
        columns += (columns.empty() ? "" : ", ") + m;

    std::vector<tier_info> tiers;
    std::vector<bool> free_tier;
    for (const auto& name : policy.tiers) {
        tier_info t;
        const auto column = outcomes.model_index(name);
        if (!column)
            return fail(
                diag, "the policy's tier \"" + name +
                          "\" is not a model of the outcomes file (its models: " + columns + ")");
        t.column = *column;
        t.price = prices.find(name);
        if (t.price == nullptr)
            return fail(diag, "the price catalog does not list \"" + name + "\"", error::price_unknown);
        if (!t.price->known())
            return fail(
                diag, "\"" + name + "\" has no price frugal can use: " + t.price->unknown,
                error::price_unknown);
        t.max_tokens = policy.max_tokens;
        if (t.price->max_completion_tokens && *t.price->max_completion_tokens > 0)
            t.max_tokens = std::min<std::uint64_t>(t.max_tokens, *t.price->max_completion_tokens);
        free_tier.push_back(t.price->free());
        tiers.push_back(t);
    }
    auto where = [](const recorded_prompt& p) {
        return (p.file.empty() ? std::string() : p.file + ", ") + "line " + std::to_string(p.line);
    };
    for (const auto& p : outcomes.prompts)
        for (const auto& t : tiers)
            if (!p.answers[t.column])
                return fail(
                    diag, "the prompt of " + where(p) + " has no answer of \"" +
                              outcomes.models[t.column] + "\"");

    eval_report rep;
    rep.prompts = outcomes.prompts.size();
    rep.tiers = policy.tiers;
    rep.judged = outcomes.has_responses(policy.tiers);
    const std::size_t n_tiers = tiers.size();
    const std::size_t last = n_tiers - 1;
    auto fresh = [&] {
        eval_measure m;
        m.by_tier.assign(n_tiers, 0.0);
        m.sent_to.assign(n_tiers, 0.0);
        return m;
    };
    rep.always_cheap = fresh();
    rep.always_flagship = fresh();
    rep.random = fresh();
    rep.oracle = fresh();

    // Each prompt's first and last tier, replayed once: every baseline is made of them.
    std::vector<replayed> cheap;
    std::vector<replayed> flagship;
    cheap.reserve(rep.prompts);
    flagship.reserve(rep.prompts);
    std::size_t cheap_right = 0;
    std::size_t flagship_right = 0;
    std::size_t oracle_right = 0;
    std::size_t oracle_up = 0;
    for (const auto& p : outcomes.prompts) {
        cheap.push_back(replay(p, *p.answers[tiers.front().column], tiers.front(), false));
        flagship.push_back(replay(p, *p.answers[tiers.back().column], tiers.back(), false));
        const auto& c = cheap.back();
        const auto& f = flagship.back();
        rep.cut += (c.cut ? 1 : 0) + (last > 0 && f.cut ? 1 : 0);
        cheap_right += c.correct ? 1 : 0;
        flagship_right += f.correct ? 1 : 0;
        rep.always_cheap.cost = plus(rep.always_cheap.cost, c.cost);
        rep.always_cheap.by_tier.front() += 1;
        rep.always_cheap.sent_to.front() += 1;
        rep.always_flagship.cost = plus(rep.always_flagship.cost, f.cost);
        rep.always_flagship.by_tier.back() += 1;
        rep.always_flagship.sent_to.back() += 1;
        const bool up = !c.correct && f.correct;
        oracle_up += up ? 1 : 0;
        oracle_right += up || c.correct ? 1 : 0;
        rep.oracle.cost = plus(rep.oracle.cost, plus(c.cost, up && last > 0 ? f.cost : money{}));
        rep.oracle.by_tier[up ? last : 0] += 1;
        rep.oracle.sent_to.front() += 1;
        rep.oracle.sent_to[last] += up && last > 0 ? 1 : 0;
    }
    const auto n = static_cast<double>(rep.prompts);
    const double acc_cheap = static_cast<double>(cheap_right) / n;
    const double acc_flagship = static_cast<double>(flagship_right) / n;

    // The policy, prompt by prompt, through the live cascade's machine and judge.
    std::size_t policy_right = 0;
    std::size_t policy_up = 0;
    if (rep.judged) {
        rep.policy = fresh();
        rep.decisions.reserve(rep.prompts);
        for (const auto& p : outcomes.prompts) {
            chat_request req;
            req.messages.push_back({.role = "user", .content = p.prompt});
            req.max_tokens = policy.max_tokens;
            std::uint32_t first = 0;
            auto pre = escalation_reason::none;
            if (policy.route) {
                first = std::min<std::uint32_t>(policy.route(req), static_cast<std::uint32_t>(last));
                pre = first > 0 ? escalation_reason::rule : escalation_reason::none;
            }
            detail::cascade_machine machine(policy, free_tier, first, pre);
            eval_decision d;
            auto step = machine.start();
            std::optional<replayed> answered;
            for (;;) {
                if (step.what == detail::cascade_step::kind::ask_free) {
                    step = machine.gated(detail::quota_wait::go); // replays assume the quota
                    continue;
                }
                if (step.what != detail::cascade_step::kind::send)
                    break;
                const auto& t = tiers[step.tier];
                auto r = replay(p, *p.answers[t.column], t, true);
                rep.policy.sent_to[step.tier] += 1;
                d.cost = plus(d.cost, r.cost);
                detail::attempt_end end;
                end.tier = step.tier;
                end.ended = detail::attempt_end::how::answered;
                end.verdict = detail::judge(policy, req, r.response);
                end.arrived_by = step.arrived_by;
                answered = std::move(r);
                step = machine.ended(std::span(&end, 1), true);
            }
            if (step.what != detail::cascade_step::kind::accept || !answered)
                return fail(
                    diag, "the cascade ended without an answer for the prompt of " + where(p));
            cascade_result result;
            machine.fill(result, step);
            d.tier = step.tier;
            d.reason = result.reason;
            d.correct = answered->correct;
            policy_right += d.correct ? 1 : 0;
            policy_up += d.tier > 0 ? 1 : 0;
            rep.policy.cost = plus(rep.policy.cost, d.cost);
            rep.policy.by_tier[d.tier] += 1;
            rep.decisions.push_back(d);
        }
        finish(rep.policy, rep.prompts, policy_right, acc_cheap, acc_flagship);
    } else {
        rep.notes.push_back(
            "the file records no answers' text, only whether each was correct: the policy "
            "cannot be judged, and only the routing baselines are reported");
        rep.notes.push_back(
            "completion tokens are unknown without the answers: costs count prompt tokens "
            "and request fees only");
    }

    // Random escalation, as many prompts as the policy sent up (the oracle's count when the
    // policy could not be judged): a Fisher-Yates shuffle from a fixed seed picks them.
    const std::size_t k = rep.judged ? policy_up : oracle_up;
    std::vector<std::size_t> order(rep.prompts);
    std::iota(order.begin(), order.end(), std::size_t{0});
    splitmix64 rng{random_seed};
    for (std::size_t i = order.size(); i > 1; --i)
        std::swap(order[i - 1], order[static_cast<std::size_t>(rng() % i)]);
    std::vector<bool> up(rep.prompts, false);
    for (std::size_t i = 0; i < k; ++i)
        up[order[i]] = true;
    std::size_t random_right = 0;
    for (std::size_t i = 0; i < rep.prompts; ++i) {
        const bool go = up[i] && last > 0;
        random_right += (go ? flagship[i].correct : cheap[i].correct) ? 1 : 0;
        rep.random.cost = plus(rep.random.cost, plus(cheap[i].cost, go ? flagship[i].cost : money{}));
        rep.random.by_tier[go ? last : 0] += 1;
        rep.random.sent_to.front() += 1;
        rep.random.sent_to[last] += go ? 1 : 0;
    }

    finish(rep.always_cheap, rep.prompts, cheap_right, acc_cheap, acc_flagship);
    finish(rep.always_flagship, rep.prompts, flagship_right, acc_cheap, acc_flagship);
    finish(rep.random, rep.prompts, random_right, acc_cheap, acc_flagship);
    finish(rep.oracle, rep.prompts, oracle_right, acc_cheap, acc_flagship);
    // Always-flagship never asks the first tier: it escalates nothing, it skips.
    rep.always_flagship.escalated_share = last > 0 ? 1.0 : 0.0;
    if (rep.cut > 0)
        rep.notes.push_back(
            std::to_string(rep.cut) +
            " recorded answers of the first or last tier are longer than max_tokens (the "
            "policy's, or the model's max_completion_tokens): they are cut there, as a provider "
            "cuts them, and counted wrong");
    if (policy.hedge_after.count() > 0)
        rep.notes.push_back(
            "the policy hedges, and recorded answers have no latency: the replay never hedges");
    if (std::find(free_tier.begin(), free_tier.end(), true) != free_tier.end())
        rep.notes.push_back("the replay assumes the free tier's quota is never spent");
    {
        std::size_t repeated = 0;
        std::unordered_set<std::string_view> prompts;
        for (const auto& p : outcomes.prompts)
            repeated += prompts.insert(p.prompt).second ? 0 : 1;
        if (repeated > 0)
            rep.notes.push_back(
                std::to_string(repeated) +
                " prompts are recorded more than once: each is replayed, while a simulator "
                "replaying the file answers a prompt as first recorded");
    }
    const auto saturated = money::from_units(std::numeric_limits<money::rep>::max());
    for (const auto* m : {&rep.policy, &rep.always_cheap, &rep.always_flagship, &rep.random, &rep.oracle})
        if (m->cost == saturated) {
            rep.notes.push_back(
                "a cost passed the largest amount frugal holds (the file's token counts or the "
                "catalog's prices are not believable): it is shown at that limit");
            break;
        }
    if (n_tiers > 2)
        rep.notes.push_back(
            "the baselines compare the first tier with the last; the tiers between count in "
            "the policy only");
    for (const auto& c : outcomes.ignored_columns)
        rep.notes.push_back("column \"" + c + "\" is not a model's and was ignored");
    return rep;
}

} // namespace frugal
