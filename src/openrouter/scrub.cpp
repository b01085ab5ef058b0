#include "openrouter/scrub.hpp"

#include <algorithm>
#include <cctype>
#include <cstring>

namespace frugal::openrouter {

namespace {

constexpr std::size_t filter_bits = std::size_t{1} << 16;

// A text is sampled, not scanned: a window of `sample` characters every `stride` positions.
// Every run of `key_scrubber::window` characters holds a whole sampled window, since
// sample + stride - 1 = window; a sample that matches is then extended both ways to the run.
constexpr std::size_t sample = 4;
constexpr std::size_t stride = key_scrubber::window - sample + 1;

// ASCII case folding (a key is ASCII), without the locale std::tolower consults per call.
constexpr char fold(char c) noexcept
{
    return c >= 'A' && c <= 'Z' ? static_cast<char>(c - 'A' + 'a') : c;
}

// The `sample` characters at `p`, case-folded, as one word: its own hash, free of collisions.
// The folding is done on all four bytes at once (SWAR): a byte from 'A' to 'Z' gains 0x20.
// Four bytes, not eight: the stride between samples is then nine, not five (a text is
// scrubbed on every response), and a sample that matches only by chance is rare in text
// (the key's forms have a few hundred four-byte windows) and only costs a comparison.
std::uint64_t hash_of(const char* p) noexcept
{
    static_assert(sample == sizeof(std::uint32_t));
    std::uint32_t x = 0;
    std::memcpy(&x, p, sizeof x);
    constexpr std::uint32_t ones = 0x01010101U;
    const std::uint32_t low7 = x & (0x7fU * ones);
    const std::uint32_t from_a = low7 + (0x80U - 'A') * ones; // high bit: byte >= 'A'
    const std::uint32_t past_z = low7 + (0x7fU - 'Z') * ones; // high bit: byte > 'Z'
    const std::uint32_t upper = from_a & ~past_z & ~x & (0x80U * ones);
    return x | upper >> 2;
}

std::string base64(std::string_view in)
{
    static constexpr char alphabet[] =
        "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    std::string out;
    std::size_t i = 0;
    for (; i + 2 < in.size(); i += 3) {
        const unsigned v = static_cast<unsigned char>(in[i]) << 16 |
                           static_cast<unsigned char>(in[i + 1]) << 8 |
                           static_cast<unsigned char>(in[i + 2]);
        out += alphabet[v >> 18 & 63];
        out += alphabet[v >> 12 & 63];
        out += alphabet[v >> 6 & 63];
        out += alphabet[v & 63];
    }
    return out; // a trailing partial group depends on what follows: left out
}

std::string percent_encoded(std::string_view in)
{
    static constexpr char hex[] = "0123456789abcdef";
    std::string out;
    for (const char c : in) {
        const auto u = static_cast<unsigned char>(c);
        if (std::isalnum(u) != 0) {
            out += c;
        } else {
            out += '%';
            out += hex[u >> 4];
            out += hex[u & 15];
        }
    }
    return out;
}

} // namespace

key_scrubber::key_scrubber(std::string_view key)
{
    if (key.size() < window)
        return; // too short to tell from text; such a key is not a real one
    // Base64 of any text holding the key holds the base64 of the key taken from one of three
    // alignments (a group of three bytes becomes four characters).
    std::vector<std::string> forms{std::string(key), percent_encoded(key)};
    for (std::size_t skip = 0; skip < 3; ++skip)
        forms.push_back(base64(key.substr(skip)));
    filter_.assign(filter_bits / 64, 0);
    for (auto& f : forms) {
        if (f.size() < window)
            continue;
        std::transform(f.begin(), f.end(), f.begin(), fold);
        const auto index = static_cast<std::uint32_t>(forms_.size());
        for (std::size_t i = 0; i + sample <= f.size(); ++i) {
            const auto h = hash_of(f.data() + i);
            const std::uint64_t bit = (h * 0x9E3779B97F4A7C15ULL) >> 48;
            filter_[bit / 64] |= std::uint64_t{1} << (bit % 64);
            windows_.push_back({h, index, static_cast<std::uint32_t>(i)});
        }
        forms_.push_back(std::move(f));
    }
    std::sort(windows_.begin(), windows_.end(), [](const auto& a, const auto& b) {
        return a.hash < b.hash;
    });
}

bool key_scrubber::may_hold(std::uint64_t h) const noexcept
{
    const std::uint64_t bit = (h * 0x9E3779B97F4A7C15ULL) >> 48; // 16 bits: filter_bits
    return (filter_[bit / 64] >> (bit % 64) & 1) != 0;
}

std::pair<std::size_t, std::size_t>
key_scrubber::run_at(std::string_view text, std::size_t at, std::uint64_t h) const
{
    // The longest run of a form of the key through the sampled window at `at`: among the form
    // windows of that hash, those that really match, extended both ways as far as they go.
    std::pair<std::size_t, std::size_t> best{at, at};
    auto it = std::lower_bound(windows_.begin(), windows_.end(), h, [](const auto& w, std::uint64_t v) {
        return w.hash < v;
    });
    for (; it != windows_.end() && it->hash == h; ++it) {
        const auto& f = forms_[it->form];
        std::size_t n = 0;
        while (at + n < text.size() && it->offset + n < f.size() &&
               fold(text[at + n]) == f[it->offset + n])
            ++n;
        if (n < sample)
            continue; // a hash collision
        std::size_t back = 0;
        while (back < at && back < it->offset &&
               fold(text[at - back - 1]) == f[it->offset - back - 1])
            ++back;
        if (n + back >= window && n + back > best.second - best.first)
            best = {at - back, at + n};
    }
    return best;
}

bool key_scrubber::redact(std::string_view text, std::size_t shown, std::string& out) const
{
    static constexpr std::string_view mark = "[redacted]";
    std::size_t copied = shown; // text before this is in `out`, redacted, or shown already
    std::size_t covered = 0;    // the runs found so far end here
    bool changed = false;
    for (std::size_t at = 0; at + sample <= text.size(); at += stride) {
        if (at + sample <= covered)
            continue; // inside a run already found
        const auto h = hash_of(text.data() + at);
        if (!may_hold(h))
            continue;
        auto [from, to] = run_at(text, at, h);
        if (to - from < window)
            continue;
        covered = to;
        if (to <= shown)
            continue; // all of it shown already
        from = std::max(from, copied);
        if (!(changed && from == copied)) { // not joined to the last redaction
            out.append(text, copied, from - copied);
            out += mark;
        }
        changed = true;
        copied = to;
    }
    if (changed)
        out.append(text, copied, std::string::npos);
    return changed;
}

void key_scrubber::scrub(std::string& text) const
{
    if (forms_.empty() || text.size() < window)
        return;
    std::string out;
    if (redact(text, 0, out))
        text = std::move(out);
}

void key_scrubber::scrub_after(std::string& text, std::string_view before) const
{
    if (before.empty())
        return scrub(text);
    if (forms_.empty() || before.size() + text.size() < window)
        return;
    thread_local std::string joined; // its room kept: a stream's pieces allocate nothing here
    joined.assign(before).append(text);
    std::string out;
    if (redact(joined, before.size(), out))
        text = std::move(out);
}

} // namespace frugal::openrouter
