#ifndef FRUGAL_CLI_REPORT_HPP
#define FRUGAL_CLI_REPORT_HPP

// The usage report as `frugal report` and `frugal demo` present it: text, JSON, CSV and an
// HTML dashboard. The report itself is computed by the ledger layer (<frugal/ledger.hpp>).

#include <frugal/ledger.hpp>

#include <cstdint>
#include <string>
#include <string_view>

namespace frugal::cli {

/// Now, in Unix milliseconds.
std::int64_t unix_now_ms();

/// `unix_ms` in UTC, formatted by strftime's `fmt`.
std::string format_utc(std::int64_t unix_ms, const char* fmt);

std::string format_text(const ledger_report& r);
std::string format_json(const ledger_report& r);
std::string format_csv(const ledger_report& r);

/// A CSV field (RFC 4180), neutralised for spreadsheets: text beginning with = + - @, a tab or
/// a carriage return is prefixed with an apostrophe so that it is never run as a formula.
std::string csv_field(std::string_view s);
std::string format_html(const ledger_report& r);

/// Text escaped for HTML content and attribute values (the report's and `frugal eval`'s pages).
std::string html_escape(std::string_view s);
/// A coordinate or percentage for an SVG chart: one decimal.
std::string html_number(double v);

} // namespace frugal::cli

#endif // FRUGAL_CLI_REPORT_HPP
