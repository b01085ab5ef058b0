#ifndef FRUGAL_SRC_SIM_SIM_DETAIL_HPP
#define FRUGAL_SRC_SIM_SIM_DETAIL_HPP

// What the engine's source files share, and nothing else sees: sim_engine.cpp decodes a request
// and decides its fate, and hands the prompt's directives, the answer, the bill and the bytes to
// sim_directives.cpp, sim_answers.cpp, sim_billing.cpp and sim_render.cpp.

#include "sim/sim_engine.hpp"

#include <charconv>
#include <cstdint>
#include <optional>
#include <string>
#include <string_view>
#include <system_error>

namespace frugal::sim {

// Directives (sim_directives.cpp) -------------------------------------------------------------

// Directives in a prompt: "[sim key=value key=value]". Later ones override earlier ones.
struct directives {
    std::optional<int> difficulty;
    std::string fault;
    std::optional<std::size_t> after;
    std::optional<std::int64_t> ms;
    std::optional<std::int64_t> retry_after;
    std::optional<std::size_t> tokens;
    std::string poor;
    std::optional<bool> keepalive;
    std::string usage;
    std::string overbill; // USD billed on top of the prices
    std::string cost;     // how usage.cost lies
    std::string served;   // the model the response claims to be from
    std::string tool;     // the answer is a call of this function
};

template <class T>
std::optional<T> number(std::string_view v)
{
    T n{};
    const auto [p, ec] = std::from_chars(v.data(), v.data() + v.size(), n);
    if (ec != std::errc() || p != v.data() + v.size())
        return std::nullopt;
    return n;
}

void parse_directives(std::string_view text, directives& d);

// The error a fault answers with instead of a completion, in chat's convention: a reply, or for
// a dropped connection an empty one with `out` set. None when the fault (if any) strikes later.
std::optional<reply> fault_reply(
    const std::string& fault_name,
    const directives& d,
    const sim_model& model,
    const request& req,
    const std::string& last_user,
    bool whitespace_keepalive,
    outcome& out);

// Answers (sim_answers.cpp) -------------------------------------------------------------------

void write_answer(
    completion& c,
    const sim_model& model,
    const directives& d,
    const std::string& last_user,
    bool json_mode,
    std::uint64_t max_out,
    std::uint64_t seed);

// Runs after write_answer: where a fault strikes depends on the answer's length.
void plan_delivery(completion& c, const std::string& fault_name, const directives& d);

// Billing (sim_billing.cpp) -------------------------------------------------------------------

// What a model bills a reasoning token: its `internal_reasoning` extra, when that is a price.
attodollars reasoning_price_of(const sim_model& m);

// Rendering (sim_render.cpp) ------------------------------------------------------------------

reply error_reply(int status, std::string_view message, std::string_view metadata = {});
std::string provider_metadata(const sim_model& m, std::string_view raw, std::string_view type);

// Text ----------------------------------------------------------------------------------------

std::string lower(std::string_view s); // in sim_engine.cpp

inline std::string to_string(attodollars a)
{
    return format_usd(a);
}

inline bool starts_with(std::string_view s, std::string_view prefix)
{
    return s.substr(0, prefix.size()) == prefix;
}

} // namespace frugal::sim

#endif // FRUGAL_SRC_SIM_SIM_DETAIL_HPP
