// Links against the installed package: parses a price and a policy, prints them.
#include <frugal/money.hpp>
#include <frugal/router.hpp>

#include <cstdio>

int main()
{
    auto policy = frugal::parse_policy(
        R"({"cheap":"google/gemma-4-31b-it:free","flagship":"anthropic/claude-fable-5"})");
    const auto price = frugal::money::parse("0.0000000375");
    if (!policy || !price)
        return 1;
    std::printf("%s %zu\n", price->to_string().c_str(), policy->tiers.size());
    return 0;
}
