// Files of recorded outcomes: RouteLLM's CSV as published, and frugal's JSONL. Every error
// names the line (and column or member) and why: these files are hand-made or exported, and a
// wrong figure from a misread file would be worse than no figure.

#include <frugal/eval.hpp>

#include <frugal/error.hpp>

#include <boost/json.hpp>

#include <algorithm>
#include <fstream>
#include <sstream>

namespace frugal {

namespace json = boost::json;

namespace {

using result_set = boost::system::result<outcome_set>;

result_set fail(diagnostics* diag, std::string why)
{
    if (diag != nullptr)
        diag->message = std::move(why);
    return boost::system::error_code(error::bad_outcomes);
}

// RFC 4180: fields separated by commas, quoted with '"' (doubled inside), line breaks inside
// quotes kept; CRLF or LF ends a record. `line` is where each record starts.
struct csv_reader {
    std::string_view text;
    std::size_t pos = 0;
    std::size_t line = 1;

    bool done() const noexcept { return pos >= text.size(); }

    // Reads one record; false with `why` set on a malformed one.
    bool record(std::vector<std::string>& fields, std::size_t& starts_at, std::string& why)
    {
        fields.clear();
        starts_at = line;
        std::string field;
        for (;;) {
            field.clear();
            if (pos < text.size() && text[pos] == '"') {
                ++pos;
                for (;;) {
                    if (pos >= text.size()) {
                        why = "a quoted field that starts on line " + std::to_string(starts_at) +
                              " is never closed";
                        return false;
                    }
                    const char c = text[pos++];
                    if (c == '"') {
                        if (pos < text.size() && text[pos] == '"') {
                            field += '"';
                            ++pos;
                            continue;
                        }
                        break;
                    }
                    if (c == '\n')
                        ++line;
                    field += c;
                }
                if (pos < text.size() && text[pos] != ',' && text[pos] != '\n' &&
                    text[pos] != '\r') {
                    why = "line " + std::to_string(line) + ": text after a closing quote";
                    return false;
                }
            } else {
                while (pos < text.size() && text[pos] != ',' && text[pos] != '\n' &&
                       text[pos] != '\r')
                    field += text[pos++];
            }
            fields.push_back(field);
            if (pos < text.size() && text[pos] == ',') {
                ++pos;
                continue;
            }
            if (pos < text.size() && text[pos] == '\r')
                ++pos;
            if (pos < text.size() && text[pos] == '\n')
                ++pos;
            ++line;
            return true;
        }
    }
};

// Some editors open a UTF-8 file with a byte-order mark.
std::string_view without_bom(std::string_view text)
{
    return text.starts_with("\xEF\xBB\xBF") ? text.substr(3) : text;
}

std::optional<bool> boolean(std::string_view s)
{
    if (s == "True" || s == "true" || s == "TRUE" || s == "1")
        return true;
    if (s == "False" || s == "false" || s == "FALSE" || s == "0")
        return false;
    return std::nullopt;
}

bool ends_with(std::string_view s, std::string_view tail)
{
    return s.size() >= tail.size() && s.substr(s.size() - tail.size()) == tail;
}

std::optional<std::uint64_t> count_of(const json::value& v)
{
    if (v.is_uint64())
        return v.get_uint64();
    if (v.is_int64() && v.get_int64() >= 0)
        return static_cast<std::uint64_t>(v.get_int64());
    return std::nullopt;
}

} // namespace

std::optional<std::size_t> outcome_set::model_index(std::string_view model) const noexcept
{
    const auto it = std::find(models.begin(), models.end(), model);
    if (it == models.end())
        return std::nullopt;
    return static_cast<std::size_t>(it - models.begin());
}

bool outcome_set::has_responses(const std::vector<std::string>& of) const noexcept
{
    std::vector<std::size_t> columns;
    for (const auto& m : of)
        if (const auto c = model_index(m))
            columns.push_back(*c);
    for (const auto& p : prompts)
        for (const auto c : columns)
            if (!p.answers[c] || !p.answers[c]->content)
                return false;
    return true;
}

bool outcome_set::has_responses() const noexcept
{
    for (const auto& p : prompts)
        for (const auto& a : p.answers)
            if (a && !a->content)
                return false;
    return true;
}

std::uint64_t estimate_tokens(std::string_view text) noexcept
{
    return (static_cast<std::uint64_t>(text.size()) + 3) / 4;
}

std::vector<std::string_view>
split_tokens(std::string_view text, std::uint64_t n, std::uint64_t first)
{
    std::vector<std::string_view> out;
    if (n == 0)
        return out;
    const std::uint64_t wanted = std::min(n, first);
    out.reserve(static_cast<std::size_t>(std::min<std::uint64_t>(wanted, 1u << 20)));
    const auto size = static_cast<std::uint64_t>(text.size());
    // The start of the character holding byte `b` or, inside one, of the next.
    auto boundary = [&](std::uint64_t b) {
        while (b < size && (static_cast<unsigned char>(text[b]) & 0xC0) == 0x80)
            ++b;
        return b;
    };
    std::uint64_t from = 0;
    for (std::uint64_t i = 1; i <= wanted; ++i) {
        // size × i / n without the product, which could wrap: (size % n) × i < n², and a
        // recorded count is at most 10^8 (the parser's bound), an estimate at most size / 4 + 1.
        const std::uint64_t at = size / n * i + size % n * i / n;
        const std::uint64_t to = i == n ? size : std::clamp(boundary(at), from, size);
        out.push_back(text.substr(from, to - from));
        from = to;
    }
    return out;
}

boost::system::result<outcome_set> parse_outcomes_csv(std::string_view text, diagnostics* diag)
{
    if (diag != nullptr)
        diag->clear();
    text = without_bom(text);
    csv_reader in{text};
    std::vector<std::string> header;
    std::size_t at = 0;
    std::string why;
    if (in.done() || !in.record(header, at, why))
        return fail(diag, why.empty() ? "the file is empty: a header line is expected" : why);

    // The rows, read first: a model column is told from another by its values (booleans).
    std::vector<std::vector<std::string>> rows;
    std::vector<std::size_t> lines;
    std::vector<std::string> fields;
    while (!in.done()) {
        if (!in.record(fields, at, why))
            return fail(diag, why);
        if (fields.size() == 1 && fields[0].empty())
            continue; // a blank line
        if (fields.size() != header.size())
            return fail(
                diag, "line " + std::to_string(at) + ": " + std::to_string(fields.size()) +
                          " fields where the header has " + std::to_string(header.size()));
        rows.push_back(fields);
        lines.push_back(at);
    }

    outcome_set out;
    std::optional<std::size_t> prompt_col;
    std::vector<std::size_t> model_cols;
    auto has_response_column = [&](const std::string& name) {
        return std::find(header.begin(), header.end(), name + "_response") != header.end();
    };
    for (std::size_t c = 0; c < header.size(); ++c) {
        if (header[c] == "prompt") {
            prompt_col = c;
            continue;
        }
        if (ends_with(header[c], "_response") && !has_response_column(header[c]))
            continue; // paired below, once the models are known
        const bool paired = !header[c].empty() && has_response_column(header[c]);
        const bool booleans =
            !header[c].empty() && std::all_of(rows.begin(), rows.end(), [&](const auto& r) {
                return boolean(r[c]).has_value();
            });
        if (paired && !booleans) {
            // A model's column (it has responses) with a cell that is not a verdict.
            for (std::size_t i = 0; i < rows.size(); ++i)
                if (!boolean(rows[i][c]))
                    return fail(
                        diag, "line " + std::to_string(lines[i]) + ", column \"" + header[c] +
                                  "\": \"" + rows[i][c].substr(0, 40) +
                                  "\" is not True or False");
        }
        if (booleans) {
            model_cols.push_back(c);
            out.models.push_back(header[c]);
        }
    }
    if (!prompt_col)
        return fail(diag, "line 1: no \"prompt\" column");
    if (out.models.empty())
        return fail(
            diag, "line 1: no model column (a column of True/False, one per model, is expected)");
    std::vector<std::optional<std::size_t>> response_col(out.models.size());
    for (std::size_t c = 0; c < header.size(); ++c) {
        if (c == *prompt_col ||
            std::find(model_cols.begin(), model_cols.end(), c) != model_cols.end())
            continue;
        bool paired = false;
        if (ends_with(header[c], "_response")) {
            const auto model = std::string_view(header[c]).substr(0, header[c].size() - 9);
            if (const auto m = out.model_index(model)) {
                response_col[*m] = c;
                paired = true;
            }
        }
        if (!paired)
            out.ignored_columns.push_back(header[c]);
    }
    out.prompts.reserve(rows.size());
    for (std::size_t i = 0; i < rows.size(); ++i) {
        recorded_prompt p;
        p.prompt = std::move(rows[i][*prompt_col]);
        p.line = lines[i];
        if (p.prompt.empty())
            return fail(diag, "line " + std::to_string(p.line) + ": the prompt is empty");
        for (std::size_t m = 0; m < model_cols.size(); ++m) {
            recorded_answer a;
            a.correct = *boolean(rows[i][model_cols[m]]);
            if (response_col[m])
                a.content = std::move(rows[i][*response_col[m]]);
            p.answers.push_back(std::move(a));
        }
        out.prompts.push_back(std::move(p));
    }
    if (out.prompts.empty())
        return fail(diag, "the file has a header and no prompt");
    return out;
}

boost::system::result<outcome_set> parse_outcomes_jsonl(std::string_view text, diagnostics* diag)
{
    if (diag != nullptr)
        diag->clear();
    text = without_bom(text);
    outcome_set out;
    std::size_t line = 0;
    while (!text.empty()) {
        ++line;
        const auto eol = text.find('\n');
        std::string_view l = text.substr(0, eol);
        text.remove_prefix(eol == std::string_view::npos ? text.size() : eol + 1);
        if (!l.empty() && l.back() == '\r')
            l.remove_suffix(1);
        if (l.find_first_not_of(" \t") == std::string_view::npos)
            continue;
        const auto at = "line " + std::to_string(line) + ": ";
        boost::system::error_code ec;
        const json::value v = json::parse(l, ec);
        if (ec || !v.is_object())
            return fail(diag, at + "not a JSON object" + (ec ? " (" + ec.message() + ")" : ""));
        const auto& o = v.get_object();
        for (const auto& [k, _] : o)
            if (k != "prompt" && k != "answers" && k != "id")
                return fail(diag, at + "unknown member \"" + std::string(k) + "\"");
        const auto* prompt = o.if_contains("prompt");
        if (prompt == nullptr || !prompt->is_string() || prompt->get_string().empty())
            return fail(diag, at + "\"prompt\" must be a non-empty string");
        const auto* answers = o.if_contains("answers");
        if (answers == nullptr || !answers->is_object() || answers->get_object().empty())
            return fail(diag, at + "\"answers\" must be an object of each model's answer");
        recorded_prompt p;
        p.prompt = std::string(prompt->get_string());
        p.line = line;
        p.answers.resize(out.models.size());
        for (const auto& [model, av] : answers->get_object()) {
            const auto where = at + "\"answers\".\"" + std::string(model) + "\": ";
            if (model.empty())
                return fail(diag, at + "\"answers\" names a model with an empty id");
            if (!av.is_object())
                return fail(diag, where + "must be an object");
            const auto& ao = av.get_object();
            recorded_answer a;
            for (const auto& [k, mv] : ao) {
                if (k == "correct") {
                    if (!mv.is_bool())
                        return fail(diag, where + "\"correct\" must be true or false");
                    a.correct = mv.get_bool();
                } else if (k == "content") {
                    if (!mv.is_string())
                        return fail(diag, where + "\"content\" must be a string");
                    a.content = std::string(mv.get_string());
                } else if (k == "prompt_tokens" || k == "completion_tokens") {
                    const auto n = count_of(mv);
                    if (!n || *n > 100'000'000)
                        return fail(
                            diag, where + "\"" + std::string(k) +
                                      "\" must be a whole number from 0 to 100000000");
                    (k == "prompt_tokens" ? a.prompt_tokens : a.completion_tokens) = *n;
                } else if (k == "finish_reason") {
                    if (!mv.is_string() || mv.get_string().empty())
                        return fail(diag, where + "\"finish_reason\" must be a non-empty string");
                    a.finish_reason = std::string(mv.get_string());
                } else {
                    return fail(diag, where + "unknown member \"" + std::string(k) + "\"");
                }
            }
            if (!ao.contains("correct"))
                return fail(diag, where + "\"correct\" is missing");
            if (a.completion_tokens && !a.content)
                return fail(diag, where + "\"completion_tokens\" without the \"content\"");
            if (a.completion_tokens == 0u && a.content && !a.content->empty())
                return fail(diag, where + "\"completion_tokens\" is 0 but the \"content\" is not empty");
            auto m = out.model_index(model);
            if (!m) {
                out.models.emplace_back(model);
                for (auto& earlier : out.prompts)
                    earlier.answers.emplace_back();
                p.answers.emplace_back();
                m = out.models.size() - 1;
            }
            p.answers[*m] = std::move(a);
        }
        out.prompts.push_back(std::move(p));
    }
    if (out.prompts.empty())
        return fail(diag, "the file holds no prompt");
    return out;
}

boost::system::result<outcome_set>
read_outcomes(const std::vector<std::string>& paths, diagnostics* diag)
{
    if (diag != nullptr)
        diag->clear();
    if (paths.empty())
        return fail(diag, "no outcomes file given");
    outcome_set all;
    for (const auto& path : paths) {
        std::ifstream in(path, std::ios::binary);
        if (!in)
            return fail(diag, path + ": cannot be read");
        std::stringstream text;
        text << in.rdbuf();
        const bool csv = ends_with(path, ".csv");
        if (!csv && !ends_with(path, ".jsonl"))
            return fail(diag, path + ": the name must end in .csv (RouteLLM's) or .jsonl");
        auto one = csv ? parse_outcomes_csv(text.str(), diag) : parse_outcomes_jsonl(text.str(), diag);
        if (!one) {
            if (diag != nullptr)
                diag->message = path + ": " + diag->message;
            return one.error();
        }
        for (auto& p : one->prompts)
            p.file = path;
        if (all.prompts.empty()) {
            all = std::move(*one);
            continue;
        }
        // The same models, perhaps in another order: each answer goes to its model's slot.
        std::vector<std::size_t> slot;
        for (const auto& m : one->models) {
            const auto at = all.model_index(m);
            if (!at || one->models.size() != all.models.size())
                return fail(diag, path + ": its models are not those of " + paths.front());
            slot.push_back(*at);
        }
        for (auto& p : one->prompts) {
            std::vector<std::optional<recorded_answer>> answers(all.models.size());
            for (std::size_t m = 0; m < slot.size(); ++m)
                answers[slot[m]] = std::move(p.answers[m]);
            p.answers = std::move(answers);
            all.prompts.push_back(std::move(p));
        }
        for (auto& c : one->ignored_columns)
            if (std::find(all.ignored_columns.begin(), all.ignored_columns.end(), c) ==
                all.ignored_columns.end())
                all.ignored_columns.push_back(std::move(c));
    }
    return all;
}

} // namespace frugal
