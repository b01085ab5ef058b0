#ifndef FRUGAL_CLI_COMMANDS_HPP
#define FRUGAL_CLI_COMMANDS_HPP

#include <frugal/sse_parser.hpp>
#include <frugal/types.hpp>

#include <cstdint>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

namespace boost::asio {
class io_context;
} // namespace boost::asio

namespace frugal {
class chat_client;
} // namespace frugal

namespace frugal::cli {

/// Exit status of a command that ran and failed (a bad stream, a failed request).
inline constexpr int exit_failure = 1;
/// Exit status of a command line that could not be understood.
inline constexpr int exit_usage = 2;
/// Exit status when the bill passed a cap or a provider's accounting was anomalous (a bill
/// above the model's prices, a free model that billed, a reported cost that is negative or not
/// a number): the command printed one line saying so. It wins over `exit_failure`.
inline constexpr int exit_money = 3;
/// Exit status of a command stopped by SIGINT or SIGTERM (128 + SIGINT, as shells report it).
inline constexpr int exit_interrupted = 130;
/// The longest `--timeout` accepted, in seconds: a day.
inline constexpr double max_timeout_seconds = 86400;

struct sse_options {
    bool count = false;
    sse_parser_params limits;
};

struct chat_options {
    std::string base_url;
    std::string model;       ///< one model (or `policy_file`)
    std::string policy_file; ///< a cascade policy (or `model`)
    std::string budget;      ///< USD, empty for none: the request then runs under a guard
    bool no_budget = false;  ///< a policy's paid tiers run uncapped, on purpose
    std::string system;      ///< a system message before the prompt
    std::string prompt;      ///< "-" or absent: read from stdin
    bool prompt_given = false;
    bool stream = false;
    bool json = false;
    std::optional<std::uint32_t> max_tokens;
    std::string ca_file;
    double timeout_seconds = 120;
};

/// `frugal chat`: one prompt to one model or through a cascade policy; the content (streamed
/// token by token with `stream`, an escalation's withdrawal said on stderr) or one JSON object on
/// stdout; on failure a single line on stderr and exit status 1; a money anomaly or a passed
/// cap, one line and exit status 3.
int run_chat(const chat_options& options);

struct batch_options {
    std::string base_url;
    std::string policy_file;
    std::string budget; ///< USD, empty for none
    std::size_t concurrency = 8;
    std::string ledger_file;
    std::string budget_store; ///< redis://HOST:PORT/DB: the cap is shared with other processes
    double budget_lease_seconds = 900; ///< how long a dead process's reservations hold
    bool budget_fail_open = false;     ///< Redis down: grant on this process's books alone
    bool no_budget = false;            ///< paid tiers run uncapped, on purpose
    bool json = false;                 ///< one JSON object at the end
    bool jsonl = false;                ///< a JSON line per prompt as each completes
    std::string output_file;           ///< empty: stdout
    bool resume = false;               ///< skip prompts the ledger already has answers for
    bool no_log_content = false;       ///< keep no answers in the ledger
    std::string prompts_file;
};

/// The whole of a file (a policy, a configuration, a catalog), or nothing when it cannot be
/// read: the caller says so in its own words.
std::optional<std::string> read_text_file(const std::string& path);

/// The models catalog through `client`, running `io` until it is in. On failure prints one
/// line, "frugal COMMAND: the models catalog: REASON" with what the provider said, to stderr.
std::optional<std::vector<model_info>>
fetch_catalog(boost::asio::io_context& io, chat_client& client, const char* command);

/// The same through a client of its own to `base_url` (empty: the default endpoint), for a
/// command that needs the catalog and nothing else.
std::optional<std::vector<model_info>>
fetch_catalog(const std::string& base_url, const char* command);

/// `frugal batch`: every prompt of a JSONL file through a cascade policy, inside a budget;
/// prints a table per model with each failure's reason, one JSON object, or a JSON line per
/// prompt as each completes (with the answers). Exit status 1 when a line was skipped or a
/// prompt failed, 2 for a bad policy or command line (an unknown model, paid tiers without
/// --budget or --no-budget), 3 (with one line on stderr) when the bill passed the cap or a
/// provider's accounting was anomalous, 130 when interrupted (what completed is written).
int run_batch(const batch_options& options);

struct report_options {
    std::string ledger_file;
    bool json = false;
    bool csv = false;
    std::string html_file; ///< empty: no HTML
    std::string since;     ///< empty: every record
    bool reconcile = false;
    std::string base_url;
    double reconcile_wait_seconds = 15;
    std::string budget_store; ///< redis://...: settle the fleet's swept reservations too
    double budget_lease_seconds = 900; ///< the fleet's lease (batch --budget-lease)
    std::string tenant; ///< only the records and the cap of `tenant:NAME` (a gateway's ledger)
};

/// `frugal report`: the usage report of a ledger (text, JSON, CSV or an HTML dashboard), with
/// `reconcile` checked against the provider. Exit status 1 when the books and the bill differ,
/// 3 (with one line on stderr) when the ledger holds an anomaly or spend past a cap.
int run_report(const report_options& options);

/// `--since`: a date, a UTC time or a span back from `now_ms` ("24h"); 0 for empty text.
std::optional<std::int64_t> parse_since(std::string_view text, std::int64_t now_ms);

struct demo_options {
    bool live = false;
    std::string out_dir = "frugal-demo";
    std::string cheap;
    std::string flagship;
};

/// `frugal demo`: the cheap-first idea end to end against the in-process simulator (or, with
/// `live`, OpenRouter): a batch under a cap, one streamed escalation, the report, the
/// reconciliation and an HTML dashboard. Exit status 1 when the books and the bill differ.
int run_demo(const demo_options& options);

struct models_options {
    std::string base_url;
    bool json = false;
    bool free_only = false;
};

/// `frugal models`: the catalog, each model with its context length, every price and whether
/// it is free (every price zero, not its name). Exit status 1 when it cannot be fetched.
int run_models(const models_options& options);

struct sim_options {
    std::string host = "127.0.0.1";
    std::uint16_t port = 0;
    std::string config_file;
    std::vector<std::string> outcome_files; ///< recorded answers to replay (docs/eval.md)
    std::optional<std::uint64_t> seed;
    bool demo_latency = false;
};

/// `frugal sim`: serves the OpenRouter simulator until SIGINT or SIGTERM. The first line on
/// stdout is `listening on http://HOST:PORT/api/v1`.
int run_sim(const sim_options& options);

struct eval_options {
    std::vector<std::string> outcome_files;
    std::string policy_file;
    std::string prices_file; ///< a saved catalog; empty: fetched from `base_url`
    std::string base_url;
    std::string sweep; ///< NAME=V1,V2,... or NAME=[JSON array]
    bool json = false;
    std::string html_file;
    std::string decisions_file; ///< a JSON line per prompt: the policy's decision
};

/// `frugal eval`: a policy replayed on recorded answers, with its accuracy, cost, escalated
/// share and PGR beside the baselines'. Exit status 1 for an unreadable outcomes file, 2 for a
/// bad policy, sweep or price list.
int run_eval(const eval_options& options);

struct serve_options {
    std::string config_file;
    std::string host = "127.0.0.1";
    std::uint16_t port = 8080;
    std::string tls_cert;
    std::string tls_key;
};

/// `frugal serve`: the OpenAI-compatible gateway (docs/gateway.md) until SIGINT or SIGTERM,
/// which drain it; SIGHUP reloads the configuration's keys and policies. The first line on
/// stdout, once it is ready, is `listening on http://HOST:PORT/api/v1`.
int run_serve(const serve_options& options);

/// `frugal sse`: parses an event stream on stdin and prints each dispatched event as one JSON
/// object per line, or with `count` only `{"events":N,"bytes":M}`.
int run_sse(const sse_options& options);

} // namespace frugal::cli

#endif // FRUGAL_CLI_COMMANDS_HPP
