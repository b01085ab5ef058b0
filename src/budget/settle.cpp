// What an attempt costs once it ended, for every caller of the guard alike: the router settles
// through this, and so can code that calls the client itself.
#include <frugal/budget.hpp>
#include <frugal/prices.hpp>

#include "budget/guard_impl.hpp"

#include <boost/asio/error.hpp>

#include <algorithm>
#include <initializer_list>

namespace frugal {

namespace {

// A tenth of what an answer's tokens cost at the cheapest rates the model lists (prompt or
// cache read; completion, reasoning or media): no honest bill for them is lower, discounts
// included. A rate of 0 (free text output, say) sets no floor.
money token_floor(const model_price& p, const usage& u) noexcept
{
    const auto cheapest = [](money rate, std::initializer_list<money> others) {
        for (const money r : others) {
            if (r > money() && r < rate)
                rate = r;
        }
        return rate;
    };
    const money in = cheapest(p.prompt, {p.cache_read});
    const money out = cheapest(p.completion, {p.internal_reasoning, p.media_output});
    const money all = detail::saturating_fma(
        out, u.completion_tokens, detail::saturating_fma(in, u.prompt_tokens, money()));
    return money::from_units(all.units() / 10);
}

} // namespace

std::optional<money> price_catalog::booked_cost(
    std::string_view model_asked, const chat_response& response, std::string& anomaly) const
{
    const auto& u = response.usage;
    const std::string_view served =
        response.model.empty() ? model_asked : std::string_view(response.model);
    const auto* asked_price = find(model_asked);
    const bool asked_free = asked_price != nullptr && asked_price->free();
    if (u && u->cost) {
        // A paid model reporting exactly $0 for tokens it served, without BYOK, reports no
        // bill frugal can take; nor does one reporting less than a tenth of what its tokens
        // cost at the cheapest rates it lists (token_floor: a picodollar gets around no rule).
        const bool paid = !asked_free && !u->is_byok.value_or(false);
        const bool zero_for_paid =
            paid && *u->cost == money() &&
            (u->prompt_tokens + u->completion_tokens > 0 || !u->tokens_rejected.empty());
        if (!zero_for_paid) {
            const bool priced = paid && asked_price != nullptr && asked_price->known();
            if (!priced ||
                (u->tokens_rejected.empty() && *u->cost >= token_floor(*asked_price, *u)))
                return *u->cost;
            // The cost or the counts lie (more tokens than were allowed, say), or the counts
            // cannot say what the cost should at least be: the bill is unknown. It is held at
            // the reservation, and never below the cost reported (settle).
            anomaly =
                u->tokens_rejected.empty()
                    ? "usage.cost was " + u->cost->to_string() + " for " +
                          std::to_string(u->prompt_tokens) + " prompt and " +
                          std::to_string(u->completion_tokens) +
                          " completion tokens, under a tenth of their listed price"
                    : "usage.cost was " + u->cost->to_string() + " beside " + u->tokens_rejected;
            return std::nullopt;
        }
        anomaly = "usage.cost was 0 for a paid model without BYOK";
    } else if (u && !u->cost_rejected.empty()) {
        anomaly = "usage.cost was " + u->cost_rejected;
    }
    if (!u) // no tokens to price: free only when the model asked is
        return asked_free ? std::optional<money>(money()) : std::nullopt;
    if (!u->tokens_rejected.empty() && !asked_free) {
        // No count prices the bill, at the model asked or at any the answer names (a :free
        // one would price it at 0): it is unknown, and the record says why.
        anomaly = anomaly.empty() ? u->tokens_rejected : anomaly + "; " + u->tokens_rejected;
        return std::nullopt;
    }
    // The served model is most often the one asked: its row is then not looked up again.
    const auto by_asked = detail::token_cost(asked_price, *u);
    const auto by_served =
        detail::token_cost(served == model_asked ? asked_price : find(served), *u);
    if (by_asked && by_served)
        return std::max(*by_asked, *by_served);
    if (by_asked)
        return *by_asked;
    if (by_served && !asked_free)
        return *by_served;
    return std::nullopt;
}

std::uint64_t prompt_bound(const chat_request& req) noexcept
{
    constexpr std::uint64_t per_message = 16; // role markers and separators of a chat template
    std::uint64_t n = 64 + req.extra_body.size() + req.response_schema.size();
    for (const auto& m : req.messages) {
        n += per_message + m.role.size() + m.content.size() + m.name.size() + m.tool_call_id.size();
        for (const auto& t : m.tool_calls)
            n += per_message + t.id.size() + t.name.size() + t.arguments.size();
    }
    return n;
}

boost::system::error_code settle(
    reservation& res,
    const boost::system::error_code& ec,
    const chat_response* response,
    const diagnostics& diag,
    attempt_record& record)
{
    record.anomaly.clear();
    record.estimated = false;
    record.cost = money();
    bool unknown = false;
    if (!ec && response != nullptr) {
        record.outcome = attempt_outcome::ok;
        if (response->usage) {
            record.prompt_tokens = response->usage->prompt_tokens;
            record.completion_tokens = response->usage->completion_tokens;
        }
        if (record.model_served.empty())
            record.model_served = response->model;
        if (record.provider.empty())
            record.provider = response->provider;
        if (record.generation_id.empty())
            record.generation_id = response->id;
        const auto booked =
            res.guard_ != nullptr
                ? res.guard_->booked_cost(res.slot_, record.model_asked, *response, record.anomaly)
                : std::nullopt;
        if (booked)
            record.cost = *booked;
        else if (response->usage && response->usage->cost)
            record.cost = *response->usage->cost; // refused as the bill, kept as its least
        if (!booked)
            unknown = true; // no usage and no price: charged its reservation
        // More completion tokens than the request allowed is not a count a provider can bill:
        // its report is a lie or a fault, and the books are then never lowered by it.
        if (res.active() && res.max_tokens() != 0 && record.completion_tokens > res.max_tokens()) {
            std::string what = "the provider reported " +
                               std::to_string(record.completion_tokens) +
                               " completion tokens where at most " +
                               std::to_string(res.max_tokens()) + " were allowed";
            record.anomaly = record.anomaly.empty() ? what : record.anomaly + "; " + what;
        }
    } else if (!diag.request_sent) {
        record.outcome = attempt_outcome::not_sent; // nothing reached the provider: free
    } else if (diag.http_status >= 400) {
        record.outcome = attempt_outcome::error; // OpenRouter does not bill a refused request
    } else {
        // Cut, timed out or cancelled after sending: the bill is unknown.
        record.outcome = ec == boost::asio::error::operation_aborted ? attempt_outcome::cancelled
                                                                     : attempt_outcome::unknown;
        unknown = true;
    }
    if (record.generation_id.empty())
        record.generation_id = diag.generation_id;
    if (!res.active())
        return {};
    if (record.outcome == attempt_outcome::not_sent) {
        res.release();
        return {};
    }
    res.mark_sent();
    return unknown ? res.settle_unknown(record) : res.settle(record);
}

} // namespace frugal
