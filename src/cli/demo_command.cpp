// `frugal demo`: what a new OpenRouter user does by hand, done by frugal in one run. The
// simulator runs in this process with realistic latencies; one answer streams with an
// escalation mid-stream; a batch of easy and hard prompts runs under a cap small enough that
// the guard visibly refuses an escalation; then the report, the reconciliation with the
// provider's records, the HTML dashboard, and frugal's total against the simulator's bill.
#include "cli/commands.hpp"
#include "cli/report.hpp"

#include <frugal/budget.hpp>
#include <frugal/chat_client.hpp>
#include <frugal/ledger.hpp>
#include <frugal/router.hpp>
#include <frugal/sim.hpp>

#include <boost/asio/as_tuple.hpp>
#include <boost/asio/co_spawn.hpp>
#include <boost/asio/connect.hpp>
#include <boost/asio/detached.hpp>
#include <boost/asio/io_context.hpp>
#include <boost/asio/ip/tcp.hpp>
#include <boost/asio/use_awaitable.hpp>
#include <boost/beast/core/flat_buffer.hpp>
#include <boost/beast/http/empty_body.hpp>
#include <boost/beast/http/read.hpp>
#include <boost/beast/http/string_body.hpp>
#include <boost/beast/http/write.hpp>
#include <boost/json.hpp>

#include <unistd.h>

#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <fstream>

namespace frugal::cli {

namespace asio = boost::asio;
namespace beast = boost::beast;
namespace http = beast::http;
namespace json = boost::json;
using boost::system::error_code;

namespace {

constexpr auto tuple_awaitable = asio::as_tuple(asio::use_awaitable);

// The simulator's catalog, and (for --live) models OpenRouter lists; --cheap and --flagship
// choose others.
constexpr const char* default_cheap = "google/gemma-4-31b-it:free";
constexpr const char* default_flagship = "anthropic/claude-fable-5";
constexpr const char* live_cheap = "openai/gpt-oss-20b:free";
constexpr const char* live_flagship = "openai/gpt-4o";
constexpr std::uint32_t demo_max_tokens = 160;

// Terminal styling only when a person is watching.
struct style {
    bool on = ::isatty(STDOUT_FILENO) == 1;
    const char* dim() const { return on ? "\033[2m" : ""; }
    const char* bold() const { return on ? "\033[1m" : ""; }
    const char* green() const { return on ? "\033[32m" : ""; }
    const char* yellow() const { return on ? "\033[33m" : ""; }
    const char* red() const { return on ? "\033[31m" : ""; }
    const char* reset() const { return on ? "\033[0m" : ""; }
};

const char* easy_prompts[] = {
    "What is the capital of France?",
    "Name a primary colour.",
    "How many days are in a week?",
    "Translate 'thank you' into Spanish.",
    "What is 12 times 12?",
    "Give a synonym for 'quick'.",
    "Which planet is closest to the Sun?",
    "What does HTTP stand for?",
    "Spell 'necessary'.",
    "What is the boiling point of water in Celsius?",
};

const char* hard_prompts[] = {
    "Prove rigorously that the square root of two is irrational, step by step.",
    "Derive the optimal time complexity of comparison sorting and prove the lower bound.",
    "Analyze the amortized complexity of a splay tree and prove it rigorously.",
    "Prove the theorem that every planar graph is five-colourable, step by step.",
    "Derive, step by step, the optimal strategy for the secretary problem and prove it.",
    "Prove rigorously that there are infinitely many primes, and analyze the proof.",
};

const char* stream_prompt =
    "Derive step by step the optimal complexity of matrix multiplication, and prove it.";

// The simulator's own bill, its `total.cost_usd` (what frugal's books are checked against).
std::optional<money> simulator_bill(std::uint16_t port, std::string& error)
{
    try {
        asio::io_context io;
        asio::ip::tcp::socket sock(io);
        sock.connect({asio::ip::make_address("127.0.0.1"), port});
        http::request<http::empty_body> req{http::verb::get, "/__sim/bill", 11};
        req.set(http::field::host, "127.0.0.1");
        http::write(sock, req);
        beast::flat_buffer buf;
        http::response<http::string_body> res;
        http::read(sock, buf, res);
        const auto v = json::parse(res.body());
        const auto& total = v.at("total").at("cost_usd").as_string();
        return money::parse(std::string_view(total.data(), total.size()));
    } catch (const std::exception& e) {
        error = e.what();
        return std::nullopt;
    }
}

std::string usd(money m)
{
    return "$" + m.to_string();
}

} // namespace

int run_demo(const demo_options& options)
{
    namespace fs = std::filesystem;
    const style st;
    const auto started = std::chrono::steady_clock::now();
    const std::string cheap = !options.cheap.empty() ? options.cheap
                              : options.live         ? live_cheap
                                                     : default_cheap;
    const std::string flagship = !options.flagship.empty() ? options.flagship
                                 : options.live            ? live_flagship
                                                           : default_flagship;

    std::optional<sim_thread> sim;
    client_params params;
    if (options.live) {
        // NOLINTNEXTLINE(concurrency-mt-unsafe): read before any thread starts
        const char* key = std::getenv("OPENROUTER_API_KEY");
        if (key == nullptr || *key == '\0') {
            std::fprintf(stderr, "frugal demo: --live needs OPENROUTER_API_KEY\n");
            return exit_usage;
        }
        params.base_url = "https://openrouter.ai/api/v1";
    } else {
        auto cfg = sim_config::demo();
        cfg.seed = 7;
        sim.emplace(std::move(cfg));
        params.base_url = sim->base_url();
        params.api_key = "sk-or-v1-frugal-demo";
    }
    std::error_code fec;
    fs::create_directories(options.out_dir, fec);
    const fs::path ledger = fs::path(options.out_dir) / "ledger.db";
    for (const char* suffix : {"", "-wal", "-shm", ".lock"})
        fs::remove(ledger.string() + suffix, fec);
    const fs::path html = fs::path(options.out_dir) / "dashboard.html";

    std::printf(
        "%sfrugal demo%s: cheap-first calls under a hard cap, against %s\n", st.bold(), st.reset(),
        options.live ? "OpenRouter" : ("the simulator at " + params.base_url).c_str());
    std::printf(
        "policy: %s first; %s when the answer is cut, empty, an error or a refusal\n",
        cheap.c_str(), flagship.c_str());

    asio::io_context io{1};
    chat_client client(io.get_executor(), params);
    auto models = fetch_catalog(io, client, "demo");
    if (!models)
        return exit_failure;
    price_catalog prices(*models);
    const auto* fp = prices.find(flagship);
    if (fp == nullptr || prices.find(cheap) == nullptr) {
        std::fprintf(
            stderr,
            "frugal demo: the catalog does not price %s (choose models with --cheap and "
            "--flagship)\n",
            fp == nullptr ? flagship.c_str() : cheap.c_str());
        return exit_usage;
    }

    // The cap: room for one worst-case flagship reservation and a quarter of another, so the
    // batch's escalations run into it and the guard has to refuse one.
    const cost_bound w = worst_case(*fp, 600);
    const money worst = w.fixed + w.per_completion_token * demo_max_tokens;
    const money cap = worst + money::from_units(worst.units() / 4);

    diagnostics diag;
    std::string detail;
    const std::string policy_json = json::serialize(json::object{
        {"cheap", cheap},
        {"flagship", flagship},
        {"escalate_on", json::array{"length", "empty", "error", "refusal"}},
        {"max_tokens", demo_max_tokens}});
    auto policy = parse_policy(policy_json, &diag);
    if (!policy) {
        std::fprintf(stderr, "frugal demo: the policy: %s\n", diag.message.c_str());
        return exit_failure;
    }

    std::size_t denied = 0;
    {
        auto store = open_sqlite_store({ledger.string()}, &diag);
        if (!store) {
            std::fprintf(stderr, "frugal demo: %s\n", diag.message.c_str());
            return exit_failure;
        }
        budget_params bp;
        bp.budgets.push_back({"global", cap});
        bp.min_max_tokens = demo_max_tokens; // the demo's escalations are refused, not shortened
        auto guard = budget_guard::open(bp, prices, *store, &diag);
        if (!guard) {
            std::fprintf(stderr, "frugal demo: %s\n", diag.message.c_str());
            return exit_failure;
        }
        (void)guard->annotate(ledger_notes::base_url_key, client.params().base_url);
        router r(client, *policy, prices, *guard);
        std::printf(
            "cap: %s (a worst-case flagship answer reserves %s)\n\n", usd(cap).c_str(),
            usd(worst).c_str());

        // 1. One answer streamed to the terminal; the cheap answer is cut, and the flagship's
        // replaces it as it streams.
        std::printf("%s1. One answer, streamed token by token%s\n", st.bold(), st.reset());
        std::printf("%s> %s%s\n", st.dim(), stream_prompt, st.reset());
        asio::co_spawn(
            io,
            [&]() -> asio::awaitable<void> {
                chat_request req;
                req.messages.push_back({.role = "user", .content = stream_prompt});
                cascade_stream s;
                r.start_stream(std::move(req), stream_mode::stream, s);
                std::uint32_t tier = 0;
                for (;;) {
                    auto [sec, ev] = co_await s.async_next(tuple_awaitable);
                    if (sec) {
                        std::printf(
                            "\n%s[stream failed: %s]%s\n", st.red(), sec.message().c_str(),
                            st.reset());
                        co_return;
                    }
                    if (ev.type == cascade_event::kind::escalating) {
                        std::printf(
                            "%s\n  [%s rejected (%s): escalating to %s; the text above is "
                            "discarded]%s\n",
                            st.yellow(), cheap.c_str(), to_string(ev.reason),
                            r.policy().tiers[ev.tier].c_str(), st.reset());
                        tier = ev.tier;
                        continue;
                    }
                    if (ev.type == cascade_event::kind::done) {
                        std::printf(
                            "\n%s  [answered by %s for %s]%s\n\n", st.green(),
                            ev.result->response.model.c_str(), usd(ev.result->total_cost).c_str(),
                            st.reset());
                        co_return;
                    }
                    std::printf("%s%s%s", tier == 0 ? st.dim() : "", ev.text.c_str(), st.reset());
                    std::fflush(stdout);
                }
            },
            asio::detached);
        io.restart();
        io.run();

        // 2. A batch: easy prompts stay on the free model, hard ones escalate until the cap.
        std::printf(
            "%s2. A batch of %zu easy and %zu hard prompts, 8 at a time, under the cap%s\n",
            st.bold(), std::size(easy_prompts), std::size(hard_prompts), st.reset());
        std::vector<std::pair<const char*, const char*>> batch;
        for (std::size_t i = 0; i < std::size(easy_prompts); ++i) {
            batch.emplace_back("easy", easy_prompts[i]);
            if (i % 2 == 1 && i / 2 < std::size(hard_prompts))
                batch.emplace_back("hard", hard_prompts[i / 2]);
        }
        for (std::size_t i = std::size(easy_prompts) / 2; i < std::size(hard_prompts); ++i)
            batch.emplace_back("hard", hard_prompts[i]);
        std::size_t next = 0;
        for (int w = 0; w < 8; ++w) {
            asio::co_spawn(
                io,
                [&]() -> asio::awaitable<void> {
                    while (next < batch.size()) {
                        const auto [kind, prompt] = batch[next++];
                        chat_request req;
                        req.messages.push_back({.role = "user", .content = prompt});
                        auto [cec, res] = co_await r.async_complete(req, tuple_awaitable);
                        std::string what;
                        const char* colour = st.green();
                        if (res.budget_denied) {
                            ++denied;
                            colour = st.red();
                            what = "escalation DENIED by the budget (" +
                                   std::string(to_string(res.reason)) +
                                   "): the free answer is kept";
                        } else if (cec) {
                            colour = st.red();
                            what = "failed: " + cec.message();
                        } else if (res.escalated) {
                            colour = st.yellow();
                            what = "escalated (" + std::string(to_string(res.reason)) + ") to " +
                                   res.response.model;
                        } else {
                            what = "answered by " + res.response.model;
                        }
                        std::printf(
                            "  %s %-10s %s%s%s\n        %s%s%s\n", kind,
                            usd(res.total_cost).c_str(), colour, what.c_str(), st.reset(), st.dim(),
                            prompt, st.reset());
                    }
                },
                asio::detached);
        }
        io.restart();
        io.run();
        std::printf("\n");
    } // the router and the guard close the ledger

    // 3. The report, reconciled with the provider's own records.
    std::printf(
        "%s3. The report (frugal report --ledger %s --reconcile)%s\n", st.bold(), ledger.c_str(),
        st.reset());
    reconcile_params rp;
    rp.ledger_path = ledger.string();
    rp.base_url = params.base_url;
    rp.api_key = params.api_key;
    diag.clear();
    auto rec = reconcile_ledger(rp, &diag);
    if (!rec) {
        std::fprintf(stderr, "frugal demo: reconciliation: %s\n", diag.message.c_str());
        return exit_failure;
    }
    auto data = load_ledger(ledger.string(), 0, &diag);
    if (!data) {
        std::fprintf(stderr, "frugal demo: %s\n", diag.message.c_str());
        return exit_failure;
    }
    auto report = build_report(*data, unix_now_ms());
    report.reconcile = std::move(*rec);
    std::fputs(format_text(report).c_str(), stdout);
    int status = report.reconcile.differences.empty() && report.reconcile.unverified.empty()
                     ? 0
                     : exit_failure;
    std::ofstream out(html, std::ios::binary | std::ios::trunc);
    out << format_html(report);
    out.close();
    if (out) {
        std::printf("\ndashboard: %s\n", fs::absolute(html).c_str());
    } else {
        std::fprintf(stderr, "frugal demo: cannot write %s\n", html.c_str());
        status = exit_failure;
    }
    if (sim) {
        std::string error;
        const auto bill = simulator_bill(sim->port(), error);
        if (!bill) {
            std::fprintf(stderr, "frugal demo: the simulator's bill: %s\n", error.c_str());
            return exit_failure;
        }
        const bool equal = *bill == report.total;
        std::printf(
            "%sfrugal's total %s, the simulator's bill %s: %s%s\n", equal ? st.green() : st.red(),
            usd(report.total).c_str(), usd(*bill).c_str(), equal ? "equal" : "DIFFERENT",
            st.reset());
        if (!equal)
            status = exit_failure;
    }
    if (denied == 0)
        std::printf("(no escalation was denied this time: the cap was not reached)\n");
    const auto secs = std::chrono::duration<double>(std::chrono::steady_clock::now() - started);
    std::printf("done in %.1f s\n", secs.count());
    return status;
}

} // namespace frugal::cli
