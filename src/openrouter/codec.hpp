#ifndef FRUGAL_OPENROUTER_CODEC_HPP
#define FRUGAL_OPENROUTER_CODEC_HPP

// OpenRouter's JSON, both ways: request bodies are written by hand (one flat buffer, no DOM),
// chat responses and stream chunks are read by a SAX handler that keeps only the fields frugal
// uses, and keeps money as the decimal text the server wrote. The rarer endpoints (catalog,
// generation, key) go through Boost.JSON's DOM.

#include <frugal/types.hpp>

#include <boost/system/error_code.hpp>

#include <memory>
#include <string>
#include <string_view>
#include <vector>

namespace frugal::openrouter {

/// Writes the body of `POST /chat/completions`. Fails with `error::bad_request_body`, `detail`
/// saying why, when `extra_body` or `response_schema` is not a JSON object or `extra_body`
/// sets a member the typed request or the guard owns.
boost::system::error_code encode_chat_request(
    const chat_request& req, bool stream, std::string& out, std::string* detail = nullptr);

/// An error object as OpenRouter sends it, in a body or inside a stream chunk.
struct provider_error_info {
    bool present = false;
    std::string code; // a number or a string, as text
    std::string message;
    std::string error_type;
    std::string raw;
    std::string provider;
    bool moderation = false; // metadata.reasons present
    // metadata.headers: the rate-limit headers a 429 body echoes; and metadata.limit_source
    std::string rate_limit, rate_remaining, rate_reset, limit_source;
    bool operator==(const provider_error_info&) const = default;
};

/// One decoded chat response or stream chunk.
struct chat_chunk {
    std::string id;
    std::string model;
    std::string provider;
    std::int64_t created = 0;
    bool has_choice = false;
    std::string finish_reason;
    std::string native_finish_reason;
    std::string content;
    std::string reasoning;
    std::string refusal;
    std::vector<tool_call_delta> tool_calls;
    std::optional<frugal::usage> usage;
    provider_error_info error;        // top-level `error`
    provider_error_info choice_error; // `choices[0].error`

    void clear();
    bool operator==(const chat_chunk&) const = default;
};

/// How `usage::tokens_rejected` ends when a count was left out rather than wrong: a stream's
/// later usage may still give it (the decoder writes it, the stream reads it).
inline constexpr std::string_view count_missing = " was missing or null";

/// Decodes chat JSON documents (whole responses or stream chunks) one after another, reusing
/// its buffers. Leading whitespace is allowed (OpenRouter's keep-alive bytes).
class chat_decoder {
public:
    chat_decoder();
    ~chat_decoder();
    chat_decoder(const chat_decoder&) = delete;
    chat_decoder& operator=(const chat_decoder&) = delete;

    /// Decodes one complete document into `out`. Fails with `error::protocol_error` when the
    /// text is not one JSON object. The result depends on `json` alone, never on what the
    /// decoder read before (the prefix memo in codec_chunk.cpp only saves work).
    boost::system::error_code decode(std::string_view json, chat_chunk& out);

private:
    struct impl;
    std::unique_ptr<impl> impl_;
};

/// Decodes `GET /models`.
boost::system::error_code decode_models(std::string_view json, std::vector<model_info>& out);
/// Decodes `GET /generation?id=`.
boost::system::error_code decode_generation(std::string_view json, generation_info& out);
/// Decodes `GET /key`.
boost::system::error_code decode_key_info(std::string_view json, key_info& out);
/// Decodes an error body (`{"error":{...}}`), if the text is one.
bool decode_error_body(std::string_view json, provider_error_info& out);

/// Appends `text` as the inside of a JSON string.
void append_escaped(std::string& out, std::string_view text);

/// Appends `calls` as the JSON array of an assistant message's `tool_calls`; with
/// `stream_delta`, as a streamed delta carries them: each with its `index` (by which the SDKs
/// join a call's pieces) and a type even when the call named none ("function").
void append_tool_calls(std::string& out, const std::vector<tool_call>& calls, bool stream_delta = false);

} // namespace frugal::openrouter

#endif // FRUGAL_OPENROUTER_CODEC_HPP
