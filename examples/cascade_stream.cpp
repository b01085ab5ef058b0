// A streamed cascade: the free model's answer is shown as it arrives; when it turns out not to
// be good enough, an `escalating` event retracts it and the flagship's answer streams instead.
#include <frugal/router.hpp>
#include <frugal/sim.hpp>

#include <boost/asio/co_spawn.hpp>
#include <boost/asio/io_context.hpp>

#include <iostream>

boost::asio::awaitable<void> stream_cascade(frugal::chat_client& client)
{
    frugal::cascade_policy policy;
    policy.tiers = {"google/gemma-4-31b-it:free", "anthropic/claude-fable-5"};
    policy.max_tokens = 60;

    frugal::price_catalog prices(co_await client.async_models());
    frugal::budget_params budget;
    budget.budgets = {{"global", *frugal::money::parse("0.05")}};
    frugal::diagnostics diag;
    auto guard = frugal::budget_guard::open(budget, prices, nullptr, &diag);
    if (!guard)
        throw boost::system::system_error(guard.error(), diag.message);
    frugal::router router(client, policy, prices, *guard);

    frugal::chat_request request;
    request.messages.push_back(
        {.role = "user", .content = "Derive the optimal strategy, step by step."});

    // `stream` shows every tier's text as it comes; `buffer` would judge the free answer
    // before showing any of it, and stream only the last tier live.
    frugal::cascade_stream stream;
    router.start_stream(request, frugal::stream_mode::stream, stream);

    // One read at a time, until `done`: the cascade reads no further ahead than this loop.
    for (;;) {
        frugal::cascade_event event = co_await stream.async_next();
        if (event.type == frugal::cascade_event::kind::delta) {
            std::cout << event.text << std::flush;
        } else if (event.type == frugal::cascade_event::kind::escalating) {
            // Everything shown so far is to be discarded: the next tier answers afresh.
            std::cout << "\n[" << to_string(event.reason) << ": escalating to tier " << event.tier
                      << "]\n";
        } else {
            const frugal::cascade_result& result = *event.result;
            std::cout << "\n[" << result.response.model << ", $" << result.total_cost.to_string()
                      << "]\n";
            break;
        }
    }
}

int main()
{
    frugal::sim_thread sim(frugal::sim_config::demo()); // realistic token pacing
    boost::asio::io_context io;
    frugal::client_params params;
    params.base_url = sim.base_url();
    params.api_key = "sk-or-v1-example";
    frugal::chat_client client(io.get_executor(), params);
    boost::asio::co_spawn(io, stream_cascade(client), [](const std::exception_ptr& e) {
        if (e)
            std::rethrow_exception(e);
    });
    io.run();
}
