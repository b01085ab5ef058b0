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
