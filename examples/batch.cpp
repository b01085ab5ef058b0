// A batch under one small hard cap: every prompt runs at once on one thread, the free model
// answers what it can, and escalations to the flagship stop where they would cross the cap.
#include <frugal/router.hpp>
#include <frugal/sim.hpp>

#include <boost/asio/co_spawn.hpp>
#include <boost/asio/experimental/parallel_group.hpp>
#include <boost/asio/io_context.hpp>
#include <boost/asio/use_awaitable.hpp>

#include <cstdlib>
#include <iomanip>
#include <iostream>
#include <optional>
#include <vector>

namespace asio = boost::asio;

// Easy questions the free model answers, and proofs it cannot (the flagship's work).
constexpr const char* prompts[] = {
    "What is the capital of France?",
    "Prove the theorem step by step, rigorously.",
    "Name three primary colours.",
    "Derive the optimal strategy and prove it, step by step.",
    "Translate 'good morning' into Spanish.",
    "Analyze the algorithm, then prove its complexity is optimal.",
    "What is twelve times twelve?",
    "Prove rigorously that the greedy choice is optimal.",
};

asio::awaitable<void> run_batch(frugal::chat_client& client)
{
    frugal::diagnostics diag;
    auto policy = frugal::parse_policy(
        R"({"cheap":"google/gemma-4-31b-it:free","flagship":"anthropic/claude-fable-5"})", &diag);
    if (!policy)
        throw boost::system::system_error(policy.error(), diag.message);

    // One cap for the whole batch. Strict mode reserves each escalation's worst case before it
    // is sent, so escalations running at the same time can never cross the cap together.
    const frugal::money cap = *frugal::money::parse("0.003");
    frugal::price_catalog prices(co_await client.async_models());
    frugal::budget_params budget;
    budget.budgets = {{"global", cap}};
    budget.mode = frugal::budget_mode::strict;
    auto guard = frugal::budget_guard::open(budget, prices, nullptr, &diag);
    if (!guard)
        throw boost::system::system_error(guard.error(), diag.message);
    frugal::router router(client, *policy, prices, *guard);

    // Every prompt at once: each cascade is a deferred operation, and the group waits for all.
    using cascade_op = decltype(router.async_complete(frugal::chat_request{}));
    std::vector<cascade_op> ops;
    for (const char* prompt : prompts) {
        frugal::chat_request request;
        request.messages.push_back({.role = "user", .content = prompt});
        ops.push_back(router.async_complete(std::move(request)));
    }
    auto batch = asio::experimental::make_parallel_group(std::move(ops));
    auto [order, errors, results] =
        co_await batch.async_wait(asio::experimental::wait_for_all(), asio::use_awaitable);

    // One failed prompt does not fail the batch: each has its own error and result.
    frugal::money spent;
    for (std::size_t i = 0; i < results.size(); ++i) {
        const frugal::cascade_result& r = results[i];
        std::cout << std::left << std::setw(62) << prompts[i];
        if (errors[i]) {
            std::cout << " failed: " << errors[i].message();
        } else {
            std::cout << ' ' << std::setw(28) << r.response.model
                      << (r.escalated ? " escalated" : "          ")
                      << (r.budget_denied ? " budget_denied" : "              ") << " $"
                      << r.total_cost.to_string();
        }
        std::cout << '\n';
        spent += r.total_cost;
    }
    std::cout << "spent $" << spent.to_string() << " of a $" << cap.to_string() << " cap\n";
}

int main()
{
    // The simulator unless a real endpoint is configured (its catalog names the tiers above).
    // NOLINTNEXTLINE(concurrency-mt-unsafe): read once, before any thread starts
    const bool configured = std::getenv("OPENROUTER_BASE_URL") || std::getenv("OPENROUTER_API_KEY");
    std::optional<frugal::sim_thread> sim;
    frugal::client_params params;
    if (!configured) {
        sim.emplace();
        params.base_url = sim->base_url();
        params.api_key = "sk-or-v1-example";
    }

    boost::asio::io_context io;
    frugal::chat_client client(io.get_executor(), params);
    boost::asio::co_spawn(io, run_batch(client), [](const std::exception_ptr& e) {
        if (e)
            std::rethrow_exception(e);
    });
    io.run();
}
