#ifndef FRUGAL_SRC_OPENROUTER_SCRUB_HPP
#define FRUGAL_SRC_OPENROUTER_SCRUB_HPP

// Removes an API key from text a provider sent back (an error that echoes the Authorization
// header, a debug body), in any form frugal can recognise: whole or cut short, in any letter
// case, percent-encoded, or inside base64 ("Bearer KEY" as an echoed header, or KEY alone).
// Every run of `window` or more characters of the key is replaced by "[redacted]".

#include <cstdint>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

namespace frugal::openrouter {

class key_scrubber {
public:
    /// The shortest run of the key that is redacted: long enough that no ordinary text holds
    /// one by chance, short enough that a key cut for display still is.
    static constexpr std::size_t window = 12;

    key_scrubber() = default;
    explicit key_scrubber(std::string_view key);

    /// Whether there is a key to look for.
    explicit operator bool() const noexcept { return !forms_.empty(); }

    /// Redacts every run of the key in `text`.
    void scrub(std::string& text) const;

    /// The same for text that follows `before` (up to `window` - 1 characters already shown,
    /// as the provider sent them): a run that began there is redacted from where `text`
    /// starts. A stream scrubbed piece by piece then shows at most `window` - 1 characters of
    /// a key cut across its pieces, however small they are.
    void scrub_after(std::string& text, std::string_view before) const;

private:
    // The key's forms, lower-cased (matching ignores case); every short window of them by its
    // hash, sorted; and a filter over those hashes, so that a text is sampled every few
    // positions with one bit test, and only a real match (or a rare false one) looks further.
    struct window_ref {
        std::uint64_t hash;
        std::uint32_t form;
        std::uint32_t offset;
    };
    std::vector<std::string> forms_;
    std::vector<window_ref> windows_;
    std::vector<std::uint64_t> filter_;
    bool may_hold(std::uint64_t h) const noexcept;
    std::pair<std::size_t, std::size_t>
    run_at(std::string_view text, std::size_t at, std::uint64_t h) const;
    // Writes text[shown..] to `out` with every run reaching past `shown` redacted; false (and
    // `out` untouched) when there is none.
    bool redact(std::string_view text, std::size_t shown, std::string& out) const;
};

} // namespace frugal::openrouter

#endif // FRUGAL_SRC_OPENROUTER_SCRUB_HPP
