// The `frugal` command. Each subcommand lives in its own file; this one only parses the
// command line (CLI11, from Debian's libcli11-dev: help text, validation and subcommands
// without hand-written parsing).
#include "cli/commands.hpp"

#include <frugal/money.hpp>

#include <CLI/CLI.hpp>

#include <cmath>
#include <cstdio>
#include <exception>
#include <string>

namespace {

// A number of seconds in [lo, hi] (lo itself excluded when `open`). CLI11's own range checks
// compare with < and >, which a NaN passes, and converting NaN or 1e300 seconds to a duration
// is undefined behaviour.
CLI::Validator seconds(double lo, double hi, bool open)
{
    return CLI::Validator(
        [lo, hi, open](std::string& text) -> std::string {
            double v = 0;
            std::size_t used = 0;
            try {
                v = std::stod(text, &used);
            } catch (const std::exception&) {
                used = 0;
            }
            if (used != text.size() || !std::isfinite(v) || v < lo || (open && v == lo) || v > hi)
                return "expected a number of seconds " + std::string(open ? "above " : "from ") +
                       CLI::detail::to_string(lo) + " up to " + CLI::detail::to_string(hi) +
                       ", got \"" + text + "\"";
            return {};
        },
        "SECONDS");
}

// An amount of USD: a cap of "" or "  " is a mistake, never "no cap".
CLI::Validator usd_amount()
{
    return CLI::Validator(
        [](std::string& text) -> std::string {
            const auto m = frugal::money::parse(text);
            if (!m || *m < frugal::money())
                return "expected an amount of USD such as 0.50, got \"" + text + "\"";
            return {};
        },
        "USD");
}

} // namespace

int main(int argc, char** argv)
{
    using namespace frugal::cli;

    CLI::App app{"frugal: cheap-first LLM calls through OpenRouter, with a hard budget"};
    app.require_subcommand(1);
    app.set_version_flag("--version", std::string("frugal ") + FRUGAL_VERSION);

    sse_options sse;
    auto* sse_cmd = app.add_subcommand(
        "sse", "Parse an event stream (WHATWG rules) from stdin; print one JSON object per event");
    sse_cmd->add_flag("--count", sse.count, "Print only {\"events\":N,\"bytes\":M}");
    sse_cmd->add_option("--max-line", sse.limits.max_line_size, "Longest line accepted, in bytes")
        ->capture_default_str()
        ->check(CLI::NonNegativeNumber);
    sse_cmd
        ->add_option(
            "--max-event", sse.limits.max_event_size, "Largest event data accepted, in bytes")
        ->capture_default_str()
        ->check(CLI::NonNegativeNumber);

    chat_options chat;
    auto* chat_cmd = app.add_subcommand(
        "chat", "One prompt to a model, or through a cheap-first policy (key from "
                "OPENROUTER_API_KEY)");
    chat_cmd->add_option(
        "--base-url", chat.base_url,
        "API base URL (default: OPENROUTER_BASE_URL, else https://openrouter.ai/api/v1)");
    auto* chat_model =
        chat_cmd->add_option("-m,--model", chat.model, "Model id, e.g. google/gemma-4-31b-it:free");
    auto* chat_policy = chat_cmd->add_option(
        "--policy", chat.policy_file, "Cascade policy (JSON, docs/routing.md) instead of --model");
    chat_model->excludes(chat_policy);
    auto* chat_budget =
        chat_cmd
            ->add_option(
                "--budget", chat.budget,
                "Spend cap in USD: priced from the catalog, run under a guard")
            ->check(usd_amount());
    chat_cmd->add_flag("--no-budget", chat.no_budget, "Run a policy's paid tiers uncapped")
        ->excludes(chat_budget);
    chat_cmd->add_option("--system", chat.system, "A system message before the prompt");
    chat_cmd->add_flag("--stream", chat.stream, "Print the content as it arrives");
    chat_cmd->add_option("--max-tokens", chat.max_tokens, "Most tokens to generate");
    chat_cmd->add_flag(
        "--json", chat.json,
        "Print one JSON object (with --policy or --budget: content, final_model, escalated, "
        "budget_denied, reason, cost and the attempts)");
    chat_cmd->add_option("--ca-file", chat.ca_file, "PEM file of extra trusted CAs")
        ->check(CLI::ExistingFile);
    chat_cmd
        ->add_option(
            "--timeout", chat.timeout_seconds,
            "Deadline of the whole request, in seconds (at most a day)")
        ->capture_default_str()
        ->check(seconds(0, max_timeout_seconds, true));
    chat_cmd->add_option("prompt", chat.prompt, "The user message (- or none: from stdin)");

    batch_options batch;
    auto* batch_cmd = app.add_subcommand(
        "batch", "Run every prompt of a JSONL file through a cheap-first policy, within a budget");
    batch_cmd->add_option(
        "--base-url", batch.base_url,
        "API base URL (default: OPENROUTER_BASE_URL, else https://openrouter.ai/api/v1)");
    batch_cmd->add_option("--policy", batch.policy_file, "Cascade policy (JSON, docs/routing.md)")
        ->check(CLI::ExistingFile);
    batch_cmd->add_option("--budget", batch.budget, "Spend cap in USD, e.g. 0.50")
        ->check(usd_amount());
    batch_cmd->add_option("--concurrency", batch.concurrency, "Prompts in flight at once")
        ->capture_default_str()
        ->check(CLI::Range(1, 100000));
    batch_cmd->add_option(
        "--ledger", batch.ledger_file,
        "SQLite file keeping the ledger and the spend (the cap then holds across runs)");
    batch_cmd->add_option(
        "--budget-store", batch.budget_store,
        "redis://HOST:PORT/DB: share the cap with every process using the same Redis "
        "(the ledger stays in --ledger)");
    batch_cmd
        ->add_option(
            "--budget-lease", batch.budget_lease_seconds,
            "Seconds a reservation in Redis lives unsettled (a killed process's become spend)")
        ->capture_default_str()
        ->check(seconds(1, 86400, false));
    batch_cmd->add_flag(
        "--budget-fail-open", batch.budget_fail_open,
        "While Redis is down, grant escalations within this process's own cap instead of "
        "refusing them");
    auto* no_budget = batch_cmd->add_flag(
        "--no-budget", batch.no_budget, "Run paid tiers without a cap (on purpose)");
    no_budget->excludes("--budget");
    auto* batch_json =
        batch_cmd->add_flag("--json", batch.json, "Print one JSON object (with the answers)");
    auto* batch_jsonl = batch_cmd->add_flag(
        "--jsonl", batch.jsonl,
        "Print one JSON line per prompt as each completes; the summary goes to stderr");
    batch_json->excludes(batch_jsonl);
    batch_cmd->add_option("--output", batch.output_file, "Write the output to FILE, not stdout");
    batch_cmd->add_flag(
        "--resume", batch.resume,
        "With --ledger: skip prompts whose ids have an answer there, and print those answers");
    batch_cmd->add_flag(
        "--no-log-content", batch.no_log_content,
        "Keep no answer text in the ledger (--resume then has nothing to skip)");
    batch_cmd->add_option("prompts", batch.prompts_file, "PROMPTS.jsonl (- for stdin)");

    sim_options sim;
    auto* sim_cmd = app.add_subcommand(
        "sim", "Serve the OpenRouter simulator on loopback until SIGINT or SIGTERM");
    sim_cmd->add_option("--host", sim.host, "Address to bind (loopback by default)")
        ->capture_default_str();
    sim_cmd->add_option("--port", sim.port, "Port to bind (0 picks a free one)")
        ->capture_default_str();
    sim_cmd->add_option("--config", sim.config_file, "Configuration file (docs/simulator.md)")
        ->check(CLI::ExistingFile);
    sim_cmd->add_option("--seed", sim.seed, "Seed of every deterministic choice");
    sim_cmd->add_flag(
        "--demo-latency", sim.demo_latency, "Realistic time to first token and per token");
    sim_cmd
        ->add_option(
            "--outcomes", sim.outcome_files,
            "Answer a prompt found in this file (RouteLLM CSV or JSONL, docs/eval.md) with the "
            "recorded answer of the model asked; repeatable")
        ->check(CLI::ExistingFile);

    eval_options eval;
    auto* eval_cmd = app.add_subcommand(
        "eval", "A policy's cost and quality on recorded answers, beside the baselines");
    eval_cmd
        ->add_option(
            "--outcomes", eval.outcome_files,
            "Recorded answers: RouteLLM's CSV or frugal's JSONL (docs/eval.md); repeatable")
        ->check(CLI::ExistingFile);
    eval_cmd->add_option("--policy", eval.policy_file, "Cascade policy JSON (docs/routing.md)")
        ->check(CLI::ExistingFile);
    auto* eval_prices =
        eval_cmd
            ->add_option(
                "--prices", eval.prices_file, "A models catalog saved in OpenRouter's shape")
            ->check(CLI::ExistingFile);
    auto* eval_base = eval_cmd->add_option(
        "--base-url", eval.base_url, "Take the prices from this endpoint's catalog instead");
    eval_prices->excludes(eval_base);
    eval_cmd->add_option(
        "--sweep", eval.sweep,
        "Run the policy once per value of one member: NAME=V1,V2,... or NAME=[JSON array]");
    auto* eval_json = eval_cmd->add_flag("--json", eval.json, "One JSON object");
    auto* eval_html =
        eval_cmd->add_option("--html", eval.html_file, "Write the cost/quality chart to this file");
    eval_json->excludes(eval_html);
    eval_cmd->add_option(
        "--decisions", eval.decisions_file,
        "Write a JSON line per prompt: the tier that answered, why it escalated, its cost");

    serve_options serve;
    auto* serve_cmd = app.add_subcommand(
        "serve", "An OpenAI-compatible gateway: policies as models, a hard cap per key's tenant");
    serve_cmd->add_option("--config", serve.config_file, "Configuration file (docs/gateway.md)")
        ->check(CLI::ExistingFile);
    serve_cmd->add_option("--host", serve.host, "Address to bind (loopback by default)")
        ->capture_default_str();
    serve_cmd->add_option("--port", serve.port, "Port to bind (0 picks a free one)")
        ->capture_default_str();
    serve_cmd->add_option("--tls-cert", serve.tls_cert, "PEM certificate chain: serve HTTPS")
        ->check(CLI::ExistingFile);
    serve_cmd->add_option("--tls-key", serve.tls_key, "PEM private key of --tls-cert")
        ->check(CLI::ExistingFile);

    report_options report;
    auto* report_cmd = app.add_subcommand(
        "report", "Usage per model, tier and cap from a ledger; the saving against the flagship "
                  "alone; the provider's bill with --reconcile");
    report_cmd->add_option("--ledger", report.ledger_file, "SQLite ledger (frugal batch --ledger)")
        ->check(CLI::ExistingFile);
    auto* json_flag = report_cmd->add_flag("--json", report.json, "One JSON object");
    auto* csv_flag = report_cmd->add_flag("--csv", report.csv, "CSV (RFC 4180), one row per item");
    json_flag->excludes(csv_flag);
    report_cmd->add_option(
        "--html", report.html_file, "Write a self-contained HTML dashboard to this file");
    report_cmd->add_option(
        "--since", report.since, "Only records from: 2026-11-26, 2026-11-26T09:30:00Z, 24h, 7d");
    report_cmd->add_option(
        "--tenant", report.tenant,
        "Only this tenant's records and cap (a frugal serve ledger: budget key tenant:NAME)");
    report_cmd->add_flag(
        "--reconcile", report.reconcile,
        "Look every generation up on the provider (key from OPENROUTER_API_KEY) and list "
        "differences; exit status 1 when there are any");
    report_cmd->add_option(
        "--base-url", report.base_url,
        "API base URL for --reconcile (default: the one the ledger was written against)");
    report_cmd->add_option(
        "--budget-store", report.budget_store,
        "redis://HOST:PORT/DB: with --reconcile, also settle the reservations the fleet's "
        "store turned into spend when their process died");
    report_cmd
        ->add_option(
            "--budget-lease", report.budget_lease_seconds,
            "The fleet's lease (as batch --budget-lease): a swept reservation is settled only "
            "once a lease has passed since its sweep")
        ->capture_default_str()
        ->check(seconds(1, 86400, false));
    report_cmd
        ->add_option(
            "--reconcile-wait", report.reconcile_wait_seconds,
            "Seconds after a generation ends during which a 404 is retried")
        ->capture_default_str()
        ->check(seconds(0, 86400, false));

    demo_options demo;
    auto* demo_cmd = app.add_subcommand(
        "demo", "Cheap-first routing under a hard cap, end to end, against the in-process "
                "simulator");
    demo_cmd->add_flag(
        "--live", demo.live, "Run against OpenRouter itself (needs OPENROUTER_API_KEY)");
    demo_cmd->add_option("--out", demo.out_dir, "Directory for the ledger and the dashboard")
        ->capture_default_str();
    demo_cmd->add_option("--cheap", demo.cheap, "The cheap model (default: a free one)");
    demo_cmd->add_option("--flagship", demo.flagship, "The flagship model");

    models_options models;
    auto* models_cmd = app.add_subcommand(
        "models", "The models catalog with every price (per million tokens), and which are free");
    models_cmd->add_option(
        "--base-url", models.base_url,
        "API base URL (default: OPENROUTER_BASE_URL, else https://openrouter.ai/api/v1)");
    models_cmd->add_flag("--json", models.json, "One JSON object, prices as exact strings");
    models_cmd->add_flag("--free", models.free_only, "Only the models that cost nothing");

    // An unknown option is named before anything is said to be missing: the required members
    // are checked here, after CLI11 has rejected what it does not know.
    try {
        app.parse(argc, argv);
    } catch (const CLI::ParseError& e) {
        const int status = app.exit(e);
        return status == 0 ? 0 : exit_usage;
    }
    auto missing = [](const char* command, const char* what) {
        std::fprintf(stderr, "frugal %s: %s is required (see --help)\n", command, what);
        return exit_usage;
    };
    if (*chat_cmd) {
        chat.prompt_given = chat_cmd->count("prompt") > 0;
        if (chat.model.empty() && chat.policy_file.empty())
            return missing("chat", "--model (or --policy)");
    }
    if (*batch_cmd && batch.policy_file.empty())
        return missing("batch", "--policy");
    if (*batch_cmd && batch.prompts_file.empty())
        return missing("batch", "PROMPTS.jsonl (or - for stdin)");
    if (*serve_cmd && serve.config_file.empty())
        return missing("serve", "--config");
    if (*report_cmd && report.ledger_file.empty())
        return missing("report", "--ledger");
    if (*eval_cmd && eval.outcome_files.empty())
        return missing("eval", "--outcomes");
    if (*eval_cmd && eval.policy_file.empty())
        return missing("eval", "--policy");
    if (*eval_cmd && eval.prices_file.empty() && eval.base_url.empty())
        return missing("eval", "--prices (or --base-url)");

    try {
        if (*sse_cmd)
            return run_sse(sse);
        if (*sim_cmd)
            return run_sim(sim);
        if (*serve_cmd)
            return run_serve(serve);
        if (*chat_cmd)
            return run_chat(chat);
        if (*batch_cmd)
            return run_batch(batch);
        if (*report_cmd)
            return run_report(report);
        if (*eval_cmd)
            return run_eval(eval);
        if (*demo_cmd)
            return run_demo(demo);
        if (*models_cmd)
            return run_models(models);
    } catch (const std::exception& e) {
        std::fprintf(stderr, "frugal: %s\n", e.what());
        return exit_failure;
    }
    return exit_usage;
}
