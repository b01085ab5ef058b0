// One chat completion against the simulator, with the cost OpenRouter would bill.
#include <frugal/chat_client.hpp>
#include <frugal/sim.hpp>

#include <boost/asio/co_spawn.hpp>
#include <boost/asio/detached.hpp>
#include <boost/asio/io_context.hpp>

#include <iostream>

boost::asio::awaitable<void> ask(frugal::chat_client& client)
{
    // A request: the model and the conversation; everything else is optional.
    frugal::chat_request request;
    request.model = "google/gemma-4-31b-it:free";
    request.messages.push_back({.role = "user", .content = "What does cheap-first routing buy?"});
    request.max_tokens = 200;

    // Send it and read the whole answer; failures throw here (the default token is deferred).
    frugal::chat_response response = co_await client.async_chat(request);

    std::cout << response.model << " answered: " << response.content << '\n';
    if (response.usage && response.usage->cost)
        std::cout << "billed: $" << response.usage->cost->to_string() << '\n';
}

int main()
{
    // A simulated OpenRouter on 127.0.0.1, so the example needs no key and spends nothing.
    frugal::sim_thread sim;

    boost::asio::io_context io;
    frugal::client_params params;
    params.base_url = sim.base_url();    // by default: OPENROUTER_BASE_URL, else openrouter.ai
    params.api_key = "sk-or-v1-example"; // by default: OPENROUTER_API_KEY
    frugal::chat_client client(io.get_executor(), params);

    boost::asio::co_spawn(io, ask(client), [](const std::exception_ptr& e) {
        if (e)
            std::rethrow_exception(e);
    });
    io.run();
}
