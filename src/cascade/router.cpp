// The router and the streamed cascade's handle (their public members), and the whole
// cascade: `router_impl::complete` drives the cascade's machine over attempts.
#include <frugal/router.hpp>

#include <frugal/ledger_notes.hpp>

#include "cascade/router_impl.hpp"

#include <boost/asio/append.hpp>
#include <boost/asio/bind_cancellation_slot.hpp>
#include <boost/asio/co_spawn.hpp>
#include <boost/asio/dispatch.hpp>
#include <boost/asio/post.hpp>
#include <boost/asio/this_coro.hpp>

#include <algorithm>
#include <cctype>
#include <span>

namespace frugal {

namespace detail {

namespace {

// OpenRouter's documented free-tier limits hold only for OpenRouter; another endpoint's are
// learnt from what it says.
bool talks_to_openrouter(const chat_client& c)
{
    // The host of "https://host[:port]/path" (the client has checked the URL's form).
    std::string_view url = c.params().base_url;
    if (const auto scheme = url.find("://"); scheme != std::string_view::npos)
        url.remove_prefix(scheme + 3);
    url = url.substr(0, url.find_first_of("/:?#"));
    std::string host(url);
    for (auto& ch : host)
        ch = static_cast<char>(std::tolower(static_cast<unsigned char>(ch)));
    constexpr std::string_view domain = "openrouter.ai";
    return host == domain ||
           (host.size() > domain.size() && host.ends_with(domain) &&
            host[host.size() - domain.size() - 1] == '.');
}

} // namespace

// An `async_complete` in progress: its handler and the result being built.
struct complete_op {
    using handler_type = asio::any_completion_handler<void(error_code, cascade_result)>;
    // Constructed, not assigned: Asio 1.81's any_completion_handler has no move assignment,
    // and assigning one to another wraps it in itself.
    explicit complete_op(handler_type h) : handler(std::move(h)) {}
    handler_type handler;
    // As the awaitable form returns it, so that it is moved out whole, once.
    std::tuple<error_code, cascade_result> outcome;
    error_code& ec() { return std::get<0>(outcome); }
    cascade_result& result() { return std::get<1>(outcome); }
};

router_impl::router_impl(
    chat_client& c, cascade_policy p, price_catalog prices, std::optional<budget_guard> g)
    : client(&c), policy(std::move(p)), prices(g ? g->prices() : std::move(prices)),
      guard(std::move(g)), limiter(policy.free_tier, talks_to_openrouter(c)),
      free_tier(policy.tiers.size()), tier_price(policy.tiers.size())
{
    for (auto& pat : policy.refusal_patterns) // matched against lower-cased text
        for (auto& c : pat)
            c = static_cast<char>(std::tolower(static_cast<unsigned char>(c)));
    refusals = refusal_finder(policy.refusal_patterns);
    refresh_prices();
    note_policy();
}

// Takes the guard's catalog when it changed (true then), and which tiers are free under it.
bool router_impl::refresh_prices()
{
    if (free_known && !guard)
        return false;
    if (guard) {
        auto now = guard->prices();
        if (free_known && now.same_as(prices))
            return false;
        prices = std::move(now);
    }
    free_known = true;
    for (std::size_t i = 0; i < policy.tiers.size(); ++i) {
        const auto& t = policy.tiers[i];
        const auto* price = prices.find(t);
        tier_price[i] = price;
        free_tier[i] = price != nullptr
                           ? price->free()
                           : t.size() > 5 && t.compare(t.size() - 5, 5, ":free") == 0;
    }
    return true;
}

// Reports compare the traffic with the top tier alone: the ledger keeps the tiers and
// their prices beside the records. A note that cannot be written costs the report its
// comparison, not the caller a request.
void router_impl::note_policy()
{
    if (!guard)
        return;
    ledger_notes notes;
    notes.tiers = policy.tiers;
    for (const auto& t : policy.tiers)
        if (const auto* p = prices.find(t))
            notes.prices.insert_or_assign(t, noted_price{p->prompt, p->completion, p->request});
    for (const auto& [key, value] : notes.format_tiers())
        (void)guard->annotate(key, value);
}

std::uint64_t router_impl::new_request_id()
{
    return guard ? guard->new_request_id() : next_request_id++;
}

std::uint32_t router_impl::max_tokens(const std::optional<std::uint32_t>& asked) const
{
    return asked.value_or(policy.max_tokens);
}

// The tier a request starts at: a user rule, or past tiers whose context cannot hold it.
std::uint32_t router_impl::first_tier(const chat_request& req, escalation_reason& why) const
{
    std::uint32_t t = 0;
    if (policy.route) {
        t = std::min<std::uint32_t>(
            policy.route(req), static_cast<std::uint32_t>(policy.tiers.size() - 1));
        if (t > 0)
            why = escalation_reason::rule;
    }
    // A typical tokenizer's four bytes a token: an estimate, not the budget's bound.
    const std::uint64_t estimate = prompt_bound(req) / 4 + max_tokens(req.max_tokens);
    while (t + 1 < policy.tiers.size()) {
        const auto* p = tier_price[t];
        if (p == nullptr || !p->context_length || estimate <= *p->context_length)
            break;
        ++t;
        why = escalation_reason::context;
    }
    return t;
}

namespace {

std::shared_ptr<const budget_keys> keys_of(std::vector<std::string> keys)
{
    if (keys.empty())
        return nullptr; // none
    return std::make_shared<budget_keys>(std::move(keys));
}

// A whole cascade's deadline: the caller's cancellation and the timer's both stop it.
struct deadline_state {
    explicit deadline_state(const asio::any_io_executor& ex) : timer(ex) {}
    asio::steady_timer timer;
    asio::cancellation_signal stop;
    bool passed = false;
    bool caller = false; // the caller cancelled first: the deadline has nothing left to say
    bool done = false;   // the cascade ended: nothing may reach its (gone) cancellation handler
};

// The general form of `async_complete`: the cascade in a coroutine of its own, completing on
// the handler's executor, with the deadline's timer and signal when there is one. The result
// is built in the operation, where the handler takes it from: moved once, at completion.
void launch_complete(
    const std::shared_ptr<router_impl>& impl,
    chat_request req,
    cascade_options options,
    asio::any_completion_handler<void(error_code, cascade_result)> handler,
    bool here)
{
    auto slot = asio::get_associated_cancellation_slot(handler);
    auto ex = impl->client->get_executor();
    auto op = std::make_shared<complete_op>(std::move(handler));
    std::shared_ptr<deadline_state> dl;
    if (options.deadline.count() > 0) {
        dl = std::make_shared<deadline_state>(ex);
        if (slot.is_connected())
            slot.assign([dl](asio::cancellation_type) {
                if (dl->done)
                    return;
                dl->caller = !dl->passed;
                // As terminal, whatever its type: the cascade supports terminal alone, and a
                // type co_spawn's state drops would leave it running with its deadline off.
                dl->stop.emit(asio::cancellation_type::terminal);
            });
        dl->timer.expires_after(options.deadline);
        dl->timer.async_wait([dl](error_code ec) {
            if (ec || dl->done || dl->caller)
                return;
            dl->passed = true;
            dl->stop.emit(asio::cancellation_type::terminal);
        });
    }
    asio::co_spawn(
        ex, impl->complete(std::move(req), std::move(options), false, &op->outcome),
        asio::bind_cancellation_slot(
            dl ? dl->stop.slot() : slot,
            [ex, op, dl, slot, here](
                const std::exception_ptr& ep, const std::tuple<error_code, cascade_result>&) mutable {
                if (ep) {
                    op->ec() = asio::error::no_memory; // only bad_alloc and bugs throw in here
                    op->result() = {};
                }
                if (dl) {
                    dl->done = true;
                    dl->timer.cancel();
                    if (slot.is_connected())
                        slot.clear();
                    if (dl->passed && op->ec() == asio::error::operation_aborted)
                        op->ec() = error::timeout;
                }
                // Completes on the handler's executor, moving the result once: co_spawn
                // completes on `ex`, so a handler that runs there is called now.
                if (here)
                    return std::move(op->handler)(op->ec(), std::move(op->result()));
                const auto hex = asio::get_associated_executor(op->handler, ex);
                asio::dispatch(
                    hex, [op] { std::move(op->handler)(op->ec(), std::move(op->result())); });
            }));
}

// The general form's initiation, from the awaiting coroutine. It holds a raw pointer: GCC 12
// may destroy a temporary of a co_await expression twice, and a shared_ptr there would drop
// a reference it never took (a router freed under its cascades; found by valgrind).
struct launch_initiation {
    router_impl* impl;
    template <class Handler>
    void operator()(Handler&& handler, chat_request req, cascade_options options) const
    {
        const bool here = runs_on(handler, impl->client->get_executor());
        launch_complete(
            impl->shared_from_this(), std::move(req), std::move(options),
            std::forward<Handler>(handler), here);
    }
};

} // namespace

asio::awaitable<std::tuple<error_code, cascade_result>> router_impl::complete(
    chat_request req,
    cascade_options options,
    bool entry,
    std::tuple<error_code, cascade_result>* into)
{
    // The coroutine's cancellation state: the caller's when the cascade runs in it.
    const auto state = co_await asio::this_coro::cancellation_state;
    if (entry) {
        // A deadline has its timer and signal; and from another executor, co_spawn's
        // cancellation handler would reach the cascade by a post, which may come after the
        // cascade ended (Asio 1.81 keeps a raw pointer to its signal there).
        // (The executor is read in a statement of its own: GCC 12 miscompiles a co_await on
        // the right of `||` in some shapes.)
        const auto caller_executor = co_await asio::this_coro::executor;
        if (options.deadline.count() > 0 || caller_executor != client->get_executor()) {
            co_return co_await asio::async_initiate<
                decltype(tuple_awaitable), void(error_code, cascade_result)>(
                launch_initiation{this}, tuple_awaitable, std::move(req), std::move(options));
        }
        // A caller that went on after a cancellation (throw_if_cancelled off) still holds it
        // in its state: the cascade gets a fresh one of its own (co_spawn's), letting only the
        // caller's next terminal cancellation through, or it would end at once.
        if (state.cancelled() != asio::cancellation_type::none) {
            auto [ep, outcome] = co_await asio::co_spawn(
                client->get_executor(), complete(std::move(req), std::move(options), false, nullptr),
                tuple_awaitable);
            if (ep)
                co_return std::tuple<error_code, cascade_result>{asio::error::no_memory, {}};
            co_return std::move(outcome);
        }
        // Otherwise the cascade runs in the awaiting coroutine, under its cancellation state,
        // as `chat_client::chat` does: no coroutine, dispatches and completion of its own.
    }
    // Cancellation is checked where it matters; an await must not throw for it. The setting
    // is the coroutine thread's, the caller's too when the cascade runs in it: put back after.
    const bool throws = co_await asio::this_coro::throw_if_cancelled();
    co_await asio::this_coro::throw_if_cancelled(false);
    std::tuple<error_code, cascade_result> own; // the outcome when not written into `into`
    auto& outcome = into != nullptr ? *into : own;
    cascade_result& out = std::get<1>(outcome);
    bool failed = false;
    try {
        auto keys = keys_of(std::move(options.budget_keys));
        const call_info call{new_request_id(), keys ? std::move(keys) : no_keys};
        if (refresh_prices())
            note_policy();
        escalation_reason pre = escalation_reason::none;
        const std::uint32_t first = first_tier(req, pre);
        cascade_machine m(policy, free_tier, first, pre);
        std::optional<chat_response> fallback; // the answer of m.fallback()
        auto cancelled = [&] { return state.cancelled() != asio::cancellation_type::none; };
        const auto free_deadline = steady_clock::now() + policy.free_tier.max_wait;
        auto step = m.start();
        for (;;) {
            auto before = before_send_now(m, step, free_deadline, call, out.attempts, cancelled());
            if (before.wait != 0)
                before.next = co_await wait_before_send(
                    m, step, before.wait, free_deadline, call, out.attempts);
            if (before.next) {
                step = *before.next;
                continue;
            }
            if (step.what == cascade_step::kind::send) {
                std::vector<attempt_run> runs; // two when hedged
                attempt_head single; // the common case: its answer is decoded into `out`
                if (step.hedge) {
                    runs = co_await hedged(req, step.tier, call, step.arrived_by, m);
                } else {
                    // The cascade's own request becomes the tier's for the attempt, then the
                    // caller's again: the judge and the next tier see what the caller asked.
                    auto caller = enter_tier(req, step.tier);
                    reservation res;
                    const bool reserved =
                        begin_attempt(req, step.tier, call, step.arrived_by, single, res);
                    if (reserved && sends_plainly(res, cancelled())) {
                        // The common attempt, sent from this frame (send_attempt).
                        const auto sent = steady_clock::now();
                        diagnostics diag;
                        auto opts = plain_options(step.tier); // see send_attempt
                        auto [ec] =
                            co_await client->chat(req, out.response, &diag, std::move(opts));
                        single.caller_cancelled = ec == asio::error::operation_aborted;
                        end_attempt(single, step.tier, ec, diag, out.response, res, sent);
                    } else {
                        co_await send_attempt(
                            req, step.tier, call, single, out.response, res, reserved);
                    }
                    leave_tier(req, std::move(caller));
                }
                // The winner is judged last: an acceptable answer beats one cancelled for it.
                if (runs.size() == 2 && acceptable(req, runs[0]) && !acceptable(req, runs[1]))
                    std::swap(runs[0], runs[1]);
                const std::size_t n = runs.empty() ? 1 : runs.size();
                attempt_head* heads[2] = {&single, nullptr};
                chat_response* answers[2] = {&out.response, nullptr};
                for (std::size_t i = 0; i < runs.size(); ++i) {
                    heads[i] = &runs[i];
                    answers[i] = &runs[i].response;
                }
                attempt_end ends[2];
                for (std::size_t i = 0; i < n; ++i)
                    ends[i] = end_of(
                        req, *heads[i], answers[i], cancelled() || heads[i]->caller_cancelled);
                step = m.ended(std::span<attempt_end>(ends, n), steady_clock::now() < free_deadline);
                for (std::size_t i = 0; i < n; ++i) {
                    auto& run = *heads[i];
                    run.rec.moved_on = ends[i].recorded;
                    out.total_cost += run.rec.cost;
                    const std::uint32_t tier = run.rec.tier;
                    out.attempts.push_back(std::move(run.rec)); // the run is done with its record
                    const bool kept = run.answered && step.what == cascade_step::kind::accept &&
                                      tier == step.tier;
                    if (kept) {
                        if (answers[i] != &out.response)
                            out.response = std::move(*answers[i]);
                        continue;
                    }
                    if (run.answered && m.fallback() == tier)
                        fallback = std::move(*answers[i]);
                    if (answers[i] == &out.response) // an answer not kept is not the result's
                        out.response = {};
                }
                if (step.free_wait_over)
                    out.attempts.back().detail += free_wait_note();
                continue;
            }
            // accept, keep or fail: the cascade ended.
            if (step.what != cascade_step::kind::accept && fallback)
                out.response = std::move(*fallback); // kept, or left for a look when failed
            m.fill(out, step);
            std::get<0>(outcome) =
                step.what == cascade_step::kind::fail ? step.error : error_code();
            break;
        }
    } catch (...) {
        failed = true; // only bad_alloc and bugs throw in here
    }
    if (entry)
        co_await asio::this_coro::throw_if_cancelled(throws); // the caller's setting again
    if (failed) {
        // A throw between an attempt's taking the slot and its giving it back would leave a
        // handler there that reaches a signal gone with the attempt's frame.
        if (state.slot().is_connected())
            state.slot().clear();
        outcome = {asio::error::no_memory, {}};
    }
    co_return std::move(own);
}

} // namespace detail

// router

router::router(
    chat_client& client,
    cascade_policy policy,
    price_catalog prices,
    std::optional<budget_guard> guard)
    : impl_(std::make_shared<detail::router_impl>(
          client, std::move(policy), std::move(prices), std::move(guard)))
{
}

router::~router() = default;
router::router(router&&) noexcept = default;
router& router::operator=(router&&) noexcept = default;

const cascade_policy& router::policy() const noexcept
{
    return impl_->policy;
}

void router::learn(const key_info& key)
{
    impl_->limiter.learn(key);
}


asio::any_io_executor router::client_executor() const
{
    return impl_->client->get_executor();
}

asio::awaitable<std::tuple<error_code, cascade_result>>
router::complete_awaitable(chat_request&& req, cascade_options&& options)
{
    // The cascade's own coroutine is what the caller awaits: one frame, the outcome built in
    // it and moved once into the caller's.
    return impl_->complete(std::move(req), std::move(options), true, nullptr);
}

asio::awaitable<std::tuple<error_code, cascade_result>>
router::complete_awaitable(const chat_request& req, cascade_options&& options)
{
    return impl_->complete(req, std::move(options), true, nullptr); // copied into its parameter
}

void router::async_complete_impl(
    chat_request req,
    cascade_options options,
    asio::any_completion_handler<void(error_code, cascade_result)> handler,
    bool here)
{
    detail::launch_complete(impl_, std::move(req), std::move(options), std::move(handler), here);
}

void router::start_stream(
    chat_request request, stream_mode mode, cascade_stream& out, cascade_options options)
{
    auto ex = impl_->client->get_executor();
    auto st = std::make_shared<detail::cascade_stream_state>(ex);
    out.state_ = st;
    if (options.deadline.count() > 0) {
        st->deadline = std::make_unique<asio::steady_timer>(ex, options.deadline);
        st->deadline->async_wait([w = std::weak_ptr(st)](error_code ec) {
            const auto s = w.lock();
            if (ec || !s || s->producer_done || s->finished || s->deadline_passed)
                return;
            s->deadline_passed = true;
            s->stop.emit(asio::cancellation_type::terminal);
        });
    }
    asio::co_spawn(
        ex,
        detail::produce(
            impl_, st, std::move(request), mode, detail::keys_of(std::move(options.budget_keys))),
        asio::bind_cancellation_slot(st->stop.slot(), [st](const std::exception_ptr&) {
            st->producer_done = true;
            if (st->deadline)
                st->deadline->cancel();
        }));
}

// cascade_stream

cascade_stream::cascade_stream() = default;
cascade_stream::~cascade_stream()
{
    if (state_)
        detail::cascade_stream_state::stop_producer(state_); // at its next send or read
}
cascade_stream::cascade_stream(cascade_stream&&) noexcept = default;
cascade_stream& cascade_stream::operator=(cascade_stream&& o) noexcept
{
    if (this != &o) {
        this->~cascade_stream();
        new (this) cascade_stream(std::move(o));
    }
    return *this;
}

asio::any_io_executor cascade_stream::executor() const
{
    return state_ ? state_->executor() : asio::any_io_executor();
}

void cascade_stream::async_next_impl(
    const asio::any_io_executor& ex,
    asio::any_completion_handler<void(error_code, cascade_event)> h)
{
    if (!state_ || (state_->finished && !state_->events.ready())) {
        asio::post(
            ex,
            asio::append(std::move(h), error_code(error::stream_not_readable), cascade_event{}));
        return;
    }
    auto st = state_;
    auto slot = asio::get_associated_cancellation_slot(h);
    // A cancelled read stops the whole cascade: the attempt in flight is abandoned.
    st->events.async_receive(asio::bind_cancellation_slot(
        slot, [st, h = std::move(h)](error_code ec, cascade_event ev) mutable {
            if (ec == asio::experimental::error::channel_cancelled ||
                ec == asio::error::operation_aborted) {
                detail::cascade_stream_state::stop_producer(st);
                st->finished = true;
                ec = asio::error::operation_aborted;
            } else if (ec == asio::experimental::error::channel_closed) {
                ec = error::stream_not_readable;
            }
            if (ec || ev.type == cascade_event::kind::done)
                st->finished = true;
            std::move(h)(ec, std::move(ev));
        }));
}

} // namespace frugal
