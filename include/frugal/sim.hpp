#ifndef FRUGAL_SIM_HPP
#define FRUGAL_SIM_HPP

/// @file
/// An OpenRouter-compatible simulator: a deterministic HTTP server on loopback that frugal's
/// demo, integration tests and benchmarks run against, and that keeps its own bill as the
/// truth frugal's ledger is checked against.
///
/// It serves `GET /api/v1/models`, `POST /api/v1/chat/completions` (whole and streamed),
/// `GET /api/v1/generation?id=`, `GET /api/v1/key` and, outside OpenRouter's API,
/// `GET /__sim/bill`. docs/simulator.md describes its behaviour, the prompt directives that
/// select faults and answer quality, and the configuration file.
///
/// The simulator shares no wire-format code with frugal's client (JSON of chat types, stream
/// parsing, money), so a bug on one side cannot hide by being mirrored on the other.

#include <frugal/diagnostics.hpp>
#include <frugal/error.hpp>

#include <boost/asio/any_io_executor.hpp>
#include <boost/system/result.hpp>

#include <chrono>
#include <cstdint>
#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

namespace frugal {

/// One model of the simulated catalog.
struct sim_model {
    std::string id;                     ///< e.g. "google/gemma-4-31b-it:free"
    std::string name;                   ///< display name
    std::string provider = "Simulated"; ///< the provider named in responses
    /// Whether the provider stops billing when a stream is cancelled (OpenRouter's list).
    /// When it does not, a cancelled stream is billed as `sim_config::uncancellable_billing`
    /// says.
    bool cancel_supported = true;
    std::string prompt_price = "0";     ///< USD per prompt token, a decimal string
    std::string completion_price = "0"; ///< USD per completion token, a decimal string
    std::string request_price = "0";    ///< USD per request, a decimal string
    std::uint64_t context_length = 131072;
    std::uint64_t max_completion_tokens = 8192;
    /// Prompts with a difficulty above this get a poor answer (see docs/simulator.md).
    int capability = 5;
    std::chrono::milliseconds time_to_first_token{0};
    std::chrono::milliseconds time_per_token{0};
    std::string alias_target; ///< for `~author/family-latest` rows: the concrete model id
    /// The row's `canonical_slug`; empty: the id without a `:free` suffix, so that a `:free`
    /// row and its paid twin share one, as on OpenRouter.
    std::string canonical_slug;
    /// More members of the row's `pricing`, by name, each written as the JSON text given
    /// (`"\"0.00002\""`, `"0.5"`, `"[]"`): prices frugal must read, or refuse. A decimal string
    /// under `internal_reasoning` is also what the simulator bills a reasoning token.
    std::vector<std::pair<std::string, std::string>> pricing_extra;
    std::string fault;                  ///< a fault every request to this model gets ("" for none)
    std::uint64_t created = 1767225600; ///< catalog `created`, Unix seconds
};

/// A configured fault: requests matching `model` ("" for any) get `fault`.
struct sim_fault_rule {
    std::string model;
    std::string fault;         ///< a fault name, as in the `[sim fault=...]` directive
    std::uint64_t first_n = 0; ///< only the first N matching requests (0: all)
    double probability = 1.0;  ///< chance per matching request, drawn from the seed
};

/// A recorded answer the simulator gives instead of its own (`frugal sim --outcomes`): asked
/// `prompt` (the last user message, exactly) of `model`, it streams `content` as
/// `completion_tokens` tokens (cut as `frugal::split_tokens` cuts them) and bills them at the
/// model's prices, with `prompt_tokens` for the prompt. Cut at the request's max_tokens as any
/// answer is; the prompt's `[sim ...]` directives and the model's faults still apply.
struct sim_replay {
    std::string prompt;
    std::string model;
    std::string content;
    std::uint64_t completion_tokens = 0;
    std::uint64_t prompt_tokens = 0;
    std::string finish_reason = "stop";
};

/// An API key the simulator knows.
struct sim_key {
    std::string key;
    std::string label = "sim";
    std::optional<std::string> limit; ///< spending limit in USD (decimal string), none if absent
};

/// Everything the simulator can be told. Defaults give the standard catalog with no latency
/// and no faults; `sim_config::demo()` adds realistic latencies.
struct sim_config {
    std::uint64_t seed = 1;
    std::vector<sim_model> models; ///< empty: the standard catalog (docs/simulator.md)
    std::vector<sim_key> keys;
    /// Accept any bearer token as a key without a limit (each token keeps its own usage).
    bool accept_any_key = true;
    std::uint32_t free_requests_per_minute = 20;
    /// The length of the free tier's "minute" window, shorter for tests that watch a quota
    /// come back.
    std::chrono::milliseconds free_window{60'000};
    std::uint32_t free_requests_per_day = 1000;
    /// Timestamps (`created`, generation ids) use this Unix time instead of the clock, so the
    /// same seed and requests give the same bytes.
    std::optional<std::int64_t> fixed_time;
    /// Whole responses start with whitespace keep-alive bytes, as OpenRouter sends them while
    /// the model works (the status line goes out before the result is known).
    bool whitespace_keepalive = false;
    /// The shape of a stream's usage chunk: "2026" (repeats the finish choice), "empty_choices"
    /// (`choices: []`) or "null_finish" (a choice with `finish_reason: null`).
    std::string usage_chunk = "2026";
    /// Keep-alive comments/whitespace are sent this often while the first token is awaited.
    std::chrono::milliseconds keepalive_interval{1000};
    /// `/generation` answers 404 for this long after a generation ends, as OpenRouter does.
    std::chrono::milliseconds generation_visibility_delay{0};
    std::vector<sim_fault_rule> faults;
    /// What a cancelled stream costs on a provider that cannot cancel: "complete_response" (the
    /// tokens the model would have produced, as OpenRouter documents) or "max_tokens" (the
    /// request's whole max_tokens, the worst case a budget must assume).
    std::string uncancellable_billing = "complete_response";
    std::uint64_t max_request_body = std::uint64_t{4} * 1024 * 1024;
    /// How many of the newest generations `/generation` can look up (the bill keeps all).
    std::size_t max_generations = 1'000'000;
    /// Recorded answers, replayed for their prompt and model (the first of two for the same).
    std::vector<sim_replay> replays;

    /// Gives each model that has no latency set the realistic one of the demo (filling in the
    /// standard catalog first when `models` is empty).
    void apply_demo_latency();

    /// The standard catalog with realistic latencies, for demos.
    static sim_config demo();
};

/// Parses a configuration file's JSON (docs/simulator.md) over the defaults. Unknown fields are
/// errors, so a typo cannot silently change nothing. Fails with `error::bad_sim_config`;
/// `diag->message`, when `diag` is given, names the field and why (it is cleared first).
boost::system::result<sim_config>
parse_sim_config(std::string_view json, diagnostics* diag = nullptr);

/// The standard catalog (used when `sim_config::models` is empty).
std::vector<sim_model> standard_sim_models();

/// The simulator server.
///
/// It runs on the executor it is given (one thread drives it; all its state lives there).
/// `start()` binds and begins accepting; `stop()` closes the acceptor and every connection.
///
/// @par Thread safety
/// `start`, `stop` and `port` may be called from any thread; the server itself only runs on
/// its executor.
class simulator {
public:
    /// Creates a simulator serving on `executor`, bound to `host`:`port` (0 picks a free port).
    simulator(
        boost::asio::any_io_executor executor,
        sim_config config = {},
        std::string host = "127.0.0.1",
        std::uint16_t port = 0);
    ~simulator();
    simulator(const simulator&) = delete;
    simulator& operator=(const simulator&) = delete;

    /// Binds and starts accepting. Throws `boost::system::system_error` if binding fails.
    void start();

    /// Stops accepting and closes every connection. Idempotent.
    void stop();

    /// The bound port (after `start`).
    std::uint16_t port() const noexcept;

    /// `http://HOST:PORT/api/v1`.
    std::string base_url() const;

    struct impl; // defined in src/sim

private:
    std::shared_ptr<impl> impl_;
};

/// A simulator on a thread of its own, for tests and tools that drive a client on another
/// thread. Starts in the constructor, stops and joins in the destructor.
class sim_thread {
public:
    explicit sim_thread(
        sim_config config = {}, std::string host = "127.0.0.1", std::uint16_t port = 0);
    ~sim_thread();
    sim_thread(const sim_thread&) = delete;
    sim_thread& operator=(const sim_thread&) = delete;

    std::uint16_t port() const noexcept;
    std::string base_url() const;

private:
    struct impl;
    std::unique_ptr<impl> impl_;
};

} // namespace frugal

#endif // FRUGAL_SIM_HPP
