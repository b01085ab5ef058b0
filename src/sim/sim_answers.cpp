// What the model says: the words of an answer, the ways a model too weak for a prompt answers
// poorly (cut at its length, empty, a refusal, broken JSON), and where a fault strikes its
// delivery.

#include "sim/sim_detail.hpp"

#include <algorithm>
#include <array>
#include <cctype>

namespace frugal::sim {
namespace {

// 64-bit FNV-1a: a stable hash, so answers depend only on the seed, the model and the prompt.
std::uint64_t fnv1a(std::string_view s, std::uint64_t h = 14695981039346656037ULL)
{
    for (const char c : s) {
        h ^= static_cast<unsigned char>(c);
        h *= 1099511628211ULL;
    }
    return h;
}

// How hard a prompt is (docs/simulator.md): 1, +1 from 15 words, +2 more from 40 words, +3 when
// it asks for reasoning, +2 more when it asks in several ways; at most 10.
int derive_difficulty(std::string_view prompt)
{
    std::size_t words = 0;
    bool in_word = false;
    for (const char c : prompt) {
        const bool space = std::isspace(static_cast<unsigned char>(c)) != 0;
        if (!space && !in_word)
            ++words;
        in_word = !space;
    }
    int d = 1;
    if (words >= 15)
        d += 1;
    if (words >= 40)
        d += 2;
    static constexpr std::array<std::string_view, 9> markers = {
        "prove",      "derive",   "step by step", "theorem", "optimal",
        "complexity", "rigorous", "analyze",      "analyse"};
    const std::string text = lower(prompt);
    int found = 0;
    for (const auto m : markers)
        found += text.find(m) != std::string::npos ? 1 : 0;
    if (found >= 1)
        d += 3;
    if (found >= 2)
        d += 2;
    return std::min(d, 10);
}

constexpr std::array<std::string_view, 48> vocabulary = {
    "answer", "model", "cost",   "token", "budget", "free",  "cheap",  "first",  "result", "value",
    "simple", "clear", "number", "graph", "route",  "level", "stream", "reply",  "point",  "method",
    "system", "data",  "case",   "rule",  "order",  "price", "share",  "signal", "small",  "large",
    "fast",   "slow",  "in",     "of",    "the",    "and",   "is",     "to",     "with",   "for",
    "this",   "that",  "each",   "every", "most",   "some",  "one",    "two"};

void add_words(std::vector<piece>& out, std::size_t n, splitmix64& rng, bool capitalize)
{
    out.reserve(out.size() + n + 2);
    for (std::size_t i = 0; i < n; ++i) {
        const std::string_view word = vocabulary[rng() % vocabulary.size()];
        piece& p = out.emplace_back();
        if (i == 0 && capitalize) {
            p.text = word;
            p.text[0] = static_cast<char>(std::toupper(static_cast<unsigned char>(p.text[0])));
        } else {
            // Every word fits std::string's small buffer: no allocation per token.
            p.text += ' ';
            p.text += word;
        }
    }
}

bool native_upper(const std::string& provider)
{
    return starts_with(provider, "Google");
}

} // namespace

void write_answer(
    completion& c,
    const sim_model& model,
    const directives& d,
    const std::string& last_user,
    bool json_mode,
    std::uint64_t max_out,
    std::uint64_t seed)
{
    // The answer: deterministic from the seed, the model and the prompt.
    const std::uint64_t h = fnv1a(last_user, fnv1a(model.id, fnv1a(std::to_string(seed))));
    splitmix64 words(h);
    const int difficulty = d.difficulty.value_or(derive_difficulty(last_user));
    std::string poor = d.poor;
    if (poor.empty() && difficulty > model.capability) {
        static constexpr std::array<std::string_view, 3> modes = {"length", "empty", "refusal"};
        poor = json_mode ? "invalid_json" : std::string(modes[h % modes.size()]);
    }
    std::size_t length = d.tokens.value_or(12 + h % 36);
    std::string finish = "stop";
    if (poor == "length") {
        add_words(c.pieces, max_out, words, true);
        finish = "length";
    } else if (poor == "empty") {
        // A reasoning-only answer: the model thought, then said nothing.
        for (const char* t : {"Let", " me", " think", " about", " this", "..."})
            c.pieces.push_back({t, true});
    } else if (poor == "refusal") {
        for (const char* t :
             {"I'm", " sorry", ",", " but", " I", " can't", " help", " with", " that", "."})
            c.pieces.push_back({t, false});
    } else if (json_mode) {
        c.pieces.push_back({"{\"answer\":\"", false});
        add_words(c.pieces, length, words, true);
        if (poor != "invalid_json")
            c.pieces.push_back({"\"}", false});
    } else {
        add_words(c.pieces, length, words, true);
        c.pieces.push_back({".", false});
    }
    if (c.pieces.size() > max_out) {
        c.pieces.resize(max_out);
        finish = "length";
    }
    c.finish_reason = finish;
    if (native_upper(c.provider))
        c.native_finish_reason = finish == "length" ? "MAX_TOKENS" : "STOP";
    else
        c.native_finish_reason = finish;
}

void plan_delivery(completion& c, const std::string& fault_name, const directives& d)
{
    const std::size_t n = c.pieces.size();
    const std::size_t default_after = n / 2;
    if (fault_name == "cut")
        c.injected = fault::cut;
    else if (fault_name == "stall")
        c.injected = fault::stall;
    else if (fault_name == "malformed-chunk")
        c.injected = fault::malformed_chunk;
    else if (fault_name == "midstream-error")
        c.injected = fault::midstream_error;
    else if (fault_name == "midstream-error-choice")
        c.injected = fault::midstream_error_choice;
    else if (fault_name == "slow-first-token")
        c.time_to_first_token = std::chrono::milliseconds(d.ms.value_or(5000));
    c.after = std::min(d.after.value_or(default_after), n);
    if (c.injected == fault::stall)
        c.stall = std::chrono::milliseconds(d.ms.value_or(3'600'000));
}

} // namespace frugal::sim
