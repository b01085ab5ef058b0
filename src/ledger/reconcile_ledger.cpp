// `reconcile_ledger`: the ledger's generations looked up on the provider through a client of
// its own, and each lookup's decision applied to the store.
#include <frugal/ledger.hpp>

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

namespace frugal {

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

struct lookup {
    std::string generation_id;
    std::int64_t ended_ms = 0; // when the generation ended, near enough
    std::optional<generation_info> found;
    error_code ec;
    diagnostics diag; // the client's account of the last failure
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
        l.diag = std::move(diag);
        const bool young = unix_now_ms() < l.ended_ms + not_found_wait.count();
        if (ec != error::not_found || !young)
            co_return;
        timer.expires_after(std::chrono::milliseconds(500));
        co_await timer.async_wait(tuple_awaitable);
    }
}

asio::awaitable<void> look_up_all(
    chat_client& client,
    std::vector<lookup>& lookups,
    std::size_t& next,
    std::chrono::milliseconds not_found_wait)
{
    while (next < lookups.size()) {
        co_await look_up(client, lookups[next++], not_found_wait);
    }
}

// Where the key may be sent: a ledger file names the URL its generations were made against,
// but a file can come from anyone, so only a URL the user already trusts (the default, their
// OPENROUTER_BASE_URL, or loopback) is taken from it without an explicit base URL.
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

error_code fail(diagnostics* diag, std::string message, error_code ec)
{
    if (diag != nullptr)
        diag->message = std::move(message);
    return ec;
}

} // namespace

boost::system::result<reconcile_result>
reconcile_ledger(const reconcile_params& params, diagnostics* diag)
{
    reconcile_result out;
    out.ran = true;
    diagnostics opening;
    // The store itself, not a guard: no process spends from the file while it is held, and a
    // settlement must charge exactly the budget windows each reservation was made against.
    auto opened = open_sqlite_store({params.ledger_path}, &opening);
    if (!opened)
        return fail(diag, opening.message, opened.error());
    auto store = *opened;
    ledger_data data;
    std::vector<ledger_note> notes;
    if (store->read_notes(notes) || store->load(data.state) ||
        store->read_ledger(params.since_ms, data.records)) {
        return fail(
            diag, params.ledger_path + ": the ledger could not be read",
            error::budget_store_failed);
    }
    data.notes = ledger_notes::parse(notes);
    // A fleet's store: its dead processes' reservations were swept into spend in Redis.
    std::vector<swept_reservation> swept;
    if (!params.budget_store_url.empty()) {
        redis_store_params rp;
        rp.url = params.budget_store_url;
        rp.lease = params.budget_lease;
        auto redis = open_redis_store(rp, store, &opening);
        if (!redis)
            return fail(diag, "--budget-store: " + opening.message, redis.error());
        auto shared = *redis;
        if (shared->read_swept(swept)) {
            return fail(
                diag, "--budget-store: the swept reservations could not be read from " + rp.url,
                error::budget_store_failed);
        }
        store = std::move(shared);
    }

    client_params cp;
    cp.base_url = params.base_url;
    cp.api_key = params.api_key;
    if (const auto& noted = data.notes.base_url; cp.base_url.empty() && noted) {
        if (!trusted_url(*noted)) {
            return fail(
                diag,
                "the ledger was written against " + *noted +
                    "; pass --base-url to send your key there",
                error::insecure_url);
        }
        cp.base_url = *noted;
    }
    asio::io_context io{1};
    chat_client client(io.get_executor(), cp);
    out.base_url = client.params().base_url;

    const auto plan = plan_reconcile(data, swept);
    out.without_id = plan.without_id;
    out.open_left = plan.open_left;
    std::vector<lookup> lookups;
    for (const auto& c : plan.checks)
        lookups.push_back({c.generation_id, c.ended_ms, {}, {}, {}});
    std::size_t next = 0;
    for (std::size_t w = 0; w < std::max<std::size_t>(params.concurrency, 1); ++w)
        asio::co_spawn(
            io, look_up_all(client, lookups, next, params.not_found_wait), asio::detached);
    io.run();

    // Nothing answered but errors other than "not yet visible": the provider was not reached
    // (no key, a refused connection, a key that did not make these generations).
    const bool none_answered = std::none_of(lookups.begin(), lookups.end(), [](const auto& l) {
        return l.found.has_value() || l.ec == error::not_found;
    });
    if (!lookups.empty() && none_answered) {
        const auto& l = lookups.front();
        std::string message =
            "no generation could be looked up at " + out.base_url + ": " + l.ec.message();
        const std::string said = l.diag.to_string();
        if (!said.empty())
            message += " (" + said + ")";
        if (l.ec == error::unauthorized || l.ec == error::forbidden)
            message += "; a generation is visible only to the key that made it";
        if (diag != nullptr)
            diag->http_status = l.diag.http_status;
        return fail(diag, std::move(message), l.ec);
    }

    const auto now = unix_now_ms();
    for (std::size_t i = 0; i < lookups.size(); ++i) {
        const auto& check = plan.checks[i];
        const auto* found = lookups[i].found ? &*lookups[i].found : nullptr;
        apply_bill(*store, check, data, swept, decide_bill(check, data, swept, found, now), out);
    }
    return out;
}

} // namespace frugal
