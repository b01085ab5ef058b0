// The simulator's engine without sockets: what it answers, bills and renders.
#include "sim/sim_engine.hpp"
#include "sim/sim_money.hpp"

#include <boost/json.hpp>
#include <boost/test/unit_test.hpp>

#include <string>

namespace json = boost::json;
using namespace std::chrono_literals;
using sim_clock = frugal::sim::clock;

namespace {

const std::string key = "Bearer sk-or-v1-test";

std::string
chat_body(const std::string& model, const std::string& prompt, const std::string& extra = "")
{
    json::object o{
        {"model", model},
        {"messages", json::array{json::object{{"role", "user"}, {"content", prompt}}}}};
    std::string s = json::serialize(o);
    if (!extra.empty())
        s.insert(s.size() - 1, "," + extra);
    return s;
}

struct sim_fixture {
    explicit sim_fixture(frugal::sim_config c = base()) : engine(std::move(c)) {}

    static frugal::sim_config base()
    {
        frugal::sim_config c;
        c.fixed_time = 1795000000;
        return c;
    }

    frugal::sim::outcome
    post(const std::string& body, const std::string& auth = key, sim_clock::time_point at = now0())
    {
        return engine.handle({"POST", "/api/v1/chat/completions", auth, body}, at);
    }
    frugal::sim::reply
    get(const std::string& target, const std::string& auth = key, sim_clock::time_point at = now0())
    {
        auto out = engine.handle({"GET", target, auth, ""}, at);
        BOOST_REQUIRE(std::holds_alternative<frugal::sim::reply>(out));
        return std::get<frugal::sim::reply>(out);
    }
    // A chat that must produce a completion.
    frugal::sim::completion complete(const std::string& body, sim_clock::time_point at = now0())
    {
        auto out = post(body, key, at);
        if (auto* r = std::get_if<frugal::sim::reply>(&out))
            BOOST_FAIL("expected a completion, got " << r->status << ": " << r->body);
        BOOST_REQUIRE(std::holds_alternative<frugal::sim::completion>(out));
        return std::get<frugal::sim::completion>(out);
    }
    frugal::sim::reply refused(const std::string& body, sim_clock::time_point at = now0())
    {
        auto out = post(body, key, at);
        BOOST_REQUIRE(std::holds_alternative<frugal::sim::reply>(out));
        return std::get<frugal::sim::reply>(out);
    }
    json::object bill() { return json::parse(get("/__sim/bill").body).as_object(); }

    static sim_clock::time_point now0()
    {
        return sim_clock::time_point(std::chrono::seconds(1795000000));
    }

    frugal::sim::engine engine;
};

json::object parse_object(const std::string& s)
{
    return json::parse(s).as_object();
}

std::string content_of(const frugal::sim::completion& c)
{
    std::string s;
    for (const auto& p : c.pieces)
        s += p.reasoning ? "" : p.text;
    return s;
}

} // namespace

BOOST_AUTO_TEST_SUITE(sim_money)

BOOST_AUTO_TEST_CASE(parses_and_formats_exactly)
{
    using frugal::sim::format_usd;
    using frugal::sim::parse_usd;
    BOOST_TEST(format_usd(*parse_usd("0.0000000375")) == "0.0000000375");
    BOOST_TEST(format_usd(*parse_usd("3")) == "3");
    BOOST_TEST(format_usd(*parse_usd("0")) == "0");
    BOOST_TEST(format_usd(*parse_usd("-1")) == "-1");
    BOOST_TEST(format_usd(*parse_usd("12.500")) == "12.5");
    BOOST_TEST(format_usd(*parse_usd("0.000000000000000001")) == "0.000000000000000001");
    BOOST_TEST(!parse_usd("1e-6"));
    BOOST_TEST(!parse_usd(".5"));
    BOOST_TEST(!parse_usd("1."));
    BOOST_TEST(!parse_usd("0.0000000000000000001")); // 19 decimals
    // Ten million tiny costs sum exactly.
    frugal::sim::attodollars sum = 0;
    for (int i = 0; i < 10'000'000; ++i)
        sum += *parse_usd("0.0000000375");
    BOOST_TEST(format_usd(sum) == "0.375");
}

BOOST_AUTO_TEST_SUITE_END()

BOOST_AUTO_TEST_SUITE(sim_engine)

BOOST_FIXTURE_TEST_CASE(catalog_has_openrouter_shape, sim_fixture)
{
    const auto r = get("/api/v1/models", "");
    BOOST_TEST(r.status == 200);
    const auto o = parse_object(r.body);
    BOOST_TEST(o.at("links").at("next").is_null());
    const auto& data = o.at("data").as_array();
    BOOST_TEST(o.at("total_count").as_int64() == static_cast<std::int64_t>(data.size()));
    bool free = false, flagship = false, alias = false;
    for (const auto& v : data) {
        const auto& m = v.as_object();
        for (const char* field :
             {"id", "canonical_slug", "name", "created", "pricing", "context_length",
              "architecture", "top_provider", "per_request_limits", "supported_parameters",
              "default_parameters", "links"})
            BOOST_TEST(m.contains(field), m.at("id").as_string() << " lacks " << field);
        BOOST_TEST(m.at("pricing").at("prompt").is_string());
        BOOST_TEST(m.at("pricing").at("completion").is_string());
        BOOST_TEST(m.at("top_provider").at("max_completion_tokens").is_int64());
        const std::string id(m.at("id").as_string());
        if (id == "google/gemma-4-31b-it:free") {
            free = true;
            BOOST_TEST(m.at("pricing").at("prompt").as_string() == "0");
            BOOST_TEST(m.at("pricing").at("completion").as_string() == "0");
        }
        if (id == "anthropic/claude-fable-5") {
            flagship = true;
            BOOST_TEST(m.at("pricing").at("completion").as_string() == "0.000015");
        }
        if (id == "~anthropic/claude-fable-latest") {
            alias = true;
            BOOST_TEST(m.at("alias_target").at("slug").as_string() == "anthropic/claude-fable-5");
            BOOST_TEST(m.at("pricing").at("completion").as_string() == "0.000015");
        }
    }
    BOOST_TEST(free);
    BOOST_TEST(flagship);
    BOOST_TEST(alias);
}

BOOST_FIXTURE_TEST_CASE(authorization_is_required, sim_fixture)
{
    auto out = post(chat_body("anthropic/claude-fable-5", "hi"), "");
    const auto& r = std::get<frugal::sim::reply>(out);
    BOOST_TEST(r.status == 401);
    BOOST_TEST(parse_object(r.body).at("error").at("code").as_int64() == 401);
    BOOST_TEST(get("/api/v1/key", "Basic abc").status == 401);
    BOOST_TEST(get("/api/v1/models", "").status == 200); // the catalog is public
}

BOOST_AUTO_TEST_CASE(unknown_keys_are_refused_when_configured)
{
    auto c = sim_fixture::base();
    c.accept_any_key = false;
    c.keys.push_back({.key = "sk-or-v1-known"});
    sim_fixture f(c);
    BOOST_TEST(f.get("/api/v1/key", "Bearer sk-or-v1-other").status == 401);
    BOOST_TEST(f.get("/api/v1/key", "Bearer sk-or-v1-known").status == 200);
}

BOOST_FIXTURE_TEST_CASE(whole_response_is_billed_at_catalog_prices, sim_fixture)
{
    const auto c = complete(chat_body("anthropic/claude-fable-5", "What is a budget?"));
    BOOST_TEST(c.id.starts_with("gen-1795000000-"));
    BOOST_TEST(c.id.size() == std::string("gen-1795000000-").size() + 20);
    const auto body = parse_object(engine.whole_body(c));
    BOOST_TEST(body.at("object").as_string() == "chat.completion");
    BOOST_TEST(body.at("provider").as_string() == "Anthropic");
    const auto& usage = body.at("usage").as_object();
    const auto prompt = usage.at("prompt_tokens").as_int64();
    const auto completion = usage.at("completion_tokens").as_int64();
    BOOST_TEST(usage.at("total_tokens").as_int64() == prompt + completion);
    // 4 per message + ceil(17 bytes / 4) + 3.
    BOOST_TEST(prompt == 4 + 5 + 3);
    const auto expected = frugal::sim::format_usd(
        prompt * *frugal::sim::parse_usd("0.000003") +
        completion * *frugal::sim::parse_usd("0.000015"));
    const auto b = bill();
    BOOST_TEST(
        b.at("models").at("anthropic/claude-fable-5").at("cost_usd").as_string() == expected);
    BOOST_TEST(b.at("total").at("requests").as_int64() == 1);
    // The cost in the body is that decimal, written as a JSON number.
    BOOST_TEST(engine.whole_body(c).find("\"cost\":" + expected + ",") != std::string::npos);
}

BOOST_FIXTURE_TEST_CASE(request_price_is_billed_per_request, sim_fixture)
{
    const auto c = complete(chat_body("perplexity/sonar", "Look it up"));
    const auto expected = *frugal::sim::parse_usd("0.005") +
                          static_cast<frugal::sim::attodollars>(c.prompt_tokens) *
                              *frugal::sim::parse_usd("0.000001") +
                          static_cast<frugal::sim::attodollars>(c.pieces.size()) *
                              *frugal::sim::parse_usd("0.000001");
    BOOST_TEST(bill().at("total").at("cost_usd").as_string() == frugal::sim::format_usd(expected));
}

BOOST_FIXTURE_TEST_CASE(free_model_costs_nothing, sim_fixture)
{
    const auto c = complete(chat_body("google/gemma-4-31b-it:free", "Hi"));
    BOOST_TEST(engine.whole_body(c).find("\"cost\":0,") != std::string::npos);
    BOOST_TEST(bill().at("total").at("cost_usd").as_string() == "0");
}

BOOST_FIXTURE_TEST_CASE(alias_serves_and_bills_as_its_target, sim_fixture)
{
    const auto c = complete(chat_body("~anthropic/claude-fable-latest", "Hi"));
    BOOST_TEST(c.model == "anthropic/claude-fable-5");
    BOOST_TEST(bill().at("models").as_object().contains("anthropic/claude-fable-5"));
}

BOOST_AUTO_TEST_CASE(same_seed_same_bytes_other_seed_other_bytes)
{
    auto render = [](std::uint64_t seed) {
        auto cfg = sim_fixture::base();
        cfg.seed = seed;
        sim_fixture f(cfg);
        std::string all;
        for (const char* prompt : {"one", "two", "Prove it step by step"}) {
            auto c = f.complete(chat_body("deepseek/deepseek-v3.2", prompt));
            all += f.engine.whole_body(c);
            auto s = f.complete(chat_body("google/gemma-4-31b-it:free", prompt, "\"stream\":true"));
            all += f.engine.whole_stream(s);
        }
        return all;
    };
    BOOST_TEST(render(7) == render(7));
    BOOST_TEST(render(7) != render(8));
}

BOOST_FIXTURE_TEST_CASE(hard_prompts_defeat_weak_models_not_the_flagship, sim_fixture)
{
    const std::string hard = "Prove the theorem rigorously, step by step.";
    const auto weak = complete(chat_body("google/gemma-4-31b-it:free", hard, "\"max_tokens\":64"));
    const bool poor = weak.finish_reason == "length" || content_of(weak).empty() ||
                      content_of(weak).starts_with("I'm sorry");
    BOOST_TEST(poor);
    const auto strong = complete(chat_body("anthropic/claude-fable-5", hard, "\"max_tokens\":64"));
    BOOST_TEST(strong.finish_reason == "stop");
    BOOST_TEST(!content_of(strong).empty());
    BOOST_TEST(!content_of(strong).starts_with("I'm sorry"));
}

BOOST_FIXTURE_TEST_CASE(prompt_directives_force_difficulty_and_answer, sim_fixture)
{
    const auto easy =
        complete(chat_body("google/gemma-4-31b-it:free", "Prove it [sim difficulty=1]"));
    BOOST_TEST(easy.finish_reason == "stop");
    const auto refusal = complete(chat_body("google/gemma-4-31b-it:free", "Hi [sim poor=refusal]"));
    BOOST_TEST(content_of(refusal) == "I'm sorry, but I can't help with that.");
    const auto empty = complete(chat_body("google/gemma-4-31b-it:free", "Hi [sim poor=empty]"));
    BOOST_TEST(content_of(empty).empty());
    BOOST_TEST(!empty.pieces.empty()); // reasoning only
    BOOST_TEST(parse_object(engine.whole_body(empty))
                   .at("choices")
                   .at(0)
                   .at("message")
                   .at("reasoning")
                   .is_string());
    const auto rambling = complete(
        chat_body("google/gemma-4-31b-it:free", "Hi [sim poor=length]", "\"max_tokens\":30"));
    BOOST_TEST(rambling.finish_reason == "length");
    BOOST_TEST(rambling.pieces.size() == 30u);
    const auto sized = complete(chat_body("anthropic/claude-fable-5", "Hi [sim tokens=5]"));
    BOOST_TEST(sized.pieces.size() == 6u); // five words and a full stop
}

BOOST_FIXTURE_TEST_CASE(json_mode_answers_are_json_unless_poor, sim_fixture)
{
    const std::string fmt = "\"response_format\":{\"type\":\"json_object\"}";
    const auto good = complete(chat_body("anthropic/claude-fable-5", "List it", fmt));
    boost::system::error_code ec;
    json::parse(content_of(good), ec);
    BOOST_TEST(!ec);
    const auto bad =
        complete(chat_body("google/gemma-4-31b-it:free", "List it [sim difficulty=9]", fmt));
    json::parse(content_of(bad), ec);
    BOOST_TEST(ec.failed());
}

BOOST_FIXTURE_TEST_CASE(max_tokens_truncates_with_length, sim_fixture)
{
    const auto c =
        complete(chat_body("anthropic/claude-fable-5", "Hi [sim tokens=40]", "\"max_tokens\":7"));
    BOOST_TEST(c.pieces.size() == 7u);
    BOOST_TEST(c.finish_reason == "length");
}

BOOST_FIXTURE_TEST_CASE(status_faults_answer_like_openrouter, sim_fixture)
{
    struct expectation {
        const char* fault;
        int status;
        const char* header;
    };
    for (const auto& e :
         {expectation{"429", 429, "Retry-After"}, expectation{"429-no-retry-after", 429, nullptr},
          expectation{"402", 402, nullptr}, expectation{"403", 403, nullptr},
          expectation{"408", 408, nullptr}, expectation{"500", 500, nullptr},
          expectation{"502", 502, nullptr}, expectation{"503", 503, "Retry-After"},
          expectation{"context-length", 400, nullptr}}) {
        const auto r = refused(chat_body(
            "anthropic/claude-fable-5",
            std::string("Hi [sim fault=") + e.fault + " retry_after=3]"));
        BOOST_TEST(r.status == e.status, e.fault);
        const auto body = parse_object(r.body);
        BOOST_TEST(body.at("error").at("code").as_int64() == e.status, e.fault);
        BOOST_TEST(!body.at("error").at("message").as_string().empty());
        bool has_retry_after = false;
        for (const auto& [name, value] : r.headers)
            has_retry_after |= name == "Retry-After" && value == "3";
        BOOST_TEST(has_retry_after == (e.header != nullptr), e.fault);
    }
    const auto moderation = parse_object(
        refused(chat_body("anthropic/claude-fable-5", "bad words [sim fault=403]")).body);
    BOOST_TEST(
        moderation.at("error").at("metadata").at("reasons").at(0).as_string() == "harassment");
    const auto ok200 = refused(chat_body("anthropic/claude-fable-5", "Hi [sim fault=error-200]"));
    BOOST_TEST(ok200.status == 200);
    BOOST_TEST(parse_object(ok200.body).contains("error"));
    // None of these was billed.
    BOOST_TEST(bill().at("total").at("requests").as_int64() == 0);
}

BOOST_FIXTURE_TEST_CASE(connection_faults_are_drops, sim_fixture)
{
    auto reset = post(chat_body("anthropic/claude-fable-5", "Hi [sim fault=reset]"));
    BOOST_TEST((std::get<frugal::sim::drop>(reset).kind == frugal::sim::fault::reset));
    auto hang = post(chat_body("anthropic/claude-fable-5", "Hi [sim fault=hang]"));
    BOOST_TEST((std::get<frugal::sim::drop>(hang).kind == frugal::sim::fault::hang));
}

BOOST_AUTO_TEST_CASE(configured_fault_rules_apply_by_model_and_count)
{
    auto cfg = sim_fixture::base();
    cfg.faults.push_back({.model = "anthropic/claude-fable-5", .fault = "503", .first_n = 2});
    sim_fixture f(cfg);
    const std::string body = chat_body("anthropic/claude-fable-5", "Hi");
    BOOST_TEST(f.refused(body).status == 503);
    BOOST_TEST(f.refused(body).status == 503);
    f.complete(body); // the rule is used up
    f.complete(chat_body("deepseek/deepseek-v3.2", "Hi"));
}

BOOST_AUTO_TEST_CASE(model_outage_falls_back_along_models)
{
    auto cfg = sim_fixture::base();
    cfg.models = frugal::standard_sim_models();
    for (auto& m : cfg.models) {
        if (m.id == "deepseek/deepseek-v3.2")
            m.fault = "502";
    }
    sim_fixture f(cfg);
    BOOST_TEST(f.refused(chat_body("deepseek/deepseek-v3.2", "Hi")).status == 502);
    const auto c =
        f.complete(chat_body("deepseek/deepseek-v3.2", "Hi", "\"models\":[\"openai/gpt-5-mini\"]"));
    BOOST_TEST(c.model == "openai/gpt-5-mini");
}

BOOST_FIXTURE_TEST_CASE(unknown_model_and_bad_bodies_are_400, sim_fixture)
{
    BOOST_TEST(refused(chat_body("nobody/nothing", "Hi")).status == 400);
    BOOST_TEST(refused("{not json").status == 400);
    BOOST_TEST(refused("{\"model\":\"anthropic/claude-fable-5\"}").status == 400);
    BOOST_TEST(
        refused(chat_body("anthropic/claude-fable-5", "Hi", "\"max_tokens\":\"many\"")).status ==
        400);
    BOOST_TEST(get("/api/v1/nothing").status == 404);
    BOOST_TEST(get("/api/v1/credits").status == 403);
}

BOOST_FIXTURE_TEST_CASE(context_length_is_enforced, sim_fixture)
{
    const auto r = refused(chat_body("anthropic/claude-fable-5", "Hi", "\"max_tokens\":199999"));
    BOOST_TEST(r.status == 400);
    BOOST_TEST(
        parse_object(r.body).at("error").at("metadata").at("error_type").as_string() ==
        "context_length_exceeded");
}

BOOST_AUTO_TEST_CASE(free_models_are_limited_per_minute_and_per_day)
{
    auto cfg = sim_fixture::base();
    cfg.free_requests_per_minute = 3;
    cfg.free_requests_per_day = 5;
    sim_fixture f(cfg);
    const std::string body = chat_body("google/gemma-4-31b-it:free", "Hi");
    auto t = sim_fixture::now0();
    for (int i = 0; i < 3; ++i)
        f.complete(body, t);
    auto r = f.refused(body, t);
    BOOST_TEST(r.status == 429);
    BOOST_TEST(
        parse_object(r.body).at("error").at("message").as_string() ==
        "Rate limit exceeded: free-models-per-min.");
    bool reset_header = false;
    for (const auto& [name, value] : r.headers)
        reset_header |=
            name == "X-RateLimit-Reset" && value == std::to_string((1795000000 + 60) * 1000LL);
    BOOST_TEST(reset_header);
    // Paid models are not limited.
    f.complete(chat_body("deepseek/deepseek-v3.2", "Hi"), t);
    // A minute later two more go through, then the daily limit holds.
    t += 61s;
    f.complete(body, t);
    f.complete(body, t);
    r = f.refused(body, t);
    BOOST_TEST(r.status == 429);
    BOOST_TEST(std::string(parse_object(r.body).at("error").at("message").as_string())
                   .starts_with("Rate limit exceeded: free-models-per-day"));
}

BOOST_AUTO_TEST_CASE(key_limit_refuses_what_cannot_be_afforded)
{
    auto cfg = sim_fixture::base();
    cfg.accept_any_key = false;
    cfg.keys.push_back({.key = "sk-or-v1-test", .limit = "0.001"});
    sim_fixture f(cfg);
    // 1000 max tokens at $0.000015 cannot fit in $0.001.
    const auto r = f.refused(chat_body("anthropic/claude-fable-5", "Hi", "\"max_tokens\":1000"));
    BOOST_TEST(r.status == 402);
    // (0.001 - 8 prompt tokens * 0.000003) / 0.000015 = 65.07 -> 65
    BOOST_TEST(std::string(parse_object(r.body).at("error").at("message").as_string())
                   .ends_with("You requested up to 1000 tokens, but can only afford 65."));
    // 64 fits; spending it all leaves nothing for a paid call, but free calls go on.
    const auto c = f.complete(
        chat_body("anthropic/claude-fable-5", "Hi [sim poor=length]", "\"max_tokens\":64"));
    BOOST_TEST(c.pieces.size() == 64u);
    const auto key = parse_object(f.get("/api/v1/key").body).at("data").as_object();
    BOOST_TEST(key.at("limit").as_double() == 0.001);
    BOOST_TEST(
        key.at("limit_remaining").as_double() == 0.001 - (12 * 0.000003 + 64 * 0.000015),
        boost::test_tools::tolerance(1e-12));
    f.complete(chat_body("google/gemma-4-31b-it:free", "Hi"));
    const auto spent = f.refused(chat_body("anthropic/claude-fable-5", "Hi", "\"max_tokens\":1"));
    BOOST_TEST(spent.status == 402);
}

BOOST_FIXTURE_TEST_CASE(generation_lookup_shows_the_bill_to_its_key_only, sim_fixture)
{
    const auto c = complete(chat_body("openai/gpt-5-mini", "Hi"));
    const auto r = get("/api/v1/generation?id=" + c.id);
    BOOST_TEST(r.status == 200);
    const auto g = parse_object(r.body).at("data").as_object();
    for (const char* field :
         {"id",
          "upstream_id",
          "total_cost",
          "cache_discount",
          "upstream_inference_cost",
          "created_at",
          "model",
          "app_id",
          "streamed",
          "cancelled",
          "provider_name",
          "latency",
          "moderation_latency",
          "generation_time",
          "finish_reason",
          "tokens_prompt",
          "tokens_completion",
          "native_tokens_prompt",
          "native_tokens_completion",
          "native_tokens_reasoning",
          "usage",
          "is_byok",
          "native_finish_reason",
          "api_type",
          "router",
          "data_region"})
        BOOST_TEST(g.contains(field), "generation lacks " << field);
    BOOST_TEST(g.at("model").as_string() == "openai/gpt-5-mini");
    BOOST_TEST(g.at("streamed").as_bool() == false);
    BOOST_TEST(g.at("tokens_completion").as_int64() == static_cast<std::int64_t>(c.pieces.size()));
    BOOST_TEST(
        r.body.find("\"total_cost\":" + frugal::sim::format_usd(c.cost(c.pieces.size())) + ",") !=
        std::string::npos);
    BOOST_TEST(get("/api/v1/generation?id=" + c.id, "Bearer someone-else").status == 404);
    BOOST_TEST(get("/api/v1/generation?id=gen-0-nothing").status == 404);
    BOOST_TEST(get("/api/v1/generation").status == 400);
}

BOOST_AUTO_TEST_CASE(generation_lookup_can_lag_like_openrouter)
{
    auto cfg = sim_fixture::base();
    cfg.generation_visibility_delay = 500ms;
    sim_fixture f(cfg);
    const auto c = f.complete(chat_body("openai/gpt-5-mini", "Hi"));
    BOOST_TEST(
        f.get("/api/v1/generation?id=" + c.id, key, sim_fixture::now0() + 100ms).status == 404);
    BOOST_TEST(
        f.get("/api/v1/generation?id=" + c.id, key, sim_fixture::now0() + 600ms).status == 200);
}

BOOST_FIXTURE_TEST_CASE(streams_have_openrouter_shape, sim_fixture)
{
    const auto c =
        complete(chat_body("anthropic/claude-fable-5", "Hi [sim tokens=3]", "\"stream\":true"));
    const std::string s = engine.whole_stream(c);
    BOOST_TEST(s.starts_with(": OPENROUTER PROCESSING\n\n"));
    BOOST_TEST(s.ends_with("data: [DONE]\n\n"));
    // One event per token, then the finish chunk, then the usage chunk (the 2026 shape repeats
    // the finish choice).
    std::size_t events = 0;
    for (auto at = s.find("data: {"); at != std::string::npos; at = s.find("data: {", at + 1))
        ++events;
    BOOST_TEST(events == c.pieces.size() + 2);
    const auto usage_at = s.rfind("data: {");
    const auto usage =
        parse_object(s.substr(usage_at + 6, s.find("\n\n", usage_at) - usage_at - 6));
    BOOST_TEST(usage.at("choices").at(0).at("finish_reason").as_string() == "stop");
    BOOST_TEST(
        usage.at("usage").at("completion_tokens").as_int64() ==
        static_cast<std::int64_t>(c.pieces.size()));
    BOOST_TEST(usage.at("object").as_string() == "chat.completion.chunk");
}

BOOST_FIXTURE_TEST_CASE(usage_chunk_shapes_are_selectable, sim_fixture)
{
    auto last_event = [](const std::string& s) {
        const auto at = s.rfind("data: {");
        return json::parse(s.substr(at + 6, s.find("\n\n", at) - at - 6)).as_object();
    };
    const auto empty = complete(
        chat_body("anthropic/claude-fable-5", "Hi [sim usage=empty_choices]", "\"stream\":true"));
    BOOST_TEST(last_event(engine.whole_stream(empty)).at("choices").as_array().empty());
    const auto null_finish = complete(
        chat_body("anthropic/claude-fable-5", "Hi [sim usage=null_finish]", "\"stream\":true"));
    BOOST_TEST(last_event(engine.whole_stream(null_finish))
                   .at("choices")
                   .at(0)
                   .at("finish_reason")
                   .is_null());
}

BOOST_FIXTURE_TEST_CASE(stream_faults_shape_the_bytes, sim_fixture)
{
    const auto cut = complete(chat_body(
        "anthropic/claude-fable-5", "Hi [sim tokens=9 fault=cut after=4]", "\"stream\":true"));
    const std::string cs = engine.whole_stream(cut);
    BOOST_TEST(cs.find("[DONE]") == std::string::npos);
    BOOST_TEST(cut.after == 4u);

    const auto err = complete(chat_body(
        "anthropic/claude-fable-5", "Hi [sim fault=midstream-error after=2]", "\"stream\":true"));
    const std::string es = engine.whole_stream(err);
    BOOST_TEST(es.find("\"error\":{\"code\":502") != std::string::npos);
    BOOST_TEST(es.find("\"finish_reason\":\"error\"") != std::string::npos);

    const auto choice = complete(chat_body(
        "anthropic/claude-fable-5", "Hi [sim fault=midstream-error-choice]", "\"stream\":true"));
    const std::string chs = engine.whole_stream(choice);
    BOOST_TEST(chs.find("\"error\":") == std::string::npos);
    BOOST_TEST(chs.find("\"finish_reason\":\"error\"") != std::string::npos);

    const auto bad = complete(
        chat_body("anthropic/claude-fable-5", "Hi [sim fault=malformed-chunk]", "\"stream\":true"));
    const std::string bs = engine.whole_stream(bad);
    std::size_t broken = 0;
    for (auto at = bs.find("data: {"); at != std::string::npos; at = bs.find("data: {", at + 1)) {
        boost::system::error_code ec;
        json::parse(bs.substr(at + 6, bs.find("\n\n", at) - at - 6), ec);
        broken += ec ? 1 : 0;
    }
    BOOST_TEST(broken == 1u);
}

BOOST_FIXTURE_TEST_CASE(cancelled_streams_bill_by_provider, sim_fixture)
{
    // Anthropic can cancel: billed the tokens delivered. Google AI Studio cannot: billed all.
    const auto can =
        complete(chat_body("anthropic/claude-fable-5", "Hi [sim tokens=20]", "\"stream\":true"));
    engine.settle(can, 5, true, now0());
    const auto cannot =
        complete(chat_body("google/gemini-3-flash", "Hi [sim tokens=20]", "\"stream\":true"));
    engine.settle(cannot, 5, true, now0());
    const auto b = bill().at("models").as_object();
    BOOST_TEST(b.at("anthropic/claude-fable-5").at("completion_tokens").as_int64() == 5);
    BOOST_TEST(b.at("anthropic/claude-fable-5").at("cancelled").as_int64() == 1);
    BOOST_TEST(
        b.at("google/gemini-3-flash").at("completion_tokens").as_int64() ==
        static_cast<std::int64_t>(cannot.pieces.size()));
    const auto g = parse_object(get("/api/v1/generation?id=" + can.id).body).at("data").as_object();
    BOOST_TEST(g.at("cancelled").as_bool());
    BOOST_TEST(g.at("streamed").as_bool());
    BOOST_TEST(g.at("tokens_completion").as_int64() == 5);
}

BOOST_AUTO_TEST_CASE(uncancellable_streams_can_be_billed_their_max_tokens)
{
    auto cfg = sim_fixture::base();
    cfg.uncancellable_billing = "max_tokens";
    sim_fixture f(cfg);
    const auto c = f.complete(chat_body(
        "google/gemini-3-flash", "Hi [sim tokens=20]", "\"stream\":true,\"max_tokens\":300"));
    f.engine.settle(c, 5, true, sim_fixture::now0());
    const auto b = f.bill().at("models").at("google/gemini-3-flash").as_object();
    BOOST_TEST(b.at("completion_tokens").as_int64() == 300);
    const auto expected = frugal::sim::format_usd(
        static_cast<frugal::sim::attodollars>(c.prompt_tokens) *
            *frugal::sim::parse_usd("0.0000003") +
        300 * *frugal::sim::parse_usd("0.0000025"));
    BOOST_TEST(b.at("cost_usd").as_string() == expected);
}

BOOST_FIXTURE_TEST_CASE(key_endpoint_reports_usage, sim_fixture)
{
    complete(chat_body("anthropic/claude-fable-5", "Hi"));
    const auto legacy = get("/api/v1/auth/key");
    BOOST_TEST(legacy.status == 200);
    const auto k = parse_object(get("/api/v1/key").body).at("data").as_object();
    BOOST_TEST(k.at("limit").is_null());
    BOOST_TEST(k.at("limit_remaining").is_null());
    BOOST_TEST(k.at("usage").as_double() > 0);
    BOOST_TEST(k.at("usage_daily").as_double() == k.at("usage").as_double());
    BOOST_TEST(!k.at("label").as_string().empty());
    BOOST_TEST(
        legacy.body.find("sk-or-v1-test") == std::string::npos); // the key itself is never echoed
}

BOOST_AUTO_TEST_CASE(config_file_parses_and_names_bad_fields)
{
    frugal::diagnostics diag;
    auto c = frugal::parse_sim_config(
        R"({"seed": 9, "free_requests_per_minute": 2, "latency": "demo",
        "model_overrides": {"anthropic/claude-fable-5": {"fault": "503", "completion_price": 0.00002}},
        "keys": [{"key": "k1", "limit": "5"}], "faults": [{"fault": "cut", "first_n": 1}]})",
        &diag);
    BOOST_REQUIRE_MESSAGE(c, diag.message);
    BOOST_TEST(c->seed == 9u);
    BOOST_TEST(c->free_requests_per_minute == 2u);
    const auto fable = std::find_if(c->models.begin(), c->models.end(), [](const auto& m) {
        return m.id == "anthropic/claude-fable-5";
    });
    BOOST_TEST(fable->fault == "503");
    BOOST_TEST(fable->completion_price == "0.00002");
    BOOST_TEST(fable->time_to_first_token.count() > 0);
    BOOST_TEST(c->keys.at(0).limit.value() == "5");

    const auto bad = frugal::parse_sim_config(R"({"seeed": 1})", &diag);
    BOOST_TEST(!bad);
    BOOST_TEST(bad.error() == boost::system::error_code(frugal::error::bad_sim_config));
    BOOST_TEST(diag.message == "config.seeed: unknown field");
    BOOST_TEST(!frugal::parse_sim_config(
        R"({"models": [{"id": "a/b", "prompt_price": "cheap"}]})", &diag));
    BOOST_TEST(diag.message.starts_with("config.models[0].prompt_price:"));
    BOOST_TEST(!frugal::parse_sim_config(R"({"model_overrides": {"x/y": {}}})", &diag));
    BOOST_TEST(diag.message == "config.model_overrides.x/y: no such model in the catalog");
    BOOST_TEST(!frugal::parse_sim_config(R"({"seed": 1, "seed": 2})", &diag));
    BOOST_TEST(diag.message == "not valid JSON as it must be: seed is written twice (one of the "
                               "two would be ignored)");
    BOOST_TEST(!frugal::parse_sim_config(R"({"models": [{"id": "a/b"}, {"id": "c/d", "id": "e"}]})",
                                         &diag));
    BOOST_TEST(diag.message.find("models[1].id is written twice") != std::string::npos,
               diag.message);
    BOOST_TEST(!frugal::parse_sim_config("[1]", &diag));
    BOOST_TEST(!frugal::parse_sim_config("{", &diag));
    BOOST_TEST(diag.message.starts_with("not valid JSON"));
}

BOOST_AUTO_TEST_SUITE_END()
