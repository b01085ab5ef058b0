#ifndef FRUGAL_SRC_OPENROUTER_CLIENT_ACCESS_HPP
#define FRUGAL_SRC_OPENROUTER_CLIENT_ACCESS_HPP

// The client's chat for frugal's own layers above it: as a coroutine to await from another of
// frugal's coroutines (no coroutine thread of its own, no completion handler; cancellation
// follows the awaiting coroutine's), and as an operation that reports the generation id as soon
// as the response head carries it, long before the body ends, so that a budget can record it
// before a crash could lose it.

#include <frugal/chat_client.hpp>

#include <boost/asio/any_completion_handler.hpp>
#include <boost/asio/async_result.hpp>
#include <boost/asio/awaitable.hpp>

#include <functional>
#include <string>
#include <tuple>

namespace frugal::detail {

// Called with the generation id of the response head (`X-Generation-Id`).
using generation_hook = std::function<void(const std::string&)>;

struct client_access {
    // `retry_rate_limited` false: a 429 is reported at once, not retried by the client (a
    // cascade's free tier waits for the reset itself, and counts every request it sends).
    static boost::asio::awaitable<std::tuple<boost::system::error_code, chat_response>> chat(
        chat_client& client,
        chat_request request,
        diagnostics* diag,
        bool retry_rate_limited = true);

    // `chat_client::async_start_stream`, with the same choice about 429s.
    template <class CompletionToken>
    static auto async_start_stream(
        chat_client& client,
        chat_request request,
        chat_stream& stream,
        bool retry_rate_limited,
        CompletionToken&& token)
    {
        return boost::asio::async_initiate<CompletionToken, void(boost::system::error_code)>(
            [&client, &stream, retry_rate_limited](auto handler, chat_request req) {
                client.async_start_stream_impl(
                    std::move(req), &stream, std::move(handler), retry_rate_limited);
            },
            token, std::move(request));
    }

    // `async_chat` with `diag` and a hook for the generation id.
    template <class CompletionToken>
    static auto async_chat(
        chat_client& client,
        const chat_request& request,
        diagnostics& diag,
        generation_hook on_generation,
        CompletionToken&& token)
    {
        return boost::asio::async_initiate<
            CompletionToken, void(boost::system::error_code, chat_response)>(
            [&client, &request, &diag](auto handler, generation_hook hook) {
                async_chat_impl(client, request, &diag, std::move(hook), std::move(handler));
            },
            token, std::move(on_generation));
    }

    static void async_chat_impl(
        chat_client& client,
        const chat_request& request,
        diagnostics* diag,
        generation_hook on_generation,
        boost::asio::any_completion_handler<void(boost::system::error_code, chat_response)>
            handler);
};

} // namespace frugal::detail

#endif // FRUGAL_SRC_OPENROUTER_CLIENT_ACCESS_HPP
