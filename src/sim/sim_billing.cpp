// What a request costs and who is told: the prices of reasoning, the free tier's quotas, the
// record of each generation, a key's usage by period, and the bill by model.

#include "sim/sim_detail.hpp"

#include <algorithm>
#include <chrono>
#include <ctime>

namespace frugal::sim {
namespace {

std::string iso8601(std::int64_t unix_seconds)
{
    const auto t = static_cast<std::time_t>(unix_seconds);
    std::tm tm{};
    gmtime_r(&t, &tm);
    char buf[40];
    std::strftime(buf, sizeof buf, "%Y-%m-%dT%H:%M:%S.000000+00:00", &tm);
    return buf;
}

std::int64_t days_since_epoch(std::int64_t unix_seconds)
{
    return unix_seconds >= 0 ? unix_seconds / 86400 : (unix_seconds - 86399) / 86400;
}

} // namespace

attodollars reasoning_price_of(const sim_model& m)
{
    for (const auto& [name, value] : m.pricing_extra) {
        if (name == "internal_reasoning" && value.size() >= 2 && value.front() == '"')
            return parse_usd(std::string_view(value).substr(1, value.size() - 2)).value_or(0);
    }
    return 0;
}

void engine::roll_periods(key_state& k, clock::time_point now) const
{
    const std::int64_t t = unix_now(now);
    const std::int64_t day = days_since_epoch(t);
    const std::int64_t week = (day + 3) / 7; // 1970-01-01 was a Thursday; weeks start on Monday
    const auto tt = static_cast<std::time_t>(t);
    std::tm tm{};
    gmtime_r(&tt, &tm);
    const std::int64_t month = static_cast<std::int64_t>(tm.tm_year) * 12 + tm.tm_mon;
    if (day != k.day) {
        k.day = day;
        k.usage_day = 0;
    }
    if (week != k.week) {
        k.week = week;
        k.usage_week = 0;
    }
    if (month != k.month) {
        k.month = month;
        k.usage_month = 0;
    }
}

std::optional<reply> engine::free_tier_limit(key_state& k, clock::time_point now) const
{
    if (now - k.minute_start >= config_.free_window) {
        k.minute_start = now;
        k.minute_count = 0;
    }
    const std::int64_t day = days_since_epoch(unix_now(now));
    if (day != k.free_day) {
        k.free_day = day;
        k.free_day_count = 0;
    }
    auto limited = [&](std::string_view message, std::uint32_t limit, std::int64_t reset_ms,
                       std::string_view source) {
        reply r = error_reply(
            429, message,
            "{\"headers\":{\"X-RateLimit-Limit\":\"" + std::to_string(limit) +
                "\",\"X-RateLimit-Remaining\":\"0\",\"X-RateLimit-Reset\":\"" +
                std::to_string(reset_ms) + "\"},\"limit_source\":\"" + std::string(source) + "\"}");
        r.headers = {
            {"X-RateLimit-Limit", std::to_string(limit)},
            {"X-RateLimit-Remaining", "0"},
            {"X-RateLimit-Reset", std::to_string(reset_ms)}};
        return r;
    };
    if (k.free_day_count >= config_.free_requests_per_day) {
        return limited(
            "Rate limit exceeded: free-models-per-day. Add 10 credits to unlock 1000 free "
            "model requests per day",
            config_.free_requests_per_day, (day + 1) * 86400 * 1000, "openrouter_free_tier_daily");
    }
    if (k.minute_count >= config_.free_requests_per_minute) {
        const auto reset = std::chrono::duration_cast<std::chrono::milliseconds>(
                               (k.minute_start + config_.free_window).time_since_epoch())
                               .count();
        return limited(
            "Rate limit exceeded: free-models-per-min.", config_.free_requests_per_minute, reset,
            "openrouter_free_tier_minute");
    }
    ++k.minute_count;
    ++k.free_day_count;
    return std::nullopt;
}

void engine::settle(
    const completion& c, std::size_t delivered, bool cancelled, clock::time_point now)
{
    std::size_t billed = std::min(delivered, c.pieces.size());
    // OpenRouter: a provider that cannot cancel keeps generating, and the complete response is
    // billed; one that can stops billing at the cancel.
    if (cancelled && !c.cancel_supported) {
        billed = config_.uncancellable_billing == "max_tokens"
                     ? std::max<std::size_t>(c.max_tokens, c.pieces.size())
                     : c.pieces.size();
    }
    record(c, billed, cancelled, now);
}

void engine::record(
    const completion& c, std::size_t completion_tokens, bool cancelled, clock::time_point now)
{
    generation g;
    g.id = c.id;
    g.model = c.model;
    g.provider = c.provider;
    g.key = c.key;
    g.created = c.created;
    g.streamed = c.stream;
    g.cancelled = cancelled;
    g.finish_reason = cancelled ? "cancelled" : c.finish_reason;
    g.native_finish_reason = c.native_finish_reason;
    g.prompt_tokens = c.prompt_tokens;
    g.completion_tokens = completion_tokens;
    for (std::size_t i = 0; i < completion_tokens && i < c.pieces.size(); ++i)
        g.reasoning_tokens += c.pieces[i].reasoning ? 1 : 0;
    g.cost = c.cost(completion_tokens);
    const auto latency =
        c.time_to_first_token + c.time_per_token * static_cast<std::int64_t>(c.pieces.size());
    g.latency_ms = latency.count();
    // A whole response is billed when it starts; it becomes visible once it would have ended.
    g.visible_at = now + (c.stream ? std::chrono::milliseconds(0) : latency) +
                   config_.generation_visibility_delay;

    auto& b = bill_[c.model];
    ++b.requests;
    b.prompt_tokens += c.prompt_tokens;
    b.completion_tokens += completion_tokens;
    b.cost += g.cost;
    b.cancelled += cancelled ? 1 : 0;

    auto& k = keys_[c.key];
    roll_periods(k, now);
    k.usage += g.cost;
    k.usage_day += g.cost;
    k.usage_week += g.cost;
    k.usage_month += g.cost;

    // Lookups keep the newest generations only, so a long run holds bounded memory; the bill
    // keeps every one.
    generation_order_.push_back(g.id);
    generations_[g.id] = std::move(g);
    while (generation_order_.size() > config_.max_generations) {
        generations_.erase(generation_order_.front());
        generation_order_.pop_front();
    }
}

reply engine::generation_reply(
    std::string_view target, const std::string& key, clock::time_point now) const
{
    std::string id;
    const auto q = target.find('?');
    if (q != std::string_view::npos) {
        std::string_view query = target.substr(q + 1);
        while (!query.empty()) {
            const auto amp = query.find('&');
            const std::string_view item = query.substr(0, amp);
            if (starts_with(item, "id="))
                id = std::string(item.substr(3));
            query = amp == std::string_view::npos ? std::string_view() : query.substr(amp + 1);
        }
    }
    if (id.empty())
        return error_reply(400, "id: required", "{\"error_type\":\"invalid_request\"}");
    const auto it = generations_.find(id);
    // Only the key that made a generation sees it; a fresh one is not visible at once.
    if (it == generations_.end() || it->second.key != key || now < it->second.visible_at)
        return error_reply(
            404, "Generation " + id + " not found", "{\"error_type\":\"not_found\"}");
    const generation& g = it->second;
    const std::string cost = to_string(g.cost);
    std::string b = "{\"data\":{\"id\":\"" + g.id + "\",\"upstream_id\":\"chatcmpl-sim-" +
                    g.id.substr(4) + "\",\"total_cost\":" + cost +
                    ",\"cache_discount\":null,\"upstream_inference_cost\":" + cost +
                    ",\"created_at\":\"" + iso8601(g.created) + "\",\"model\":\"" + g.model +
                    "\",\"app_id\":null,\"streamed\":" + (g.streamed ? "true" : "false") +
                    ",\"cancelled\":" + (g.cancelled ? "true" : "false") + ",\"provider_name\":\"";
    append_json_escaped(b, g.provider);
    b +=
        "\",\"latency\":" + std::to_string(g.latency_ms) +
        ",\"moderation_latency\":null,\"generation_time\":" + std::to_string(g.latency_ms) +
        ",\"finish_reason\":\"" + g.finish_reason +
        "\",\"service_tier\":null,\"tokens_prompt\":" + std::to_string(g.prompt_tokens) +
        ",\"tokens_completion\":" + std::to_string(g.completion_tokens) +
        ",\"native_tokens_prompt\":" + std::to_string(g.prompt_tokens) +
        ",\"native_tokens_completion\":" + std::to_string(g.completion_tokens) +
        ",\"native_tokens_completion_images\":0,\"native_tokens_reasoning\":" +
        std::to_string(g.reasoning_tokens) +
        ",\"native_tokens_cached\":0,\"num_media_prompt\":null,\"num_input_audio_prompt\":null,"
        "\"num_media_completion\":0,\"num_search_results\":null,\"num_fetches\":null,"
        "\"web_search_engine\":null,\"origin\":\"\",\"usage\":" +
        cost + ",\"is_byok\":false,\"native_finish_reason\":\"" + g.native_finish_reason +
        "\",\"external_user\":null,\"api_type\":\"completions\",\"preset_id\":null,\"router\":null,"
        "\"provider_responses\":null,\"user_agent\":null,\"http_referer\":null,\"data_region\":"
        "\"global\","
        "\"workspace_id\":null}}";
    reply r;
    r.body = std::move(b);
    return r;
}

reply engine::key_reply(const std::string& key, clock::time_point now)
{
    key_state& k = keys_[key];
    roll_periods(k, now);
    const std::string limit = k.limit ? to_string(*k.limit) : "null";
    const std::string remaining =
        k.limit ? to_string(std::max<attodollars>(*k.limit - k.usage, 0)) : "null";
    std::string label =
        key.size() > 12 ? key.substr(0, 10) + "..." + key.substr(key.size() - 3) : "sk-or-v1-...";
    std::string b = "{\"data\":{\"label\":\"";
    append_json_escaped(b, label);
    b +=
        "\",\"limit\":" + limit + ",\"limit_remaining\":" + remaining +
        ",\"limit_reset\":null,\"include_byok_in_limit\":false,\"usage\":" + to_string(k.usage) +
        ",\"usage_daily\":" + to_string(k.usage_day) +
        ",\"usage_weekly\":" + to_string(k.usage_week) +
        ",\"usage_monthly\":" + to_string(k.usage_month) +
        ",\"byok_usage\":0,\"byok_usage_daily\":0,\"byok_usage_weekly\":0,\"byok_usage_monthly\":0,"
        // OpenRouter's free tier (never bought credits) is what gives 50 free requests a day:
        // the key's status agrees with the simulator's own daily quota.
        "\"is_free_tier\":" +
        std::string(config_.free_requests_per_day < 1000 ? "true" : "false") +
        ",\"is_management_key\":false,\"is_provisioning_key\":false,\"expires_at\":null,"
        "\"creator_user_id\":\"user_sim\",\"rate_limit\":{\"interval\":\"1h\",\"note\":\"This "
        "field is "
        "deprecated and safe to ignore.\",\"requests\":1000}}}";
    reply r;
    r.body = std::move(b);
    return r;
}

reply engine::bill_reply() const
{
    std::string b = "{\"models\":{";
    model_bill total;
    bool first = true;
    for (const auto& [model, m] : bill_) {
        if (!first)
            b += ',';
        first = false;
        b += "\"" + model + "\":{\"requests\":" + std::to_string(m.requests) +
             ",\"prompt_tokens\":" + std::to_string(m.prompt_tokens) +
             ",\"completion_tokens\":" + std::to_string(m.completion_tokens) +
             ",\"cancelled\":" + std::to_string(m.cancelled) + ",\"cost\":" + to_string(m.cost) +
             ",\"cost_usd\":\"" + to_string(m.cost) + "\"}";
        total.requests += m.requests;
        total.prompt_tokens += m.prompt_tokens;
        total.completion_tokens += m.completion_tokens;
        total.cancelled += m.cancelled;
        total.cost += m.cost;
    }
    b += "},\"total\":{\"requests\":" + std::to_string(total.requests) +
         ",\"prompt_tokens\":" + std::to_string(total.prompt_tokens) +
         ",\"completion_tokens\":" + std::to_string(total.completion_tokens) +
         ",\"cancelled\":" + std::to_string(total.cancelled) +
         ",\"cost\":" + to_string(total.cost) + ",\"cost_usd\":\"" + to_string(total.cost) + "\"}}";
    reply r;
    r.body = std::move(b);
    return r;
}

} // namespace frugal::sim
