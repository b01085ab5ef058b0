#include "cli/output.hpp"

#include <frugal/error.hpp>

#include <boost/asio/error.hpp>
#include <boost/json/array.hpp>
#include <boost/json/value.hpp>

#include <unistd.h>

#include <cstdio>

namespace frugal::cli {

std::string failure_text(const boost::system::error_code& ec, const diagnostics& diag)
{
    if (ec == error::missing_api_key)
        return "no API key: set OPENROUTER_API_KEY";
    if (diag.message.empty() && diag.http_status == 0)
        return ec.message();
    // An error response's own words say what failed (and its status); for anything else (a
    // broken stream, a deadline, the network) the error's name comes first, once.
    std::string text = diag.to_string();
    const bool error_response = diag.http_status >= 400;
    if (!error_response && ec != error::bad_url && ec != error::insecure_url &&
        text.find(ec.message()) == std::string::npos)
        text = ec.message() + ": " + text;
    return text;
}

namespace {

boost::json::value reason_json(escalation_reason r)
{
    return r == escalation_reason::none ? boost::json::value(nullptr)
                                        : boost::json::value(to_string(r));
}

} // namespace

std::string cascade_failure(const cascade_result& r, const boost::system::error_code& ec)
{
    for (auto it = r.attempts.rbegin(); it != r.attempts.rend(); ++it) {
        if (!it->error || it->error == boost::asio::error::operation_aborted)
            continue;
        std::string text = it->model_asked + ": " + it->error.message();
        if (!it->detail.empty() && it->detail.find(it->error.message()) == std::string::npos)
            text += ": " + it->detail;
        else if (!it->detail.empty())
            text = it->model_asked + ": " + it->detail;
        return text;
    }
    return ec.message();
}

boost::json::object
result_json(const cascade_result& r, const boost::system::error_code& ec, const std::string& id)
{
    namespace json = boost::json;
    json::object o;
    if (!id.empty())
        o["id"] = id;
    const bool answered = !r.response.model.empty() || !r.response.content.empty();
    o["content"] = answered ? json::value(r.response.content) : json::value(nullptr);
    o["final_model"] = answered ? json::value(r.response.model) : json::value(nullptr);
    o["finish_reason"] = answered && !r.response.finish_reason.empty()
                             ? json::value(r.response.finish_reason)
                             : json::value(nullptr);
    o["escalated"] = r.escalated;
    o["budget_denied"] = r.budget_denied;
    o["reason"] = reason_json(r.reason);
    o["wanted"] = reason_json(r.wanted);
    o["cost"] = r.total_cost.to_string();
    o["error"] = ec ? json::value(cascade_failure(r, ec)) : json::value(nullptr);
    json::array attempts;
    for (const auto& a : r.attempts) {
        json::object x;
        x["tier"] = a.tier;
        x["model"] = a.model_served.empty() ? a.model_asked : a.model_served;
        x["outcome"] = to_string(a.outcome);
        x["reason"] = reason_json(a.moved_on);
        x["cost"] = a.cost.to_string();
        x["cost_estimated"] = a.estimated;
        x["prompt_tokens"] = a.prompt_tokens;
        x["completion_tokens"] = a.completion_tokens;
        x["anomaly"] = a.anomaly.empty() ? json::value(nullptr) : json::value(a.anomaly);
        x["error"] = a.error ? json::value(a.detail.empty() ? a.error.message()
                                                           : a.error.message() + ": " + a.detail)
                             : json::value(nullptr);
        attempts.push_back(std::move(x));
    }
    o["attempts"] = std::move(attempts);
    return o;
}

progress_bar::progress_bar(std::size_t total, std::optional<money> cap)
    : enabled_(::isatty(STDERR_FILENO) == 1), total_(total), cap_(cap),
      start_(std::chrono::steady_clock::now())
{
}

void progress_bar::update(std::size_t done, std::size_t escalated, money spent, bool force)
{
    if (!enabled_)
        return;
    const auto now = std::chrono::steady_clock::now();
    if (!force && now - last_ < std::chrono::milliseconds(100))
        return;
    last_ = now;
    constexpr std::size_t width = 24;
    const std::size_t filled = total_ == 0 ? width : done * width / total_;
    std::string bar(filled, '#');
    bar.resize(width, '.');
    const double seconds = std::chrono::duration<double>(now - start_).count();
    const double rate = seconds > 0 ? static_cast<double>(done) / seconds : 0;
    std::string eta = "--";
    if (rate > 0 && done < total_) {
        const auto left = static_cast<long long>(static_cast<double>(total_ - done) / rate);
        eta = left >= 60 ? std::to_string(left / 60) + "m" + std::to_string(left % 60) + "s"
                         : std::to_string(left) + "s";
    }
    std::fprintf(
        stderr, "\r[%s] %zu/%zu, %.1f/s, ETA %s, %zu escalated, $%s", bar.c_str(), done, total_,
        rate, eta.c_str(), escalated, spent.to_string().c_str());
    if (cap_)
        std::fprintf(stderr, " of $%s", cap_->to_string().c_str());
    std::fprintf(stderr, "\033[K");
    std::fflush(stderr);
}

void progress_bar::clear()
{
    if (enabled_) {
        std::fprintf(stderr, "\r\033[K");
        std::fflush(stderr);
    }
}

} // namespace frugal::cli
