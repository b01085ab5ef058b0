// A hard spend cap around paid calls: reserve the worst case, send, settle the actual cost.
#include <frugal/budget.hpp>
#include <frugal/chat_client.hpp>
#include <frugal/sim.hpp>

#include <boost/asio/as_tuple.hpp>
#include <boost/asio/co_spawn.hpp>
#include <boost/asio/io_context.hpp>
#include <boost/asio/use_awaitable.hpp>

#include <iostream>

boost::asio::awaitable<void> spend(frugal::chat_client& client)
{
    // Prices come from the models catalog: exact, per token, `:free` rows at 0.
    frugal::price_catalog prices(co_await client.async_models());

    // A cap of 2 cents on everything, and 1 cent a day for each user.
    frugal::budget_params params;
    params.budgets = {
        {"global", *frugal::money::parse("0.02")},
        {"user:*", *frugal::money::parse("0.01"), frugal::budget_period::daily}};
    frugal::diagnostics diag;
    auto guard = frugal::budget_guard::open(params, prices, nullptr, &diag);
    if (!guard)
        throw boost::system::system_error(guard.error(), diag.message);

    frugal::chat_request request;
    request.model = "anthropic/claude-fable-5";
    request.messages.push_back({.role = "user", .content = "Prove it. [sim tokens=150]"});
    const std::vector<std::string> keys{"user:ada"};

    for (int i = 1; i <= 4; ++i) {
        // Reserve the worst case before sending; wait briefly for others to settle if short.
        frugal::reserve_request ask;
        ask.model = request.model;
        ask.prompt_bytes = frugal::prompt_bound(request); // bounds its prompt tokens
        ask.max_tokens = 500;
        ask.keys = keys;
        auto [rec, reservation] =
            co_await guard->async_reserve(ask, boost::asio::as_tuple(boost::asio::use_awaitable));
        if (rec) {
            std::cout << "request " << i << ": denied (" << rec.message() << ")\n";
            continue;
        }

        // Send with the max_tokens the guard granted (lower than asked when clamped).
        request.max_tokens = reservation.max_tokens();
        frugal::diagnostics diag;
        auto [ec, response] = co_await client.async_chat(
            request, diag, boost::asio::as_tuple(boost::asio::use_awaitable));

        // Settle as a router would: the provider's cost, $0 for a request never sent or
        // refused, the whole reservation for one cut off. The ledger record is written with it.
        frugal::attempt_record record;
        frugal::settle(reservation, ec, ec ? nullptr : &response, diag, record);
        std::cout << "request " << i << ": max_tokens " << request.max_tokens.value() << ", "
                  << frugal::to_string(record.outcome) << ", $" << record.cost.to_string()
                  << '\n';
    }
    for (const auto& b : guard->snapshot())
        std::cout << b.name << ": $" << b.committed.to_string() << " of $" << b.cap.to_string()
                  << '\n';
}

int main()
{
    frugal::sim_thread sim; // a simulated OpenRouter on 127.0.0.1: no key, no spend
    boost::asio::io_context io;
    frugal::client_params params;
    params.base_url = sim.base_url();
    params.api_key = "sk-or-v1-example";
    frugal::chat_client client(io.get_executor(), params);
    boost::asio::co_spawn(io, spend(client), [](const std::exception_ptr& e) {
        if (e)
            std::rethrow_exception(e);
    });
    io.run();
}
