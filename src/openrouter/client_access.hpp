#ifndef FRUGAL_SRC_OPENROUTER_CLIENT_ACCESS_HPP
#define FRUGAL_SRC_OPENROUTER_CLIENT_ACCESS_HPP

// The client's chat as a coroutine to await from another of frugal's coroutines: no coroutine
// thread of its own, no completion handler. Cancellation follows the awaiting coroutine's.

#include <frugal/chat_client.hpp>

#include <boost/asio/awaitable.hpp>

#include <tuple>

namespace frugal::detail {

struct client_access {
    static boost::asio::awaitable<std::tuple<boost::system::error_code, chat_response>>
    chat(chat_client& client, chat_request request, diagnostics* diag);
};

} // namespace frugal::detail

#endif // FRUGAL_SRC_OPENROUTER_CLIENT_ACCESS_HPP
