// The chat decoder: whole chat responses and stream chunks, read by a SAX handler that keeps only
// the fields frugal uses. Every event of every stream passes through it: this is the hot loop.
#include "openrouter/codec.hpp"
#include "openrouter/codec_detail.hpp"

#include <frugal/error.hpp>

#include <boost/json/basic_parser_impl.hpp>

#include <cstring>
#include <limits>

namespace frugal::openrouter {

namespace json = boost::json;
using boost::system::error_code;
using codec_detail::reported_cost;

namespace {

void clear_error(provider_error_info& e)
{
    e.present = false;
    e.code.clear();
    e.message.clear();
    e.error_type.clear();
    e.raw.clear();
    e.provider.clear();
    e.moderation = false;
    e.rate_limit.clear();
    e.rate_remaining.clear();
    e.rate_reset.clear();
    e.limit_source.clear();
}

// UTF-8 (codec_detail::utf8_sequence). Text is nearly always ASCII, which the first loop checks
// eight bytes at a time.
bool valid_utf8(std::string_view s)
{
    const auto* p = reinterpret_cast<const unsigned char*>(s.data());
    const auto* end = p + s.size();
    while (end - p >= 8) {
        std::uint64_t w = 0;
        std::memcpy(&w, p, 8);
        if ((w & 0x8080808080808080ULL) != 0)
            break;
        p += 8;
    }
    std::size_t i = static_cast<std::size_t>(p - reinterpret_cast<const unsigned char*>(s.data()));
    while (i < s.size()) {
        const std::size_t n = codec_detail::utf8_sequence(s.substr(i, 4));
        if (n == 0)
            return false;
        i += n;
    }
    return true;
}

// Everything but id, model and provider. An error's fields are written only under an error
// object, which marks it present, so an absent one is already clear.
void clear_body(chat_chunk& c)
{
    c.created = 0;
    c.has_choice = false;
    c.finish_reason.clear();
    c.native_finish_reason.clear();
    c.content.clear();
    c.reasoning.clear();
    c.refusal.clear();
    c.tool_calls.clear();
    c.usage.reset();
    if (c.error.present)
        clear_error(c.error);
    if (c.choice_error.present)
        clear_error(c.choice_error);
}

// Where in a chat document the parser is. Only the containers frugal reads have a kind of
// their own; everything else is `skip`, and whatever is inside it is ignored.
enum class node : std::uint8_t {
    root,
    skip,
    choices,
    choice,
    message, // choices[0].message or choices[0].delta
    tool_calls,
    tool_call,
    function,
    usage,
    usage_details, // prompt_tokens_details, completion_tokens_details, cost_details
    error,
    error_metadata,
    error_headers, // error.metadata.headers: rate-limit headers echoed in a 429 body
    reasons,       // error.metadata.reasons: its presence marks moderation
};

struct frame {
    node kind;
    std::uint32_t count = 0;            // elements seen, for arrays
    provider_error_info* err = nullptr; // for error frames
};

// The member a scalar value is for, decided once per key (not per comparison per value).
enum class field : std::uint8_t {
    none,
    id,
    model,
    provider,
    created,
    finish_reason,
    native_finish_reason,
    content,
    reasoning,
    refusal,
    call_id,
    call_index,
    function_name,
    function_arguments,
    prompt_tokens,
    completion_tokens,
    total_tokens,
    cost,
    is_byok,
    cached_tokens,
    cache_write_tokens,
    reasoning_tokens,
    upstream_inference_cost,
    error_message,
    error_code,
    error_type,
    error_raw,
    error_provider,
    limit_source,
    rate_limit,
    rate_remaining,
    rate_reset,
};

// Key comparison with the length known at compile time, so the compiler inlines it.
template <std::size_t N>
bool eq(std::string_view key, const char (&literal)[N]) noexcept
{
    return key.size() == N - 1 && std::memcmp(key.data(), literal, N - 1) == 0;
}

class chat_handler {
public:
    static constexpr std::size_t max_array_size = static_cast<std::size_t>(-1);
    static constexpr std::size_t max_object_size = static_cast<std::size_t>(-1);
    static constexpr std::size_t max_string_size = static_cast<std::size_t>(-1);
    static constexpr std::size_t max_key_size = static_cast<std::size_t>(-1);

    chat_chunk* out = nullptr;
    bool saw_object = false; // the document is an object, not a scalar or an array
    bool bad_utf8 = false;   // a string frugal keeps is not UTF-8
    // Which of id, model and provider this document set: the decoder leaves them from the
    // last document (a stream repeats them in every chunk) and clears those not seen.
    bool saw_id = false, saw_model = false, saw_provider = false;
    bool two_models = false; // "model" written twice, with two values
    // For the decoder's prefix memo: the last event completed a member of the top-level
    // object, and whether any container but that object has been opened.
    bool member_done = false;
    bool nested = false;
    // For the shape memo: the document's bytes, and the text strings (content, reasoning,
    // refusal) it kept: how many, and where the first lies in those bytes (null when it was
    // unescaped or joined from parts elsewhere).
    std::string_view text;
    int texts = 0;
    field text_field = field::none;
    const char* text_at = nullptr;
    std::size_t text_size = 0;

    bool on_document_begin(error_code&)
    {
        stack_.clear();
        // A document that failed part-way (a chunk cut inside a number) leaves its part here;
        // the next document, maybe another stream's on this thread, must not read it.
        number_.clear();
        done_with_value();
        saw_object = false;
        bad_utf8 = false;
        saw_id = saw_model = saw_provider = false;
        two_models = false;
        nested = false;
        texts = 0;
        text_at = nullptr;
        return true;
    }
    bool on_document_end(error_code&) { return true; }

    bool on_object_begin(error_code& ec) { return open(true, ec); }
    bool on_object_end(std::size_t, error_code&)
    {
        close();
        return true;
    }
    bool on_array_begin(error_code& ec) { return open(false, ec); }
    bool on_array_end(std::size_t, error_code&)
    {
        close();
        return true;
    }

    // Keys and strings usually arrive whole, as views into the document being decoded (which
    // outlives the callbacks); only one split across parts is copied.
    bool on_key_part(json::string_view s, std::size_t n, error_code&)
    {
        member_done = false;
        if (n == s.size())
            key_buffer_.clear();
        key_buffer_.append(s.data(), s.size());
        return true;
    }
    bool on_key(json::string_view s, std::size_t n, error_code&)
    {
        member_done = false;
        if (n == s.size()) {
            key_ = std::string_view(s.data(), s.size());
        } else {
            key_buffer_.append(s.data(), s.size());
            key_ = key_buffer_;
        }
        field_ = classify(top(), key_);
        return true;
    }

    bool on_string_part(json::string_view s, std::size_t n, error_code&)
    {
        member_done = false;
        if (n == s.size())
            text_.clear();
        text_.append(s.data(), s.size());
        return true;
    }
    bool on_string(json::string_view s, std::size_t n, error_code&)
    {
        if (n == s.size()) {
            string_value(std::string_view(s.data(), s.size()));
        } else {
            text_.append(s.data(), s.size());
            string_value(text_);
        }
        return true;
    }

    bool on_number_part(json::string_view s, error_code&)
    {
        member_done = false;
        number_.append(s.data(), s.size());
        return true;
    }
    bool on_int64(std::int64_t i, json::string_view s, error_code&)
    {
        number_value(i >= 0 ? static_cast<std::uint64_t>(i) : 0, true, s);
        return true;
    }
    bool on_uint64(std::uint64_t u, json::string_view s, error_code&)
    {
        number_value(u, true, s);
        return true;
    }
    bool on_double(double d, json::string_view s, error_code&)
    {
        const bool whole =
            d >= 0 && d < 1.8e19 && static_cast<double>(static_cast<std::uint64_t>(d)) == d;
        number_value(whole ? static_cast<std::uint64_t>(d) : 0, whole, s);
        return true;
    }
    bool on_bool(bool b, error_code&)
    {
        if (field_ == field::is_byok)
            ensure_usage().is_byok = b;
        else if (field_ == field::cost)
            reject_cost("a boolean");
        else
            reject_count("was a boolean");
        done_with_value();
        return true;
    }
    bool on_null(error_code&)
    {
        done_with_value();
        return true;
    }
    bool on_comment_part(json::string_view, error_code&) { return true; }
    bool on_comment(json::string_view, error_code&) { return true; }

private:
    node top() const { return stack_.empty() ? node::skip : stack_.back().kind; }

    usage& ensure_usage() const
    {
        if (!out->usage)
            out->usage.emplace();
        return *out->usage;
    }

    // A `usage.cost` that is not a number: no bill frugal can book, whatever it says (a valid
    // cost written before it stands: a second cost never lowers the bill).
    void reject_cost(const char* what) const { ensure_usage().cost_rejected = what; }

    // The counts a bill is priced from when it has no cost (`token_cost`): each must be a
    // whole number of zero or more. Any other value is a lie or a fault, and the counts then
    // price nothing (`usage::tokens_rejected`): reading it as 0 would book less than was served.
    static constexpr std::uint8_t prompt_seen = 1, completion_seen = 2;

    static const char* count_name(field f) noexcept
    {
        switch (f) {
        case field::prompt_tokens: return "usage.prompt_tokens";
        case field::completion_tokens: return "usage.completion_tokens";
        case field::cache_write_tokens: return "usage.prompt_tokens_details.cache_write_tokens";
        default: return nullptr;
        }
    }

    // Rejects the current member's value when it is a count that prices the bill.
    void reject_count(std::string_view why) const
    {
        const char* name = count_name(field_);
        if (name == nullptr)
            return;
        auto& u = ensure_usage();
        if (u.tokens_rejected.empty())
            u.tokens_rejected.append(name).append(" ").append(why);
    }

    // Keeps a count when it is a whole number of zero or more; `seen` marks it read.
    bool count(
        std::uint64_t& to, std::uint64_t v, bool whole, std::string_view digits, std::uint8_t seen)
    {
        if (whole && !digits.starts_with('-')) {
            to = std::max(to, v); // written twice, the larger: a count never lowers the bill
            counts_seen_ |= seen;
            return true;
        }
        to = 0;
        std::string why = digits.starts_with('-') ? "was negative (" : "was not a whole number (";
        why.append(digits.substr(0, 24)).append(digits.size() > 24 ? "...)" : ")");
        reject_count(why);
        return false;
    }

    // The usage object ends: both counts a bill is priced from must have been read.
    void end_usage() const
    {
        if (!out->usage || !out->usage->tokens_rejected.empty())
            return;
        const char* missing = (counts_seen_ & prompt_seen) == 0       ? "usage.prompt_tokens"
                              : (counts_seen_ & completion_seen) == 0 ? "usage.completion_tokens"
                                                                      : nullptr;
        if (missing != nullptr)
            out->usage->tokens_rejected.append(missing).append(count_missing);
    }

    // A container starts: decide what it is from where it is.
    bool open(bool object, error_code& ec)
    {
        if (stack_.empty()) {
            if (!object) {
                ec = error::protocol_error;
                return false;
            }
            stack_.push_back({node::root});
            saw_object = true;
            return true;
        }
        nested = true;
        frame& parent = stack_.back();
        node kind = node::skip;
        provider_error_info* err = nullptr;
        switch (parent.kind) {
        case node::root:
            if (!object)
                kind = eq(key_, "choices") ? node::choices : node::skip;
            else if (eq(key_, "usage")) {
                kind = node::usage;
                counts_seen_ = 0;
            } else if (eq(key_, "error")) {
                kind = node::error;
                err = &out->error;
            }
            break;
        case node::choices:
            // Only the first choice: frugal asks for one.
            kind = object && parent.count == 0 ? node::choice : node::skip;
            ++parent.count;
            if (kind == node::choice)
                out->has_choice = true;
            break;
        case node::choice:
            if (object && (eq(key_, "message") || eq(key_, "delta")))
                kind = node::message;
            else if (object && eq(key_, "error")) {
                kind = node::error;
                err = &out->choice_error;
            }
            break;
        case node::message:
            if (!object && eq(key_, "tool_calls"))
                kind = node::tool_calls;
            break;
        case node::tool_calls:
            if (object) {
                kind = node::tool_call;
                out->tool_calls.push_back({});
                out->tool_calls.back().index = parent.count;
            }
            ++parent.count;
            break;
        case node::tool_call:
            if (object && eq(key_, "function"))
                kind = node::function;
            break;
        case node::usage:
            if (object && (eq(key_, "prompt_tokens_details") ||
                           eq(key_, "completion_tokens_details") || eq(key_, "cost_details")))
                kind = node::usage_details;
            else if (field_ == field::cost)
                reject_cost(object ? "an object" : "an array");
            else
                reject_count(object ? "was an object" : "was an array");
            break;
        case node::error:
            if (object && eq(key_, "metadata")) {
                kind = node::error_metadata;
                err = parent.err;
            }
            break;
        case node::error_metadata:
            if (!object && eq(key_, "reasons")) {
                kind = node::reasons;
                parent.err->moderation = true;
            } else if (object && eq(key_, "headers")) {
                kind = node::error_headers;
                err = parent.err;
            }
            break;
        case node::usage_details: reject_count(object ? "was an object" : "was an array"); break;
        default: break;
        }
        if (err != nullptr)
            err->present = true;
        stack_.push_back({kind, 0, err});
        done_with_value();
        return true;
    }

    void close()
    {
        if (!stack_.empty() && stack_.back().kind == node::usage)
            end_usage();
        if (!stack_.empty())
            stack_.pop_back();
        done_with_value();
    }

    static field classify(node where, std::string_view k) noexcept
    {
        switch (where) {
        case node::root:
            if (eq(k, "id"))
                return field::id;
            if (eq(k, "model"))
                return field::model;
            if (eq(k, "provider"))
                return field::provider;
            if (eq(k, "created"))
                return field::created;
            return field::none;
        case node::choice:
            if (eq(k, "finish_reason"))
                return field::finish_reason;
            if (eq(k, "native_finish_reason"))
                return field::native_finish_reason;
            return field::none;
        case node::message:
            if (eq(k, "content"))
                return field::content;
            if (eq(k, "reasoning"))
                return field::reasoning;
            if (eq(k, "refusal"))
                return field::refusal;
            return field::none;
        case node::tool_call:
            if (eq(k, "id"))
                return field::call_id;
            if (eq(k, "index"))
                return field::call_index;
            return field::none;
        case node::function:
            if (eq(k, "name"))
                return field::function_name;
            if (eq(k, "arguments"))
                return field::function_arguments;
            return field::none;
        case node::usage:
            if (eq(k, "prompt_tokens"))
                return field::prompt_tokens;
            if (eq(k, "completion_tokens"))
                return field::completion_tokens;
            if (eq(k, "total_tokens"))
                return field::total_tokens;
            if (eq(k, "cost"))
                return field::cost;
            if (eq(k, "is_byok"))
                return field::is_byok;
            return field::none;
        case node::usage_details:
            if (eq(k, "cached_tokens"))
                return field::cached_tokens;
            if (eq(k, "cache_write_tokens"))
                return field::cache_write_tokens;
            if (eq(k, "reasoning_tokens"))
                return field::reasoning_tokens;
            if (eq(k, "upstream_inference_cost"))
                return field::upstream_inference_cost;
            return field::none;
        case node::error:
            if (eq(k, "message"))
                return field::error_message;
            if (eq(k, "code"))
                return field::error_code;
            return field::none;
        case node::error_metadata:
            if (eq(k, "error_type"))
                return field::error_type;
            if (eq(k, "raw"))
                return field::error_raw;
            if (eq(k, "provider_name"))
                return field::error_provider;
            if (eq(k, "limit_source"))
                return field::limit_source;
            return field::none;
        case node::error_headers:
            if (eq(k, "X-RateLimit-Limit"))
                return field::rate_limit;
            if (eq(k, "X-RateLimit-Remaining"))
                return field::rate_remaining;
            if (eq(k, "X-RateLimit-Reset"))
                return field::rate_reset;
            return field::none;
        default: return field::none;
        }
    }

    // After every value and every container's start and end.
    void done_with_value()
    {
        key_ = {};
        field_ = field::none;
        member_done = stack_.size() == 1;
    }

    // Validation is off in the parser (most of a chunk is ignored), so the strings frugal keeps
    // are checked here: JSON text must be UTF-8 (RFC 8259); a chunk that is not fails.
    void keep(std::string& to, std::string_view v, bool append)
    {
        if (!valid_utf8(v))
            bad_utf8 = true;
        if (append)
            to.append(v);
        else
            to.assign(v);
    }

    // A value most documents of a stream repeat: compared before it is checked and copied.
    void keep_repeated(std::string& to, std::string_view v, bool& seen)
    {
        seen = true;
        if (std::string_view(to) != v)
            keep(to, v, false);
    }

    void string_value(std::string_view v)
    {
        if (field_ == field::content || field_ == field::reasoning || field_ == field::refusal) {
            if (texts++ == 0) {
                text_field = field_;
                const auto at = reinterpret_cast<std::uintptr_t>(v.data());
                const auto begin = reinterpret_cast<std::uintptr_t>(text.data());
                if (at > begin && at + v.size() < begin + text.size()) {
                    text_at = v.data();
                    text_size = v.size();
                }
            }
        }
        switch (field_) {
        case field::id: keep_repeated(out->id, v, saw_id); break;
        case field::model:
            two_models = two_models || (saw_model && std::string_view(out->model) != v);
            keep_repeated(out->model, v, saw_model);
            break;
        case field::provider: keep_repeated(out->provider, v, saw_provider); break;
        case field::finish_reason: keep(out->finish_reason, v, false); break;
        case field::native_finish_reason: keep(out->native_finish_reason, v, false); break;
        case field::content: keep(out->content, v, true); break;
        case field::reasoning: keep(out->reasoning, v, true); break;
        case field::refusal: keep(out->refusal, v, true); break;
        case field::call_id: keep(out->tool_calls.back().id, v, false); break;
        case field::function_name: keep(out->tool_calls.back().name, v, false); break;
        case field::function_arguments: keep(out->tool_calls.back().arguments, v, true); break;
        case field::error_message: keep(stack_.back().err->message, v, false); break;
        case field::error_code: keep(stack_.back().err->code, v, false); break;
        case field::error_type: keep(stack_.back().err->error_type, v, false); break;
        case field::error_raw: keep(stack_.back().err->raw, v, false); break;
        case field::error_provider: keep(stack_.back().err->provider, v, false); break;
        case field::limit_source: keep(stack_.back().err->limit_source, v, false); break;
        case field::rate_limit: keep(stack_.back().err->rate_limit, v, false); break;
        case field::rate_remaining: keep(stack_.back().err->rate_remaining, v, false); break;
        case field::rate_reset: keep(stack_.back().err->rate_reset, v, false); break;
        case field::cost: reject_cost("a string"); break;
        default: reject_count("was a string"); break;
        }
        done_with_value();
    }

    // `whole` is the value when the number is a non-negative integer; `last` its last part.
    void number_value(std::uint64_t whole_value, bool whole, json::string_view last)
    {
        // The whole text of the number: parts before this one (rare) and this last part.
        std::string_view text(last.data(), last.size());
        if (!number_.empty()) {
            number_.append(last.data(), last.size());
            text = number_;
        }
        switch (field_) {
        case field::created:
            if (whole)
                out->created = static_cast<std::int64_t>(whole_value);
            break;
        case field::call_index:
            if (whole) // past 2^32 stays past every bound (the stream's is 1,024)
                out->tool_calls.back().index = static_cast<std::uint32_t>(std::min<std::uint64_t>(
                    whole_value, std::numeric_limits<std::uint32_t>::max()));
            break;
        case field::prompt_tokens:
            count(ensure_usage().prompt_tokens, whole_value, whole, text, prompt_seen);
            break;
        case field::completion_tokens:
            count(ensure_usage().completion_tokens, whole_value, whole, text, completion_seen);
            break;
        case field::total_tokens:
            if (whole)
                ensure_usage().total_tokens = whole_value;
            break;
        case field::cost: {
            // The decimal the server wrote. Written twice, the larger is kept: a second cost
            // never lowers the bill the first reported.
            auto& u = ensure_usage();
            std::string why;
            const auto c = reported_cost(text, why);
            if (!why.empty())
                u.cost_rejected = std::move(why);
            if (c && (!u.cost || *c > *u.cost))
                u.cost = c;
            break;
        }
        case field::cached_tokens:
            if (whole)
                ensure_usage().cached_tokens = whole_value;
            break;
        case field::cache_write_tokens: {
            std::uint64_t v = ensure_usage().cache_write_tokens.value_or(0);
            if (count(v, whole_value, whole, text, 0))
                ensure_usage().cache_write_tokens = v;
            break;
        }
        case field::reasoning_tokens:
            if (whole)
                ensure_usage().reasoning_tokens = whole_value;
            break;
        case field::upstream_inference_cost:
            ensure_usage().upstream_inference_cost = money::parse(text);
            break;
        case field::error_code: stack_.back().err->code = std::string(text); break;
        case field::rate_limit: stack_.back().err->rate_limit = std::string(text); break;
        case field::rate_remaining: stack_.back().err->rate_remaining = std::string(text); break;
        case field::rate_reset: stack_.back().err->rate_reset = std::string(text); break;
        default: break;
        }
        number_.clear();
        done_with_value();
    }

    std::vector<frame> stack_;
    std::string_view key_; // the current member's key
    field field_ = field::none;
    std::string key_buffer_; // a key that arrived in parts
    std::string text_;       // a string that arrived in parts
    std::string number_;     // a number's text
    std::uint8_t counts_seen_ = 0; // which of prompt_seen and completion_seen the usage had
};

// Everything but id, model and provider starts empty; those three are kept for the handler
// to compare (see keep_repeated) and cleared after decoding when the document lacks them.
void start_document(chat_chunk& out)
{
    clear_body(out);
}

} // namespace

void chat_chunk::clear()
{
    id.clear();
    model.clear();
    provider.clear();
    clear_body(*this);
}

json::parse_options chat_parse_options()
{
    json::parse_options o;
    o.allow_invalid_utf8 = true; // checked per kept string instead, see chat_handler
    return o;
}

// The prefix memo. A stream repeats, byte for byte, everything its chunks hold before
// "choices" (id, provider, model, object, created): more than half of each chunk. The decoder
// keeps the last such prefix and what it decoded to; a document that starts with the same bytes
// is decoded from there on, as the inside of an object ("{" then the rest), with the prefix's
// fields restored first. That is the same parse: after a member's comma an object expects a key
// exactly as after "{", except that "{" also takes "}", which is checked for. A prefix is kept
// only when it ends at a member's comma of the top-level object (not inside a string), holds
// scalars only (no container but that object), and its whole document decoded cleanly.
//
// The shape memo. Past the prefix, a stream's chunks differ in one string alone, the text of
// the delta (content, reasoning or refusal): `"choices":[{"index":0,"delta":{"content":"` and
// `"},"finish_reason":null,...}]}` repeat too. A document is remembered when it decoded
// cleanly, its text is exactly its first text string, read in place (no escape), and it set
// nothing else of the choice (no finish reason, tool call, usage, error or second text): as its
// bytes before that string (`head`), its bytes after (`tail`) and what the rest decoded to. A
// document made of the same head and tail around a string body of plain characters and
// two-character escapes (no quote, no control byte, no \u escape), UTF-8 once unescaped, is
// that same parse with another string: the parser reads such bytes as the string's characters
// and escapes and nothing else, so it ends the string where the tail starts, in the state the
// memo's document was in. Its result is the memo's with that string's text. Anything else is
// decoded in full.
struct chat_decoder::impl {
    json::basic_parser<chat_handler> parser{chat_parse_options()};
    std::string prefix; // empty: no memo
    std::string id, model, provider;
    std::int64_t created = 0;
    bool saw_id = false, saw_model = false, saw_provider = false;

    struct shape {
        std::string head, tail; // empty head: no memo
        std::string chat_chunk::*text = nullptr;
        std::string id, model, provider;
        std::int64_t created = 0;
        bool has_choice = false;
    } shape;
};

namespace {

bool json_space(char c)
{
    return c == ' ' || c == '\n' || c == '\r' || c == '\t';
}

// Where a memo's prefix would end: just after the comma of the first `,"choices":`, or 0.
std::size_t memo_cut(std::string_view text)
{
    constexpr std::string_view marker = ",\"choices\":";
    const auto at = text.find(marker);
    return at == std::string_view::npos ? 0 : at + 1;
}

// Puts in `out` the text of JSON string body `s` when the parser reads it as a string's
// characters and two-character escapes alone, ending where `s` ends: no quote, no control
// byte, each backslash followed within `s` by one of " \ / b f n r t (a \u escape, with its
// surrogate rules, is left to the parser); and the text UTF-8, as the handler requires of a
// string it keeps. Otherwise `out` is left empty and false returned.
bool simple_string_text(std::string_view s, std::string& out)
{
    std::size_t i = 0;
    while (i < s.size() && s[i] != '"' && s[i] != '\\' && static_cast<unsigned char>(s[i]) >= 0x20)
        ++i;
    if (i == s.size()) { // no escape: the bytes are the text
        if (!valid_utf8(s))
            return false;
        out.assign(s);
        return true;
    }
    out.assign(s.data(), i);
    for (; i < s.size(); ++i) {
        const char c = s[i];
        if (c == '"' || static_cast<unsigned char>(c) < 0x20) {
            out.clear();
            return false;
        }
        if (c != '\\') {
            out += c;
            continue;
        }
        char e = 0;
        switch (++i < s.size() ? s[i] : 0) {
        case '"': e = '"'; break;
        case '\\': e = '\\'; break;
        case '/': e = '/'; break;
        case 'b': e = '\b'; break;
        case 'f': e = '\f'; break;
        case 'n': e = '\n'; break;
        case 'r': e = '\r'; break;
        case 't': e = '\t'; break;
        default: out.clear(); return false; // \u, a bad escape, or a backslash at the end
        }
        out += e;
    }
    if (!valid_utf8(out)) {
        out.clear();
        return false;
    }
    return true;
}

std::string chat_chunk::*text_member(field f)
{
    switch (f) {
    case field::content: return &chat_chunk::content;
    case field::reasoning: return &chat_chunk::reasoning;
    case field::refusal: return &chat_chunk::refusal;
    default: return nullptr;
    }
}

// Whether a cleanly decoded document may be the shape memo (see above). Its text must equal its
// first text string: any other text string (in the tail) is then empty, and stays so.
bool shape_of(const chat_handler& h, const chat_chunk& c)
{
    if (h.text_at == nullptr || !c.has_choice || !c.tool_calls.empty() || c.usage ||
        c.error.present || c.choice_error.present || !c.finish_reason.empty() ||
        !c.native_finish_reason.empty())
        return false;
    const auto member = text_member(h.text_field);
    for (const auto other : {&chat_chunk::content, &chat_chunk::reasoning, &chat_chunk::refusal}) {
        if (other != member && !(c.*other).empty())
            return false;
    }
    // The string's bytes are the text, between its quotes.
    const auto at = static_cast<std::size_t>(h.text_at - h.text.data());
    return h.text[at - 1] == '"' && h.text[at + h.text_size] == '"' &&
           std::string_view(c.*member) == h.text.substr(at, h.text_size);
}

void assign_if_different(std::string& to, std::string_view from)
{
    if (std::string_view(to) != from)
        to.assign(from);
}

} // namespace

chat_decoder::chat_decoder() : impl_(std::make_unique<impl>()) {}
chat_decoder::~chat_decoder() = default;

error_code chat_decoder::decode(std::string_view text, chat_chunk& out)
{
    start_document(out);
    auto& m = *impl_;
    if (auto& sh = m.shape; !sh.head.empty() && text.size() >= sh.head.size() + sh.tail.size() &&
                            text.starts_with(sh.head) && text.ends_with(sh.tail)) {
        const auto middle =
            text.substr(sh.head.size(), text.size() - sh.head.size() - sh.tail.size());
        if (simple_string_text(middle, out.*sh.text)) {
            assign_if_different(out.id, sh.id);
            assign_if_different(out.model, sh.model);
            assign_if_different(out.provider, sh.provider);
            out.created = sh.created;
            out.has_choice = sh.has_choice;
            return {};
        }
    }
    auto& p = m.parser;
    auto& h = p.handler();
    h.out = &out;
    h.text = text;
    p.reset();
    error_code ec;
    std::size_t n = 0;
    bool hit = false;
    if (!m.prefix.empty() && text.size() > m.prefix.size() && text.starts_with(m.prefix)) {
        std::size_t i = m.prefix.size();
        while (i < text.size() && json_space(text[i]))
            ++i;
        hit = i < text.size() && text[i] == '"'; // a key follows the comma, not "}"
    }
    bool remember = false;
    if (hit) {
        assign_if_different(out.id, m.id);
        assign_if_different(out.model, m.model);
        assign_if_different(out.provider, m.provider);
        out.created = m.created;
        const auto rest = text.substr(m.prefix.size());
        p.write_some(true, "{", 1, ec);
        // The prefix's fields count as read before the rest is (a second "model" in the rest
        // is then seen as one, as a fresh decoder sees it).
        h.saw_id = h.saw_id || m.saw_id;
        h.saw_model = h.saw_model || m.saw_model;
        h.saw_provider = h.saw_provider || m.saw_provider;
        if (!ec)
            n = m.prefix.size() + p.write_some(false, rest.data(), rest.size(), ec);
    } else if (const std::size_t cut = memo_cut(text); cut != 0) {
        n = p.write_some(true, text.data(), cut, ec);
        if (!ec && n == cut && h.member_done && !h.nested && !h.bad_utf8 && !h.two_models) {
            remember = true;
            m.prefix.assign(text.data(), cut);
            m.id = out.id;
            m.model = out.model;
            m.provider = out.provider;
            m.created = out.created;
            m.saw_id = h.saw_id;
            m.saw_model = h.saw_model;
            m.saw_provider = h.saw_provider;
        }
        if (!ec)
            n += p.write_some(false, text.data() + cut, text.size() - cut, ec);
    } else {
        n = p.write_some(false, text.data(), text.size(), ec);
    }
    const bool complete = !ec && p.done();
    if (!h.saw_id)
        out.id.clear();
    if (!h.saw_model)
        out.model.clear();
    if (!h.saw_provider)
        out.provider.clear();
    // Only whitespace may follow the document.
    bool ok = complete && h.saw_object && !h.bad_utf8;
    for (std::size_t i = n; ok && i < text.size(); ++i)
        ok = json_space(text[i]);
    if (remember && !ok)
        m.prefix.clear(); // a prefix is kept only from a document that decoded
    if (!ok) {
        // A repeated id, model or provider is compared with what `out` holds before it is
        // checked (keep_repeated): a failed document must not leave one there unchecked.
        out.id.clear();
        out.model.clear();
        out.provider.clear();
    }
    if (ok && h.two_models && out.usage && out.usage->tokens_rejected.empty())
        out.usage->tokens_rejected = "the answer named two models"; // see client_stream.cpp
    if (ok && shape_of(h, out)) {
        auto& sh = m.shape;
        const auto at = static_cast<std::size_t>(h.text_at - text.data());
        assign_if_different(sh.head, text.substr(0, at));
        assign_if_different(sh.tail, text.substr(at + h.text_size));
        sh.text = text_member(h.text_field);
        assign_if_different(sh.id, out.id);
        assign_if_different(sh.model, out.model);
        assign_if_different(sh.provider, out.provider);
        sh.created = out.created;
        sh.has_choice = out.has_choice;
    }
    return ok ? error_code() : error_code(error::protocol_error);
}

bool decode_error_body(std::string_view text, provider_error_info& out)
{
    chat_decoder decoder;
    chat_chunk chunk;
    if (decoder.decode(text, chunk))
        return false;
    out = chunk.error;
    return out.present;
}

} // namespace frugal::openrouter
