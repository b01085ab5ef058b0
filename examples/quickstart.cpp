// The smallest cheap-first call: a free model answers first, the flagship only when the free
// answer is not good enough, and every paid call inside a hard cap.
#include <frugal/router.hpp>
#include <frugal/sim.hpp>

#include <boost/asio/co_spawn.hpp>
#include <boost/asio/io_context.hpp>

#include <cstdlib>
#include <iostream>
#include <optional>

boost::asio::awaitable<void> ask(frugal::chat_client& client)
{
    // The tiers, cheapest first; the default conditions escalate a cut, empty, failed or
    // refused answer.
    frugal::cascade_policy policy;
    policy.tiers = {"openai/gpt-oss-120b:free", "anthropic/claude-sonnet-4.5"};

    // A hard cap of 5 cents on everything the flagship is asked, priced from the catalog.
    frugal::price_catalog prices(co_await client.async_models());
    frugal::budget_params budget;
    budget.budgets = {{"global", *frugal::money::parse("0.05")}};
    frugal::diagnostics diag;
    auto guard = frugal::budget_guard::open(budget, prices, nullptr, &diag);
    if (!guard)
        throw boost::system::system_error(guard.error(), diag.message);
    frugal::router router(client, policy, prices, *guard);

    frugal::chat_request request;
    request.messages.push_back({.role = "user", .content = "Prove that sqrt(2) is irrational."});
    frugal::cascade_result result = co_await router.async_complete(request);

    std::cout << result.response.model << (result.escalated ? " (escalated)" : "") << ", $"
              << result.total_cost.to_string() << ":\n"
              << result.response.content << '\n';
}

int main()
{
    // With OPENROUTER_API_KEY set, OpenRouter itself (the cap keeps the spend under 5 cents);
    // without, a simulated OpenRouter on 127.0.0.1: no key, no spend. Both list these models.
    // NOLINTNEXTLINE(concurrency-mt-unsafe): read before any thread starts
    const char* key = std::getenv("OPENROUTER_API_KEY");
    std::optional<frugal::sim_thread> sim;
    frugal::client_params params; // by default: OPENROUTER_BASE_URL, else openrouter.ai
    if (key == nullptr || *key == '\0') {
        sim.emplace();
        params.base_url = sim->base_url();
        params.api_key = "sk-or-v1-example";
    }
    boost::asio::io_context io;
    frugal::chat_client client(io.get_executor(), params);
    boost::asio::co_spawn(io, ask(client), [](const std::exception_ptr& e) {
        if (e)
            std::rethrow_exception(e);
    });
    io.run();
}
