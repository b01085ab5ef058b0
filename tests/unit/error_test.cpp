#include "printers.hpp"

#include <frugal/error.hpp>

#include <boost/test/unit_test.hpp>

#include <set>
#include <string>

BOOST_AUTO_TEST_SUITE(error_category)

namespace {
// Every enumerator; a new one must be added here to be checked.
constexpr frugal::error all_errors[] = {
    frugal::error::sse_line_too_long,
    frugal::error::sse_event_too_large,
    frugal::error::bad_url,
    frugal::error::insecure_url,
    frugal::error::missing_api_key,
    frugal::error::bad_request_body,
    frugal::error::timeout,
    frugal::error::proxy_error,
    frugal::error::protocol_error,
    frugal::error::stream_truncated,
    frugal::error::midstream_error,
    frugal::error::bad_request,
    frugal::error::context_length_exceeded,
    frugal::error::unauthorized,
    frugal::error::insufficient_credits,
    frugal::error::moderation,
    frugal::error::forbidden,
    frugal::error::not_found,
    frugal::error::upstream_timeout,
    frugal::error::payload_too_large,
    frugal::error::rate_limited,
    frugal::error::server_error,
    frugal::error::upstream_unavailable,
    frugal::error::upstream_overloaded,
    frugal::error::provider_error,
    frugal::error::operation_in_progress,
    frugal::error::stream_not_readable,
    frugal::error::budget_exhausted,
    frugal::error::budget_closed,
    frugal::error::price_unknown,
    frugal::error::budget_store_failed,
    frugal::error::bad_budget_config,
    frugal::error::reservation_inactive,
    frugal::error::bad_policy,
    frugal::error::bad_sim_config,
    frugal::error::bad_outcomes,
};
} // namespace

BOOST_AUTO_TEST_CASE(every_enumerator_has_its_own_message_in_the_frugal_category)
{
    std::set<std::string> messages;
    for (const auto e : all_errors) {
        const boost::system::error_code ec = e;
        BOOST_TEST(ec.failed());
        BOOST_TEST(std::string(ec.category().name()) == "frugal");
        BOOST_TEST(ec.value() == static_cast<int>(e));
        BOOST_TEST(ec == e);
        BOOST_TEST(ec.message() != "unknown frugal error");
        BOOST_TEST(!ec.message().empty());
        messages.insert(ec.message());
    }
    BOOST_TEST(messages.size() == std::size(all_errors));
}

BOOST_AUTO_TEST_CASE(enumerators_are_numbered_from_one_without_gaps)
{
    for (std::size_t i = 0; i < std::size(all_errors); ++i)
        BOOST_TEST(static_cast<int>(all_errors[i]) == static_cast<int>(i) + 1);
}

BOOST_AUTO_TEST_CASE(retryable_errors_are_transient_ones)
{
    using frugal::error;
    for (const auto e :
         {error::rate_limited, error::upstream_timeout, error::upstream_unavailable,
          error::upstream_overloaded, error::timeout})
        BOOST_TEST(frugal::is_retryable(e), boost::system::error_code(e).message());
    for (const auto e :
         {error::bad_request, error::unauthorized, error::insufficient_credits, error::moderation,
          error::server_error, error::midstream_error, error::stream_truncated,
          error::protocol_error})
        BOOST_TEST(!frugal::is_retryable(e), boost::system::error_code(e).message());
    BOOST_TEST(frugal::is_retryable(make_error_code(boost::system::errc::connection_refused)));
    BOOST_TEST(frugal::is_retryable(make_error_code(boost::system::errc::connection_reset)));
    BOOST_TEST(!frugal::is_retryable(make_error_code(boost::system::errc::operation_canceled)));
}

BOOST_AUTO_TEST_CASE(fatal_errors_are_those_that_spoil_the_connection)
{
    using frugal::error;
    BOOST_TEST(!frugal::is_fatal({}));
    BOOST_TEST(!frugal::is_fatal(error::rate_limited)); // a complete 429 response
    BOOST_TEST(!frugal::is_fatal(error::bad_request));
    BOOST_TEST(frugal::is_fatal(error::timeout));
    BOOST_TEST(frugal::is_fatal(error::stream_truncated));
    BOOST_TEST(frugal::is_fatal(error::protocol_error));
    BOOST_TEST(frugal::is_fatal(error::midstream_error));
    BOOST_TEST(frugal::is_fatal(make_error_code(boost::system::errc::operation_canceled)));
}

BOOST_AUTO_TEST_CASE(unknown_value_has_a_generic_message)
{
    const boost::system::error_code ec(9999, frugal::error_category());
    BOOST_TEST(ec.message() == "unknown frugal error");
}

BOOST_AUTO_TEST_CASE(codes_compare_by_category_not_by_value)
{
    const boost::system::error_code ours = frugal::error::sse_line_too_long;
    const boost::system::error_code other(ours.value(), boost::system::generic_category());
    BOOST_TEST(ours != other);
    BOOST_TEST(&frugal::error_category() == &ours.category());
}

BOOST_AUTO_TEST_SUITE_END()
