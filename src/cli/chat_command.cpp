// `frugal chat`: one prompt, to one model or through a cheap-first policy, whole or streamed.
#include "cli/alarm.hpp"
#include "cli/commands.hpp"
#include "cli/json_text.hpp"
#include "cli/output.hpp"

#include <frugal/budget.hpp>
#include <frugal/chat_client.hpp>
#include <frugal/router.hpp>

#include <boost/asio/as_tuple.hpp>
#include <boost/asio/co_spawn.hpp>
#include <boost/asio/detached.hpp>
#include <boost/asio/io_context.hpp>
#include <boost/asio/use_awaitable.hpp>
#include <boost/json/object.hpp>

#include <cstdio>
#include <iostream>
#include <iterator>

namespace frugal::cli {

namespace asio = boost::asio;
namespace json = boost::json;
using boost::system::error_code;

namespace {

constexpr auto tuple_awaitable = asio::as_tuple(asio::use_awaitable);

int fail(const char* what, const error_code& ec, const diagnostics& d)
{
    // One line: what failed and why, in the server's words when it said anything.
    std::fprintf(stderr, "frugal chat: %s: %s\n", what, failure_text(ec, d).c_str());
    return exit_failure;
}

void print_json(const chat_response& r)
{
    json::object o;
    o["id"] = r.id;
    o["model"] = r.model;
    o["content"] = r.content;
    o["finish_reason"] = r.finish_reason;
    if (r.usage) {
        o["usage"] = json::object{
            {"prompt_tokens", r.usage->prompt_tokens},
            {"completion_tokens", r.usage->completion_tokens},
            // The exact decimal the provider billed, as every money of the CLI: a string.
            {"cost", r.usage->cost ? json::value(r.usage->cost->to_string()) : nullptr}};
    } else {
        o["usage"] = nullptr;
    }
    std::fputs((to_json(o) + '\n').c_str(), stdout);
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

// One model, no policy, no cap: the client alone.
asio::awaitable<int> run_direct(chat_client& client, chat_request req, chat_options options)
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

// Through a router: a policy's tiers (or one model under a cap), priced from the catalog,
// reserved and settled like any cascade attempt.
asio::awaitable<int>
run_routed(router& r, std::optional<budget_guard>& guard, chat_request req, chat_options options)
{
    cascade_result result;
    error_code ec;
    if (!options.stream) {
        auto [cec, res] = co_await r.async_complete(std::move(req), tuple_awaitable);
        ec = cec;
        result = std::move(res);
        if (!ec && !options.json)
            std::printf("%s\n", result.response.content.c_str());
    } else {
        cascade_stream s;
        r.start_stream(std::move(req), stream_mode::stream, s);
        bool shown = false;
        for (;;) {
            auto [sec, ev] = co_await s.async_next(tuple_awaitable);
            if (sec) {
                ec = sec;
                if (ev.result)
                    result = *ev.result; // a failed cascade still tells its attempts
                if (shown && !options.json)
                    std::fputs("\n", stdout);
                break;
            }
            if (ev.type == cascade_event::kind::delta && !options.json) {
                std::fwrite(ev.text.data(), 1, ev.text.size(), stdout);
                std::fflush(stdout);
                shown = shown || !ev.text.empty();
            }
            if (ev.type == cascade_event::kind::escalating) {
                // The cheap text on screen is taken back: said where a reader sees it.
                if (shown && !options.json)
                    std::fputs("\n", stdout);
                std::fflush(stdout);
                std::fprintf(
                    stderr, "frugal chat: the answer above is withdrawn (%s); escalating to %s\n",
                    to_string(ev.reason),
                    ev.tier < r.policy().tiers.size() ? r.policy().tiers[ev.tier].c_str() : "");
                shown = false;
            }
            if (ev.type == cascade_event::kind::done) {
                result = *ev.result;
                if (shown && !options.json)
                    std::fputs("\n", stdout);
                break;
            }
        }
    }
    if (options.json)
        std::fputs((to_json(result_json(result, ec)) + '\n').c_str(), stdout);
    int status = 0;
    if (ec) {
        std::fprintf(stderr, "frugal chat: %s\n", cascade_failure(result, ec).c_str());
        status = exit_failure;
    }
    money_alarm alarm;
    if (guard) {
        for (const auto& a : guard->anomalies())
            alarm.anomaly(a.model, a.what, a.booked);
        for (const auto& b : guard->snapshot())
            alarm.budget(b.name, b.committed, b.cap);
    } else {
        for (const auto& a : result.attempts)
            if (!a.anomaly.empty())
                alarm.anomaly(a.model_asked, a.anomaly, a.cost);
    }
    if (alarm.print(
            "chat", options.budget.empty() ? std::nullopt : money::parse(options.budget)))
        co_return exit_money;
    co_return status;
}

} // namespace

int run_chat(const chat_options& options)
{
    // The prompt: the argument, or standard input when it is absent or "-".
    std::string prompt = options.prompt;
    if (!options.prompt_given || prompt == "-") {
        prompt.assign(std::istreambuf_iterator<char>(std::cin), std::istreambuf_iterator<char>());
        while (!prompt.empty() && (prompt.back() == '\n' || prompt.back() == '\r'))
            prompt.pop_back();
        if (prompt.empty()) {
            std::fprintf(stderr, "frugal chat: no prompt: give one, or pipe it in\n");
            return exit_usage;
        }
    }
    std::optional<cascade_policy> policy;
    if (!options.policy_file.empty()) {
        const auto policy_text = read_text_file(options.policy_file);
        if (!policy_text) {
            std::fprintf(stderr, "frugal chat: cannot read %s\n", options.policy_file.c_str());
            return exit_usage;
        }
        diagnostics diag;
        auto parsed = parse_policy(*policy_text, &diag);
        if (!parsed) {
            std::fprintf(
                stderr, "frugal chat: %s: %s\n", options.policy_file.c_str(), diag.message.c_str());
            return exit_usage;
        }
        policy = std::move(*parsed);
    }

    client_params params;
    params.base_url = options.base_url;
    params.ca_file = options.ca_file;
    params.timeouts.total =
        std::chrono::milliseconds(static_cast<std::int64_t>(options.timeout_seconds * 1000));
    params.timeouts.stall = std::min(params.timeouts.stall, params.timeouts.total);
    params.timeouts.first_byte = std::min(params.timeouts.first_byte, params.timeouts.total);

    chat_request req;
    req.model = options.model;
    if (!options.system.empty())
        req.messages.push_back({.role = "system", .content = options.system});
    req.messages.push_back({.role = "user", .content = prompt});
    req.max_tokens = options.max_tokens;

    asio::io_context io{1};
    chat_client client(io.get_executor(), params);
    int status = exit_failure;
    auto done = [&status](const std::exception_ptr& ep, int s) { status = ep ? exit_failure : s; };
    if (!policy && options.budget.empty()) {
        asio::co_spawn(io, run_direct(client, std::move(req), options), done);
        io.run();
        return status;
    }

    // A policy, or one model under a cap: through a router, priced from the catalog.
    auto models = fetch_catalog(io, client, "chat");
    if (!models)
        return exit_failure;
    const price_catalog prices(*models);
    if (!policy) {
        policy.emplace();
        policy->tiers = {options.model};
        policy->escalate_on.clear();
        policy->budget_exhausted = on_budget_exhausted::fail;
    }
    if (options.max_tokens)
        policy->max_tokens = *options.max_tokens;
    std::vector<std::string> paid;
    for (const auto& tier : policy->tiers) {
        const auto* p = prices.find(tier);
        if (p == nullptr) {
            std::fprintf(
                stderr, "frugal chat: model \"%s\" is not in the models catalog of %s\n",
                tier.c_str(), client.params().base_url.c_str());
            return exit_usage;
        }
        if (!p->free())
            paid.push_back(tier);
    }
    if (!options.policy_file.empty() && !paid.empty() && options.budget.empty() &&
        !options.no_budget) {
        std::fprintf(
            stderr,
            "frugal chat: the policy's paid tier %s needs --budget USD (or --no-budget to run it "
            "uncapped)\n",
            paid.front().c_str());
        return exit_usage;
    }
    std::optional<budget_guard> guard;
    if (!options.budget.empty()) {
        budget_params bp;
        bp.budgets.push_back({"global", *money::parse(options.budget)});
        diagnostics diag;
        auto opened = budget_guard::open(bp, prices, nullptr, &diag);
        if (!opened) {
            std::fprintf(stderr, "frugal chat: %s\n", diag.message.c_str());
            return exit_failure;
        }
        guard = std::move(*opened);
    }
    router r(client, *policy, prices, guard);
    asio::co_spawn(
        io,
        [&]() -> asio::awaitable<void> {
            auto [kec, key] = co_await client.async_key_info(tuple_awaitable);
            if (!kec)
                r.learn(key);
        },
        asio::detached);
    io.restart();
    io.run();
    io.restart();
    asio::co_spawn(io, run_routed(r, guard, std::move(req), options), done);
    io.run();
    return status;
}

} // namespace frugal::cli
