#include "cli/alarm.hpp"
#include "cli/commands.hpp"
#include "cli/json_text.hpp"

#include <frugal/budget.hpp>
#include <frugal/chat_client.hpp>
#include <frugal/router.hpp>

#include <boost/asio/as_tuple.hpp>
#include <boost/asio/co_spawn.hpp>
#include <boost/asio/detached.hpp>
#include <boost/asio/io_context.hpp>
#include <boost/asio/use_awaitable.hpp>

#include <cstdio>

namespace frugal::cli {

namespace asio = boost::asio;
using boost::system::error_code;

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

// A reported cost frugal could not take as a bill: said, and exit status 3.
int after_answer(const chat_response& r, int status)
{
    if (!r.usage || r.usage->cost_rejected.empty())
        return status;
    money_alarm alarm;
    alarm.anomaly(r.model, "usage.cost was " + r.usage->cost_rejected, std::nullopt);
    alarm.print("chat");
    return exit_money;
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
        co_return after_answer(response, 0);
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
    co_return after_answer(stream.response(), 0);
}

// Under a cap: the request goes through a one-tier router, so it is priced from the catalog,
// reserved (max_tokens clamped to fit), settled and checked like any cascade attempt.
asio::awaitable<int>
run_capped(router& r, budget_guard& guard, chat_request req, chat_options options)
{
    cascade_result result;
    error_code ec;
    if (!options.stream) {
        auto [cec, res] = co_await r.async_complete(std::move(req), tuple_awaitable);
        ec = cec;
        result = std::move(res);
        if (!ec) {
            if (options.json)
                print_json(result.response);
            else
                std::printf("%s\n", result.response.content.c_str());
        }
    } else {
        cascade_stream s;
        r.start_stream(std::move(req), stream_mode::stream, s);
        for (;;) {
            auto [sec, ev] = co_await s.async_next(tuple_awaitable);
            if (sec) {
                ec = sec;
                std::fputs("\n", stdout);
                break;
            }
            if (ev.type == cascade_event::kind::delta && !options.json) {
                std::fwrite(ev.text.data(), 1, ev.text.size(), stdout);
                std::fflush(stdout);
            }
            if (ev.type == cascade_event::kind::done) {
                result = *ev.result;
                if (options.json)
                    print_json(result.response);
                else
                    std::fputs("\n", stdout);
                break;
            }
        }
    }
    int status = 0;
    if (ec || result.budget_denied || result.attempts.empty() || result.attempts.back().error) {
        // The attempt's own error says why (a denial names the budget through the guard).
        diagnostics none;
        const auto& a = result.attempts.empty() ? cascade_attempt{} : result.attempts.back();
        status = fail("chat failed", ec ? ec : a.error, none);
    }
    money_alarm alarm;
    for (const auto& a : guard.anomalies())
        alarm.anomaly(a.model, a.what, a.booked);
    for (const auto& b : guard.snapshot())
        alarm.budget(b.name, b.committed, b.cap);
    if (alarm.print("chat", money::parse(options.budget)))
        co_return exit_money;
    co_return status;
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
    auto done = [&status](const std::exception_ptr& ep, int s) { status = ep ? exit_failure : s; };
    if (options.budget.empty()) {
        asio::co_spawn(io, run(client, std::move(req), options), done);
        io.run();
        return status;
    }
    auto models = fetch_catalog(io, client, "chat");
    if (!models)
        return exit_failure;
    budget_params bp;
    bp.budgets.push_back({"global", *money::parse(options.budget)});
    boost::system::error_code ec;
    std::string detail;
    auto guard = budget_guard::open(bp, price_catalog(*models), nullptr, ec, detail);
    if (!guard) {
        std::fprintf(stderr, "frugal chat: %s\n", detail.c_str());
        return exit_failure;
    }
    cascade_policy policy;
    policy.tiers = {options.model};
    policy.escalate_on.clear();
    policy.budget_exhausted = on_budget_exhausted::fail;
    if (options.max_tokens)
        policy.max_tokens = *options.max_tokens;
    // A free model is not held to the free tier's client-side quota for one request.
    policy.free_tier.when_empty = on_free_tier_empty::wait;
    router r(client, policy, price_catalog(*models), guard);
    io.restart();
    asio::co_spawn(io, run_capped(r, *guard, std::move(req), options), done);
    io.run();
    return status;
}

} // namespace frugal::cli
