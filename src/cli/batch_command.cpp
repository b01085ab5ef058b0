// `frugal batch`: a file of prompts through a cascade policy, inside a budget, with a report.
#include "cli/alarm.hpp"
#include "cli/commands.hpp"
#include "cli/json_text.hpp"
#include "cli/output.hpp"

#include <frugal/budget.hpp>
#include <frugal/ledger_notes.hpp>
#include <frugal/router.hpp>

#include <boost/asio/as_tuple.hpp>
#include <boost/asio/co_spawn.hpp>
#include <boost/asio/detached.hpp>
#include <boost/asio/bind_cancellation_slot.hpp>
#include <boost/asio/io_context.hpp>
#include <boost/asio/signal_set.hpp>
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
    bool ran = false;         // completed: written and counted
    bool interrupted = false; // cancelled by SIGINT: not written, but what it cost is counted
};

// What a prompt asked, as a fingerprint kept with its answer: --resume gives an answer back
// only to the same question under the same id.
std::string fingerprint(const chat_request& r)
{
    std::uint64_t h = 1469598103934665603ULL;
    auto mix = [&h](std::string_view s) {
        for (const unsigned char c : s) {
            h ^= c;
            h *= 1099511628211ULL;
        }
        h ^= 0xff; // a separator no byte of UTF-8 text is
        h *= 1099511628211ULL;
    };
    for (const auto& m : r.messages) {
        mix(m.role);
        mix(m.content);
    }
    char buf[17];
    std::snprintf(buf, sizeof buf, "%016llx", static_cast<unsigned long long>(h));
    return buf;
}

// Reads PROMPTS.jsonl; a bad line is reported with its number and skipped.
std::vector<prompt_line> read_prompts(std::istream& in, int& bad_lines)
{
    std::vector<prompt_line> out;
    std::map<std::string, int> seen; // id -> its line
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
        // An id names one prompt: its answer is kept and resumed by it.
        if (!seen.emplace(p.id, n).second) {
            bad("id \"" + p.id + "\" repeats line " + std::to_string(seen[p.id]));
            continue;
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

// Where the results go: stdout, or --output FILE, opened at the first write (so a run that
// fails before it leaves an earlier file alone). A write that fails is remembered and said.
struct sink {
    std::string path; // empty: stdout
    std::FILE* file = nullptr;
    bool failed = false;
    ~sink()
    {
        if (file != nullptr && file != stdout)
            std::fclose(file);
    }
    void write(const std::string& text)
    {
        if (file == nullptr)
            file = path.empty() ? stdout : std::fopen(path.c_str(), "w");
        if (file == nullptr || failed) {
            failed = true;
            return;
        }
        if (std::fwrite(text.data(), 1, text.size(), file) != text.size() ||
            std::fflush(file) != 0) // a line per prompt is seen as it completes
            failed = true;
    }
    // Closes the file; false when anything written was lost.
    bool close()
    {
        if (file != nullptr && file != stdout && std::fclose(file) != 0)
            failed = true;
        else if (file == stdout && std::fflush(stdout) != 0)
            failed = true;
        file = nullptr;
        return !failed;
    }
};

std::string table_text(
    const std::vector<prompt_line>& prompts,
    const std::vector<outcome>& outcomes,
    const std::map<std::string, model_totals>& by_model,
    money total,
    const std::optional<money>& cap,
    std::size_t resumed)
{
    std::string out;
    char line[512];
    std::snprintf(
        line, sizeof line, "%-44s %9s %13s %13s %14s\n", "model", "requests", "prompt tok",
        "completion", "cost (USD)");
    out += line;
    for (const auto& [model, t] : by_model) {
        std::snprintf(
            line, sizeof line, "%-44s %9llu %13llu %13llu %14s\n", model.c_str(),
            static_cast<unsigned long long>(t.requests),
            static_cast<unsigned long long>(t.prompt_tokens),
            static_cast<unsigned long long>(t.completion_tokens), t.cost.to_string().c_str());
        out += line;
    }
    std::size_t ran = 0, escalated = 0, denied = 0, failed = 0;
    for (const auto& o : outcomes) {
        if (!o.ran)
            continue;
        ++ran;
        escalated += o.result.escalated ? 1 : 0;
        denied += o.result.budget_denied ? 1 : 0;
        failed += o.ec ? 1 : 0;
    }
    std::snprintf(
        line, sizeof line,
        "\n%zu prompts: %zu escalated, %zu escalations denied by the budget, %zu failed\n", ran,
        escalated, denied, failed);
    out += line;
    if (resumed != 0)
        out += std::to_string(resumed) + " answered in an earlier run (--resume), not sent again\n";
    out += "total: $" + total.to_string();
    if (cap)
        out += " of a $" + cap->to_string() + " cap";
    out += '\n';
    if (failed != 0) {
        out += "\nfailed:\n";
        for (std::size_t i = 0; i < outcomes.size(); ++i) {
            if (outcomes[i].ran && outcomes[i].ec)
                out += "  " + prompts[i].id + ": " + outcomes[i].error + '\n';
        }
    }
    return out;
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
    io.restart();
    io.run();
    if (ec) {
        std::fprintf(
            stderr, "frugal %s: the models catalog: %s\n", command, failure_text(ec, diag).c_str());
        return std::nullopt;
    }
    return models;
}

std::optional<std::string> read_text_file(const std::string& path)
{
    std::ifstream in(path, std::ios::binary);
    if (!in)
        return std::nullopt;
    std::stringstream text;
    text << in.rdbuf();
    return std::move(text).str();
}

std::optional<std::vector<model_info>>
fetch_catalog(const std::string& base_url, const char* command)
{
    client_params params;
    params.base_url = base_url;
    asio::io_context io{1};
    chat_client client(io.get_executor(), params);
    return fetch_catalog(io, client, command);
}

int run_batch(const batch_options& options)
{
    // The policy.
    const auto policy_text = read_text_file(options.policy_file);
    if (!policy_text) {
        std::fprintf(stderr, "frugal batch: cannot read %s\n", options.policy_file.c_str());
        return exit_usage;
    }
    diagnostics diag;
    auto policy = parse_policy(*policy_text, &diag);
    if (!policy) {
        std::fprintf(
            stderr, "frugal batch: %s: %s\n", options.policy_file.c_str(), diag.message.c_str());
        return exit_usage;
    }
    std::optional<money> cap;
    if (!options.budget.empty())
        cap = money::parse(options.budget); // checked by the command line
    if (options.resume && options.ledger_file.empty()) {
        std::fprintf(stderr, "frugal batch: --resume needs --ledger: the answers are kept there\n");
        return exit_usage;
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

    // The catalog prices attempts; the key's status sets the free tier's daily quota.
    auto models = fetch_catalog(io, client, "batch");
    if (!models)
        return exit_failure;
    price_catalog prices(*models);
    std::vector<std::string> paid;
    for (const auto& tier : policy->tiers) {
        const auto* p = prices.find(tier);
        if (p == nullptr) {
            std::fprintf(
                stderr, "frugal batch: %s: tier \"%s\" is not in the models catalog of %s\n",
                options.policy_file.c_str(), tier.c_str(), client.params().base_url.c_str());
            return exit_usage;
        }
        if (!p->free())
            paid.push_back(tier);
    }
    if (!paid.empty() && !cap && !options.no_budget) {
        std::fprintf(
            stderr,
            "frugal batch: the policy's paid tier %s needs --budget USD (or --no-budget to run "
            "it uncapped)\n",
            paid.front().c_str());
        return exit_usage;
    }
    std::optional<key_info> key;
    asio::co_spawn(
        io,
        [&]() -> asio::awaitable<void> {
            auto [kec, k] = co_await client.async_key_info(tuple_awaitable);
            if (!kec)
                key = std::move(k);
        },
        asio::detached);
    io.restart();
    io.run();

    std::optional<budget_guard> guard;
    if (cap || !options.ledger_file.empty() || !options.budget_store.empty()) {
        std::shared_ptr<budget_store> store;
        if (!options.ledger_file.empty()) {
            auto opened = open_sqlite_store({options.ledger_file}, &diag);
            if (!opened) {
                std::fprintf(stderr, "frugal batch: %s\n", diag.message.c_str());
                return exit_failure;
            }
            store = std::move(*opened);
        }
        if (!options.budget_store.empty()) {
            redis_store_params rp;
            rp.url = options.budget_store;
            rp.fail_open = options.budget_fail_open;
            rp.lease = std::chrono::milliseconds(
                static_cast<std::int64_t>(options.budget_lease_seconds * 1000));
            auto shared = open_redis_store(rp, store, &diag);
            if (!shared) {
                std::fprintf(stderr, "frugal batch: --budget-store: %s\n", diag.message.c_str());
                return exit_usage;
            }
            store = std::move(*shared);
        }
        budget_params bp;
        if (cap)
            bp.budgets.push_back({"global", *cap});
        bp.max_wait = std::chrono::seconds(30);
        auto opened = budget_guard::open(bp, prices, store, &diag);
        if (!opened) {
            std::fprintf(stderr, "frugal batch: %s\n", diag.message.c_str());
            return exit_failure;
        }
        guard = std::move(*opened);
        // `frugal report --reconcile` looks the generations up where they were made.
        (void)guard->annotate(ledger_notes::base_url_key, client.params().base_url);
    }
    router r(client, *policy, prices, guard);
    if (key)
        r.learn(*key);

    sink out;
    out.path = options.output_file;

    // --resume: prompts answered in an earlier run are not sent again; their stored answers
    // are written as they were.
    std::map<std::string, std::string, std::less<>> stored;
    if (options.resume && guard) {
        std::vector<std::pair<std::string, std::string>> answers;
        if (guard->read_answers(answers)) {
            std::fprintf(stderr, "frugal batch: %s: the answers could not be read\n",
                         options.ledger_file.c_str());
            return exit_failure;
        }
        stored.insert(answers.begin(), answers.end());
    }
    // Each kept answer is {"fingerprint", "answer"}: given back only when the prompt under its
    // id is the same question, and only when it is a JSON object still.
    std::vector<std::size_t> todo;
    // Each answered prompt's object, kept as a value: --json writes them all in one at the end.
    std::vector<std::optional<json::object>> answers(prompts.size());
    std::size_t resumed = 0;
    for (std::size_t i = 0; i < prompts.size(); ++i) {
        const auto it = stored.find(prompts[i].id);
        if (it != stored.end()) {
            boost::system::error_code jec;
            const auto v = json::parse(it->second, jec);
            const auto* o = jec ? nullptr : v.if_object();
            const auto* fp = o != nullptr ? o->if_contains("fingerprint") : nullptr;
            const auto* answer = o != nullptr ? o->if_contains("answer") : nullptr;
            if (fp != nullptr && fp->is_string() && fp->get_string() == fingerprint(prompts[i].request) &&
                answer != nullptr && answer->is_object()) {
                answers[i] = answer->get_object();
                ++resumed;
                if (options.jsonl)
                    out.write(to_json(*answers[i]) + '\n');
                continue;
            }
        }
        todo.push_back(i);
    }

    std::vector<outcome> outcomes(prompts.size());
    progress_bar bar(todo.size(), cap);
    std::size_t done = 0, escalated = 0;
    money spent;
    std::size_t next = 0;
    bool interrupted = false;
    const std::size_t workers = std::max<std::size_t>(1, options.concurrency);
    std::vector<asio::cancellation_signal> cancels(workers);
    // SIGINT or SIGTERM: nothing more is sent; what is in flight is cancelled (its reservation
    // settled) and what completed is written out.
    asio::signal_set signals(io, SIGINT, SIGTERM);
    signals.async_wait([&](const boost::system::error_code& sec, int) {
        if (sec)
            return;
        interrupted = true;
        // A second one is not waited for: the default action ends the process.
        boost::system::error_code ignored;
        signals.clear(ignored);
        for (auto& c : cancels)
            c.emit(asio::cancellation_type::terminal);
    });
    std::size_t running = workers;
    for (std::size_t w = 0; w < workers; ++w) {
        asio::co_spawn(
            io,
            [&, w]() -> asio::awaitable<void> {
                while (!interrupted && next < todo.size()) {
                    const std::size_t i = todo[next++];
                    auto [cec, res] = co_await r.async_complete(
                        prompts[i].request,
                        asio::bind_cancellation_slot(cancels[w].slot(), tuple_awaitable));
                    if (cec == asio::error::operation_aborted && interrupted) {
                        // Not completed: not written, but what its attempts cost is counted.
                        outcomes[i].interrupted = true;
                        outcomes[i].result = std::move(res);
                        break;
                    }
                    auto& o = outcomes[i];
                    o.ran = true;
                    o.ec = cec;
                    o.result = std::move(res);
                    if (cec)
                        o.error = cascade_failure(o.result, cec);
                    answers[i] = result_json(o.result, cec, prompts[i].id);
                    if (options.jsonl)
                        out.write(to_json(*answers[i]) + '\n');
                    if (!cec && guard && !options.no_log_content)
                        (void)guard->keep_answer(
                            prompts[i].id, to_json(json::object{
                                               {"fingerprint", fingerprint(prompts[i].request)},
                                               {"answer", *answers[i]}}));
                    ++done;
                    escalated += o.result.escalated ? 1 : 0;
                    spent += o.result.total_cost;
                    bar.update(done, escalated, spent);
                }
                if (--running == 0) {
                    boost::system::error_code ignored;
                    signals.clear(ignored); // a signal from now on takes its default action
                    signals.cancel(ignored);
                }
            },
            asio::detached);
    }
    io.restart();
    io.run();
    bar.update(done, escalated, spent, true);
    bar.clear();

    std::map<std::string, model_totals> by_model;
    money total;
    bool any_failed = false;
    for (const auto& o : outcomes) {
        if (!o.ran && !o.interrupted)
            continue;
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
    std::size_t ran = 0, denied = 0, esc = 0, failed = 0;
    for (const auto& o : outcomes) {
        ran += o.ran ? 1 : 0;
        denied += o.ran && o.result.budget_denied ? 1 : 0;
        esc += o.ran && o.result.escalated ? 1 : 0;
        failed += o.ran && o.ec ? 1 : 0;
    }
    json::object totals;
    totals["requests"] = ran;
    totals["resumed"] = resumed;
    totals["escalated"] = esc;
    totals["budget_denied"] = denied;
    totals["failed"] = failed;
    totals["cost"] = total.to_string();
    totals["cap"] = cap ? json::value(cap->to_string()) : json::value(nullptr);
    json::object per_model;
    for (const auto& [model, t] : by_model) {
        per_model[model] = json::object{
            {"requests", t.requests},
            {"prompt_tokens", t.prompt_tokens},
            {"completion_tokens", t.completion_tokens},
            {"cost", t.cost.to_string()}};
    }
    totals["by_model"] = std::move(per_model);
    if (options.json) {
        json::array requests;
        for (auto& a : answers)
            if (a)
                requests.emplace_back(std::move(*a));
        out.write(
            to_json(
                json::object{{"requests", std::move(requests)}, {"totals", std::move(totals)}}) +
            '\n');
    } else if (options.jsonl) {
        std::fprintf(stderr, "%s\n", to_json(totals).c_str()); // the summary, apart
    } else {
        out.write(table_text(prompts, outcomes, by_model, total, cap, resumed));
    }
    if (!out.close()) {
        std::fprintf(
            stderr, "frugal batch: writing %s failed\n",
            options.output_file.empty() ? "the output" : options.output_file.c_str());
        return exit_failure;
    }

    // Money first: a bill past the cap or an anomalous report is said on stderr and wins the
    // exit status (but for an interruption's).
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
    const bool money_raised = alarm.print("batch", cap);
    if (interrupted) {
        std::fprintf(
            stderr, "frugal batch: interrupted: %zu of %zu prompts completed and written\n", ran,
            todo.size());
        return exit_interrupted;
    }
    if (money_raised)
        return exit_money;
    return any_failed || bad_lines > 0 ? exit_failure : 0;
}

} // namespace frugal::cli
