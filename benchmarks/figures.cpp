#include "figures.hpp"

#include <boost/json.hpp>

#include <cmath>
#include <cstdio>
#include <cstring>
#include <fstream>
#include <iostream>
#include <sstream>

namespace frugal::bench {

namespace {
std::map<std::string, std::string>& units()
{
    static std::map<std::string, std::string> u;
    return u;
}
} // namespace

bool register_figure(const std::string& name, const std::string& unit)
{
    units()[name] = unit;
    return true;
}

std::string figure_unit(const std::string& name)
{
    const auto it = units().find(name);
    return it == units().end() ? std::string() : it->second;
}

void write_results(
    const std::filesystem::path& path,
    const std::map<std::string, std::pair<double, std::string>>& figures)
{
    boost::json::object all;
    if (std::ifstream in(path); in) {
        std::stringstream text;
        text << in.rdbuf();
        boost::system::error_code ec;
        auto old = boost::json::parse(text.str(), ec);
        if (!ec && old.is_object())
            all = std::move(old.as_object());
    }
    for (const auto& [name, figure] : figures)
        all[name] = {{"value", figure.first}, {"unit", figure.second}};
    std::filesystem::create_directories(path.parent_path().empty() ? "." : path.parent_path());
    std::ofstream out(path);
    out << "{\n";
    bool first = true;
    for (const auto& [name, figure] : all) {
        const auto* o = figure.if_object();
        const auto* v = o != nullptr ? o->if_contains("value") : nullptr;
        const auto* unit = o != nullptr ? o->if_contains("unit") : nullptr;
        if (v == nullptr || !v->is_number() || unit == nullptr)
            continue;
        // Rounded for reading: whole numbers from 100 up, four significant digits below.
        const double value = v->to_number<double>();
        char text[64];
        std::snprintf(text, sizeof text, std::fabs(value) >= 100 ? "%.0f" : "%.4g", value);
        out << (first ? "" : ",\n") << "  " << boost::json::serialize(name)
            << ": {\"value\": " << text << ", \"unit\": " << boost::json::serialize(*unit) << "}";
        first = false;
    }
    out << "\n}\n";
    std::cout << "figures written to " << path.string() << '\n';
}

std::filesystem::path results_path(int argc, char** argv)
{
    for (int i = 1; i < argc; ++i) {
        if (std::strncmp(argv[i], "--results=", 10) == 0)
            return argv[i] + 10;
    }
    return "build/bench/results.json";
}

} // namespace frugal::bench
