// The gateway's configuration file. A file that holds money rules is checked whole: an unknown
// member is a typo that would otherwise leave a cap or a limit silently unset.
#include <frugal/serve.hpp>

#include <frugal/error.hpp>

#include "json/strict.hpp"

#include <boost/json.hpp>

#include <openssl/evp.h>

#include <cmath>
#include <initializer_list>

namespace frugal {

namespace json = boost::json;

std::string sha256_hex(std::string_view text)
{
    unsigned char digest[EVP_MAX_MD_SIZE];
    unsigned int n = 0;
    EVP_Digest(text.data(), text.size(), digest, &n, EVP_sha256(), nullptr);
    static constexpr char hex[] = "0123456789abcdef";
    std::string out;
    out.reserve(2 * n);
    for (unsigned int i = 0; i < n; ++i) {
        out += hex[digest[i] >> 4];
        out += hex[digest[i] & 15];
    }
    return out;
}

namespace {

// A member path and why it is wrong, the first one found.
struct checker {
    std::string& detail;
    bool failed = false;

    bool fail(std::string_view where, std::string_view why)
    {
        if (!failed)
            detail = std::string(where) + ": " + std::string(why);
        failed = true;
        return false;
    }

    bool only(const json::object& o, std::string_view where, std::initializer_list<std::string_view> known)
    {
        for (const auto& m : o) {
            bool ok = false;
            for (const auto k : known)
                ok = ok || m.key() == k;
            if (!ok)
                return fail(
                    std::string(where).append(where.empty() ? "" : ".").append(m.key()),
                    "unknown member");
        }
        return true;
    }

    const json::object* object(const json::value* v, std::string_view where)
    {
        if (v == nullptr)
            return nullptr;
        if (!v->is_object()) {
            fail(where, "must be an object");
            return nullptr;
        }
        return &v->get_object();
    }

    std::optional<std::string> text(const json::value* v, std::string_view where)
    {
        if (v == nullptr)
            return std::nullopt;
        if (!v->is_string() || v->get_string().empty()) {
            fail(where, "must be a non-empty string");
            return std::nullopt;
        }
        return std::string(v->get_string());
    }

    std::optional<double> number(const json::value* v, std::string_view where, double lo, double hi)
    {
        if (v == nullptr)
            return std::nullopt;
        if (!v->is_number()) {
            fail(where, "must be a number");
            return std::nullopt;
        }
        const double d = v->to_number<double>();
        if (!std::isfinite(d) || d < lo || d > hi) {
            fail(where, "must be from " + json::serialize(json::value(lo)) + " to " +
                            json::serialize(json::value(hi)));
            return std::nullopt;
        }
        return d;
    }

    std::optional<std::uint64_t>
    count(const json::value* v, std::string_view where, std::uint64_t lo, std::uint64_t hi)
    {
        if (v == nullptr)
            return std::nullopt;
        std::uint64_t n = 0;
        if (v->is_uint64())
            n = v->get_uint64();
        else if (v->is_int64() && v->get_int64() >= 0)
            n = static_cast<std::uint64_t>(v->get_int64());
        else {
            fail(where, "must be a whole number");
            return std::nullopt;
        }
        if (n < lo || n > hi) {
            fail(where, "must be from " + std::to_string(lo) + " to " + std::to_string(hi));
            return std::nullopt;
        }
        return n;
    }

    void seconds(
        const json::value* v, std::string_view where, double lo, double hi,
        std::chrono::milliseconds& out)
    {
        if (const auto s = number(v, where, lo, hi))
            out = std::chrono::milliseconds(static_cast<std::int64_t>(std::llround(*s * 1000)));
    }
};

// Names and tenants become metric labels, budget names and model ids: a plain alphabet.
bool plain_name(std::string_view s)
{
    if (s.empty() || s.size() > 64)
        return false;
    for (const char c : s)
        if (!((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') ||
              c == '-' || c == '_' || c == '.'))
            return false;
    return true;
}

bool is_hex64(std::string_view s)
{
    if (s.size() != 64)
        return false;
    for (const char c : s)
        if (!((c >= '0' && c <= '9') || (c >= 'a' && c <= 'f') || (c >= 'A' && c <= 'F')))
            return false;
    return true;
}

void parse_upstream(checker& ck, const json::object& u, gateway_config& cfg)
{
    if (!ck.only(
            u, "upstream",
            {"base_url", "ca_file", "timeout_seconds", "connect_timeout_seconds", "pool_size",
             "default_max_tokens"}))
        return;
    if (auto s = ck.text(u.if_contains("base_url"), "upstream.base_url"))
        cfg.base_url = std::move(*s);
    if (auto s = ck.text(u.if_contains("ca_file"), "upstream.ca_file"))
        cfg.ca_file = std::move(*s);
    ck.seconds(u.if_contains("timeout_seconds"), "upstream.timeout_seconds", 0.001, 86400,
               cfg.upstream_timeout);
    ck.seconds(u.if_contains("connect_timeout_seconds"), "upstream.connect_timeout_seconds",
               0.001, 3600, cfg.connect_timeout);
    if (auto n = ck.count(u.if_contains("pool_size"), "upstream.pool_size", 1, 65535))
        cfg.pool_size = *n;
    if (auto n = ck.count(u.if_contains("default_max_tokens"), "upstream.default_max_tokens", 1,
                          10'000'000))
        cfg.default_max_tokens = static_cast<std::uint32_t>(*n);
}

void parse_limits(checker& ck, const json::object& l, gateway_config& cfg)
{
    if (!ck.only(
            l, "limits",
            {"max_body_bytes", "client_timeout_seconds", "grace_seconds", "max_connections",
             "socket_send_buffer_bytes"}))
        return;
    if (auto n = ck.count(l.if_contains("max_body_bytes"), "limits.max_body_bytes", 1024,
                          std::uint64_t{256} << 20))
        cfg.max_body_bytes = *n;
    ck.seconds(l.if_contains("client_timeout_seconds"), "limits.client_timeout_seconds", 0.001,
               3600, cfg.client_timeout);
    ck.seconds(l.if_contains("grace_seconds"), "limits.grace_seconds", 0, 86400, cfg.grace);
    if (auto n = ck.count(l.if_contains("max_connections"), "limits.max_connections", 1,
                          1'000'000))
        cfg.max_connections = *n;
    if (auto n = ck.count(l.if_contains("socket_send_buffer_bytes"),
                          "limits.socket_send_buffer_bytes", 0, std::uint64_t{64} << 20))
        cfg.socket_send_buffer_bytes = static_cast<std::size_t>(*n);
}

void parse_key(checker& ck, const std::string& where, const json::value& v, gateway_key& k)
{
    const auto* o = ck.object(&v, where);
    if (o == nullptr || !ck.only(*o, where, {"tenant", "budget", "allow", "rpm"}))
        return;
    const auto* tenant = o->if_contains("tenant");
    if (tenant == nullptr) {
        ck.fail(where + ".tenant", "is required");
        return;
    }
    if (!tenant->is_string() || !plain_name(tenant->get_string())) {
        ck.fail(where + ".tenant", "must be 1 to 64 letters, digits, '-', '_' or '.'");
        return;
    }
    k.tenant = std::string(tenant->get_string());
    if (const auto* b = ck.object(o->if_contains("budget"), where + ".budget")) {
        if (!ck.only(*b, where + ".budget", {"usd", "period"}))
            return;
        const auto* usd = b->if_contains("usd");
        if (usd == nullptr || !usd->is_string()) {
            ck.fail(where + ".budget.usd", "is required, a decimal string such as \"5.00\"");
            return;
        }
        const auto cap = money::parse(usd->get_string());
        if (!cap || *cap < money()) {
            ck.fail(where + ".budget.usd", "must be an amount of USD ≥ 0 such as \"5.00\", got \"" +
                                               std::string(usd->get_string()) + "\"");
            return;
        }
        k.budget = *cap;
        if (const auto* p = b->if_contains("period")) {
            const std::string_view s = p->is_string() ? std::string_view(p->get_string()) : "";
            if (s == "day")
                k.period = budget_period::daily;
            else if (s == "week")
                k.period = budget_period::weekly;
            else if (s == "month")
                k.period = budget_period::monthly;
            else if (s == "none")
                k.period = budget_period::none;
            else {
                ck.fail(where + ".budget.period", "must be \"day\", \"week\", \"month\" or \"none\"");
                return;
            }
        }
    }
    if (const auto* a = o->if_contains("allow")) {
        if (!a->is_array()) {
            ck.fail(where + ".allow", "must be an array of model ids and \"frugal/POLICY\" names");
            return;
        }
        for (const auto& e : a->get_array()) {
            if (!e.is_string() || e.get_string().empty()) {
                ck.fail(where + ".allow", "must be an array of non-empty strings");
                return;
            }
            k.allow.emplace_back(e.get_string());
        }
    }
    // 0 is refused rather than read as "no limit" or "no requests": leaving it out is no limit.
    if (auto n = ck.count(o->if_contains("rpm"), where + ".rpm", 1, 10'000'000))
        k.rpm = static_cast<std::uint32_t>(*n);
}

void parse_keys(checker& ck, const json::object& keys, gateway_config& cfg)
{
    if (keys.empty()) {
        ck.fail("keys", "must hold at least one key");
        return;
    }
    // Keys of one tenant share its budget: two different caps for one tenant is a mistake.
    std::map<std::string, const gateway_key*, std::less<>> budgets;
    for (const auto& m : keys) {
        const std::string_view literal = m.key();
        std::string hash;
        if (literal.starts_with("sha256:")) {
            if (!is_hex64(literal.substr(7))) {
                ck.fail("keys", "a key written \"sha256:HEX\" needs the 64 hex digits of its SHA-256");
                return;
            }
            hash = std::string(literal.substr(7));
            for (auto& c : hash)
                c = static_cast<char>(c >= 'A' && c <= 'F' ? c - 'A' + 'a' : c);
        } else {
            if (literal.size() < 16) {
                ck.fail("keys", "a key must have at least 16 characters (or be written "
                                "\"sha256:HEX\")");
                return;
            }
            hash = sha256_hex(literal);
        }
        const std::string where = "keys[\"sha256:" + hash.substr(0, 12) + "…\"]";
        gateway_key k;
        parse_key(ck, where, m.value(), k);
        if (ck.failed)
            return;
        if (cfg.keys.contains(hash)) {
            ck.fail(where, "the same key is listed twice");
            return;
        }
        for (const auto& a : k.allow) {
            if (a.starts_with("frugal/") && !cfg.policies.contains(a.substr(7))) {
                ck.fail(where + ".allow", "\"" + a + "\" names no policy in \"policies\"");
                return;
            }
        }
        auto [it, fresh] = cfg.keys.emplace(std::move(hash), std::move(k));
        const auto& stored = it->second;
        if (!stored.budget)
            continue;
        auto [b, first] = budgets.emplace(stored.tenant, &stored);
        if (!first && (b->second->budget != stored.budget || b->second->period != stored.period)) {
            ck.fail(where + ".budget", "tenant \"" + stored.tenant +
                                           "\" has another key with a different budget; a "
                                           "tenant has one cap");
            return;
        }
    }
    // A key that names no budget takes its tenant's, when another key of the tenant has one.
    for (auto& [hash, k] : cfg.keys) {
        if (k.budget)
            continue;
        if (const auto b = budgets.find(k.tenant); b != budgets.end()) {
            k.budget = b->second->budget;
            k.period = b->second->period;
        }
    }
}

} // namespace

boost::system::result<gateway_config> parse_gateway_config(std::string_view text, diagnostics* diag)
{
    std::string detail;
    auto failed = [&]() -> boost::system::result<gateway_config> {
        if (diag != nullptr)
            diag->message = detail;
        return boost::system::error_code(error::bad_budget_config);
    };
    boost::system::error_code ec;
    std::string why;
    const json::value v = frugal::detail::parse_strict(text, ec, why, "keys"); // keys are secrets
    if (ec) {
        detail = "not JSON as it must be: " + why;
        return failed();
    }
    checker ck{detail};
    gateway_config cfg;
    if (!v.is_object()) {
        ck.fail("the configuration", "must be a JSON object");
        return failed();
    }
    const auto& top = v.get_object();
    if (!ck.only(top, "", {"upstream", "policies", "keys", "ledger", "budget_store", "limits"}))
        return failed();
    if (const auto* u = ck.object(top.if_contains("upstream"), "upstream"))
        parse_upstream(ck, *u, cfg);
    if (const auto* l = ck.object(top.if_contains("limits"), "limits"))
        parse_limits(ck, *l, cfg);
    if (auto s = ck.text(top.if_contains("ledger"), "ledger"))
        cfg.ledger = std::move(*s);
    if (auto s = ck.text(top.if_contains("budget_store"), "budget_store")) {
        if (!s->starts_with("redis://")) {
            ck.fail("budget_store", "must be a redis://HOST:PORT/DB URL");
            return failed();
        }
        cfg.budget_store = std::move(*s);
    }
    if (ck.failed)
        return failed();
    if (const auto* p = ck.object(top.if_contains("policies"), "policies")) {
        for (const auto& m : *p) {
            const std::string where = "policies." + std::string(m.key());
            if (!plain_name(m.key())) {
                ck.fail(where, "a policy's name must be 1 to 64 letters, digits, '-', '_' or '.'");
                return failed();
            }
            diagnostics pd;
            auto policy = parse_policy(json::serialize(m.value()), &pd);
            if (!policy) {
                ck.fail(where, pd.message);
                return failed();
            }
            cfg.policies.emplace(std::string(m.key()), std::move(*policy));
        }
    }
    if (ck.failed)
        return failed();
    const auto* keys = ck.object(top.if_contains("keys"), "keys");
    if (keys == nullptr) {
        if (!ck.failed)
            ck.fail("keys", "is required: the gateway's own API keys, each mapped to a tenant");
        return failed();
    }
    parse_keys(ck, *keys, cfg);
    if (ck.failed)
        return failed();
    return cfg;
}

} // namespace frugal
