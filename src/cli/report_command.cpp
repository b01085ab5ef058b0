// `frugal report`: a ledger's usage per model, tier and cap, the saving against the flagship
// alone, and (with --reconcile) the provider's bill for every generation.
#include "cli/alarm.hpp"
#include "cli/commands.hpp"
#include "cli/report.hpp"

#include <frugal/ledger.hpp>

#include <charconv>
#include <chrono>
#include <cstdio>
#include <ctime>
#include <fstream>
#include <iostream>

namespace frugal::cli {

std::optional<std::int64_t> parse_since(std::string_view text, std::int64_t now_ms)
{
    if (text.empty())
        return std::int64_t{0};
    // A span back from now: 30m, 24h, 7d.
    const char unit = text.back();
    if (unit == 'm' || unit == 'h' || unit == 'd') {
        std::int64_t n = 0;
        const auto* end = text.data() + text.size() - 1;
        const auto [p, ec] = std::from_chars(text.data(), end, n);
        constexpr std::int64_t a_century_in_days = 36525;
        if (ec != std::errc() || p != end || n < 0 || n > a_century_in_days * 24 * 60)
            return std::nullopt;
        const std::int64_t unit_ms = unit == 'm' ? 60'000 : unit == 'h' ? 3'600'000 : 86'400'000;
        return now_ms - n * unit_ms;
    }
    // A date or a date and time, in UTC: 2026-11-26, 2026-11-26T09:30, 2026-11-26T09:30:00Z.
    std::tm tm{};
    const std::string s(text);
    const char* rest = nullptr;
    for (const char* fmt : {"%Y-%m-%dT%H:%M:%S", "%Y-%m-%dT%H:%M", "%Y-%m-%d"})
        if ((rest = strptime(s.c_str(), fmt, &tm)) != nullptr)
            break;
    if (rest == nullptr || !(*rest == '\0' || (rest[0] == 'Z' && rest[1] == '\0')))
        return std::nullopt;
    return static_cast<std::int64_t>(timegm(&tm)) * 1000;
}

int run_report(const report_options& options)
{
    const auto now = unix_now_ms();
    const auto since = parse_since(options.since, now);
    if (!since) {
        std::fprintf(
            stderr,
            "frugal report: --since %s: expected a date (2026-11-26), a UTC time "
            "(2026-11-26T09:30:00Z) or a span back from now (30m, 24h, 7d)\n",
            options.since.c_str());
        return exit_usage;
    }
    diagnostics diag;
    reconcile_result rec;
    if (options.reconcile) {
        reconcile_params rp;
        rp.ledger_path = options.ledger_file;
        rp.base_url = options.base_url;
        rp.since_ms = *since;
        rp.budget_store_url = options.budget_store;
        rp.budget_lease = std::chrono::milliseconds(
            static_cast<std::int64_t>(options.budget_lease_seconds * 1000));
        rp.not_found_wait = std::chrono::milliseconds(
            static_cast<std::int64_t>(options.reconcile_wait_seconds * 1000));
        auto reconciled = reconcile_ledger(rp, &diag);
        if (!reconciled) {
            std::fprintf(stderr, "frugal report: --reconcile: %s\n", diag.message.c_str());
            return exit_failure;
        }
        rec = std::move(*reconciled);
    }
    auto data = load_ledger(options.ledger_file, *since, &diag);
    if (!data) {
        std::fprintf(stderr, "frugal report: %s\n", diag.message.c_str());
        return exit_failure;
    }
    if (!options.tenant.empty()) {
        // A gateway charges each request to its tenant's budget key.
        const std::string key = "tenant:" + options.tenant;
        auto charged = [&key](const std::string& keys) {
            for (std::size_t at = keys.find(key); at != std::string::npos;
                 at = keys.find(key, at + 1))
                if ((at == 0 || keys[at - 1] == ' ') &&
                    (at + key.size() == keys.size() || keys[at + key.size()] == ' '))
                    return true;
            return false;
        };
        std::erase_if(data->records, [&](const attempt_record& r) { return !charged(r.keys); });
        std::erase_if(data->notes.caps, [&](const budget_spec& c) { return c.name != key; });
    }
    auto report = build_report(*data, now);
    report.reconcile = std::move(rec);

    if (!options.html_file.empty()) {
        std::ofstream out(options.html_file, std::ios::binary | std::ios::trunc);
        out << format_html(report);
        out.close();
        if (!out) {
            std::fprintf(stderr, "frugal report: cannot write %s\n", options.html_file.c_str());
            return exit_failure;
        }
        std::fprintf(stderr, "frugal report: wrote %s\n", options.html_file.c_str());
    }
    if (options.json)
        std::fputs(format_json(report).c_str(), stdout);
    else if (options.csv)
        std::fputs(format_csv(report).c_str(), stdout);
    else if (options.html_file.empty())
        std::fputs(format_text(report).c_str(), stdout);
    money_alarm alarm;
    for (const auto& a : report.anomalies)
        alarm.anomaly(a.model, a.what, a.cost);
    for (const auto& c : report.caps)
        alarm.budget(c.budget, c.spent, c.cap);
    for (const auto& x : report.reconcile.rejected)
        alarm.anomaly(x.generation_id, x.reason, x.recorded);
    if (alarm.print(
            "report", report.caps.empty() ? std::nullopt : std::optional<money>(report.caps[0].cap)))
        return exit_money;
    // Like diff(1): a difference between the books and the bill, or a generation the provider
    // no longer knows, is a failure to look at.
    return report.reconcile.differences.empty() && report.reconcile.unverified.empty()
               ? 0
               : exit_failure;
}

} // namespace frugal::cli
