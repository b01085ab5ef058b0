#ifndef FRUGAL_EVAL_HPP
#define FRUGAL_EVAL_HPP

/// @file
/// Offline evaluation of a cascade policy on recorded answers: what it would cost and how many
/// answers it would get right, beside the baselines any rule must beat, before a cent is paid.
/// docs/eval.md describes the file formats and the measures.

#include <frugal/diagnostics.hpp>
#include <frugal/money.hpp>
#include <frugal/prices.hpp>
#include <frugal/router.hpp>

#include <boost/system/result.hpp>

#include <cstdint>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

namespace frugal {

/// One model's recorded answer to one prompt.
struct recorded_answer {
    /// The answer's text; none when the file records correctness only (RouteLLM's MMLU).
    std::optional<std::string> content;
    bool correct = false;
    /// Tokens as recorded; none: estimated by `estimate_tokens`.
    std::optional<std::uint64_t> prompt_tokens;
    std::optional<std::uint64_t> completion_tokens;
    std::string finish_reason = "stop";
};

/// A prompt and what each model of the file answered.
struct recorded_prompt {
    std::string prompt;
    /// By `outcome_set::models` index; none when the file has no answer of that model here.
    std::vector<std::optional<recorded_answer>> answers;
    std::size_t line = 0; ///< where the record starts in its file (1-based), for errors
    std::string file;     ///< the file it came from (`read_outcomes`), for errors
};

/// A file of recorded outcomes.
struct outcome_set {
    std::vector<std::string> models; ///< the file's model columns, in the file's order
    std::vector<recorded_prompt> prompts;
    /// Columns of a CSV that are neither the prompt, a model nor a model's response.
    std::vector<std::string> ignored_columns;

    /// The index of `model` among `models`.
    std::optional<std::size_t> model_index(std::string_view model) const noexcept;
    /// Whether every answer recorded has its text (a policy can be judged on them).
    bool has_responses() const noexcept;
    /// Whether every prompt's answer of each of `models` is recorded with its text.
    bool has_responses(const std::vector<std::string>& models) const noexcept;
};

/// Reads RouteLLM's CSV as published: a `prompt` column, one boolean column per model
/// (True/False), optional `<model>_response` columns. A column with a `_response` partner is a
/// model's, and each of its cells must be a boolean; another column is a model's when every
/// cell is one. Fails with `error::bad_outcomes`; `diag->message` names the line and why.
boost::system::result<outcome_set> parse_outcomes_csv(std::string_view text, diagnostics* diag);

/// Reads the JSONL format: one object a line,
/// `{"prompt", "answers": {"<model>": {"content", "correct", "prompt_tokens",
/// "completion_tokens", "finish_reason"}}}` (only `correct` is required of an answer).
boost::system::result<outcome_set> parse_outcomes_jsonl(std::string_view text, diagnostics* diag);

/// Reads a file of either format (by its extension, `.csv` or `.jsonl`); several files are
/// merged in order and must name the same models (in any order).
boost::system::result<outcome_set>
read_outcomes(const std::vector<std::string>& paths, diagnostics* diag);

/// The documented estimate of a text's tokens when the file records none: its UTF-8 bytes / 4,
/// rounded up.
std::uint64_t estimate_tokens(std::string_view text) noexcept;

/// `text` cut into `n` tokens of about equal bytes, each boundary moved forward to the start
/// of a UTF-8 character, so no token splits one (a token may then be empty); only the first
/// `first` of them are returned (a recorded count may be huge: what is never served is never
/// held). The simulator streams a replayed answer as these tokens, and an answer longer than
/// `max_tokens` is cut after the first `max_tokens` of them, live and in `evaluate` alike.
std::vector<std::string_view>
split_tokens(std::string_view text, std::uint64_t n, std::uint64_t first = UINT64_MAX);

/// How one way of routing did over the prompts.
struct eval_measure {
    double accuracy = 0;        ///< share of prompts whose final answer is correct (0..1)
    money cost;                 ///< every call made, the rejected cheap answers included
    double escalated_share = 0; ///< share of prompts answered above the first tier
    /// The share of the cheap→flagship quality gap recovered; none when the two are equal.
    std::optional<double> pgr;
    std::vector<double> by_tier; ///< share of prompts answered by each tier
    std::vector<double> sent_to; ///< share of prompts each tier was called for
};

/// What the policy did with one prompt.
struct eval_decision {
    std::uint32_t tier = 0; ///< the tier whose answer is final
    /// Why it went up from the first tier (none when it did not).
    escalation_reason reason = escalation_reason::none;
    money cost;
    bool correct = false;
};

/// The evaluation of a policy and its baselines over the same prompts.
struct eval_report {
    std::size_t prompts = 0;
    std::vector<std::string> tiers; ///< the policy's
    /// The file has the text of every answer of the policy's tiers: the policy was judged.
    /// Otherwise only the baselines are reported (`policy` and `decisions` are empty), and
    /// `notes` says so.
    bool judged = false;
    eval_measure policy;
    std::vector<eval_decision> decisions; ///< by prompt, in the file's order
    eval_measure always_cheap;            ///< every prompt answered by the first tier
    eval_measure always_flagship;         ///< every prompt sent to the last tier alone
    /// Escalation to the last tier of a fixed-seed random choice of prompts, as many as the
    /// policy escalated (the oracle's count when the policy cannot be judged).
    eval_measure random;
    /// Escalation exactly when only the last tier is right.
    eval_measure oracle;
    std::size_t cut = 0; ///< answers longer than max_tokens, cut there (and counted wrong)
    std::vector<std::string> notes;
};

/// Replays every prompt through `policy` with the live cascade's decisions and judge: a
/// tier's recorded answer is judged, and when the policy escalates the next tier's counts
/// instead. Costs are each call's tokens at `prices` (the prompt, completion and request
/// prices of the catalog row). Fails with `error::bad_outcomes` when a tier is not one of the
/// file's models (the message lists them), a prompt lacks a tier's answer, or a tier has no
/// price (`error::price_unknown`).
boost::system::result<eval_report> evaluate(
    const outcome_set& outcomes,
    const cascade_policy& policy,
    const price_catalog& prices,
    diagnostics* diag = nullptr);

} // namespace frugal

#endif // FRUGAL_EVAL_HPP
