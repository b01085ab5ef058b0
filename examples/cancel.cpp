// Cancelling a paid stream with a deadline: the attempt is charged its whole reservation, since
// the provider may have billed it, until the generation lookup proves what it billed.
#include <frugal/budget.hpp>
#include <frugal/chat_client.hpp>
#include <frugal/sim.hpp>

#include <boost/asio/as_tuple.hpp>
#include <boost/asio/co_spawn.hpp>
#include <boost/asio/deferred.hpp>
#include <boost/asio/experimental/parallel_group.hpp>
#include <boost/asio/io_context.hpp>
#include <boost/asio/steady_timer.hpp>
#include <boost/asio/use_awaitable.hpp>

#include <iostream>

namespace asio = boost::asio;
using namespace std::chrono_literals;

constexpr auto no_throw = asio::as_tuple(asio::use_awaitable);

asio::awaitable<void> stop_early(frugal::chat_client& client)
{
    frugal::price_catalog prices(co_await client.async_models());
    frugal::budget_params budget;
    budget.budgets = {{"global", *frugal::money::parse("0.05")}};
    frugal::diagnostics diag;
    auto guard = frugal::budget_guard::open(budget, prices, nullptr, &diag);
    if (!guard)
        throw boost::system::system_error(guard.error(), diag.message);

    frugal::chat_request request;
    request.model = "anthropic/claude-fable-5";
    request.messages.push_back({.role = "user", .content = "Tell a long story. [sim tokens=400]"});
    frugal::reserve_request ask;
    ask.model = request.model;
    ask.prompt_bytes = 400; // the request body's size bounds its prompt tokens
    ask.max_tokens = 500;
    frugal::reservation reservation = co_await guard->async_reserve(ask);
    request.max_tokens = reservation.max_tokens();
    reservation.mark_sent();
    frugal::chat_stream stream;
    co_await client.async_start_stream(request, stream);

    // Each read races the deadline; the timer winning cancels the read, which ends the stream
    // and closes its connection (a provider that supports it stops generating).
    asio::steady_timer deadline(client.get_executor());
    deadline.expires_after(1500ms);
    boost::system::error_code read_error;
    std::size_t shown = 0;
    while (!read_error && !stream.done()) {
        auto race = asio::experimental::make_parallel_group(
            stream.async_read_delta(), deadline.async_wait(asio::deferred));
        auto [order, read_ec, delta, timer_ec] =
            co_await race.async_wait(asio::experimental::wait_for_one(), asio::use_awaitable);
        read_error = read_ec;
        shown += delta.content.size();
    }
    std::cout << "stopped after " << shown << " characters: " << read_error.message() << '\n';

    // Sent, then cancelled: the bill is unknown, so the whole reservation is charged for now.
    frugal::attempt_record record;
    record.generation_id = stream.response().id;
    record.outcome = frugal::attempt_outcome::cancelled;
    reservation.settle_unknown(record);
    std::cout << "charged for now: $" << record.cost.to_string() << '\n';

    // The provider's record of the generation proves the bill. It may answer 404 for a moment
    // after the generation ends.
    for (int tries = 0; tries < 10; ++tries) {
        auto [gec, info] = co_await client.async_generation(record.generation_id, no_throw);
        if (!gec && info.total_cost) {
            guard->correct(record.record_id, *info.total_cost);
            std::cout << "proven: $" << info.total_cost->to_string() << " for "
                      << info.tokens_completion << " tokens\n";
            break;
        }
        if (gec != frugal::error::not_found)
            break;
        deadline.expires_after(200ms);
        co_await deadline.async_wait(no_throw);
    }
    std::cout << "spent: $" << guard->committed_total().to_string() << '\n';
}

int main()
{
    frugal::sim_thread sim(frugal::sim_config::demo()); // realistic token pacing
    asio::io_context io;
    frugal::client_params params;
    params.base_url = sim.base_url();
    params.api_key = "sk-or-v1-example";
    frugal::chat_client client(io.get_executor(), params);
    asio::co_spawn(io, stop_early(client), [](const std::exception_ptr& e) {
        if (e)
            std::rethrow_exception(e);
    });
    io.run();
}
