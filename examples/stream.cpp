// Stream an answer token by token, with the diagnostics of a failure.
#include <frugal/chat_client.hpp>
#include <frugal/sim.hpp>

#include <boost/asio/as_tuple.hpp>
#include <boost/asio/co_spawn.hpp>
#include <boost/asio/detached.hpp>
#include <boost/asio/io_context.hpp>
#include <boost/asio/use_awaitable.hpp>

#include <iostream>

constexpr auto no_throw = boost::asio::as_tuple(boost::asio::use_awaitable);

boost::asio::awaitable<void> stream_answer(frugal::chat_client& client)
{
    frugal::chat_request request;
    request.model = "anthropic/claude-fable-5";
    request.messages.push_back({.role = "user", .content = "Explain budgets in one sentence."});

    // Send the request and read the response headers.
    frugal::chat_stream stream;
    auto [ec] = co_await client.async_start_stream(request, stream, no_throw);

    // Read each delta as it arrives, until data: [DONE].
    while (!ec && !stream.done()) {
        auto [read_ec, delta] = co_await stream.async_read_delta(no_throw);
        ec = read_ec;
        std::cout << delta.content << std::flush;
    }

    // A failure comes with what the server said; a success with usage and cost.
    if (ec) {
        std::cerr << "\nfailed: " << ec.message() << ": " << stream.diagnostics().to_string()
                  << '\n';
    } else if (const auto& usage = stream.response().usage; usage && usage->cost) {
        std::cout << "\n"
                  << usage->completion_tokens << " tokens, $" << usage->cost->to_string() << '\n';
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
    boost::asio::co_spawn(io, stream_answer(client), boost::asio::detached);
    io.run();
}
