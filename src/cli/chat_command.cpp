#include "cli/commands.hpp"
#include "cli/json_text.hpp"

#include <frugal/chat_client.hpp>

#include <boost/asio/as_tuple.hpp>
#include <boost/asio/co_spawn.hpp>
#include <boost/asio/detached.hpp>
#include <boost/asio/io_context.hpp>
#include <boost/asio/use_awaitable.hpp>

#include <cstdio>

namespace frugal::cli {

namespace asio = boost::asio;

namespace {

constexpr auto tuple_awaitable = asio::as_tuple(asio::use_awaitable);

int fail(const char* what, const boost::system::error_code& ec, const diagnostics& d)
{
    // One line: what failed, the error, and what the server said (never the key).
    std::string line = std::string("frugal chat: ") + what + ": " + ec.message();
    if (!d.message.empty() || d.http_status != 0)
        line += ": " + d.to_string();
    std::fprintf(stderr, "%s\n", line.c_str());
    return exit_failure;
}

void print_json(const chat_response& r)
{
    std::string out = "{\"id\":";
    append_json_string(out, r.id);
    out += ",\"model\":";
    append_json_string(out, r.model);
    out += ",\"content\":";
    append_json_string(out, r.content);
    out += ",\"finish_reason\":";
    append_json_string(out, r.finish_reason);
    out += ",\"usage\":";
    if (r.usage) {
        out += "{\"prompt_tokens\":" + std::to_string(r.usage->prompt_tokens) +
               ",\"completion_tokens\":" + std::to_string(r.usage->completion_tokens) +
               ",\"cost\":";
        // The exact decimal OpenRouter billed, as a JSON number.
        out += r.usage->cost ? r.usage->cost->to_string() : "null";
        out += '}';
    } else {
        out += "null";
    }
    out += "}\n";
    std::fputs(out.c_str(), stdout);
}

asio::awaitable<int> run(chat_client& client, chat_request req, chat_options options)
{
    if (!options.stream) {
        diagnostics diag;
        auto [ec, response] = co_await client.async_chat(std::move(req), diag, tuple_awaitable);
        if (ec)
            co_return fail("chat failed", ec, diag);
        if (options.json)
            print_json(response);
        else
            std::printf("%s\n", response.content.c_str());
        co_return 0;
    }
    chat_stream stream;
    auto [ec] = co_await client.async_start_stream(std::move(req), stream, tuple_awaitable);
    if (ec)
        co_return fail("stream failed to start", ec, stream.diagnostics());
    while (!stream.done()) {
        auto [rec, delta] = co_await stream.async_read_delta(tuple_awaitable);
        if (rec) {
            std::fputs("\n", stdout);
            std::fflush(stdout);
            co_return fail("stream failed", rec, stream.diagnostics());
        }
        if (!options.json && !delta.content.empty()) {
            std::fwrite(delta.content.data(), 1, delta.content.size(), stdout);
            std::fflush(stdout); // tokens appear as they arrive
        }
    }
    if (options.json)
        print_json(stream.response());
    else
        std::fputs("\n", stdout);
    co_return 0;
}

} // namespace

int run_chat(const chat_options& options)
{
    client_params params;
    params.base_url = options.base_url;
    params.ca_file = options.ca_file;
    params.timeouts.total =
        std::chrono::milliseconds(static_cast<std::int64_t>(options.timeout_seconds * 1000));
    params.timeouts.stall = std::min(params.timeouts.stall, params.timeouts.total);
    params.timeouts.first_byte = std::min(params.timeouts.first_byte, params.timeouts.total);

    chat_request req;
    req.model = options.model;
    req.messages.push_back({.role = "user", .content = options.prompt});
    req.max_tokens = options.max_tokens;

    asio::io_context io{1};
    chat_client client(io.get_executor(), params);
    int status = exit_failure;
    asio::co_spawn(
        io, run(client, std::move(req), options),
        [&status](const std::exception_ptr& ep, int s) { status = ep ? exit_failure : s; });
    io.run();
    return status;
}

} // namespace frugal::cli
