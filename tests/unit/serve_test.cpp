// The gateway's sans-io parts: its configuration and the OpenAI wire.
#include <frugal/serve.hpp>

#include "serve/metrics.hpp"
#include "serve/wire.hpp"

#include <boost/json.hpp>
#include <boost/test/unit_test.hpp>

using namespace frugal;

namespace {

std::string config_error(std::string_view json)
{
    diagnostics d;
    auto c = parse_gateway_config(json, &d);
    return c ? std::string("accepted") : d.message;
}

constexpr std::string_view key = "abcdefghijklmnop-key";

} // namespace

BOOST_AUTO_TEST_SUITE(serve_config)

BOOST_AUTO_TEST_CASE(a_key_is_found_by_its_hash_whichever_way_it_is_written)
{
    const std::string hashed = "sha256:" + sha256_hex("another-key-0123456789");
    const std::string json = R"({"keys": {")" + std::string(key) +
                             R"(": {"tenant": "a", "budget": {"usd": "2.50", "period": "week"}, "rpm": 5},
        ")" + hashed + R"(": {"tenant": "a"}}})";
    auto c = parse_gateway_config(json);
    BOOST_REQUIRE(c);
    BOOST_REQUIRE_EQUAL(c->keys.size(), 2u);
    const auto& k = c->keys.at(sha256_hex(key));
    BOOST_TEST(k.tenant == "a");
    BOOST_TEST((k.budget == money::parse("2.50")));
    BOOST_TEST((k.period == budget_period::weekly));
    BOOST_TEST(k.rpm == 5u);
    // The other key of the tenant shares its cap.
    const auto& other = c->keys.at(sha256_hex("another-key-0123456789"));
    BOOST_TEST((other.budget == money::parse("2.50")));
    // sha256 of "abc", the standard's own vector.
    BOOST_TEST(
        sha256_hex("abc") == "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad");
}

BOOST_AUTO_TEST_CASE(every_error_names_its_member_and_never_the_key)
{
    const std::string k(key);
    const std::pair<std::string, std::string> cases[] = {
        {"[]", "must be a JSON object"},
        {"{}", "keys: is required"},
        {R"({"keys": {}})", "keys: must hold at least one key"},
        {R"({"keys": {"short": {"tenant": "a"}}})", "at least 16 characters"},
        {R"({"keys": {"sha256:abc": {"tenant": "a"}}})", "64 hex digits"},
        {R"({"keys": {")" + k + R"(": {}}})", ".tenant: is required"},
        {R"({"keys": {")" + k + R"(": {"tenant": "a b"}}})", ".tenant: must be 1 to 64"},
        {R"({"keys": {")" + k + R"(": {"tenant": "a", "budget": {"usd": 5}}}})",
         ".budget.usd: is required, a decimal string"},
        {R"({"keys": {")" + k + R"(": {"tenant": "a", "budget": {"usd": "-1"}}}})",
         ".budget.usd: must be an amount of USD"},
        {R"({"keys": {")" + k + R"(": {"tenant": "a", "budget": {"usd": "1", "period": "year"}}}})",
         ".budget.period: must be"},
        {R"({"keys": {")" + k + R"(": {"tenant": "a", "allow": ["frugal/none"]}}})",
         "\"frugal/none\" names no policy"},
        {R"({"keys": {")" + k + R"(": {"tenant": "a", "rpm": -1}}})", ".rpm: must be a whole number"},
        {R"({"keys": {")" + k + R"(": {"tenant": "a", "rpm": 0}}})", ".rpm: must be from 1"},
        {R"({"keys": {")" + k + R"(": {"tenant": "a", "limit": 1}}})", ".limit: unknown member"},
        {R"({"keys": {")" + k + R"(": {"tenant": "a", "budget": {"usd": "1"}},
            "second-key-0123456789": {"tenant": "a", "budget": {"usd": "2"}}}})",
         "has another key with a different budget"},
        {R"({"upstream": {"timeout_seconds": 0}, "keys": {")" + k + R"(": {"tenant": "a"}}})",
         "upstream.timeout_seconds: must be from"},
        {R"({"limits": {"max_body_bytes": 10}, "keys": {")" + k + R"(": {"tenant": "a"}}})",
         "limits.max_body_bytes: must be from"},
        {R"({"budget_store": "http://x", "keys": {")" + k + R"(": {"tenant": "a"}}})",
         "budget_store: must be a redis://"},
        {R"({"policies": {"p": {"tiers": []}}, "keys": {")" + k + R"(": {"tenant": "a"}}})",
         "policies.p: "},
        {R"({"ledgr": "x.db", "keys": {")" + k + R"(": {"tenant": "a"}}})", "ledgr: unknown member"},
        // A member written twice: the later one would silently win, so a cap could be lost.
        {R"({"keys": {")" + k + R"(": {"tenant": "a", "budget": {"usd": "0.0001"}}, ")" + k +
             R"(": {"tenant": "a"}}})",
         "keys.<member 2> is written twice"},
        {R"({"keys": {")" + k + R"(": {"tenant": "a", "budget": {"usd": "0.0001"},
             "budget": {"usd": "100"}}}})",
         "keys.<member 1>.budget is written twice"},
        {R"({"policies": {"p": {"tiers": ["a", "b"], "max_tokens": 10, "max_tokens": 20}},
             "keys": {")" + k + R"(": {"tenant": "a"}}})",
         "policies.p.max_tokens is written twice"},
        {R"({"upstream": {"timeout_seconds": 1e400}, "keys": {")" + k + R"(": {"tenant": "a"}}})",
         "upstream.timeout_seconds is a number out of range"},
    };
    for (const auto& [json, expected] : cases) {
        const auto why = config_error(json);
        BOOST_TEST_INFO(json);
        BOOST_TEST(why.find(expected) != std::string::npos, why);
        BOOST_TEST(why.find(k) == std::string::npos, why);
    }
}

BOOST_AUTO_TEST_SUITE_END()

BOOST_AUTO_TEST_SUITE(serve_wire)

BOOST_AUTO_TEST_CASE(a_request_is_read_into_the_typed_request)
{
    serve::wire_request w;
    serve::wire_problem why;
    BOOST_REQUIRE(serve::parse_chat_body(
        R"({"model": "m/x", "stream": true, "stream_options": {"include_usage": true},
            "messages": [{"role": "system", "content": "be brief"},
                         {"role": "user", "content": [{"type": "text", "text": "a"}, {"type": "text", "text": "b"}]},
                         {"role": "assistant", "content": null, "tool_calls": [{"id": "c1", "type": "function",
                           "function": {"name": "f", "arguments": "{}"}}]},
                         {"role": "tool", "tool_call_id": "c1", "content": "42"}],
            "max_completion_tokens": 77, "temperature": 0.5, "top_p": null, "seed": 3, "stop": "END",
            "response_format": {"type": "json_schema", "json_schema": {"name": "n", "schema": {"type": "object"}}},
            "provider": {"order": ["A"], "allow_fallbacks": false}, "user": "u1",
            "tools": [{"type": "function", "function": {"name": "f"}}], "tool_choice": "auto",
            "usage": {"include": true}})",
        w, why));
    const auto& r = w.req;
    BOOST_TEST(r.model == "m/x");
    BOOST_TEST(w.stream);
    BOOST_TEST(w.include_usage);
    BOOST_REQUIRE_EQUAL(r.messages.size(), 4u);
    BOOST_TEST(r.messages[1].content == "ab");
    BOOST_REQUIRE_EQUAL(r.messages[2].tool_calls.size(), 1u);
    BOOST_TEST(r.messages[2].tool_calls[0].name == "f");
    BOOST_TEST(r.messages[3].tool_call_id == "c1");
    BOOST_TEST(r.max_tokens.value_or(0) == 77u);
    BOOST_TEST(r.temperature.value_or(0) == 0.5);
    BOOST_TEST(!r.top_p);
    BOOST_TEST(r.stop.size() == 1u);
    BOOST_TEST(r.response_format == "json_schema");
    BOOST_TEST(boost::json::parse(r.response_schema).at("name") == "n");
    BOOST_TEST(r.provider->order.size() == 1u);
    BOOST_TEST(r.user == "u1");
    // What the typed request does not know travels as extra_body, for the encoder's rules.
    const auto extra = boost::json::parse(r.extra_body).as_object();
    BOOST_TEST(extra.size() == 2u);
    BOOST_TEST(extra.contains("tools"));
    BOOST_TEST(extra.contains("tool_choice"));
}

BOOST_AUTO_TEST_CASE(a_bad_request_names_its_member)
{
    const std::pair<const char*, const char*> cases[] = {
        {"{", ""},
        {R"({"messages": [{"role": "user", "content": "x"}]})", "model"},
        {R"({"model": "m", "messages": []})", "messages"},
        {R"({"model": "m", "messages": [{"content": "x"}]})", "messages[0].role"},
        {R"({"model": "m", "messages": [{"role": "user", "content": [{"type": "image_url"}]}]})",
         "messages[0].content"},
        {R"({"model": "m", "messages": [{"role": "user", "content": "x", "audio": 1}]})",
         "messages[0].audio"},
        {R"({"model": "m", "messages": [{"role": "user", "content": "x"}], "max_tokens": 0})",
         "max_tokens"},
        {R"({"model": "m", "messages": [{"role": "user", "content": "x"}], "max_tokens": 5,
             "max_completion_tokens": 6})",
         "max_completion_tokens"},
        {R"({"model": "m", "messages": [{"role": "user", "content": "x"}], "seed": -1})", "seed"},
        {R"({"model": "m", "messages": [{"role": "user", "content": "x"}], "stream": "yes"})",
         "stream"},
        {R"({"model": "m", "messages": [{"role": "user", "content": "x"}], "models": ["a"]})",
         "models"},
        {R"({"model": "m", "messages": [{"role": "user", "content": "x"}], "n": 2})", "n"},
        {R"({"model": "m", "messages": [{"role": "user", "content": "x"}], "logprobs": true})",
         "logprobs"},
        {R"({"model": "m", "messages": [{"role": "user", "content": "x"}], "top_logprobs": 2})",
         "top_logprobs"},
        {R"({"model": "m", "messages": [{"role": "user", "content": "x"}], "usage": true})",
         "usage"},
        {R"({"model": "m", "messages": [{"role": "user", "content": "x"}],
             "provider": {"sort": 1}})",
         "provider.sort"},
        // Past a double's range: infinity, which the upstream could not be sent as JSON.
        {R"({"model": "m", "messages": [{"role": "user", "content": "x"}], "temperature": 1e400})",
         "temperature"},
        {R"({"model": "m", "messages": [{"role": "user", "content": "x"}], "top_p": -1e400})",
         "top_p"},
        {R"({"model": "m", "messages": [{"role": "user", "content": "x"}], "tool_choice": 1e400})",
         "tool_choice"},
        {R"({"model": "m", "messages": [{"role": "user", "content": "x"}],
             "tools": [{"type": "function", "function": {"name": "f", "parameters": {"x": [1e999]}}}]})",
         "tools"},
    };
    for (const auto& [body, param] : cases) {
        serve::wire_request w;
        serve::wire_problem why;
        BOOST_TEST_INFO(body);
        BOOST_TEST(!serve::parse_chat_body(body, w, why));
        BOOST_TEST(why.param == param);
        BOOST_TEST(!why.message.empty());
    }
}

BOOST_AUTO_TEST_CASE(answers_chunks_and_errors_are_json_the_sdks_read)
{
    chat_response r;
    r.id = "gen-1";
    r.created = 7;
    r.content = "line\n\"quoted\"";
    r.finish_reason = "stop";
    r.tool_calls.push_back({"c1", "function", "f", "{\"a\":1}"});
    serve::wire_totals t{"m/served", *money::parse("0.000123"), 10, 5};
    const auto v = boost::json::parse(serve::encode_completion(r, t));
    BOOST_TEST(v.at("model") == "m/served");
    BOOST_TEST(std::string(v.at("choices").at(0).at("message").at("content").as_string()) == r.content);
    BOOST_TEST(v.at("choices").at(0).at("message").at("tool_calls").at(0).at("function").at(
                   "arguments") == "{\"a\":1}");
    BOOST_TEST(v.at("usage").at("total_tokens") == 15);
    BOOST_TEST(v.at("usage").at("cost").as_double() == 0.000123);

    std::string s;
    serve::append_chunk(s, "id", 1, "m", "hé\u0001", true);
    BOOST_REQUIRE(s.starts_with("data: ") && s.ends_with("\n\n"));
    const auto c = boost::json::parse(s.substr(6));
    BOOST_TEST(c.at("choices").at(0).at("delta").at("content") == "hé\u0001");
    BOOST_TEST(c.at("choices").at(0).at("delta").at("role") == "assistant");

    s.clear();
    serve::append_finish(s, "id", 1, "m", "length", &t);
    const auto end = s.find("\n\ndata: [DONE]\n\n");
    BOOST_REQUIRE(end != std::string::npos);
    const auto f = boost::json::parse(s.substr(6, end - 6));
    BOOST_TEST(f.at("choices").at(0).at("finish_reason") == "length");
    BOOST_TEST(f.at("usage").at("prompt_tokens") == 10);

    // An error inside a stream is one of its chunks: @openrouter/sdk's schema requires the id,
    // object, created and model of every chunk.
    s.clear();
    serve::append_stream_error(s, "id", 1, "m", "cut \"short\"", 502);
    const auto se_end = s.find("\n\ndata: [DONE]\n\n");
    BOOST_REQUIRE(s.starts_with("data: ") && se_end != std::string::npos);
    const auto se = boost::json::parse(s.substr(6, se_end - 6));
    BOOST_TEST(se.at("id") == "id");
    BOOST_TEST(se.at("object") == "chat.completion.chunk");
    BOOST_TEST(se.at("created") == 1);
    BOOST_TEST(se.at("model") == "m");
    BOOST_TEST(se.at("error").at("message") == "cut \"short\"");
    BOOST_TEST(se.at("error").at("code") == 502);
    BOOST_TEST(se.at("choices").at(0).at("finish_reason") == "error");
    BOOST_TEST(!se.as_object().contains("usage"));
    // With what was spent: the usage and cost, as a finished stream's last chunk has them.
    s.clear();
    serve::append_stream_error(s, "id", 1, "m", "failed", 502, &t);
    const auto sc = boost::json::parse(s.substr(6, s.find("\n\ndata: [DONE]\n\n") - 6));
    BOOST_TEST(sc.at("error").at("code") == 502);
    BOOST_TEST(sc.at("usage").at("total_tokens") == 15);
    BOOST_TEST(sc.at("usage").at("cost").to_number<double>() == 0.000123);

    // Tool calls, each whole under its index, as the SDKs join a call's pieces.
    std::vector<tool_call> calls(2);
    calls[0].id = "call_1";
    calls[0].name = "get_weather";
    calls[0].arguments = R"({"city":"Zürich"})";
    calls[1].id = "call_2";
    calls[1].type = "function";
    calls[1].name = "f";
    s.clear();
    serve::append_tool_call_chunk(s, "id", 1, "m", calls, true);
    BOOST_REQUIRE(s.starts_with("data: ") && s.ends_with("\n\n"));
    const auto tc = boost::json::parse(s.substr(6));
    const auto& delta = tc.at("choices").at(0).at("delta");
    BOOST_TEST(delta.at("role") == "assistant");
    BOOST_TEST(tc.at("choices").at(0).at("finish_reason").is_null());
    const auto& got = delta.at("tool_calls").as_array();
    BOOST_REQUIRE(got.size() == 2u);
    for (std::size_t i = 0; i < 2; ++i) {
        BOOST_TEST(got[i].at("index") == i);
        BOOST_TEST(got[i].at("id").as_string() == calls[i].id);
        BOOST_TEST(got[i].at("type") == "function");
        BOOST_TEST(got[i].at("function").at("name").as_string() == calls[i].name);
        BOOST_TEST(got[i].at("function").at("arguments").as_string() == calls[i].arguments);
    }

    const auto e = boost::json::parse(serve::error_body(402, "no \"key\"", "t", "c", ""));
    BOOST_TEST(e.at("error").at("message") == "no \"key\"");
    BOOST_TEST(e.at("error").at("code") == 402);
    BOOST_TEST(e.at("error").at("metadata").at("reason") == "c");
    BOOST_TEST(e.at("error").at("param").is_null());
}

BOOST_AUTO_TEST_CASE(metrics_escape_labels_and_keep_buckets_cumulative)
{
    serve::metrics m;
    for (int i = 0; i < 3; ++i)
        m.count_request("t\"1", "m\\x", "ok");
    m.count_request("", "", "unauthorized");
    m.duration.observe(0.003);
    m.duration.observe(0.2);
    m.duration.observe(1000);
    const auto text = m.render({});
    BOOST_TEST(text.find(R"(frugal_requests_total{tenant="t\"1",model="m\\x",outcome="ok"} 3)") !=
               std::string::npos);
    BOOST_TEST(text.find(R"(frugal_requests_total{tenant="",model="",outcome="unauthorized"} 1)") !=
               std::string::npos);
    BOOST_TEST(text.find("frugal_request_duration_seconds_bucket{le=\"0.005\"} 1\n") !=
               std::string::npos);
    BOOST_TEST(text.find("frugal_request_duration_seconds_bucket{le=\"0.25\"} 2\n") !=
               std::string::npos);
    BOOST_TEST(text.find("frugal_request_duration_seconds_bucket{le=\"+Inf\"} 3\n") !=
               std::string::npos);
    BOOST_TEST(text.find("frugal_request_duration_seconds_count 3\n") != std::string::npos);
}

BOOST_AUTO_TEST_SUITE_END()
