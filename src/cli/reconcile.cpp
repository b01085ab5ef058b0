// `frugal report --reconcile`: every generation of the ledger looked up on the provider, its
// bill compared with the record; estimates and crash-orphaned reservations settled by proof.
#include "cli/report.hpp"

#include <frugal/budget.hpp>
#include <frugal/chat_client.hpp>
#include <frugal/error.hpp>

#include <boost/asio/as_tuple.hpp>
#include <boost/asio/co_spawn.hpp>
#include <boost/asio/detached.hpp>
#include <boost/asio/io_context.hpp>
#include <boost/asio/steady_timer.hpp>
#include <boost/asio/use_awaitable.hpp>

#include <sstream>

namespace frugal::cli {

namespace asio = boost::asio;
using boost::system::error_code;

namespace {

constexpr auto tuple_awaitable = asio::as_tuple(asio::use_awaitable);

std::int64_t unix_now_ms()
{
    return std::chrono::duration_cast<std::chrono::milliseconds>(
               std::chrono::system_clock::now().time_since_epoch())
        .count();
}

// The caps a ledger was kept under, from its notes: the guard that settles what a lookup
// proves must charge the same budget windows the reservations were made against.
std::vector<budget_spec> caps_of(const std::vector<std::pair<std::string, std::string>>& notes)
{
    std::vector<budget_spec> out;
    for (const auto& [key, value] : notes) {
        if (key.rfind("budget:", 0) != 0)
            continue;
        std::istringstream in(value);
        std::string cap, period;
        in >> cap >> period;
        const auto m = money::parse(cap);
        if (!m)
            continue;
        budget_spec s{key.substr(7), *m, budget_period::none};
        for (auto p : {budget_period::daily, budget_period::weekly, budget_period::monthly})
            if (period == to_string(p))
                s.period = p;
        out.push_back(std::move(s));
    }
    return out;
}

struct lookup {
    std::string generation_id;
    std::int64_t ended_ms = 0; // when the generation ended, near enough
    std::optional<generation_info> found;
    error_code ec;
};

// Looks `l` up, retrying the 404 OpenRouter answers for a while after a generation ends.
asio::awaitable<void>
look_up(chat_client& client, lookup& l, std::chrono::milliseconds not_found_wait)
{
    asio::steady_timer timer(co_await asio::this_coro::executor);
    for (;;) {
        auto [ec, info] = co_await client.async_generation(l.generation_id, tuple_awaitable);
        if (!ec) {
            l.found = std::move(info);
            co_return;
        }
        l.ec = ec;
        const bool young = unix_now_ms() < l.ended_ms + not_found_wait.count();
        if (ec != error::not_found || !young)
            co_return;
        timer.expires_after(std::chrono::milliseconds(500));
        co_await timer.async_wait(tuple_awaitable);
    }
}

} // namespace

bool reconcile_ledger(const reconcile_options& options, reconcile_result& out, std::string& error)
{
    out = {};
    out.ran = true;
    boost::system::error_code ec;
    auto store = open_sqlite_store({options.ledger_path}, ec, error);
    if (!store)
        return false;
    std::vector<std::pair<std::string, std::string>> notes;
    if (store->read_notes(notes)) {
        error = options.ledger_path + ": the notes could not be read";
        return false;
    }
    budget_params bp;
    bp.budgets = caps_of(notes);
    auto guard = budget_guard::open(bp, price_catalog(), store, ec, error);
    if (!guard)
        return false;
    std::vector<attempt_record> records;
    if (guard->read_ledger(0, records)) {
        error = options.ledger_path + ": the ledger could not be read";
        return false;
    }
    const auto open = guard->open_reservations();

    client_params params;
    params.base_url = options.base_url;
    params.api_key = options.api_key;
    if (params.base_url.empty())
        for (const auto& [k, v] : notes)
            if (k == "base_url")
                params.base_url = v;
    asio::io_context io{1};
    chat_client client(io.get_executor(), params);

    // What to look up: billed records with an id, then open reservations with one.
    std::vector<lookup> lookups;
    std::vector<const attempt_record*> for_record;
    std::vector<const reservation_entry*> for_open;
    for (const auto& r : records) {
        if (r.outcome == attempt_outcome::not_sent || r.outcome == attempt_outcome::denied)
            continue;
        if (r.generation_id.empty()) {
            ++out.without_id;
            continue;
        }
        lookups.push_back({r.generation_id, r.time_ms + r.latency_us / 1000, {}, {}});
        for_record.push_back(&r);
        for_open.push_back(nullptr);
    }
    for (const auto& o : open) {
        if (o.generation_id.empty()) {
            ++out.open_left;
            continue;
        }
        lookups.push_back({o.generation_id, o.time_ms, {}, {}});
        for_record.push_back(nullptr);
        for_open.push_back(&o);
    }

    std::size_t next = 0;
    for (std::size_t w = 0; w < std::max<std::size_t>(options.concurrency, 1); ++w)
        asio::co_spawn(
            io,
            [&]() -> asio::awaitable<void> {
                while (next < lookups.size())
                    co_await look_up(client, lookups[next++], options.not_found_wait);
            },
            asio::detached);
    io.run();

    std::size_t refused = 0;
    for (std::size_t i = 0; i < lookups.size(); ++i) {
        auto& l = lookups[i];
        if (!l.found || !l.found->total_cost) {
            if (l.ec == error::unauthorized || l.ec == error::forbidden)
                ++refused;
            out.unverified.push_back(l.generation_id);
            if (for_open[i] != nullptr)
                ++out.open_left;
            continue;
        }
        const money bill = *l.found->total_cost;
        if (const auto* r = for_record[i]) {
            ++out.checked;
            bill_difference d{
                r->record_id, r->generation_id,
                r->model_served.empty() ? r->model_asked : r->model_served, r->cost, bill};
            if (bill == r->cost) {
                ++out.matched;
            } else if (r->estimated && !guard->correct(r->record_id, bill)) {
                out.corrected.push_back(std::move(d));
            } else {
                out.differences.push_back(std::move(d));
            }
            continue;
        }
        const auto& o = *for_open[i];
        ++out.checked;
        attempt_record rec;
        rec.time_ms = o.time_ms;
        rec.request_id = o.request_id;
        rec.generation_id = o.generation_id;
        rec.model_asked = o.model;
        rec.model_served = l.found->model;
        rec.provider = l.found->provider;
        rec.prompt_tokens = l.found->tokens_prompt;
        rec.completion_tokens = l.found->tokens_completion;
        rec.cost = bill;
        rec.outcome =
            l.found->cancelled.value_or(false) ? attempt_outcome::cancelled : attempt_outcome::ok;
        const money held = o.charges.empty() ? money() : o.charges.front().amount;
        if (!guard->settle_open(o.id, rec))
            out.settled.push_back({0, o.generation_id, o.model, held, bill});
        else
            ++out.open_left;
    }
    if (!lookups.empty() && refused == lookups.size()) {
        error = "the provider refused every lookup (a generation is visible only to the key "
                "that made it: set OPENROUTER_API_KEY to that key)";
        return false;
    }
    return true;
}

} // namespace frugal::cli
