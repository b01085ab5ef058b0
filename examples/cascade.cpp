// Cheap-first: a free model answers; the flagship is called only when the answer is not good
// enough, inside a budget.
#include <frugal/budget.hpp>
#include <frugal/chat_client.hpp>
#include <frugal/router.hpp>
#include <frugal/sim.hpp>

#include <boost/asio/co_spawn.hpp>
#include <boost/asio/io_context.hpp>

#include <iostream>

boost::asio::awaitable<void> ask(frugal::chat_client& client)
{
    // The policy: the free model first, the flagship when the answer is cut, empty, an error
    // or a refusal.
    frugal::diagnostics diag;
    auto policy = frugal::parse_policy(
        R"({"cheap":"google/gemma-4-31b-it:free","flagship":"anthropic/claude-fable-5",
            "escalate_on":["length","empty","error","refusal"],"max_tokens":512})",
        &diag);
    if (!policy)
        throw boost::system::system_error(policy.error(), diag.message);

    // Escalations are paid: they go through a budget guard with a hard cap of 5 cents.
    frugal::price_catalog prices(co_await client.async_models());
    frugal::budget_params budget;
    budget.budgets = {{"global", *frugal::money::parse("0.05")}};
    auto guard = frugal::budget_guard::open(budget, prices, nullptr, &diag);
    if (!guard) // a router given no guard would run without a cap
        throw boost::system::system_error(guard.error(), diag.message);
    frugal::router router(client, *policy, prices, *guard);

    for (const char* prompt :
         {"What is the capital of France?", "Prove the theorem step by step, rigorously."}) {
        frugal::chat_request request;
        request.messages.push_back({.role = "user", .content = prompt});

        // One awaited task: the free call and, when needed, the escalation.
        frugal::cascade_result result = co_await router.async_complete(request);

        std::cout << prompt << "\n  answered by " << result.response.model;
        if (result.escalated)
            std::cout << " after the cheap answer failed (" << to_string(result.reason) << ")";
        std::cout << ", cost $" << result.total_cost.to_string() << '\n';
    }
}

int main()
{
    frugal::sim_thread sim; // a simulated OpenRouter on 127.0.0.1: no key, no spend
    boost::asio::io_context io;
    frugal::client_params params;
    params.base_url = sim.base_url();
    params.api_key = "sk-or-v1-example";
    frugal::chat_client client(io.get_executor(), params);
    boost::asio::co_spawn(io, ask(client), [](const std::exception_ptr& e) {
        if (e)
            std::rethrow_exception(e);
    });
    io.run();
}
