// A ledger's report in your own program: per model, per cap, and the provider's word on it.
#include <frugal/ledger.hpp>

#include <chrono>
#include <cstdio>
#include <string>

int main(int argc, char** argv)
{
    if (argc < 2) {
        std::fprintf(stderr, "usage: example_ledger_report LEDGER.db [--reconcile]\n");
        return 2;
    }
    const std::string path = argv[1];
    frugal::diagnostics diag;

    // Reconciling writes the bills the provider proves into the ledger: do it before reading.
    // It looks every generation up with OPENROUTER_API_KEY, and blocks until done.
    if (argc > 2 && std::string(argv[2]) == "--reconcile") {
        frugal::reconcile_params params;
        params.ledger_path = path;
        auto found = frugal::reconcile_ledger(params, &diag);
        if (!found) {
            std::fprintf(stderr, "reconcile: %s\n", diag.message.c_str());
            return 1;
        }
        std::printf(
            "%zu generations checked, %zu match, %zu differ\n", found->checked, found->matched,
            found->differences.size());
    }

    // Read the ledger (read-only, no lock: its owner may be running), then compute the report,
    // a plain value.
    auto data = frugal::load_ledger(path, 0, &diag);
    if (!data) {
        std::fprintf(stderr, "%s\n", diag.message.c_str());
        return 1;
    }
    const auto now = std::chrono::duration_cast<std::chrono::milliseconds>(
                         std::chrono::system_clock::now().time_since_epoch())
                         .count();
    const frugal::ledger_report report = frugal::build_report(*data, now);

    for (const auto& m : report.models) {
        std::printf(
            "%-40s %6llu requests  $%s\n", m.name.c_str(),
            static_cast<unsigned long long>(m.requests), m.cost.to_string().c_str());
    }
    for (const auto& c : report.caps) {
        std::printf(
            "cap %s (%s): $%s of $%s\n", c.budget.c_str(), c.window.c_str(),
            c.spent.to_string().c_str(), c.cap.to_string().c_str());
    }
    if (report.flagship_priced) {
        std::printf(
            "on %s alone: $%s\n", report.flagship.c_str(),
            report.flagship_only.to_string().c_str());
    }
    return 0;
}
