// `frugal batch`: a file of prompts through a cascade policy, inside a budget, with a report.
#include "cli/alarm.hpp"
#include "cli/commands.hpp"
#include "cli/json_text.hpp"

#include <frugal/budget.hpp>
#include <frugal/router.hpp>

#include <boost/asio/as_tuple.hpp>
#include <boost/asio/co_spawn.hpp>
#include <boost/asio/detached.hpp>
#include <boost/asio/io_context.hpp>
#include <boost/asio/use_awaitable.hpp>
#include <boost/json.hpp>

#include <unistd.h>

#include <chrono>
#include <cstdio>
#include <fstream>
#include <iostream>
#include <map>
#include <sstream>

namespace frugal::cli {

namespace asio = boost::asio;
namespace json = boost::json;

namespace {

constexpr auto tuple_awaitable = asio::as_tuple(asio::use_awaitable);

struct prompt_line {
    std::string id;
    chat_request request;
};

struct outcome {
    boost::system::error_code ec;
    std::string error;
    cascade_result result;
    bool ran = false;
};

// Reads PROMPTS.jsonl; a bad line is reported with its number and skipped.
std::vector<prompt_line> read_prompts(std::istream& in, int& bad_lines)
{
    std::vector<prompt_line> out;
    std::string line;
    for (int n = 1; std::getline(in, line); ++n) {
        if (line.find_first_not_of(" \t\r") == std::string::npos)
            continue;
        auto bad = [&](const std::string& why) {
            std::fprintf(stderr, "frugal batch: line %d: %s; skipped\n", n, why.c_str());
            ++bad_lines;
        };
        boost::system::error_code ec;
        const json::value v = json::parse(line, ec);
        if (ec) {
            bad("not JSON (" + ec.message() + ")");
            continue;
        }
        if (!v.is_object()) {
            bad("not a JSON object");
            continue;
        }
        const auto& o = v.get_object();
        prompt_line p;
        if (const auto* id = o.if_contains("id")) {
            if (id->is_string())
                p.id = std::string(id->get_string());
            else if (id->is_number())
                p.id = json::serialize(*id);
        }
        if (p.id.empty())
            p.id = "line" + std::to_string(n);
        const auto* prompt = o.if_contains("prompt");
        const auto* messages = o.if_contains("messages");
        if ((prompt == nullptr) == (messages == nullptr)) {
            bad("needs either \"prompt\" or \"messages\"");
            continue;
        }
        if (prompt != nullptr) {
            if (!prompt->is_string() || prompt->get_string().empty()) {
                bad("\"prompt\" must be a non-empty string");
                continue;
            }
            p.request.messages.push_back(
                {.role = "user", .content = std::string(prompt->get_string())});
        } else {
            if (!messages->is_array() || messages->get_array().empty()) {
                bad("\"messages\" must be a non-empty array");
                continue;
            }
            bool ok = true;
            for (const auto& m : messages->get_array()) {
                const auto* mo = m.if_object();
                const json::value* role = mo != nullptr ? mo->if_contains("role") : nullptr;
                const json::value* content = mo != nullptr ? mo->if_contains("content") : nullptr;
                if (role == nullptr || !role->is_string() || content == nullptr ||
                    !content->is_string()) {
                    ok = false;
                    break;
                }
                p.request.messages.push_back(
                    {.role = std::string(role->get_string()),
                     .content = std::string(content->get_string())});
            }
            if (!ok) {
                bad("each message needs string \"role\" and \"content\"");
                continue;
            }
        }
        out.push_back(std::move(p));
    }
    return out;
}

struct model_totals {
    std::uint64_t requests = 0;
    std::uint64_t prompt_tokens = 0;
    std::uint64_t completion_tokens = 0;
    money cost;
};

struct progress {
    bool enabled = false;
    std::size_t total = 0;
    std::size_t done = 0;
    std::size_t escalated = 0;
    money spent;
    std::optional<money> cap;
    std::chrono::steady_clock::time_point last{};

    void draw(bool force = false)
    {
        if (!enabled)
            return;
        const auto now = std::chrono::steady_clock::now();
        if (!force && now - last < std::chrono::milliseconds(100))
            return;
        last = now;
        constexpr int width = 30;
        const int filled = total == 0 ? width : static_cast<int>(done * width / total);
        std::string bar(static_cast<std::size_t>(filled), '#');
        bar.resize(width, '.');
        std::fprintf(
            stderr, "\r[%s] %zu/%zu done, %zu escalated, $%s", bar.c_str(), done, total, escalated,
            spent.to_string().c_str());
        if (cap)
            std::fprintf(stderr, " of $%s", cap->to_string().c_str());
        std::fflush(stderr);
    }
    void clear() const
    {
        if (enabled)
            std::fprintf(stderr, "\r\033[K");
    }
};

void print_json(
    const std::vector<prompt_line>& prompts,
    const std::vector<outcome>& outcomes,
    const std::map<std::string, model_totals>& by_model,
    money total)
{
    std::string out = "{\"requests\":[";
    for (std::size_t i = 0; i < prompts.size(); ++i) {
        const auto& o = outcomes[i];
        if (i != 0)
            out += ',';
        out += "{\"id\":";
        append_json_string(out, prompts[i].id);
        out += ",\"final_model\":";
        if (o.result.response.model.empty())
            out += "null";
        else
            append_json_string(out, o.result.response.model);
        out += ",\"escalated\":";
        out += o.result.escalated ? "true" : "false";
        out += ",\"budget_denied\":";
        out += o.result.budget_denied ? "true" : "false";
        out += ",\"reason\":";
        append_json_string(out, to_string(o.result.reason));
        out += ",\"cost\":" + o.result.total_cost.to_string();
        out += ",\"error\":";
        if (o.ec)
            append_json_string(out, o.error);
        else
            out += "null";
        out += ",\"attempts\":[";
        for (std::size_t k = 0; k < o.result.attempts.size(); ++k) {
            const auto& a = o.result.attempts[k];
            if (k != 0)
                out += ',';
            out += "{\"model\":";
            append_json_string(out, a.model_served.empty() ? a.model_asked : a.model_served);
            out += ",\"outcome\":";
            append_json_string(out, to_string(a.outcome));
            out += ",\"reason\":";
            append_json_string(out, to_string(a.reason));
            out += ",\"cost\":" + a.cost.to_string();
            out += ",\"cost_estimated\":";
            out += a.cost_estimated ? "true" : "false";
            out += ",\"anomaly\":";
            if (a.anomaly.empty())
                out += "null";
            else
                append_json_string(out, a.anomaly);
            out += '}';
        }
        out += "]}";
    }
    out += "],\"totals\":{\"cost\":" + total.to_string() + ",\"by_model\":{";
    bool first = true;
    for (const auto& [model, t] : by_model) {
        if (!first)
            out += ',';
        first = false;
        append_json_string(out, model);
        out += ":{\"requests\":" + std::to_string(t.requests) +
               ",\"prompt_tokens\":" + std::to_string(t.prompt_tokens) +
               ",\"completion_tokens\":" + std::to_string(t.completion_tokens) +
               ",\"cost\":" + t.cost.to_string() + '}';
    }
    out += "}}}\n";
    std::fputs(out.c_str(), stdout);
}

void print_table(
    const std::vector<outcome>& outcomes,
    const std::map<std::string, model_totals>& by_model,
    money total,
    const std::optional<money>& cap)
{
    std::size_t escalated = 0, denied = 0, failed = 0;
    for (const auto& o : outcomes) {
        escalated += o.result.escalated ? 1 : 0;
        denied += o.result.budget_denied ? 1 : 0;
        failed += o.ec ? 1 : 0;
    }
    std::printf(
        "%-44s %9s %13s %13s %14s\n", "model", "requests", "prompt tok", "completion",
        "cost (USD)");
    for (const auto& [model, t] : by_model) {
        std::printf(
            "%-44s %9llu %13llu %13llu %14s\n", model.c_str(),
            static_cast<unsigned long long>(t.requests),
            static_cast<unsigned long long>(t.prompt_tokens),
            static_cast<unsigned long long>(t.completion_tokens), t.cost.to_string().c_str());
    }
    std::printf(
        "\n%zu prompts: %zu escalated, %zu escalations denied by the budget, %zu failed\n",
        outcomes.size(), escalated, denied, failed);
    std::printf("total: $%s", total.to_string().c_str());
    if (cap)
        std::printf(" of a $%s cap", cap->to_string().c_str());
    std::printf("\n");
}

} // namespace

std::optional<std::vector<model_info>>
fetch_catalog(asio::io_context& io, chat_client& client, const char* command)
{
    std::vector<model_info> models;
    boost::system::error_code ec;
    diagnostics diag;
    asio::co_spawn(
        io,
        [&]() -> asio::awaitable<void> {
            auto [mec, m] = co_await client.async_models(diag, tuple_awaitable);
            ec = mec;
            models = std::move(m);
        },
        asio::detached);
    io.run();
    if (ec) {
        std::fprintf(
            stderr, "frugal %s: the models catalog: %s%s%s\n", command, ec.message().c_str(),
            diag.message.empty() ? "" : ": ", diag.to_string().c_str());
        return std::nullopt;
    }
    return models;
}

int run_batch(const batch_options& options)
{
    // The policy.
    std::ifstream pf(options.policy_file);
    if (!pf) {
        std::fprintf(stderr, "frugal batch: cannot read %s\n", options.policy_file.c_str());
        return exit_usage;
    }
    std::stringstream ps;
    ps << pf.rdbuf();
    boost::system::error_code ec;
    std::string detail;
    auto policy = parse_policy(ps.str(), ec, detail);
    if (!policy) {
        std::fprintf(stderr, "frugal batch: %s: %s\n", options.policy_file.c_str(), detail.c_str());
        return exit_usage;
    }
    std::optional<money> cap;
    if (!options.budget.empty()) {
        cap = money::parse(options.budget);
        if (!cap || *cap < money()) {
            std::fprintf(stderr, "frugal batch: --budget must be an amount of USD, like 0.50\n");
            return exit_usage;
        }
    }

    // The prompts.
    int bad_lines = 0;
    std::vector<prompt_line> prompts;
    if (options.prompts_file == "-") {
        prompts = read_prompts(std::cin, bad_lines);
    } else {
        std::ifstream in(options.prompts_file);
        if (!in) {
            std::fprintf(stderr, "frugal batch: cannot read %s\n", options.prompts_file.c_str());
            return exit_usage;
        }
        prompts = read_prompts(in, bad_lines);
    }

    client_params params;
    params.base_url = options.base_url;
    asio::io_context io{1};
    chat_client client(io.get_executor(), params);

    // The catalog prices attempts; the guard keeps the cap and the ledger.
    auto models = fetch_catalog(io, client, "batch");
    if (!models)
        return exit_failure;
    price_catalog prices(*models);
    std::optional<budget_guard> guard;
    if (cap || !options.ledger_file.empty() || !options.budget_store.empty()) {
        std::shared_ptr<budget_store> store;
        if (!options.ledger_file.empty()) {
            store = open_sqlite_store({options.ledger_file}, ec, detail);
            if (!store) {
                std::fprintf(stderr, "frugal batch: %s\n", detail.c_str());
                return exit_failure;
            }
        }
        if (!options.budget_store.empty()) {
            redis_store_params rp;
            rp.url = options.budget_store;
            rp.fail_open = options.budget_fail_open;
            rp.lease = std::chrono::milliseconds(
                static_cast<std::int64_t>(options.budget_lease_seconds * 1000));
            store = open_redis_store(rp, store, ec, detail);
            if (!store) {
                std::fprintf(stderr, "frugal batch: --budget-store: %s\n", detail.c_str());
                return exit_usage;
            }
        }
        budget_params bp;
        if (cap)
            bp.budgets.push_back({"global", *cap});
        bp.max_wait = std::chrono::seconds(30);
        guard = budget_guard::open(bp, prices, store, ec, detail);
        if (!guard) {
            std::fprintf(stderr, "frugal batch: %s\n", detail.c_str());
            return exit_failure;
        }
        // `frugal report --reconcile` looks the generations up where they were made.
        (void)guard->annotate("base_url", client.params().base_url);
    }
    router r(client, *policy, prices, guard);

    std::vector<outcome> outcomes(prompts.size());
    progress bar;
    bar.enabled = ::isatty(STDOUT_FILENO) == 1 && ::isatty(STDERR_FILENO) == 1;
    bar.total = prompts.size();
    bar.cap = cap;
    std::size_t next = 0;
    const std::size_t workers = std::max<std::size_t>(1, options.concurrency);
    for (std::size_t w = 0; w < workers; ++w) {
        asio::co_spawn(
            io,
            [&]() -> asio::awaitable<void> {
                while (next < prompts.size()) {
                    const std::size_t i = next++;
                    auto [cec, res] =
                        co_await r.async_complete(prompts[i].request, tuple_awaitable);
                    auto& o = outcomes[i];
                    o.ran = true;
                    o.ec = cec;
                    if (cec) {
                        o.error = cec.message();
                        for (auto it = res.attempts.rbegin(); it != res.attempts.rend(); ++it) {
                            if (it->error) {
                                o.error = it->model_asked + ": " + it->error.message();
                                break;
                            }
                        }
                    }
                    o.result = std::move(res);
                    ++bar.done;
                    bar.escalated += o.result.escalated ? 1 : 0;
                    bar.spent += o.result.total_cost;
                    bar.draw();
                }
            },
            asio::detached);
    }
    io.restart();
    io.run();
    bar.draw(true);
    bar.clear();

    std::map<std::string, model_totals> by_model;
    money total;
    bool any_failed = false;
    for (const auto& o : outcomes) {
        any_failed = any_failed || o.ec;
        total += o.result.total_cost;
        for (const auto& a : o.result.attempts) {
            if (a.outcome == attempt_outcome::not_sent)
                continue;
            auto& t = by_model[a.model_served.empty() ? a.model_asked : a.model_served];
            ++t.requests;
            t.prompt_tokens += a.prompt_tokens;
            t.completion_tokens += a.completion_tokens;
            t.cost += a.cost;
        }
    }
    if (options.json)
        print_json(prompts, outcomes, by_model, total);
    else
        print_table(outcomes, by_model, total, cap);

    // Money first: a bill past the cap or an anomalous report is said on stderr and wins the
    // exit status.
    money_alarm alarm;
    if (guard) {
        for (const auto& a : guard->anomalies())
            alarm.anomaly(a.model, a.what, a.booked);
        for (const auto& b : guard->snapshot())
            alarm.budget(b.name, b.committed, b.cap);
    } else {
        for (const auto& o : outcomes)
            for (const auto& a : o.result.attempts)
                if (!a.anomaly.empty())
                    alarm.anomaly(a.model_asked, a.anomaly, a.cost);
    }
    if (alarm.print("batch", cap))
        return exit_money;
    return any_failed || bad_lines > 0 ? exit_failure : 0;
}

} // namespace frugal::cli
