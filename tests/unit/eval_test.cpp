// `frugal eval` without sockets: the outcome files' formats and their errors, the documented
// token rule, each measure on a hand-made file whose figures are worked out by hand below, the
// `must_match` condition, and the baselines of the vendored GSM8K file.

#include <frugal/eval.hpp>

#include <frugal/error.hpp>

#include "cascade/judge.hpp"
#include "cascade_printers.hpp"
#include "printers.hpp"

#include <boost/test/unit_test.hpp>

#include <cmath>
#include <filesystem>
#include <fstream>
#include <sstream>

#include <unistd.h>

using frugal::escalation_reason;
using frugal::money;

namespace {

frugal::model_info row(const char* id, const char* prompt, const char* completion)
{
    frugal::model_info m;
    m.id = id;
    m.prompt_price = *money::parse(prompt);
    m.completion_price = *money::parse(completion);
    return m;
}

// c: $1 per million prompt tokens, $2 per million completion tokens; f: $10 and $30.
frugal::price_catalog prices()
{
    return frugal::price_catalog(
        std::vector{row("c", "0.000001", "0.000002"), row("f", "0.00001", "0.00003")});
}

// Four prompts, worked out by hand (c is the cheap model, f the flagship):
//   p1: both right.                       p2: c has no final line and is wrong, f right.
//   p3: c has a final line but is wrong.  p4: c has no final line, both wrong.
// Tokens are recorded (10 prompt, 5 completion) except p4's, estimated by the bytes/4 rule:
// "p4" 1 token, "hmm" 1, "#### 5" 2.
constexpr const char* hand_made =
    R"({"prompt":"p1","answers":{"c":{"content":"#### 1","correct":true,"prompt_tokens":10,"completion_tokens":5},"f":{"content":"#### 1","correct":true,"prompt_tokens":10,"completion_tokens":5}}}
{"prompt":"p2","answers":{"c":{"content":"no idea","correct":false,"prompt_tokens":10,"completion_tokens":5},"f":{"content":"#### 2","correct":true,"prompt_tokens":10,"completion_tokens":5}}}

{"prompt":"p3","answers":{"c":{"content":"#### 3","correct":false,"prompt_tokens":10,"completion_tokens":5},"f":{"content":"#### 4","correct":true,"prompt_tokens":10,"completion_tokens":5}}}
{"prompt":"p4","answers":{"c":{"content":"hmm","correct":false},"f":{"content":"#### 5","correct":false}}}
)";

frugal::cascade_policy final_line_policy()
{
    frugal::diagnostics d;
    auto p = frugal::parse_policy(R"({"cheap":"c","flagship":"f","must_match":"^#### \\d+$"})", &d);
    BOOST_TEST_REQUIRE(p.has_value(), d.message);
    return *p;
}

bool near(double a, double b)
{
    return std::abs(a - b) < 1e-12;
}

} // namespace

BOOST_AUTO_TEST_SUITE(eval)

BOOST_AUTO_TEST_CASE(each_measure_on_a_hand_made_file)
{
    frugal::diagnostics d;
    const auto set = frugal::parse_outcomes_jsonl(hand_made, &d);
    BOOST_TEST_REQUIRE(set.has_value(), d.message);
    BOOST_TEST(set->models == (std::vector<std::string>{"c", "f"}));
    BOOST_TEST(set->prompts.size() == 4u);
    BOOST_TEST(set->prompts[2].line == 4u); // the blank line counts
    const auto r = frugal::evaluate(*set, final_line_policy(), prices(), &d);
    BOOST_TEST_REQUIRE(r.has_value(), d.message);
    BOOST_TEST(r->judged);
    BOOST_TEST(r->prompts == 4u);

    // Per call: c 10×1µ + 5×2µ = $0.00002 (p4: 1×1µ + 1×2µ = $0.000003);
    //           f 10×10µ + 5×30µ = $0.00025 (p4: 1×10µ + 2×30µ = $0.00007).
    BOOST_TEST(near(r->always_cheap.accuracy, 0.25));
    BOOST_TEST((r->always_cheap.cost == *money::parse("0.000063")));
    BOOST_TEST(near(r->always_cheap.escalated_share, 0));
    BOOST_TEST(near(*r->always_cheap.pgr, 0));
    BOOST_TEST(near(r->always_flagship.accuracy, 0.75));
    BOOST_TEST((r->always_flagship.cost == *money::parse("0.00082")));
    BOOST_TEST(near(*r->always_flagship.pgr, 1));
    BOOST_TEST(near(r->always_flagship.by_tier[1], 1));

    // The policy: p2 and p4 go up (no final line); p3 stays, wrong. Right: p1, p2.
    BOOST_TEST(near(r->policy.accuracy, 0.5));
    BOOST_TEST(near(r->policy.escalated_share, 0.5));
    BOOST_TEST(near(r->policy.by_tier[0], 0.5));
    BOOST_TEST(near(*r->policy.pgr, 0.5)); // (0.5 − 0.25) / (0.75 − 0.25)
    BOOST_TEST((r->policy.cost == *money::parse("0.000383"))); // both calls of p2 and p4
    BOOST_TEST_REQUIRE(r->decisions.size() == 4u);
    BOOST_TEST(r->decisions[0].tier == 0u);
    BOOST_TEST(r->decisions[1].tier == 1u);
    BOOST_TEST(r->decisions[1].reason == escalation_reason::must_match);
    BOOST_TEST(r->decisions[2].tier == 0u);
    BOOST_TEST(!r->decisions[2].correct);
    BOOST_TEST((r->decisions[3].cost == *money::parse("0.000073")));

    // The oracle sends p2 and p3 up (only f is right there): 3 of 4 right.
    BOOST_TEST(near(r->oracle.accuracy, 0.75));
    BOOST_TEST(near(r->oracle.escalated_share, 0.5));
    BOOST_TEST((r->oracle.cost == *money::parse("0.000563")));
    BOOST_TEST(near(*r->oracle.pgr, 1));

    // Random: as many as the policy sent up, picked by a Fisher-Yates shuffle from SplitMix64
    // seeded 1. Worked out apart from frugal (in Python), that shuffle of 4 starts [2, 0]: p3
    // and p1 go up, both then right; p2 and p4 stay, wrong.
    BOOST_TEST(near(r->random.escalated_share, 0.5));
    BOOST_TEST(near(r->random.accuracy, 0.5));
    BOOST_TEST((r->random.cost == *money::parse("0.000563")));

    // Every prompt calls the first tier; half of them the flagship too.
    BOOST_TEST(near(r->policy.sent_to[0], 1));
    BOOST_TEST(near(r->policy.sent_to[1], 0.5));
    BOOST_TEST(near(r->always_flagship.sent_to[0], 0));
    BOOST_TEST(r->notes.empty());
}

BOOST_AUTO_TEST_CASE(an_answer_longer_than_max_tokens_is_cut_there_and_counted_wrong)
{
    frugal::diagnostics d;
    const auto set = frugal::parse_outcomes_jsonl(
        R"({"prompt":"q","answers":{"c":{"content":"a long cheap answer","correct":true},"f":{"content":"ok","correct":true}}})",
        &d);
    BOOST_TEST_REQUIRE(set.has_value(), d.message);
    auto p = final_line_policy();
    p.escalate_on = {escalation_reason::length};
    p.must_match.clear();
    p.max_tokens = 3; // the cheap answer is 19 bytes: 5 tokens
    const auto r = frugal::evaluate(*set, p, prices(), &d);
    BOOST_TEST_REQUIRE(r.has_value(), d.message);
    BOOST_TEST(r->cut == 1u);
    BOOST_TEST(r->decisions[0].tier == 1u);
    BOOST_TEST(r->decisions[0].reason == escalation_reason::length);
    BOOST_TEST(near(r->always_cheap.accuracy, 0)); // cut: its verdict was on the whole answer
    // Billed as cut: 1 prompt token and 3 completion tokens of c, then f (1 + 1).
    BOOST_TEST((r->policy.cost == *money::parse("0.000047")));
    BOOST_TEST(!r->notes.empty());
}

BOOST_AUTO_TEST_CASE(routellm_csv_as_published_with_quotes_and_line_breaks)
{
    const std::string csv =
        "\xEF\xBB\xBFprompt,m/a,m/b,m/a_response,m/b_response,extra\r\n"
        "\"Say \"\"hi\"\",\nthen stop\",True,False,\"hi\r\n#### 1\",nope,x\r\n"
        "plain,false,true,,\"#### 2\",y\n";
    frugal::diagnostics d;
    const auto set = frugal::parse_outcomes_csv(csv, &d);
    BOOST_TEST_REQUIRE(set.has_value(), d.message);
    BOOST_TEST(set->models == (std::vector<std::string>{"m/a", "m/b"}));
    BOOST_TEST(set->ignored_columns == (std::vector<std::string>{"extra"}));
    BOOST_TEST_REQUIRE(set->prompts.size() == 2u);
    BOOST_TEST(set->prompts[0].prompt == "Say \"hi\",\nthen stop");
    BOOST_TEST(set->prompts[0].line == 2u);
    BOOST_TEST(set->prompts[1].line == 5u); // two quoted line breaks moved it
    BOOST_TEST(*set->prompts[0].answers[0]->content == "hi\r\n#### 1");
    BOOST_TEST(set->prompts[0].answers[0]->correct);
    BOOST_TEST(!set->prompts[1].answers[0]->correct);
    BOOST_TEST(*set->prompts[1].answers[0]->content == "");
    BOOST_TEST(set->has_responses());

    // Correctness only (RouteLLM's MMLU files): the baselines alone, said in the notes.
    const auto mmlu = frugal::parse_outcomes_csv("prompt,c,f\nq1,True,True\nq2,False,True\n", &d);
    BOOST_TEST_REQUIRE(mmlu.has_value(), d.message);
    BOOST_TEST(!mmlu->has_responses());
    const auto r = frugal::evaluate(*mmlu, final_line_policy(), prices(), &d);
    BOOST_TEST_REQUIRE(r.has_value(), d.message);
    BOOST_TEST(!r->judged);
    BOOST_TEST(r->decisions.empty());
    BOOST_TEST(near(r->oracle.accuracy, 1));
    BOOST_TEST(near(r->random.escalated_share, 0.5)); // the oracle's share
    BOOST_TEST(!r->notes.empty());
}

BOOST_AUTO_TEST_CASE(only_the_policys_tiers_need_their_text)
{
    // A third model recorded without text (correctness only) does not stop the judging.
    const std::string csv = "prompt,c,f,x,c_response,f_response\n"
                            "p1,True,True,False,#### 1,#### 1\n"
                            "p2,False,True,True,no idea,#### 2\n";
    frugal::diagnostics d;
    const auto set = frugal::parse_outcomes_csv(csv, &d);
    BOOST_TEST_REQUIRE(set.has_value(), d.message);
    BOOST_TEST(set->models.size() == 3u);
    BOOST_TEST(!set->has_responses());
    const auto r = frugal::evaluate(*set, final_line_policy(), prices(), &d);
    BOOST_TEST_REQUIRE(r.has_value(), d.message);
    BOOST_TEST(r->judged);
    BOOST_TEST(near(r->policy.accuracy, 1));

    // A model's column (it has responses) with a cell that is not a verdict is named.
    const auto bad = frugal::parse_outcomes_csv(
        "prompt,c,c_response\np1,True,x\np2,,y\n", &d);
    BOOST_TEST(!bad.has_value());
    BOOST_TEST(d.message.find("line 3, column \"c\"") != std::string::npos, d.message);

    // JSONL with a byte-order mark, as some editors write it.
    const auto bom = frugal::parse_outcomes_jsonl(
        "\xEF\xBB\xBF{\"prompt\":\"q\",\"answers\":{\"c\":{\"correct\":true}}}\n", &d);
    BOOST_TEST(bom.has_value(), d.message);
}

BOOST_AUTO_TEST_CASE(files_merge_by_model_name_and_errors_name_the_file)
{
    const auto dir = std::filesystem::temp_directory_path() /
                     ("frugal-eval-" + std::to_string(::getpid()));
    std::filesystem::create_directories(dir);
    const auto a = (dir / "a.jsonl").string();
    const auto b = (dir / "b.jsonl").string();
    std::ofstream(a) << R"({"prompt":"p1","answers":{"c":{"content":"x","correct":true},"f":{"content":"y","correct":false}}})" "\n";
    std::ofstream(b) << R"({"prompt":"p2","answers":{"f":{"content":"z","correct":true},"c":{"content":"w","correct":false}}})" "\n"
                     << R"({"prompt":"p3","answers":{"c":{"content":"v","correct":true}}})" "\n";
    frugal::diagnostics d;
    const auto set = frugal::read_outcomes({a, b}, &d);
    BOOST_TEST_REQUIRE(set.has_value(), d.message);
    BOOST_TEST(set->models == (std::vector<std::string>{"c", "f"}));
    BOOST_TEST(*set->prompts[1].answers[0]->content == "w"); // c's answer in c's slot
    BOOST_TEST(*set->prompts[1].answers[1]->content == "z");
    // p3 has no answer of f: the error names its file and line.
    const auto r = frugal::evaluate(*set, final_line_policy(), prices(), &d);
    BOOST_TEST(!r.has_value());
    BOOST_TEST(d.message.find(b + ", line 2") != std::string::npos, d.message);
    std::filesystem::remove_all(dir);
}

BOOST_AUTO_TEST_CASE(malformed_files_are_refused_with_the_line_and_why)
{
    auto error_of = [](const std::string& text, bool csv) {
        frugal::diagnostics d;
        const auto r = csv ? frugal::parse_outcomes_csv(text, &d)
                           : frugal::parse_outcomes_jsonl(text, &d);
        BOOST_TEST(!r.has_value());
        if (!r)
            BOOST_TEST(r.error() == frugal::error::bad_outcomes);
        return d.message;
    };
    BOOST_TEST(error_of("prompt,c\nq,True\nr,True,extra\n", true).find("line 3") != std::string::npos);
    BOOST_TEST(error_of("prompt,c\n\"q,True\n", true).find("never closed") != std::string::npos);
    BOOST_TEST(error_of("q,c\nx,True\n", true).find("prompt") != std::string::npos);
    BOOST_TEST(error_of("prompt,c\nx,maybe\n", true).find("no model column") != std::string::npos);
    BOOST_TEST(error_of("", true).find("empty") != std::string::npos);
    BOOST_TEST(
        error_of("{\"prompt\":\"q\",\"answers\":{\"c\":{\"content\":\"x\"}}}\n", false)
            .find("\"correct\" is missing") != std::string::npos);
    BOOST_TEST(
        error_of("{\"prompt\":\"q\",\"answers\":{\"c\":{\"correct\":true,\"completion_tokens\":-1}}}",
                 false)
            .find("completion_tokens") != std::string::npos);
    BOOST_TEST(error_of("{\"prompt\":\"q\"}\n", false).find("line 1") != std::string::npos);
    BOOST_TEST(
        error_of("{\"prompt\":\"q\",\"answers\":{\"c\":{\"content\":\"x\",\"correct\":true,"
                 "\"completion_tokens\":0}}}",
                 false)
            .find("is 0 but") != std::string::npos);
    BOOST_TEST(error_of("\n\nnot json\n", false).find("line 3") != std::string::npos);
    BOOST_TEST(
        error_of("{\"prompt\":\"q\",\"answers\":{\"c\":{\"correct\":true}},\"x\":1}", false)
            .find("unknown member \"x\"") != std::string::npos);

    // A tier that is not one of the file's models: the error lists the file's models.
    frugal::diagnostics d;
    const auto set = frugal::parse_outcomes_jsonl(hand_made, &d);
    auto p = final_line_policy();
    p.tiers = {"c", "gpt-5"};
    const auto r = frugal::evaluate(*set, p, prices(), &d);
    BOOST_TEST(!r.has_value());
    BOOST_TEST(d.message.find("gpt-5") != std::string::npos);
    BOOST_TEST(d.message.find("its models: c, f") != std::string::npos);
    // A tier the price list lacks.
    const auto none = frugal::evaluate(*set, final_line_policy(), frugal::price_catalog(), &d);
    BOOST_TEST((!none.has_value() && none.error() == frugal::error::price_unknown));
}

BOOST_AUTO_TEST_CASE(tokens_are_bytes_over_four_and_never_split_a_character)
{
    BOOST_TEST(frugal::estimate_tokens("") == 0u);
    BOOST_TEST(frugal::estimate_tokens("abcd") == 1u);
    BOOST_TEST(frugal::estimate_tokens("abcde") == 2u);
    BOOST_TEST(frugal::estimate_tokens("h\xC3\xA9llo") == 2u); // "héllo": 6 bytes

    const std::string text = "a\xF0\x9F\x98\x80" "b\xC3\xA9" "c"; // a😀béc: 9 bytes, 5 characters
    for (std::uint64_t n : {1u, 2u, 3u, 5u, 8u}) {
        const auto tokens = frugal::split_tokens(text, n);
        BOOST_TEST(tokens.size() == n);
        std::string joined;
        for (const auto t : tokens) {
            joined += t;
            if (!t.empty()) // no token starts inside a character
                BOOST_TEST((static_cast<unsigned char>(t.front()) & 0xC0) != 0x80);
        }
        BOOST_TEST(joined == text);
    }
    BOOST_TEST(frugal::split_tokens("abc", 0).empty());
}

BOOST_AUTO_TEST_CASE(must_match_is_parsed_checked_and_searched_as_ecmascript)
{
    frugal::diagnostics d;
    // A pattern alone turns its condition on.
    auto p = frugal::parse_policy(R"({"cheap":"a","flagship":"b","must_match":"#### \\d+"})", &d);
    BOOST_TEST_REQUIRE(p.has_value(), d.message);
    BOOST_TEST(frugal::detail::enabled(*p, escalation_reason::must_match));
    BOOST_TEST(frugal::detail::enabled(*p, escalation_reason::length)); // the defaults stay

    auto refused = [&](const std::string& json, const char* why) {
        const auto r = frugal::parse_policy(json, &d);
        BOOST_TEST(!r.has_value(), json);
        BOOST_TEST(d.message.find(why) != std::string::npos, d.message);
    };
    refused(R"({"cheap":"a","flagship":"b","must_match":"(unclosed"})", "not an ECMAScript");
    refused(R"({"cheap":"a","flagship":"b","must_match":""})", "non-empty string");
    // What Boost would read as Perl, and JavaScript otherwise, is refused.
    refused(R"({"cheap":"a","flagship":"b","must_match":"caf\\u00e9"})", "\\u escapes");
    refused(R"({"cheap":"a","flagship":"b","must_match":"(?i)yes"})", "(?i is Perl");
    refused(R"({"cheap":"a","flagship":"b","must_match":"\\Ayes"})", "\\A is Perl");
    refused(R"({"cheap":"a","flagship":"b","must_match":"a*+b"})", "possessive");
    refused(R"({"cheap":"a","flagship":"b","must_match":"[^]"})", "read differently");
    BOOST_TEST(frugal::detail::pattern_error("[*+](?=x)(?!y)(?:z)(?<n>w)(?<=v)\\d\\\\u").empty());
    refused(
        R"({"cheap":"a","flagship":"b","escalate_on":["must_match"]})",
        "no \"must_match\" pattern");
    refused(
        R"({"cheap":"a","flagship":"b","escalate_on":["length"],"must_match":"x"})",
        "does not list \"must_match\"");
    // The same rule for the other members of a condition.
    refused(
        R"({"cheap":"a","flagship":"b","escalate_on":["length"],"min_chars":10})",
        "\"min_chars\" is set but \"escalate_on\" does not list \"too_short\"");
    refused(
        R"({"cheap":"a","flagship":"b","escalate_on":["empty"],"json_schema":{"type":"object"}})",
        "does not list \"invalid_json\"");
    auto q = frugal::parse_policy(R"({"cheap":"a","flagship":"b","min_chars":10})", &d);
    BOOST_TEST_REQUIRE(q.has_value(), d.message);
    BOOST_TEST(frugal::detail::enabled(*q, escalation_reason::too_short));
    q = frugal::parse_policy(R"({"cheap":"a","flagship":"b","min_chars":0})", &d);
    BOOST_TEST(!frugal::detail::enabled(*q, escalation_reason::too_short)); // 0: off

    // JavaScript's semantics without flags.
    using frugal::detail::contains_match;
    BOOST_TEST(contains_match("#### \\d+", "so\n#### 42"));       // searched anywhere
    BOOST_TEST(!contains_match("^#### \\d+$", "so\n#### 42"));    // ^ is the answer's start
    BOOST_TEST(contains_match("(^|\\n)#### \\d+$", "so\n#### 42"));
    BOOST_TEST(!contains_match("^4.2$", "4\n2"));                  // . is not a line break
    BOOST_TEST(contains_match("(?=.*ok)", "is ok"));               // lookahead
    BOOST_TEST(!contains_match("(unclosed", "(unclosed"));        // never compiles: not found

    // A pathological pattern on a long answer stops at the engine's limit: not found, no hang
    // and no stack overflow.
    const std::string long_a(100'000, 'a');
    BOOST_TEST(!contains_match("(a*)*b", long_a));
    BOOST_TEST(contains_match("a$", long_a));

    // The judge: an answer without the pattern escalates for `must_match`.
    frugal::chat_request req;
    frugal::chat_response r;
    r.finish_reason = "stop";
    r.content = "It is 42.";
    BOOST_TEST(frugal::detail::judge(*p, req, r) == escalation_reason::must_match);
    r.content = "It is 42.\n#### 42";
    BOOST_TEST(frugal::detail::judge(*p, req, r) == escalation_reason::none);
}

// The vendored GSM8K file (data/routellm): the baselines are the file's own rates.
BOOST_AUTO_TEST_CASE(the_gsm8k_baselines_are_the_files_own_rates)
{
    std::vector<std::string> paths{std::string(FRUGAL_SOURCE_DIR) + "/data/routellm/gsm8k_responses.csv"};
    frugal::diagnostics d;
    const auto set = frugal::read_outcomes(paths, &d);
    BOOST_TEST_REQUIRE(set.has_value(), d.message);
    BOOST_TEST_REQUIRE(set->prompts.size() == 1319u);
    const std::string cheap = "mistralai/Mixtral-8x7B-Instruct-v0.1";
    const std::string flagship = "gpt-4-1106-preview";
    const auto c = *set->model_index(cheap);
    const auto f = *set->model_index(flagship);
    std::size_t cheap_right = 0, flagship_right = 0, either = 0;
    for (const auto& p : set->prompts) {
        cheap_right += p.answers[c]->correct;
        flagship_right += p.answers[f]->correct;
        either += p.answers[c]->correct || p.answers[f]->correct;
    }
    // As published: 842 and 1,130 of 1,319 right, 1,225 by either.
    BOOST_TEST(cheap_right == 842u);
    BOOST_TEST(flagship_right == 1130u);
    BOOST_TEST(either == 1225u);

    std::ifstream in(std::string(FRUGAL_SOURCE_DIR) + "/data/routellm/models.json");
    std::stringstream text;
    text << in.rdbuf();
    const auto rows = frugal::parse_models(text.str());
    BOOST_TEST_REQUIRE(rows.has_value());
    auto p = frugal::parse_policy(
        R"({"cheap":"mistralai/Mixtral-8x7B-Instruct-v0.1","flagship":"gpt-4-1106-preview",)"
        R"("max_tokens":1024,"must_match":"(^|\\n)#### -?[\\d,]*\\d\\s*$"})",
        &d);
    BOOST_TEST_REQUIRE(p.has_value(), d.message);
    const auto r = frugal::evaluate(*set, *p, frugal::price_catalog(*rows), &d);
    BOOST_TEST_REQUIRE(r.has_value(), d.message);
    BOOST_TEST(r->cut == 0u);
    BOOST_TEST(near(r->always_cheap.accuracy, 842.0 / 1319));
    BOOST_TEST(near(r->always_flagship.accuracy, 1130.0 / 1319));
    BOOST_TEST(near(r->oracle.accuracy, 1225.0 / 1319));
    BOOST_TEST(near(r->oracle.escalated_share, (1225.0 - 842) / 1319));
    // The final-answer check: better than random escalation at the same share.
    BOOST_TEST(r->policy.accuracy > r->random.accuracy);
    BOOST_TEST(r->policy.escalated_share < 0.25);
}

BOOST_AUTO_TEST_SUITE_END()
