// Fuzz target for the outcome files `frugal eval` and `frugal sim --outcomes` read (RouteLLM's
// CSV, frugal's JSONL) and for what is computed from them. The first byte picks the format;
// the rest is the file. Besides not crashing, leaking or reading out of bounds: every prompt
// has one slot per model, the tokens of an answer put back together are the answer, and a
// replay through a policy gives shares that sum to one, an accuracy in 0..1 and no negative
// cost.
#include <frugal/eval.hpp>
#include <frugal/prices.hpp>
#include <frugal/router.hpp>

#include <cmath>
#include <cstdint>
#include <cstdlib>
#include <string>
#include <string_view>

namespace {

void require(bool ok)
{
    if (!ok)
        std::abort();
}

frugal::model_info row(std::string id, const char* prompt, const char* completion)
{
    frugal::model_info m;
    m.id = std::move(id);
    m.prompt_price = *frugal::money::parse(prompt);
    m.completion_price = *frugal::money::parse(completion);
    m.max_completion_tokens = 64;
    return m;
}

void check_measure(const frugal::eval_measure& m)
{
    require(m.accuracy >= 0 && m.accuracy <= 1);
    require(m.cost >= frugal::money());
    double sum = 0;
    for (const double s : m.by_tier)
        sum += s;
    require(std::abs(sum - 1) < 1e-9);
}

} // namespace

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size)
{
    if (size == 0)
        return 0;
    const std::string_view doc(reinterpret_cast<const char*>(data + 1), size - 1);
    frugal::diagnostics diag;
    const auto set = data[0] % 2 == 0 ? frugal::parse_outcomes_csv(doc, &diag)
                                      : frugal::parse_outcomes_jsonl(doc, &diag);
    if (!set) {
        require(!diag.message.empty());
        return 0;
    }
    require(!set->models.empty() && !set->prompts.empty());
    for (const auto& p : set->prompts) {
        require(p.answers.size() == set->models.size());
        for (const auto& a : p.answers) {
            if (!a || !a->content)
                continue;
            const auto n = a->completion_tokens.value_or(frugal::estimate_tokens(*a->content));
            const auto tokens = frugal::split_tokens(*a->content, n, 4096);
            require(tokens.size() == std::min<std::uint64_t>(n, 4096));
            if (n <= 4096) {
                std::string joined;
                for (const auto t : tokens)
                    joined += t;
                require(joined == *a->content);
            }
        }
    }
    // The first model as the cheap tier, the last as the flagship, cut at 64 tokens.
    frugal::cascade_policy policy;
    policy.tiers = {set->models.front(), set->models.back()};
    policy.max_tokens = 64;
    policy.must_match = "(^|\\n)#### \\d+";
    policy.escalate_on.push_back(frugal::escalation_reason::must_match);
    const frugal::price_catalog prices(std::vector{
        row(set->models.front(), "0.000001", "0.000002"),
        row(set->models.back(), "0.00001", "0.00003")});
    const auto r = frugal::evaluate(*set, policy, prices, &diag);
    if (!r)
        return 0; // a prompt without an answer of a tier
    for (const auto* m : {&r->always_cheap, &r->always_flagship, &r->random, &r->oracle})
        check_measure(*m);
    if (r->judged) {
        check_measure(r->policy);
        require(r->decisions.size() == set->prompts.size());
    }
    return 0;
}
