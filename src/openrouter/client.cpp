// chat_client's public member functions, and the launch of its operations: a coroutine per
// operation whose result is handed to the caller's completion handler.
#include "openrouter/client_impl.hpp"

#include <boost/asio/bind_cancellation_slot.hpp>
#include <boost/asio/co_spawn.hpp>
#include <boost/asio/dispatch.hpp>
#include <boost/asio/this_coro.hpp>

#include <cctype>
#include <cstdio>

namespace frugal {

using namespace client_detail;

namespace {

// An operation's handler and the result it will be given. The result is moved into place
// once and handed over once: passed along Asio's completion chain instead (co_spawn's
// completion, dispatch, append, the type-erased handler, as_tuple) a chat_response was moved
// about 175 times per request, a fifth of the client's instructions.
template <class T>
struct launched {
    explicit launched(asio::any_completion_handler<void(error_code, T)> h) : handler(std::move(h))
    {
    }
    asio::any_completion_handler<void(error_code, T)> handler;
    error_code ec;
    T value{};
};

template <class T>
asio::awaitable<void>
deliver_into(std::shared_ptr<launched<T>> st, asio::awaitable<std::tuple<error_code, T>> op)
{
    // Cancellation must end the operation with an error code, never an exception: a request
    // whose write completed just before it was cancelled must still report `request_sent`
    // (it may be billed), which an exception thrown at the next co_await would lose.
    co_await asio::this_coro::throw_if_cancelled(false);
    auto [ec, value] = co_await std::move(op);
    st->ec = ec;
    st->value = std::move(value);
}

// Runs `op` as a coroutine bound to the handler's cancellation slot, and completes the handler
// through its associated executor with (error_code, value).
// `here`: the handler runs on the client's executor (`detail::runs_on`), where co_spawn
// completes, so it is called directly rather than through its type-erased executor.
template <class T, class Op>
void launch(
    const std::shared_ptr<client_impl>& c,
    Op op,
    asio::any_completion_handler<void(error_code, T)> handler,
    bool here = false)
{
    auto slot = asio::get_associated_cancellation_slot(handler);
    auto ex = c->executor;
    auto st = std::make_shared<launched<T>>(std::move(handler));
    asio::co_spawn(
        ex, deliver_into(st, std::move(op)),
        asio::bind_cancellation_slot(slot, [ex, st, here](const std::exception_ptr& ep) {
            if (ep) {
                // Only bad_alloc and bugs throw in here; report rather than terminate.
                st->ec = asio::error::no_memory;
                st->value = T{};
            }
            if (here)
                return std::move(st->handler)(st->ec, std::move(st->value));
            const auto hex = asio::get_associated_executor(st->handler, ex);
            asio::dispatch(hex, [st] { std::move(st->handler)(st->ec, std::move(st->value)); });
        }));
}

template <class T, class Decode>
asio::awaitable<std::tuple<error_code, T>>
get_op(std::shared_ptr<client_impl> c, std::string path, Decode decode, diagnostics* out)
{
    diagnostics diag;
    T value{};
    error_code ec = c->config_error;
    if (ec) {
        diag.message = c->config_detail;
    } else {
        auto [rec, text] = co_await request_whole(c, "GET", path, std::string(), &diag);
        ec = rec;
        if (!ec && decode(text, value)) {
            ec = error::protocol_error;
            diag.message = "unexpected response: " + snippet(text);
        }
    }
    scrub(c->scrubber, diag);
    if (c->scrubber)
        scrub(c->scrubber, value);
    if (out != nullptr)
        *out = std::move(diag);
    co_return std::tuple{ec, std::move(value)};
}

} // namespace

chat_client::chat_client(executor_type executor, client_params params)
    : impl_(std::make_shared<impl>(std::move(executor), std::move(params)))
{
}
chat_client::~chat_client() = default;
chat_client::chat_client(chat_client&&) noexcept = default;
chat_client& chat_client::operator=(chat_client&&) noexcept = default;

chat_client::executor_type chat_client::get_executor() const noexcept
{
    return impl_->executor;
}
const client_params& chat_client::params() const noexcept
{
    return impl_->params;
}
std::size_t chat_client::open_connections() const noexcept
{
    return impl_->pool.open();
}
std::size_t chat_client::idle_connections() const noexcept
{
    return impl_->pool.idle();
}

asio::awaitable<std::tuple<error_code, chat_response>>
chat_client::chat(const chat_request& request, diagnostics* diag, call_options options)
{
    return chat_encoded(encode(request), diag, std::move(options));
}

asio::awaitable<std::tuple<error_code>> chat_client::chat(
    const chat_request& request, chat_response& into, diagnostics* diag, call_options options)
{
    auto e = encode(request);
    return chat_into_op(
        impl_, std::move(e.body), e.invalid, diag, std::move(options.on_generation),
        options.retry_rate_limited, into);
}

asio::awaitable<std::tuple<error_code, chat_response>>
chat_client::chat_encoded(encoded_request e, diagnostics* diag, call_options options)
{
    return chat_op(
        impl_, std::move(e.body), e.invalid, diag, std::move(options.on_generation),
        options.retry_rate_limited);
}

chat_client::encoded_request chat_client::encode(const chat_request& req, bool stream)
{
    encoded_request out{.body = text_spares::take()};
    std::string problem;
    out.invalid =
        static_cast<bool>(openrouter::encode_chat_request(req, stream, out.body, &problem));
    if (out.invalid)
        out.body = std::move(problem);
    return out;
}

void chat_client::async_chat_impl(
    encoded_request req,
    diagnostics* diag,
    call_options options,
    asio::any_completion_handler<void(error_code, chat_response)> handler,
    bool here)
{
    launch<chat_response>(
        impl_,
        chat_op(
            impl_, std::move(req.body), req.invalid, diag, std::move(options.on_generation),
            options.retry_rate_limited),
        std::move(handler), here);
}

void chat_client::async_models_impl(
    diagnostics* diag,
    asio::any_completion_handler<void(error_code, std::vector<model_info>)> handler)
{
    launch<std::vector<model_info>>(
        impl_, get_op<std::vector<model_info>>(impl_, "/models", openrouter::decode_models, diag),
        std::move(handler));
}

void chat_client::async_generation_impl(
    const std::string& id,
    diagnostics* diag,
    asio::any_completion_handler<void(error_code, generation_info)> handler)
{
    std::string path = "/generation?id=";
    for (const char ch : id) {
        // Generation ids are alphanumeric with dashes; anything else is percent-encoded.
        const auto u = static_cast<unsigned char>(ch);
        if (std::isalnum(u) != 0 || ch == '-' || ch == '_' || ch == '.' || ch == '~') {
            path += ch;
        } else {
            char buf[4];
            std::snprintf(buf, sizeof buf, "%%%02X", u);
            path += buf;
        }
    }
    launch<generation_info>(
        impl_, get_op<generation_info>(impl_, std::move(path), openrouter::decode_generation, diag),
        std::move(handler));
}

void chat_client::async_key_info_impl(
    diagnostics* diag, asio::any_completion_handler<void(error_code, key_info)> handler)
{
    launch<key_info>(
        impl_, get_op<key_info>(impl_, "/key", openrouter::decode_key_info, diag),
        std::move(handler));
}

} // namespace frugal
