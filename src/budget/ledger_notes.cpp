// The ledger's notes as text and back: the one format the guard and the router write and
// reports read.
#include <frugal/ledger_notes.hpp>

#include <array>
#include <sstream>

namespace frugal {

namespace {

bool needs_escape(unsigned char c)
{
    return c <= 0x20 || c == 0x7f || c == '%';
}

// A space separates fields, a line break lines: an id or name carrying either (or a control
// character) is written with %XX, and so is '%' itself.
std::string encode(std::string_view s)
{
    static constexpr char hex[] = "0123456789ABCDEF";
    std::string out;
    out.reserve(s.size());
    for (const char ch : s) {
        const auto c = static_cast<unsigned char>(ch);
        if (needs_escape(c)) {
            out += '%';
            out += hex[c >> 4];
            out += hex[c & 0xf];
        } else {
            out += ch;
        }
    }
    return out;
}

int hex_value(char c)
{
    if (c >= '0' && c <= '9')
        return c - '0';
    if (c >= 'a' && c <= 'f')
        return c - 'a' + 10;
    if (c >= 'A' && c <= 'F')
        return c - 'A' + 10;
    return -1;
}

// Lenient: a '%' without two hex digits after it is itself (notes written before the encoding).
std::string decode(std::string_view s)
{
    std::string out;
    out.reserve(s.size());
    for (std::size_t i = 0; i < s.size(); ++i) {
        if (s[i] == '%' && i + 2 < s.size()) {
            const int hi = hex_value(s[i + 1]), lo = hex_value(s[i + 2]);
            if (hi >= 0 && lo >= 0) {
                out += static_cast<char>(hi * 16 + lo);
                i += 2;
                continue;
            }
        }
        out += s[i];
    }
    return out;
}

std::optional<budget_period> parse_period(std::string_view s)
{
    for (auto p :
         {budget_period::none, budget_period::daily, budget_period::weekly, budget_period::monthly})
        if (s == to_string(p))
            return p;
    return std::nullopt;
}

std::optional<noted_price> parse_price(const std::string& text)
{
    std::istringstream in(text);
    std::string a, b, c;
    if (!(in >> a >> b >> c))
        return std::nullopt;
    const auto p = money::parse(a), q = money::parse(b), r = money::parse(c);
    if (!p || !q || !r)
        return std::nullopt;
    return noted_price{*p, *q, *r};
}

std::string format_price(const noted_price& p)
{
    return p.prompt.to_string() + ' ' + p.completion.to_string() + ' ' + p.request.to_string();
}

std::string tiers_text(const std::vector<std::string>& tiers)
{
    std::string text;
    for (const auto& t : tiers) {
        if (!text.empty())
            text += ' ';
        text += encode(t);
    }
    return text;
}

std::string price_key(std::string_view model)
{
    return std::string(ledger_notes::price_key_prefix) + std::string(model);
}

} // namespace

const noted_price* ledger_notes::price_of(std::string_view model) const
{
    const auto it = prices.find(model);
    return it == prices.end() ? nullptr : &it->second;
}

ledger_notes ledger_notes::parse(std::span<const ledger_note> notes)
{
    ledger_notes out;
    for (const auto& [key, value] : notes) {
        if (key == caps_key) {
            std::istringstream lines(value);
            for (std::string line; std::getline(lines, line);) {
                std::istringstream in(line);
                std::array<std::string, 3> f;
                if (!(in >> f[0] >> f[1] >> f[2]))
                    continue;
                const auto cap = money::parse(f[1]);
                const auto period = parse_period(f[2]);
                if (cap && period)
                    out.caps.push_back({decode(f[0]), *cap, *period});
            }
        } else if (key == arrivals_key) {
            std::istringstream lines(value);
            for (std::string line; std::getline(lines, line);) {
                std::istringstream in(line);
                std::int64_t window = 0;
                std::string name;
                if (in >> window >> name)
                    out.arrived.insert_or_assign(decode(name), window);
            }
        } else if (key == tiers_key) {
            std::istringstream in(value);
            for (std::string m; in >> m;)
                out.tiers.push_back(decode(m));
        } else if (key.starts_with(price_key_prefix)) {
            if (auto p = parse_price(value))
                out.prices.insert_or_assign(key.substr(price_key_prefix.size()), *p);
        } else if (key == base_url_key) {
            out.base_url = value;
        } else {
            out.other.push_back({key, value});
        }
    }
    return out;
}

ledger_note ledger_notes::format_caps() const
{
    std::string text;
    for (const auto& b : caps)
        text += encode(b.name) + ' ' + b.cap.to_string() + ' ' + to_string(b.period) + '\n';
    return {std::string(caps_key), std::move(text)};
}

ledger_note ledger_notes::format_arrivals() const
{
    std::string text;
    for (const auto& [name, window] : arrived)
        text += std::to_string(window) + ' ' + encode(name) + '\n';
    return {std::string(arrivals_key), std::move(text)};
}

std::vector<ledger_note> ledger_notes::format_tiers() const
{
    std::vector<ledger_note> out;
    for (const auto& t : tiers)
        if (const auto* p = price_of(t))
            out.emplace_back(price_key(t), format_price(*p));
    out.emplace_back(std::string(tiers_key), tiers_text(tiers));
    return out;
}

std::vector<ledger_note> ledger_notes::format() const
{
    std::vector<ledger_note> out{format_caps()};
    if (!arrived.empty())
        out.push_back(format_arrivals());
    for (const auto& [model, p] : prices)
        out.emplace_back(price_key(model), format_price(p));
    if (!tiers.empty())
        out.emplace_back(std::string(tiers_key), tiers_text(tiers));
    if (base_url)
        out.emplace_back(std::string(base_url_key), *base_url);
    out.insert(out.end(), other.begin(), other.end());
    return out;
}

} // namespace frugal
