// OpenRouter's JSON as it is on the wire: the bodies below are recorded responses quoted in
// ../shared/openrouter-wire.md (REAL captures from public repositories), not made up here.
#include "openrouter/codec.hpp"
#include "printers.hpp"

#include <frugal/error.hpp>

#include <boost/json.hpp>
#include <boost/test/unit_test.hpp>

namespace json = boost::json;
using namespace frugal;
using frugal::openrouter::chat_chunk;
using frugal::openrouter::chat_decoder;

namespace {

chat_chunk decode(const std::string& text)
{
    chat_decoder d;
    chat_chunk c;
    const auto ec = d.decode(text, c);
    BOOST_REQUIRE_MESSAGE(!ec, "decode failed: " << text);
    return c;
}

} // namespace

BOOST_AUTO_TEST_SUITE(codec)

BOOST_AUTO_TEST_CASE(one_decoder_reports_each_documents_own_id_model_and_provider)
{
    // The decoder keeps the last document's id, model and provider to compare the next ones
    // with (a stream repeats them); each result must still be that document's alone.
    chat_decoder d;
    chat_chunk c;
    BOOST_TEST(!d.decode(R"({"id":"a","model":"m1","provider":"P","choices":[]})", c));
    BOOST_TEST(c.id == "a");
    BOOST_TEST(!d.decode(R"({"id":"a","model":"m1","provider":"P","choices":[]})", c));
    BOOST_TEST((c.id == "a" && c.model == "m1" && c.provider == "P"));
    BOOST_TEST(!d.decode(R"({"model":"m2","choices":[]})", c));
    BOOST_TEST(c.id.empty());
    BOOST_TEST(c.model == "m2");
    BOOST_TEST(c.provider.empty());
    BOOST_TEST(!d.decode(R"({"id":"b","model":"m2","provider":"Q"})", c));
    BOOST_TEST((c.id == "b" && c.model == "m2" && c.provider == "Q"));
    // A document that fails leaves nothing of the last one behind either.
    BOOST_TEST(d.decode(R"({"id":"c","model":)", c));
    BOOST_TEST(c.model.empty());
    BOOST_TEST(c.provider.empty());
    // Kept strings are checked for UTF-8 even when they repeat.
    BOOST_TEST(!d.decode(R"({"id":"x"})", c));
    BOOST_TEST(d.decode("{\"id\":\"\xff\"}", c));
    // Also when a failed document left the same bytes in the chunk (found in review).
    const std::string bad_id = "{\"id\":\"\xff\",\"choices\":[{\"delta\":{\"content\":\"a\"}}]}";
    BOOST_TEST(d.decode(bad_id, c));
    BOOST_TEST(d.decode(bad_id, c));
}

BOOST_AUTO_TEST_CASE(the_prefix_memo_changes_no_result)
{
    // A stream's chunks share their bytes up to "choices"; the decoder decodes a repeated prefix
    // once. Each document, decoded after every other one by one decoder, must come out exactly as
    // a fresh decoder decodes it, and fail exactly when that one fails.
    const std::string p =
        R"({"id":"gen-1","provider":"OpenAI","model":"openai/gpt-4o-mini","object":"chat.completion.chunk","created":1764115200,)";
    const std::vector<std::string> docs = {
        p + R"("choices":[{"index":0,"delta":{"content":" w1"},"finish_reason":null}]})",
        p + R"("choices":[{"index":0,"delta":{"content":" w2"},"finish_reason":null}]})",
        p + R"( "choices":[{"index":0,"delta":{"content":"x"}}]})",  // space after the comma
        p + R"("choices":[],"id":"gen-2","created":7,"model":"m"})", // repeated members win
        p + R"("choices":[{"index":0,"delta":{"content":"ok"}}]} )", // whitespace after
        p + R"("choices":[],"usage":{"prompt_tokens":1,"completion_tokens":2,"cost":0.5}})",
        p + "}",                                                             // ",}": not JSON
        p + " }",                                                            // nor ", }"
        p + "\"choices\":[{\"index\":0,\"delta\":{\"content\":\"\xff\"}}]}", // not UTF-8
        p + R"("choices":[{"index":0,"delta":{"content":"cut"}}])",          // no closing brace
        p + R"("choices":[]}{"id":"x"})",                                    // two documents
        p + R"("choices":[]},)",
        R"({"id":"gen-1","provider":"OpenAI","model":"openai/gpt-4o-mini","object":"chat.completion.chunk","created":1764115201,"choices":[]})",
        R"({"usage":{"total_tokens":3},"choices":[{"delta":{"content":"n"}}]})", // nested first
        // The marker inside a string value.
        R"({"id":"a,\"choices\":","choices":[{"delta":{"content":"q"}}]})",
        R"({"id":"\u0067en-1","choices":[{"delta":{"content":"e"}}]})",
        // A short prefix memoized, then a document that goes on with an error object.
        R"({"id":"gen-1","choices":[]})",
        R"({"id":"gen-1","error":{"code":502,"message":"Provider returned error","metadata":{"raw":"x","provider_name":"T"}},"choices":[{"index":0,"delta":{"content":""},"finish_reason":"error"}]})",
        // The shape memo: the same bytes around the delta's text, which alone differs.
        p + R"("choices":[{"index":0,"delta":{"content":""},"finish_reason":null}]})",
        p + "\"choices\":[{\"index\":0,\"delta\":{\"content\":\"caf\xc3\xa9\"},\"finish_reason\":"
            "null}]}",
        p + R"("choices":[{"index":0,"delta":{"content":"a \"quoted\" word"},"finish_reason":null}]})",
        p + R"("choices":[{"index":0,"delta":{"content":"new\nline \u00e9"},"finish_reason":null}]})",
        p + R"("choices":[{"index":0,"delta":{"content":"a"b"},"finish_reason":null}]})", // a quote
        p + "\"choices\":[{\"index\":0,\"delta\":{\"content\":\"\x01\"},\"finish_reason\":null}]}",
        p + "\"choices\":[{\"index\":0,\"delta\":{\"content\":\"\xc3\"},\"finish_reason\":null}]}",
        p + R"("choices":[{"index":0,"delta":{"content":"w3"},"finish_reason":null}]}x)",
        p + R"("choices":[{"index":0,"delta":{"content":"","finish_reason":null}]})",
        p + R"("choices":[{"index":0,"delta":{"content":"a","content":"b"},"finish_reason":null}]})",
        p + R"("choices":[{"index":0,"delta":{"content":"","content":"c"},"finish_reason":null}]})",
        p + R"("choices":[{"index":0,"delta":{"content":"d"},"finish_reason":"stop"}]})",
        p + R"("choices":[{"index":0,"delta":{"reasoning":"think"},"finish_reason":null}]})",
        p + R"("choices":[{"index":0,"delta":{"reasoning":"more"},"finish_reason":null}]})",
        p + R"("choices":[{"index":0,"delta":{"reasoning":"r","content":"c"},"finish_reason":null}]})",
        // Escapes after the memo's head: two-character ones are read by the memo.
        p + R"("choices":[{"index":0,"delta":{"content":"a\nb \"q\" c\\d \/ \t\b\f\r"},"finish_reason":null}]})",
        p + R"("choices":[{"index":0,"delta":{"content":"ab\"},"finish_reason":null}]})",
        p + R"("choices":[{"index":0,"delta":{"content":"bad \x escape"},"finish_reason":null}]})",
        p + R"("choices":[{"index":0,"delta":{"content":"\ud83d\ude00"},"finish_reason":null}]})",
        p + R"("choices":[{"index":0,"delta":{"content":"\ud83d"},"finish_reason":null}]})",
        p + "\"choices\":[{\"index\":0,\"delta\":{\"content\":\"\xc3\\n\"},\"finish_reason\":null}]"
            "}",
        p + R"("choices":[{"index":0,"delta":{"content":"end\\"},"finish_reason":null}]})",
        R"({"choices":[{"delta":{"content":"e"}}],"id":"late"})",
        R"({"choices":[{"delta":{"content":"f"}}],"id":"late"})",
        R"({"choices":[{"delta":{"content":"g"}}],"id":"late","usage":{"cost":1}})",
    };
    chat_decoder shared;
    for (int round = 0; round < 2; ++round) {
        for (std::size_t i = 0; i < docs.size(); ++i) {
            for (std::size_t j = 0; j < docs.size(); ++j) {
                chat_chunk before;
                (void)shared.decode(docs[i], before); // leaves its prefix memoized
                chat_chunk got;
                const auto ec = shared.decode(docs[j], got);
                chat_decoder fresh;
                chat_chunk want;
                const auto want_ec = fresh.decode(docs[j], want);
                BOOST_TEST(ec == want_ec, "after doc " << i << ", doc " << j);
                if (!want_ec)
                    BOOST_TEST((got == want), "after doc " << i << ", doc " << j);
            }
        }
    }
    chat_chunk c;
    BOOST_TEST(!shared.decode(docs[3], c));
    BOOST_TEST((c.id == "gen-2" && c.created == 7 && c.model == "m" && c.provider == "OpenAI"));
    BOOST_TEST(shared.decode(docs[6], c)); // ",}" after a memoized prefix
    BOOST_TEST(shared.decode(docs[8], c)); // a byte that is not UTF-8 after one
}

BOOST_AUTO_TEST_CASE(a_document_cut_inside_a_number_leaves_nothing_for_the_next)
{
    // Found by the codec fuzzer: the decoder is shared by every stream on a thread, and a
    // number's first part was kept past a document that failed inside it, to be glued in front
    // of the next document's first number: a cost among them.
    chat_decoder d;
    chat_chunk c;
    BOOST_TEST(d.decode("99999999999999999999999992.", c)); // fails inside a long number
    BOOST_TEST(!d.decode(R"({"id":"g","usage":{"cost":0.5}})", c));
    BOOST_REQUIRE(c.usage && c.usage->cost);
    BOOST_TEST(c.usage->cost->to_string() == "0.5");
    BOOST_TEST(d.decode("99999999999999999999999992.", c));
    BOOST_TEST(!d.decode(R"({"error":{"code":502,"message":"m"}})", c));
    BOOST_TEST(c.error.code == "502");
}

BOOST_AUTO_TEST_CASE(real_whole_response_gpt_4o_mini)
{
    const auto c = decode(
        R"({"id":"gen-1764926476-0N0195qHFzGljvYKVijc","provider":"OpenAI","model":"openai/gpt-4o-mini","object":"chat.completion","created":1764926476,"choices":[{"logprobs":null,"finish_reason":"stop","native_finish_reason":"stop","index":0,"message":{"role":"assistant","content":"TypeScript enhances JavaScript development by providing static typing, improved code quality, better tooling, and early error detection, leading to more robust and maintainable codebases.","refusal":null,"reasoning":null}}],"system_fingerprint":"fp_aa07c96156","usage":{"prompt_tokens":29,"completion_tokens":33,"total_tokens":62,"cost":0.00002415,"is_byok":false,"prompt_tokens_details":{"cached_tokens":0,"audio_tokens":0,"video_tokens":0},"cost_details":{"upstream_inference_cost":null,"upstream_inference_prompt_cost":0.00000435,"upstream_inference_completions_cost":0.0000198},"completion_tokens_details":{"reasoning_tokens":0,"image_tokens":0}}})");
    BOOST_TEST(c.id == "gen-1764926476-0N0195qHFzGljvYKVijc");
    BOOST_TEST(c.provider == "OpenAI");
    BOOST_TEST(c.model == "openai/gpt-4o-mini");
    BOOST_TEST(c.created == 1764926476);
    BOOST_TEST(c.has_choice);
    BOOST_TEST(c.finish_reason == "stop");
    BOOST_TEST(c.content.starts_with("TypeScript enhances"));
    BOOST_TEST(c.refusal.empty());
    BOOST_REQUIRE(c.usage);
    BOOST_TEST(c.usage->prompt_tokens == 29u);
    BOOST_TEST(c.usage->completion_tokens == 33u);
    BOOST_TEST(c.usage->total_tokens == 62u);
    BOOST_REQUIRE(c.usage->cost);
    BOOST_TEST(c.usage->cost->to_string() == "0.00002415"); // exactly, not a double's neighbour
    BOOST_TEST(c.usage->cached_tokens.value() == 0u);
    BOOST_TEST(c.usage->reasoning_tokens.value() == 0u);
    BOOST_TEST(!c.usage->upstream_inference_cost); // null
    BOOST_TEST(c.usage->is_byok.value() == false);
    BOOST_TEST(!c.error.present);
}

BOOST_AUTO_TEST_CASE(real_free_model_response_costs_zero)
{
    const auto c = decode(
        R"({"id":"gen-1768598902-c6b7oNEA4LEwLeeN30Jq","provider":"Xiaomi","model":"xiaomi/mimo-v2-flash:free","object":"chat.completion","created":1768598902,"choices":[{"logprobs":null,"finish_reason":"stop","native_finish_reason":"stop","index":0,"message":{"role":"assistant","content":"```cpp\n#include <iostream>\n...```","refusal":null,"reasoning":null}}],"usage":{"prompt_tokens":32,"completion_tokens":45,"total_tokens":77,"cost":0,"is_byok":false,"prompt_tokens_details":{"cached_tokens":4,"audio_tokens":0,"video_tokens":0},"cost_details":{"upstream_inference_cost":null,"upstream_inference_prompt_cost":0,"upstream_inference_completions_cost":0},"completion_tokens_details":{"reasoning_tokens":0,"image_tokens":0}}})");
    BOOST_TEST(c.model == "xiaomi/mimo-v2-flash:free");
    BOOST_TEST(c.content == "```cpp\n#include <iostream>\n...```");
    BOOST_TEST(c.usage->cost->units() == 0);
    BOOST_TEST(c.usage->cached_tokens.value() == 4u);
}

BOOST_AUTO_TEST_CASE(older_usage_shape_without_cost)
{
    const auto c = decode(
        R"({"id":"gen-1","model":"m","choices":[{"finish_reason":"stop","message":{"content":"x"}}],"usage":{"prompt_tokens":15,"completion_tokens":183,"total_tokens":198,"prompt_tokens_details":null}})");
    BOOST_TEST(c.usage->completion_tokens == 183u);
    BOOST_TEST(!c.usage->cost);
    BOOST_TEST(!c.usage->cached_tokens);
}

BOOST_AUTO_TEST_CASE(leading_keep_alive_whitespace_is_accepted)
{
    const auto c =
        decode("\n\n\n\n   \n"
               R"({"id":"gen-2","choices":[{"message":{"content":"ok"},"finish_reason":"stop"}]})");
    BOOST_TEST(c.content == "ok");
}

BOOST_AUTO_TEST_CASE(real_stream_chunks_and_the_2026_usage_chunk)
{
    chat_decoder d;
    chat_chunk c;
    BOOST_TEST(!d.decode(
        R"({"id":"gen-1778031306-UD7bR0I1JNCsPvVzlXat","object":"chat.completion.chunk","created":1778031306,"model":"openai/gpt-4o-mini","provider":"Azure","system_fingerprint":"fp_eb37e061ec","choices":[{"index":0,"delta":{"content":"Hello","role":"assistant"},"finish_reason":null,"native_finish_reason":null}]})",
        c));
    BOOST_TEST(c.content == "Hello");
    BOOST_TEST(c.finish_reason.empty());
    BOOST_TEST(!c.usage);
    BOOST_TEST(!d.decode(
        R"({"id":"gen-1778031306-UD7bR0I1JNCsPvVzlXat","object":"chat.completion.chunk","created":1778031306,"model":"openai/gpt-4o-mini","provider":"Azure","system_fingerprint":"fp_eb37e061ec","choices":[{"index":0,"delta":{"content":"","role":"assistant"},"finish_reason":"stop","native_finish_reason":"stop"}],"usage":{"prompt_tokens":21,"completion_tokens":3,"total_tokens":24,"cost":0.00000495,"is_byok":false,"prompt_tokens_details":{"cached_tokens":0,"cache_write_tokens":0,"audio_tokens":0,"video_tokens":0},"cost_details":{"upstream_inference_cost":0.00000495,"upstream_inference_prompt_cost":0.00000315,"upstream_inference_completions_cost":0.0000018},"completion_tokens_details":{"reasoning_tokens":0,"image_tokens":0,"audio_tokens":0}}})",
        c));
    BOOST_TEST(c.finish_reason == "stop");
    BOOST_TEST(c.usage->cost->to_string() == "0.00000495");
    BOOST_TEST(c.usage->upstream_inference_cost->to_string() == "0.00000495");
    BOOST_TEST(c.usage->cache_write_tokens.value() == 0u);
}

BOOST_AUTO_TEST_CASE(usage_chunk_with_empty_choices_and_with_null_finish)
{
    const auto empty = decode(
        R"({"id":"gen-3","choices":[],"usage":{"prompt_tokens":1,"completion_tokens":2,"total_tokens":3,"cost":1.5e-6}})");
    BOOST_TEST(!empty.has_choice);
    BOOST_TEST(empty.usage->cost->to_string() == "0.0000015");
    const auto null_finish = decode(
        R"({"id":"gen-1764031697-vqvW0uz7ouT4gsp3FYqp","provider":"OpenAI","model":"openai/gpt-4o","object":"chat.completion.chunk","created":1764031697,"choices":[{"index":0,"delta":{"role":"assistant","content":""},"finish_reason":null,"native_finish_reason":null,"logprobs":null}],"usage":{"prompt_tokens":1697,"completion_tokens":52,"total_tokens":1749,"prompt_tokens_details":{"cached_tokens":0,"audio_tokens":0},"completion_tokens_details":{"reasoning_tokens":0,"audio_tokens":0,"accepted_prediction_tokens":0,"rejected_prediction_tokens":0}}})");
    BOOST_TEST(null_finish.finish_reason.empty());
    BOOST_TEST(null_finish.usage->prompt_tokens == 1697u);
}

BOOST_AUTO_TEST_CASE(real_tool_call_stream_fragments)
{
    const auto first = decode(
        R"({"id":"gen-1778031306-HYzOq04JIk1hZQ4iaNjD","choices":[{"index":0,"delta":{"content":null,"role":"assistant","tool_calls":[{"index":0,"id":"call_L7mHMq49ZSUTBHjLJfBIP2eT","type":"function","function":{"name":"get_weather","arguments":""}}]},"finish_reason":null,"native_finish_reason":null}]})");
    BOOST_REQUIRE(first.tool_calls.size() == 1u);
    BOOST_TEST(first.tool_calls[0].id == "call_L7mHMq49ZSUTBHjLJfBIP2eT");
    BOOST_TEST(first.tool_calls[0].name == "get_weather");
    BOOST_TEST(first.content.empty());
    const auto more = decode(
        R"({"id":"gen-1778031306-HYzOq04JIk1hZQ4iaNjD","choices":[{"index":0,"delta":{"content":null,"role":"assistant","tool_calls":[{"index":0,"function":{"arguments":"{\""}}]},"finish_reason":null,"native_finish_reason":null}]})");
    BOOST_TEST(more.tool_calls.at(0).arguments == "{\"");
    BOOST_TEST(more.tool_calls.at(0).index == 0u);
    const auto end = decode(
        R"({"id":"gen-1","choices":[{"index":0,"delta":{"content":"","role":"assistant"},"finish_reason":"tool_calls","native_finish_reason":"stop"}]})");
    BOOST_TEST(end.finish_reason == "tool_calls");
}

BOOST_AUTO_TEST_CASE(whole_response_tool_calls)
{
    const auto c = decode(
        R"({"id":"gen-4","choices":[{"finish_reason":"tool_calls","message":{"content":null,"tool_calls":[{"id":"a","type":"function","function":{"name":"f","arguments":"{}"}},{"id":"b","type":"function","function":{"name":"g","arguments":"{\"x\":1}"}}]}}]})");
    BOOST_REQUIRE(c.tool_calls.size() == 2u);
    BOOST_TEST(c.tool_calls[1].index == 1u);
    BOOST_TEST(c.tool_calls[1].name == "g");
    BOOST_TEST(c.tool_calls[1].arguments == "{\"x\":1}");
}

BOOST_AUTO_TEST_CASE(reasoning_deltas)
{
    const auto c = decode(
        R"({"id":"gen-fixture-stream","choices":[{"index":0,"delta":{"content":"","role":"assistant","reasoning":"Let me","reasoning_details":[{"type":"reasoning.text","text":"Let me","format":"unknown","index":0}]},"finish_reason":null}]})");
    BOOST_TEST(c.reasoning == "Let me");
    BOOST_TEST(c.content.empty());
}

BOOST_AUTO_TEST_CASE(mid_stream_errors_with_integer_and_string_codes)
{
    const auto numeric = decode(
        R"({"id":"gen-abc123","object":"chat.completion.chunk","created":1234567890,"model":"openai/gpt-4o","provider":"OpenAI","error":{"code":429,"message":"Rate limit exceeded","metadata":{"error_type":"rate_limit_exceeded"}},"choices":[{"index":0,"delta":{"content":""},"finish_reason":"error"}]})");
    BOOST_TEST(numeric.error.present);
    BOOST_TEST(numeric.error.code == "429");
    BOOST_TEST(numeric.error.message == "Rate limit exceeded");
    BOOST_TEST(numeric.error.error_type == "rate_limit_exceeded");
    BOOST_TEST(numeric.finish_reason == "error");
    const auto text = decode(
        R"({"id":"gen-1","error":{"code":"server_error","message":"Provider disconnected unexpectedly"}})");
    BOOST_TEST(text.error.code == "server_error");
    const auto upstream = decode(
        R"({"id":"gen-1","provider":"Together","error":{"code":502,"message":"Provider returned error","metadata":{"raw":"upstream connect error","provider_name":"Together"}},"choices":[{"index":0,"delta":{"role":"assistant","content":""},"finish_reason":"error","native_finish_reason":"error"}]})");
    BOOST_TEST(upstream.error.raw == "upstream connect error");
    BOOST_TEST(upstream.error.provider == "Together");
}

BOOST_AUTO_TEST_CASE(choice_only_error)
{
    const auto c = decode(
        R"({"choices":[{"delta":{"content":"","role":"assistant"},"finish_reason":"error","native_finish_reason":"MALFORMED_FUNCTION_CALL"}]})");
    BOOST_TEST(!c.error.present);
    BOOST_TEST(c.finish_reason == "error");
    BOOST_TEST(c.native_finish_reason == "MALFORMED_FUNCTION_CALL");
}

BOOST_AUTO_TEST_CASE(real_error_bodies)
{
    openrouter::provider_error_info e;
    BOOST_TEST(
        openrouter::decode_error_body(R"({"error":{"message":"User not found.","code":401}})", e));
    BOOST_TEST(e.code == "401");
    BOOST_TEST(e.message == "User not found.");
    BOOST_TEST(openrouter::decode_error_body(
        R"({"error":{"message":"This request requires more credits, or fewer max_tokens. You requested up to 32000 tokens, but can only afford 3333.","code":402}})",
        e));
    BOOST_TEST(e.message.ends_with("can only afford 3333."));
    BOOST_TEST(openrouter::decode_error_body(
        R"({"error":{"message":"Provider returned error","code":429,"metadata":{"raw":"openai/gpt-oss-20b:free is temporarily rate-limited upstream. Please retry shortly, or add your own key to accumulate your rate limits: https://openrouter.ai/settings/integrations","provider_name":"Chutes"}},"user_id":"user_37C8CQywNKwcXbOKEIdZ5xnoENt"})",
        e));
    BOOST_TEST(e.provider == "Chutes");
    BOOST_TEST(e.raw.starts_with("openai/gpt-oss-20b:free is temporarily"));
    // The 2026 availability errors may have no code at all.
    BOOST_TEST(openrouter::decode_error_body(
        R"({"error":{"message":"acme/fake-1.0 is not a valid model ID","error_type":"invalid_request","http_status":400,"availability":{"code":"model_not_found"}}})",
        e));
    BOOST_TEST(e.code.empty());
    BOOST_TEST(e.message == "acme/fake-1.0 is not a valid model ID");
    // Moderation metadata.
    BOOST_TEST(openrouter::decode_error_body(
        R"({"error":{"code":403,"message":"flagged","metadata":{"reasons":["harassment"],"flagged_input":"...","provider_name":"P","model_slug":"m"}}})",
        e));
    BOOST_TEST(e.moderation);
    BOOST_TEST(!openrouter::decode_error_body("<html>Bad gateway</html>", e));
    BOOST_TEST(!openrouter::decode_error_body(R"({"choices":[]})", e));
}

BOOST_AUTO_TEST_CASE(malformed_documents_are_protocol_errors)
{
    chat_decoder d;
    chat_chunk c;
    for (const char* bad :
         {"", "{", "[1,2]", "{\"id\":\"gen\"} trailing",
          "{\"choices\":[{\"delta\":{\"content\":\"tru", "null"}) {
        BOOST_TEST(d.decode(bad, c) == frugal::error::protocol_error, bad);
    }
    // The decoder recovers for the next document.
    BOOST_TEST(!d.decode(R"({"id":"ok"})", c));
    BOOST_TEST(c.id == "ok");
}

BOOST_AUTO_TEST_CASE(request_body_is_valid_json_with_every_field)
{
    chat_request r;
    r.model = "anthropic/claude-fable-5";
    r.models = {"google/gemma-4-31b-it:free"};
    r.messages = {
        {.role = "system", .content = "Be \"brief\"\n\t\\ \x01"},
        {.role = "assistant", .content = "", .tool_calls = {{"c1", "function", "f", "{\"a\":1}"}}},
        {.role = "tool", .content = "42", .tool_call_id = "c1"},
        {.role = "user", .content = "h\xC3\xA9llo", .name = "ann"}};
    r.max_tokens = 512;
    r.temperature = 0.25;
    r.top_p = 0.9;
    r.seed = 7;
    r.stop = {"\n\n"};
    r.response_format = "json_schema";
    r.response_schema = R"({"name":"answer","schema":{"type":"object"}})";
    r.provider = frugal::provider_preferences{
        .order = {"anthropic"}, .allow_fallbacks = false, .sort = "price", .zdr = true};
    r.user = "user-1";
    r.extra_body = R"({"plugins":[{"id":"web"}],"reasoning":{"effort":"low"}})";
    std::string body;
    BOOST_REQUIRE(!openrouter::encode_chat_request(r, true, body));
    const auto o = json::parse(body).as_object();
    BOOST_TEST(o.at("model").as_string() == "anthropic/claude-fable-5");
    BOOST_TEST(o.at("models").at(0).as_string() == "google/gemma-4-31b-it:free");
    BOOST_TEST(o.at("stream").as_bool());
    BOOST_TEST(o.at("max_tokens").as_int64() == 512);
    BOOST_TEST(o.at("temperature").as_double() == 0.25);
    BOOST_TEST(o.at("seed").as_int64() == 7);
    const auto& m = o.at("messages").as_array();
    BOOST_TEST(m.at(0).at("content").as_string() == "Be \"brief\"\n\t\\ \x01");
    BOOST_TEST(
        m.at(1).at("tool_calls").at(0).at("function").at("arguments").as_string() == "{\"a\":1}");
    BOOST_TEST(m.at(2).at("tool_call_id").as_string() == "c1");
    BOOST_TEST(m.at(3).at("content").as_string() == "h\xC3\xA9llo");
    BOOST_TEST(m.at(3).at("name").as_string() == "ann");
    BOOST_TEST(o.at("response_format").at("json_schema").at("name").as_string() == "answer");
    BOOST_TEST(o.at("provider").at("order").at(0).as_string() == "anthropic");
    BOOST_TEST(o.at("provider").at("allow_fallbacks").as_bool() == false);
    BOOST_TEST(o.at("provider").at("zdr").as_bool());
    BOOST_TEST(o.at("user").as_string() == "user-1");
    BOOST_TEST(o.at("plugins").at(0).at("id").as_string() == "web");
    BOOST_TEST(o.at("reasoning").at("effort").as_string() == "low");

    r.extra_body = "[1]";
    BOOST_TEST(openrouter::encode_chat_request(r, false, body) == frugal::error::bad_request_body);
    r.extra_body.clear();
    r.response_schema = "{not json";
    BOOST_TEST(openrouter::encode_chat_request(r, false, body) == frugal::error::bad_request_body);
}

BOOST_AUTO_TEST_CASE(models_catalog_spec_example_and_alias)
{
    std::vector<model_info> models;
    BOOST_REQUIRE(!openrouter::decode_models(
        R"({"data":[{"architecture":{"input_modalities":["text"],"instruct_type":"chatml","modality":"text->text","output_modalities":["text"],"tokenizer":"GPT"},
 "canonical_slug":"openai/gpt-4","context_length":8192,"created":1692901234,"default_parameters":null,
 "description":"GPT-4","expiration_date":null,"id":"openai/gpt-4","knowledge_cutoff":null,"links":{"details":"/api/v1/models/openai/gpt-4/endpoints"},
 "name":"GPT-4","per_request_limits":null,
 "pricing":{"completion":"0.00006","image":"0","prompt":"0.00003","request":"0"},
 "supported_parameters":["temperature","top_p","max_tokens"],"supported_voices":null,
 "top_provider":{"context_length":8192,"is_moderated":true,"max_completion_tokens":4096}},
 {"id":"~anthropic/claude-fable-latest","name":"Latest","created":1,"context_length":null,"pricing":{"prompt":"0.000003","completion":"0.000015"},
  "top_provider":{"is_moderated":false},"alias_target":{"slug":"anthropic/claude-fable-5","name":"Fable 5"}}],
 "total_count":2,"links":{"next":null}})",
        models));
    BOOST_REQUIRE(models.size() == 2u);
    BOOST_TEST(models[0].prompt_price.to_string() == "0.00003");
    BOOST_TEST(models[0].completion_price.to_string() == "0.00006");
    BOOST_TEST(models[0].context_length.value() == 8192u);
    BOOST_TEST(models[0].max_completion_tokens.value() == 4096u);
    BOOST_TEST(models[1].alias_target == "anthropic/claude-fable-5");
    BOOST_TEST(!models[1].context_length);
    BOOST_TEST(!models[1].max_completion_tokens);
    // A price that cannot be read exactly is never a guess: the row is kept, marked, so a cap
    // refuses it by name; the other rows are unharmed.
    BOOST_REQUIRE(!openrouter::decode_models(
        R"({"data":[{"id":"x","pricing":{"prompt":"cheap","completion":"0"}},
                    {"id":"y","pricing":{"prompt":"0.000001","completion":"0.000002",
                     "web_search":"0.01","internal_reasoning":"0.00003","discount":0,
                     "overrides":[{"min_prompt_tokens":200000,"prompt":"0.000002"}]}}]})",
        models));
    BOOST_REQUIRE(models.size() == 2u);
    BOOST_TEST(
        models[0].price_problem == "pricing.prompt is a string that is not a decimal amount");
    BOOST_TEST(models[1].price_problem.empty());
    const std::vector<std::pair<std::string, money>> others{
        {"web_search", *money::parse("0.01")},
        {"internal_reasoning", *money::parse("0.00003")},
        {"overrides.prompt", *money::parse("0.000002")}};
    BOOST_TEST((models[1].other_prices == others));
}

BOOST_AUTO_TEST_CASE(generation_and_key_spec_examples)
{
    generation_info g;
    BOOST_REQUIRE(!openrouter::decode_generation(
        R"({"data":{"api_type":"completions","app_id":12345,"cache_discount":null,"cancelled":false,"created_at":"2024-07-15T23:33:19.433273+00:00","id":"gen-3bhGkxlo4XFrqiabUM7NDtwDzWwG","model":"sao10k/l3-stheno-8b","native_tokens_completion":25,"native_tokens_prompt":10,"provider_name":"Infermatic","streamed":true,"tokens_completion":25,"tokens_prompt":10,"total_cost":0.0015,"usage":0.0015}})",
        g));
    BOOST_TEST(g.total_cost->to_string() == "0.0015");
    BOOST_TEST(g.provider == "Infermatic");
    BOOST_TEST(g.cancelled.value() == false);
    BOOST_TEST(g.streamed.value() == true);
    BOOST_TEST(g.tokens_completion == 25u);
    key_info k;
    BOOST_REQUIRE(!openrouter::decode_key_info(
        R"({"data":{"byok_usage":17.38,"label":"sk-or-v1-au7...890","limit":100,"limit_remaining":74.5,"limit_reset":"monthly","usage":25.5,"usage_daily":25.5,"usage_monthly":25.5,"usage_weekly":25.5,"is_free_tier":false}})",
        k));
    BOOST_TEST(k.limit->to_string() == "100");
    BOOST_TEST(k.limit_remaining->to_string() == "74.5");
    BOOST_TEST(k.usage.to_string() == "25.5");
    BOOST_REQUIRE(!openrouter::decode_key_info(
        R"({"data":{"label":"x","limit":null,"limit_remaining":null,"usage":0}})", k));
    BOOST_TEST(!k.limit);
}

BOOST_AUTO_TEST_SUITE_END()
