#include "openrouter/scrub.hpp"

#include <algorithm>
#include <cctype>

namespace frugal::openrouter {

namespace {

char fold(char c) noexcept
{
    return static_cast<char>(std::tolower(static_cast<unsigned char>(c)));
}

// FNV-1a of `n` case-folded characters.
std::uint64_t hash_of(const char* p, std::size_t n) noexcept
{
    std::uint64_t h = 1469598103934665603ULL;
    for (std::size_t i = 0; i < n; ++i) {
        h ^= static_cast<unsigned char>(fold(p[i]));
        h *= 1099511628211ULL;
    }
    return h;
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

constexpr std::size_t filter_bits = 4096;

} // namespace

key_scrubber::key_scrubber(std::string_view key)
{
    if (key.size() < window)
        return; // too short to tell from text; such a key is not a real one
    std::vector<std::string> forms{std::string(key), percent_encoded(key)};
    // Base64 of any text holding the key holds the base64 of the key taken from one of three
    // alignments (a group of three bytes becomes four characters).
    for (std::size_t skip = 0; skip < 3; ++skip) {
        const std::string b = base64(key.substr(skip));
        // The first group may mix in bytes before the key, so it is left out.
        if (b.size() > 4 + window)
            forms.push_back(b.substr(4));
        if (b.size() >= window)
            forms.push_back(b);
    }
    filter_.assign(filter_bits / 64, 0);
    for (auto& f : forms) {
        std::transform(f.begin(), f.end(), f.begin(), fold);
        if (f.size() < window)
            continue;
        for (std::size_t i = 0; i + window <= f.size(); ++i) {
            const auto h = hash_of(f.data() + i, window) % filter_bits;
            filter_[h / 64] |= std::uint64_t{1} << (h % 64);
        }
        forms_.push_back(f);
    }
}

bool key_scrubber::may_hold(std::uint64_t h) const noexcept
{
    h %= filter_bits;
    return (filter_[h / 64] >> (h % 64) & 1) != 0;
}

void key_scrubber::scrub(std::string& text) const
{
    if (forms_.empty() || text.size() < window)
        return;
    static constexpr std::string_view mark = "[redacted]";
    std::string out;
    std::size_t copied = 0; // text before this is in `out` (or needs no change)
    std::size_t i = 0;
    while (i + window <= text.size()) {
        if (!may_hold(hash_of(text.data() + i, window))) {
            ++i;
            continue;
        }
        // The longest run of some form of the key that starts here.
        std::size_t best = 0;
        for (const auto& f : forms_) {
            for (std::size_t at = 0; at + window <= f.size(); ++at) {
                std::size_t n = 0;
                while (i + n < text.size() && at + n < f.size() && fold(text[i + n]) == f[at + n])
                    ++n;
                best = std::max(best, n);
            }
        }
        if (best < window) {
            ++i;
            continue;
        }
        out.append(text, copied, i - copied);
        out += mark;
        i += best;
        copied = i;
    }
    if (copied == 0)
        return;
    out.append(text, copied, std::string::npos);
    text = std::move(out);
}

} // namespace frugal::openrouter
