#ifndef FRUGAL_SRC_SERVE_WIRE_HPP
#define FRUGAL_SRC_SERVE_WIRE_HPP

// The gateway's side of the OpenAI wire: a client's chat request read into the library's
// typed request, and answers, stream chunks and errors written in the shapes the official
// SDKs parse.

#include <frugal/money.hpp>
#include <frugal/types.hpp>

#include <cstdint>
#include <string>
#include <string_view>
#include <vector>

namespace frugal::serve {

struct wire_request {
    chat_request req;
    bool stream = false;
    bool include_usage = false; // stream_options.include_usage
};

// Why a request body was refused: the message and the member (OpenAI's `param`).
struct wire_problem {
    std::string message;
    std::string param;
};

// Reads a `POST /chat/completions` body. Members the typed request does not know go to
// `extra_body`, where the encoder and the guard apply the money rules to them.
bool parse_chat_body(std::string_view body, wire_request& out, wire_problem& why);

// What a finished request reports to its client beside the answer.
struct wire_totals {
    std::string model;  // the model that answered
    money cost;         // every attempt's, the cheap tiers' included
    std::uint64_t prompt_tokens = 0;
    std::uint64_t completion_tokens = 0;
};

// A whole `chat.completion`.
std::string encode_completion(const chat_response& r, const wire_totals& t);

// One `data: ...\n\n` event of a streamed answer: a text delta, or (with `finish`) the last
// chunk, which carries the usage when `totals` is given.
void append_chunk(
    std::string& out,
    std::string_view id,
    std::int64_t created,
    std::string_view model,
    std::string_view content,
    bool first);
void append_finish(
    std::string& out,
    std::string_view id,
    std::int64_t created,
    std::string_view model,
    std::string_view finish_reason,
    const wire_totals* totals);
// The answer's tool calls as one chunk, each whole under its `index` (an OpenAI client joins a
// call's pieces by index; one piece is a whole call). `first`: no chunk was sent before it.
void append_tool_call_chunk(
    std::string& out,
    std::string_view id,
    std::int64_t created,
    std::string_view model,
    const std::vector<tool_call>& calls,
    bool first);
// An error inside a stream that has started, as OpenRouter sends one: a chunk of the stream
// (its id, object, created and model, which @openrouter/sdk's schema requires) with a
// top-level `error` and finish_reason "error"; with the usage and cost of what was spent when
// `totals` is given (the ledger has them either way).
void append_stream_error(
    std::string& out,
    std::string_view id,
    std::int64_t created,
    std::string_view model,
    std::string_view message,
    int code,
    const wire_totals* totals = nullptr);

// `{"error": {"message", "code", "type", "param", "metadata": {"reason"}}}`: the status as
// `code`, frugal's reason for it in `metadata.reason`.
std::string error_body(
    int status,
    std::string_view message,
    std::string_view type,
    std::string_view reason,
    std::string_view param);

// JSON's escaping of `text`, quoted.
void append_json_string(std::string& out, std::string_view text);

} // namespace frugal::serve

#endif // FRUGAL_SRC_SERVE_WIRE_HPP
