// The cascade's decisions without sockets: policy parsing and its errors, judging answers,
// early judgement of partial streams, and the free-tier limiter.

#include <frugal/router.hpp>

#include "cascade/frames.hpp"
#include "cascade/judge.hpp"
#include "cascade_printers.hpp"
#include "printers.hpp"

#include <boost/test/unit_test.hpp>

#include <algorithm>
#if defined(__SANITIZE_ADDRESS__)
#include <sanitizer/asan_interface.h>
#endif
#include <vector>

using frugal::escalation_reason;

namespace {

boost::system::result<frugal::cascade_policy>
parse(const std::string& json, frugal::diagnostics& diag)
{
    auto p = frugal::parse_policy(json, &diag);
    BOOST_TEST(p.has_value() == diag.message.empty());
    if (!p)
        BOOST_TEST(p.error() == frugal::error::bad_policy);
    return p;
}

frugal::cascade_policy all_conditions()
{
    frugal::cascade_policy p;
    p.tiers = {"a:free", "b"};
    p.escalate_on = {escalation_reason::length,   escalation_reason::empty,
                     escalation_reason::error,    escalation_reason::timeout,
                     escalation_reason::refusal,  escalation_reason::invalid_json,
                     escalation_reason::too_short};
    p.min_chars = 5;
    return p;
}

frugal::chat_response answer(std::string content, std::string finish = "stop")
{
    frugal::chat_response r;
    r.content = std::move(content);
    r.finish_reason = std::move(finish);
    return r;
}

} // namespace

BOOST_AUTO_TEST_SUITE(cascade_policy)

BOOST_AUTO_TEST_CASE(the_minimal_form_and_the_general_form_parse)
{
    frugal::diagnostics d;
    auto p = parse(
        R"({"cheap":"google/gemma-4-31b-it:free","flagship":"anthropic/claude-fable-5",
                       "escalate_on":["length","empty","error","refusal"],"max_tokens":512})",
        d);
    BOOST_TEST_REQUIRE(p.has_value(), d.message);
    BOOST_TEST(p->tiers.size() == 2u);
    BOOST_TEST(p->tiers[1] == "anthropic/claude-fable-5");
    BOOST_TEST(p->max_tokens == 512u);
    BOOST_TEST(p->escalate_on.size() == 4u);
    p = parse(
        R"({"tiers":["a","b","c"],"escalate_on":["invalid_json","too_short","rate_limited"],
                  "min_chars":20,"json_schema":{"type":"object","required":["x"]},
                  "on_budget_exhausted":"fail","hedge_after_ms":250,
                  "refusal_patterns":["NO WAY"],
                  "free_tier":{"per_minute":5,"per_day":7,"when_empty":"wait","max_wait_ms":900}})",
        d);
    BOOST_TEST_REQUIRE(p.has_value(), d.message);
    BOOST_TEST(p->tiers.size() == 3u);
    BOOST_TEST(p->min_chars == 20u);
    BOOST_TEST((p->budget_exhausted == frugal::on_budget_exhausted::fail));
    BOOST_TEST(p->hedge_after.count() == 250);
    BOOST_TEST(p->refusal_patterns.at(0) == "no way"); // matched case-insensitively
    BOOST_TEST(p->free_tier.per_minute == 5u);
    BOOST_TEST(p->free_tier.per_day == 7u);
    BOOST_TEST(p->free_tier.max_wait.count() == 900);
    BOOST_TEST((p->free_tier.when_empty == frugal::on_free_tier_empty::wait));
    BOOST_TEST(!p->json_schema.empty());
}

BOOST_AUTO_TEST_CASE(errors_name_the_member_and_why)
{
    const std::pair<const char*, const char*> cases[] = {
        {"[1,2]", "must be a JSON object"},
        {"{", "not JSON"},
        {R"({"flagship":"b"})", "\"cheap\" (the first model) is missing"},
        {R"({"cheap":"a"})", "\"flagship\" (the model to escalate to) is missing"},
        {R"({"cheap":"a","flagship":"b","tiers":["c"]})", "not both"},
        {R"({"tiers":[]})", "\"tiers\" must name at least one model"},
        {R"({"tiers":["a",3]})", "\"tiers\" must be an array of strings"},
        {R"({"cheap":"a","flagship":"b","escalate_on":["lenght"]})",
         "unknown condition \"lenght\""},
        {R"({"cheap":"a","flagship":"b","max_tokens":0})", "\"max_tokens\" must be at least 1"},
        {R"({"cheap":"a","flagship":"b","max_tokens":-5})", "\"max_tokens\" must be a whole"},
        {R"({"cheap":"a","flagship":"b","max_token":5})", "unknown member \"max_token\""},
        {R"({"cheap":"a","flagship":"b","on_budget_exhausted":"panic"})",
         "\"on_budget_exhausted\" must be"},
        {R"({"cheap":"a","flagship":"b","free_tier":{"when_empty":"later"}})",
         "\"free_tier.when_empty\" must be"},
        {R"({"cheap":"a","flagship":"b","json_schema":"x"})", "\"json_schema\" must be"},
        {R"({"cheap":"","flagship":"b"})", "\"cheap\" must be a non-empty string"},
        // Read strictly: the later of two would win without a word.
        {R"({"cheap":"a","flagship":"b","max_tokens":10,"max_tokens":20})",
         "max_tokens is written twice"},
        {R"({"tiers":["a","b"],"free_tier":{"per_minute":1e999}})",
         "free_tier.per_minute is a number out of range"},
    };
    for (const auto& [json, why] : cases) {
        frugal::diagnostics d;
        BOOST_TEST(!parse(json, d).has_value(), json);
        BOOST_TEST(d.message.find(why) != std::string::npos, json << " gave: " << d.message);
        BOOST_TEST(d.message.rfind("policy: ", 0) == 0u);
    }
}

BOOST_AUTO_TEST_SUITE_END()

BOOST_AUTO_TEST_SUITE(cascade_judge)

BOOST_AUTO_TEST_CASE(each_condition_is_recognised_and_only_when_enabled)
{
    const auto p = all_conditions();
    frugal::chat_request req;
    using frugal::detail::judge;
    BOOST_TEST(judge(p, req, answer("A fine answer.")) == escalation_reason::none);
    BOOST_TEST(judge(p, req, answer("A fine ans", "length")) == escalation_reason::length);
    BOOST_TEST(judge(p, req, answer("  \n ")) == escalation_reason::empty);
    auto reasoning_only = answer("");
    reasoning_only.reasoning = "thinking...";
    BOOST_TEST(judge(p, req, reasoning_only) == escalation_reason::empty);
    BOOST_TEST(
        judge(p, req, answer("I'm sorry, but I can't help with that.")) ==
        escalation_reason::refusal);
    BOOST_TEST(
        judge(p, req, answer("I\xE2\x80\x99m sorry, but I can\xE2\x80\x99t do it")) ==
        escalation_reason::refusal); // typographic apostrophes
    BOOST_TEST(judge(p, req, answer("Hi.")) == escalation_reason::too_short);
    req.response_format = "json_object";
    BOOST_TEST(judge(p, req, answer("{\"answer\":\"x\"")) == escalation_reason::invalid_json);
    BOOST_TEST(judge(p, req, answer("{\"answer\":\"x\"}")) == escalation_reason::none);

    auto only_length = p;
    only_length.escalate_on = {escalation_reason::length};
    BOOST_TEST(judge(only_length, req, answer("")) == escalation_reason::none);
    BOOST_TEST(judge(only_length, req, answer("x", "length")) == escalation_reason::length);
}

BOOST_AUTO_TEST_CASE(a_json_schema_is_checked)
{
    auto p = all_conditions();
    p.json_schema = R"({"type":"object","required":["answer"],
        "properties":{"answer":{"type":"string"},"n":{"type":"integer"},
                      "tags":{"type":"array","items":{"enum":["a","b"]}}}})";
    frugal::chat_request req;
    req.response_format = "json_schema";
    using frugal::detail::judge;
    BOOST_TEST(
        judge(p, req, answer(R"({"answer":"x","n":3,"tags":["a"]})")) == escalation_reason::none);
    BOOST_TEST(judge(p, req, answer(R"({"n":3})")) == escalation_reason::invalid_json);
    BOOST_TEST(judge(p, req, answer(R"({"answer":1})")) == escalation_reason::invalid_json);
    BOOST_TEST(
        judge(p, req, answer(R"({"answer":"x","n":1.5})")) == escalation_reason::invalid_json);
    BOOST_TEST(
        judge(p, req, answer(R"({"answer":"x","tags":["c"]})")) == escalation_reason::invalid_json);
}

BOOST_AUTO_TEST_CASE(user_predicates_and_errors)
{
    auto p = all_conditions();
    p.predicates.push_back([](const frugal::chat_request&, const frugal::chat_response& r) {
        return r.content.find("42") != std::string::npos;
    });
    frugal::chat_request req;
    BOOST_TEST(
        frugal::detail::judge(p, req, answer("The answer is 42.")) == escalation_reason::none);
    BOOST_TEST(
        frugal::detail::judge(p, req, answer("The answer is 41.")) == escalation_reason::predicate);
    using frugal::detail::judge_error;
    BOOST_TEST(judge_error(p, frugal::error::upstream_unavailable) == escalation_reason::error);
    BOOST_TEST(judge_error(p, frugal::error::timeout) == escalation_reason::timeout);
    // rate_limited is not enabled: "error" covers it.
    BOOST_TEST(judge_error(p, frugal::error::rate_limited) == escalation_reason::error);
    p.escalate_on = {escalation_reason::length};
    BOOST_TEST(judge_error(p, frugal::error::rate_limited) == escalation_reason::none);
}

BOOST_AUTO_TEST_CASE(partial_answers_are_judged_early)
{
    const auto p = all_conditions();
    using frugal::detail::judge_early;
    BOOST_TEST(judge_early(p, false, "I'm sorry, but I can't") == escalation_reason::refusal);
    BOOST_TEST(judge_early(p, false, "I'm sorry, but") == escalation_reason::none);
    BOOST_TEST(judge_early(p, false, "Here is the proof") == escalation_reason::none);
    BOOST_TEST(judge_early(p, true, "  {\"ans") == escalation_reason::none);
    BOOST_TEST(judge_early(p, true, "Sure! {") == escalation_reason::invalid_json);
    // A refusal beyond the first 160 characters is a quotation, not a refusal.
    BOOST_TEST(
        judge_early(p, false, std::string(200, 'x') + "I'm sorry, but I can't") ==
        escalation_reason::none);
    BOOST_TEST(judge_early(p, false, "Well. I'M SORRY, BUT I CAN'T") == escalation_reason::refusal);
}

// The refusal search (a filter over sixteen positions at a time) finds exactly what comparing
// every pattern at every position of the window finds: random texts over the letters patterns
// are made of, typographic apostrophes and upper case included, one-letter patterns, and more
// patterns than the filter holds.
BOOST_AUTO_TEST_CASE(the_refusal_search_agrees_with_comparing_everywhere)
{
    auto reference = [](const std::vector<std::string>& pats, std::string_view text) {
        for (std::size_t i = 0; i < std::min<std::size_t>(text.size(), 160); ++i) {
            for (const auto& pat : pats) {
                std::size_t j = i;
                bool ok = !pat.empty();
                for (const char want : pat) {
                    if (j >= text.size()) {
                        ok = false;
                        break;
                    }
                    if (want == '\'' && text.compare(j, 3, "\xE2\x80\x99") == 0) {
                        j += 3;
                        continue;
                    }
                    const char c = text[j] >= 'A' && text[j] <= 'Z' ? text[j] - 'A' + 'a' : text[j];
                    if (c != want) {
                        ok = false;
                        break;
                    }
                    ++j;
                }
                if (ok)
                    return true;
            }
        }
        return false;
    };
    // Bytes that fold (with 0x20 set) onto a pattern's bytes without being them, as 0x07 onto
    // an apostrophe, 0xC2 onto 0xE2 and NUL onto a space: the filter lets them by, the
    // comparison must not.
    const std::vector<std::string> pieces{
        "i", "I", "'", "\xE2\x80\x99", "\xE2\x80\x9C", "m", "M", " ", "a", "n", "x", ".",
        "\x07", "\xC2", std::string(1, '\0'), "\xC2\xA0"};
    std::vector<std::vector<std::string>> pattern_sets{
        {"i'm", "i am", "an"}, {"x"}, {"'m", "n a"}, {"\xE2\x80\x9Ci", "'m"},
        {"i'm", "i am", "n", "'", "x."}, {}};
    for (int k = 0; k < 17; ++k) // more than the tables hold
        pattern_sets.back().push_back(std::string(1, static_cast<char>('b' + k)) + "x");
    pattern_sets.back().push_back("i'm");
    pattern_sets.back().push_back("'m"); // an apostrophe first, typographic in the text too
    std::uint64_t state = 42;
    auto next = [&] {
        state = state * 6364136223846793005ULL + 1442695040888963407ULL;
        return static_cast<std::size_t>(state >> 33);
    };
    int found = 0;
    for (const auto& pats : pattern_sets) {
        frugal::cascade_policy p;
        p.tiers = {"a", "b"};
        p.escalate_on = {escalation_reason::refusal};
        p.refusal_patterns = pats;
        for (int n = 0; n < 3000; ++n) {
            std::string text;
            const std::size_t len = n % 2 == 0 ? next() % 12 : next() % 120; // past the window too
            for (std::size_t i = 0; i < len; ++i)
                text += pieces[next() % pieces.size()];
            const bool want = reference(pats, text);
            found += want ? 1 : 0;
            const bool got = frugal::detail::judge_early(p, false, text) == escalation_reason::refusal;
            BOOST_TEST(got == want, "patterns " << pats.size() << ", text \"" << text << '"');
        }
    }
    BOOST_TEST(found > 100); // the texts do hold refusals
}

BOOST_AUTO_TEST_CASE(the_prompt_bound_covers_every_byte_of_text)
{
    frugal::chat_request req;
    req.messages.push_back({.role = "user", .content = std::string(1000, 'x')});
    req.extra_body = R"({"tools":[]})";
    BOOST_TEST(frugal::prompt_bound(req) >= 1000u + 4u + req.extra_body.size());
}

BOOST_AUTO_TEST_SUITE_END()

BOOST_AUTO_TEST_SUITE(free_tier_limiter)

BOOST_AUTO_TEST_CASE(a_sliding_minute_a_utc_day_and_retry_after)
{
    frugal::free_tier_limits l;
    l.per_minute = 2;
    l.per_day = 3;
    frugal::detail::free_tier_limiter lim(l, true);
    const std::int64_t day = 86'400'000;
    const std::int64_t t0 = 20'000 * day + 1000;
    BOOST_TEST(lim.acquire(t0) == 0);
    BOOST_TEST(lim.acquire(t0 + 10) == 0);
    BOOST_TEST(lim.acquire(t0 + 20) == 60'000 - 20); // the first leaves the window then
    BOOST_TEST(lim.acquire(t0 + 60'000) == 0);       // the third of the day
    BOOST_TEST(lim.acquire(t0 + 200'000) == day - 1000 - 200'000); // until 00:00 UTC
    BOOST_TEST(lim.acquire(20'001 * day - 1) == 1);                // still the same day
    BOOST_TEST(lim.acquire(20'001 * day) == 0);                    // a new day
    lim.block_until(20'001 * day + 5000);                          // a 429 with Retry-After: 5
    BOOST_TEST(lim.acquire(20'001 * day + 1000) == 4000);
    BOOST_TEST(lim.acquire(20'001 * day + 70'000) == 0);
}

BOOST_AUTO_TEST_CASE(left_at_zero_the_limits_are_openrouters_only_on_openrouter)
{
    const frugal::free_tier_limits l; // per_minute and per_day 0: the server's
    frugal::detail::free_tier_limiter on_openrouter(l, true);
    BOOST_TEST(on_openrouter.per_minute() == 20u);
    BOOST_TEST(on_openrouter.per_day() == 50u);
    frugal::key_info paid;
    paid.is_free_tier = false;
    on_openrouter.learn(paid);
    BOOST_TEST(on_openrouter.per_day() == 1000u);

    // Another endpoint: nothing is held back until it states a limit.
    frugal::detail::free_tier_limiter elsewhere(l, false);
    const std::int64_t t0 = 20'000LL * 86'400'000 + 1000;
    for (int i = 0; i < 500; ++i)
        BOOST_TEST_REQUIRE(elsewhere.acquire(t0 + i) == 0);
    frugal::diagnostics d;
    d.rate_limit.emplace();
    d.rate_limit->limit = 3;
    d.rate_limit->window = "minute";
    d.rate_limit->reset_ms = t0 + 30'000;
    BOOST_TEST(elsewhere.learn(d, t0 + 500) == t0 + 30'000);
    BOOST_TEST(elsewhere.acquire(t0 + 1000) == 29'000); // until the stated reset
    BOOST_TEST(elsewhere.acquire(t0 + 30'000) == 0);    // then the server is asked again
    BOOST_TEST(elsewhere.per_day() == frugal::detail::free_tier_limiter::unknown);
    // The minute's stated count is not made this side's sliding minute: the server's window
    // need not be 60 s long, and its reset already says when to come back.
    BOOST_TEST(elsewhere.per_minute() == frugal::detail::free_tier_limiter::unknown);

    // The day's limit a 429 states is kept, and counted as spent until 00:00 UTC.
    d.rate_limit->window = "day";
    d.rate_limit->limit = 50;
    d.rate_limit->reset_ms = 20'001LL * 86'400'000;
    (void)elsewhere.learn(d, t0 + 40'000);
    BOOST_TEST(elsewhere.per_day() == 50u);
    BOOST_TEST(elsewhere.acquire(t0 + 50'000) == 20'001LL * 86'400'000 - t0 - 50'000);
    BOOST_TEST(elsewhere.acquire(20'001LL * 86'400'000) == 0);

    // A policy's own day stays against the key's status.
    frugal::free_tier_limits fixed;
    fixed.per_day = 7;
    frugal::detail::free_tier_limiter mine(fixed, true);
    mine.learn(paid);
    BOOST_TEST(mine.per_day() == 7u);
    BOOST_TEST(mine.per_minute() == 20u);
}

BOOST_AUTO_TEST_SUITE_END()

// The router's frames: a block given back is the next one taken of its size class on this
// thread, the cache holds no more than its 256 KiB, and a block above 8 KiB is the heap's alone.
BOOST_AUTO_TEST_SUITE(cascade_frames)

BOOST_AUTO_TEST_CASE(a_frame_given_back_is_taken_again_and_the_cache_is_bounded)
{
    using frugal::detail::give_frame;
    using frugal::detail::take_frame;
    void* a = take_frame(5400);
    give_frame(a, 5400);
#if defined(__SANITIZE_ADDRESS__)
    // A cached frame is poisoned: a use after its coroutine ended is reported, as after a free.
    BOOST_TEST(__asan_address_is_poisoned(static_cast<char*>(a) + 100) != 0);
#endif
    BOOST_TEST(take_frame(5500) == a); // the same 256-byte class (5,377 to 5,632 bytes)
    void* b = take_frame(1800);
    BOOST_TEST(b != a);
    give_frame(b, 1800);
    give_frame(a, 5500);
    BOOST_TEST(take_frame(1800) == b);
    BOOST_TEST(take_frame(5400) == a);

    // 100 blocks of 5,632 bytes given back: the cache keeps what fits in 256 KiB, the heap
    // the rest; taken again, every one is a block of its own.
    std::vector<void*> held;
    for (int i = 0; i < 100; ++i)
        held.push_back(take_frame(5600));
    const std::size_t before = frugal::detail::cached_frame_bytes();
    for (void* p : held)
        give_frame(p, 5600);
    const std::size_t kept = frugal::detail::cached_frame_bytes();
    BOOST_TEST(kept <= 256u * 1024);
    BOOST_TEST(kept > before);
    BOOST_TEST(kept + 5632 > 256u * 1024); // filled up to its bound
    std::vector<void*> again;
    for (int i = 0; i < 100; ++i)
        again.push_back(take_frame(5600));
    BOOST_TEST(frugal::detail::cached_frame_bytes() == before);
    std::sort(again.begin(), again.end());
    BOOST_TEST((std::adjacent_find(again.begin(), again.end()) == again.end()));
    for (void* p : again)
        give_frame(p, 5600);
    give_frame(a, 5400);
    give_frame(b, 1800);

    void* big = take_frame(64 * 1024); // above the classes: straight to the heap and back
    give_frame(big, 64 * 1024);
}

BOOST_AUTO_TEST_SUITE_END()
