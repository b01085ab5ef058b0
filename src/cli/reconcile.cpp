// `frugal report --reconcile`: every generation of the ledger looked up on the provider, its
// bill compared with the record; estimates and crash-orphaned reservations settled by proof.
#include "cli/report.hpp"

#include <frugal/budget_store.hpp>
#include <frugal/chat_client.hpp>
#include <frugal/error.hpp>

#include <boost/asio/as_tuple.hpp>
#include <boost/asio/co_spawn.hpp>
#include <boost/asio/detached.hpp>
#include <boost/asio/io_context.hpp>
#include <boost/asio/steady_timer.hpp>
#include <boost/asio/use_awaitable.hpp>

#include <algorithm>
#include <cstdlib>
#include <sstream>

namespace frugal::cli {

namespace asio = boost::asio;
using boost::system::error_code;

namespace {

constexpr auto tuple_awaitable = asio::as_tuple(asio::use_awaitable);

struct lookup {
    std::string generation_id;
    std::int64_t ended_ms = 0; // when the generation ended, near enough
    std::optional<generation_info> found;
    error_code ec;
    std::string detail; // the client's diagnostics of the last failure
};

// Looks `l` up, retrying the 404 OpenRouter answers for a while after a generation ends.
asio::awaitable<void>
look_up(chat_client& client, lookup& l, std::chrono::milliseconds not_found_wait)
{
    asio::steady_timer timer(co_await asio::this_coro::executor);
    for (;;) {
        diagnostics diag;
        auto [ec, info] = co_await client.async_generation(l.generation_id, diag, tuple_awaitable);
        if (!ec) {
            l.found = std::move(info);
            co_return;
        }
        l.ec = ec;
        l.detail = diag.to_string();
        const bool young = unix_now_ms() < l.ended_ms + not_found_wait.count();
        if (ec != error::not_found || !young)
            co_return;
        timer.expires_after(std::chrono::milliseconds(500));
        co_await timer.async_wait(tuple_awaitable);
    }
}

// Where the key may be sent: a ledger file names the URL its generations were made against,
// but a file can come from anyone, so only a URL the user already trusts (the default, their
// OPENROUTER_BASE_URL, or loopback) is taken from it without --base-url.
bool trusted_url(const std::string& url)
{
    if (url == "https://openrouter.ai/api/v1")
        return true;
    // NOLINTNEXTLINE(concurrency-mt-unsafe): read before any thread starts
    if (const char* env = std::getenv("OPENROUTER_BASE_URL"); env != nullptr && url == env)
        return true;
    for (const char* loopback : {"http://127.0.0.1:", "http://localhost:", "http://[::1]:"})
        if (url.rfind(loopback, 0) == 0)
            return true;
    return false;
}

std::uint32_t tier_of(const ledger_notes& notes, const std::string& model)
{
    const auto tiers = noted_tiers(notes);
    const auto it = std::find(tiers.begin(), tiers.end(), model);
    return it == tiers.end() ? 0 : static_cast<std::uint32_t>(it - tiers.begin());
}

} // namespace

bool reconcile_ledger(const reconcile_options& options, reconcile_result& out, std::string& error)
{
    out = {};
    out.ran = true;
    diagnostics diag;
    // The store itself, not a guard: no process spends from the file while it is held, and a
    // settlement must charge exactly the budget windows each reservation was made against.
    auto opened = open_sqlite_store({options.ledger_path}, &diag);
    if (!opened) {
        error = diag.message;
        return false;
    }
    std::shared_ptr<budget_store> store = *opened;
    ledger_notes notes;
    budget_store_state state;
    std::vector<attempt_record> records;
    if (store->read_notes(notes) || store->load(state) ||
        store->read_ledger(options.since_ms, records)) {
        error = options.ledger_path + ": the ledger could not be read";
        return false;
    }
    // A fleet's store: its dead processes' reservations were swept into spend in Redis.
    std::vector<swept_reservation> swept;
    if (!options.budget_store.empty()) {
        redis_store_params rp;
        rp.url = options.budget_store;
        rp.lease = options.budget_lease;
        auto shared = open_redis_store(rp, store, &diag);
        if (!shared) {
            error = "--budget-store: " + diag.message;
            return false;
        }
        if ((*shared)->read_swept(swept)) {
            error = "--budget-store: the swept reservations could not be read from " + rp.url;
            return false;
        }
        store = std::move(*shared);
    }

    client_params params;
    params.base_url = options.base_url;
    params.api_key = options.api_key;
    if (const auto* noted = find_note(notes, "base_url"); params.base_url.empty() && noted) {
        if (!trusted_url(*noted)) {
            error = "the ledger was written against " + *noted +
                    "; pass --base-url to send your key there";
            return false;
        }
        params.base_url = *noted;
    }
    asio::io_context io{1};
    chat_client client(io.get_executor(), params);
    out.base_url = client.params().base_url;

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
        lookups.push_back({r.generation_id, r.time_ms + r.latency_us / 1000, {}, {}, {}});
        for_record.push_back(&r);
        for_open.push_back(nullptr);
    }
    for (const auto& o : state.open) {
        if (o.generation_id.empty()) {
            ++out.open_left;
            continue;
        }
        lookups.push_back({o.generation_id, o.time_ms, {}, {}, {}});
        for_record.push_back(nullptr);
        for_open.push_back(&o);
    }
    std::vector<const swept_reservation*> for_swept(lookups.size(), nullptr);
    for (const auto& sw : swept) {
        if (sw.generation_id.empty()) {
            ++out.open_left;
            continue;
        }
        lookups.push_back({sw.generation_id, 0, {}, {}, {}});
        for_record.push_back(nullptr);
        for_open.push_back(nullptr);
        for_swept.push_back(&sw);
    }

    std::size_t next = 0;
    for (std::size_t w = 0; w < std::max<std::size_t>(options.concurrency, 1); ++w) {
        asio::co_spawn(
            io,
            [&]() -> asio::awaitable<void> {
                while (next < lookups.size()) {
                    co_await look_up(client, lookups[next++], options.not_found_wait);
                }
            },
            asio::detached);
    }
    io.run();

    // Nothing answered but errors other than "not yet visible": the provider was not reached
    // (no key, a refused connection, a key that did not make these generations).
    const bool none_answered = std::none_of(lookups.begin(), lookups.end(), [](const auto& l) {
        return l.found.has_value() || l.ec == error::not_found;
    });
    if (!lookups.empty() && none_answered) {
        const auto& l = lookups.front();
        error = "no generation could be looked up at " + out.base_url + ": " + l.ec.message();
        if (!l.detail.empty())
            error += " (" + l.detail + ")";
        if (l.ec == error::unauthorized || l.ec == error::forbidden)
            error += "; a generation is visible only to the key that made it";
        return false;
    }

    for (std::size_t i = 0; i < lookups.size(); ++i) {
        auto& l = lookups[i];
        if (l.found && !l.found->total_cost_rejected.empty()) {
            // Never written into the books: a negative or unreadable bill proves nothing.
            const auto* r = for_record[i];
            const auto* o = for_open[i];
            out.rejected.push_back(
                {r != nullptr ? r->record_id : 0, l.generation_id,
                 "total_cost was " + l.found->total_cost_rejected,
                 r != nullptr                          ? r->cost
                 : o != nullptr && !o->charges.empty() ? o->charges.front().amount
                                                       : money()});
            if (for_open[i] != nullptr || for_swept[i] != nullptr)
                ++out.open_left;
            continue;
        }
        if (!l.found || !l.found->total_cost) {
            out.unverified.push_back(l.generation_id);
            if (for_open[i] != nullptr || for_swept[i] != nullptr)
                ++out.open_left;
            continue;
        }
        const money bill = *l.found->total_cost;
        ++out.checked;
        if (const auto* r = for_record[i]) {
            bill_difference d{
                r->record_id, r->generation_id,
                r->model_served.empty() ? r->model_asked : r->model_served, r->cost, bill};
            correction c;
            if (r->estimated || bill > r->cost) {
                // Proven, even when the estimate was right: the record stops saying "unknown".
                // A bill above the books is written too, and the record then carries the
                // anomaly (the books are never left below the bill).
                if (store->correct(r->record_id, bill, c))
                    out.differences.push_back(std::move(d));
                else
                    out.corrected.push_back(std::move(d));
            } else if (bill == r->cost) {
                ++out.matched;
            } else {
                out.differences.push_back(std::move(d)); // the books say more than the bill
            }
            continue;
        }
        if (const auto* sw = for_swept[i]) {
            attempt_record rec;
            rec.time_ms = unix_now_ms();
            rec.generation_id = sw->generation_id;
            rec.tier = tier_of(notes, l.found->model);
            rec.model_asked = l.found->model;
            rec.model_served = l.found->model;
            rec.provider = l.found->provider;
            rec.prompt_tokens = l.found->tokens_prompt;
            rec.completion_tokens = l.found->tokens_completion;
            rec.cost = bill;
            rec.outcome = l.found->cancelled.value_or(false) ? attempt_outcome::cancelled
                                                             : attempt_outcome::ok;
            const money held = sw->charges.empty() ? money() : sw->charges.front().amount;
            if (bill > held)
                rec.anomaly = proven_above_booked(bill, held);
            if (store->settle_swept(*sw, rec))
                ++out.open_left;
            else
                out.settled.push_back(
                    {rec.record_id, sw->generation_id, rec.model_asked, held, bill});
            continue;
        }
        const auto& o = *for_open[i];
        attempt_record rec;
        rec.time_ms = o.time_ms;
        rec.request_id = o.request_id;
        rec.generation_id = o.generation_id;
        rec.tier = tier_of(notes, o.model);
        rec.model_asked = o.model;
        rec.model_served = l.found->model;
        rec.provider = l.found->provider;
        rec.prompt_tokens = l.found->tokens_prompt;
        rec.completion_tokens = l.found->tokens_completion;
        rec.cost = bill;
        rec.outcome =
            l.found->cancelled.value_or(false) ? attempt_outcome::cancelled : attempt_outcome::ok;
        // The reservation's own budget windows, charged the proven bill instead of its hold.
        std::vector<budget_charge_view> charges;
        for (const auto& c : o.charges)
            charges.push_back({c.budget, c.window, bill, money(), 0});
        const money held = o.charges.empty() ? money() : o.charges.front().amount;
        if (bill > held)
            rec.anomaly = proven_above_booked(bill, held);
        if (store->settle(o.id, charges, rec))
            ++out.open_left;
        else
            out.settled.push_back({rec.record_id, o.generation_id, o.model, held, bill});
    }
    return true;
}

} // namespace frugal::cli
