#ifndef FRUGAL_TESTS_PRINTERS_HPP
#define FRUGAL_TESTS_PRINTERS_HPP

// Lets Boost.Test print frugal values when an assertion on them fails.

#include <frugal/error.hpp>
#include <frugal/money.hpp>

#include <boost/test/tools/detail/print_helper.hpp>

#include <cstdint>
#include <optional>
#include <ostream>

namespace boost::test_tools::tt_detail {

// std::optional has no operator<<, and namespace std may not be given one.
template <class T>
struct print_log_value<std::optional<T>> {
    void operator()(std::ostream& os, const std::optional<T>& v) const
    {
        if (v) {
            os << *v;
        } else {
            os << "nullopt";
        }
    }
};

} // namespace boost::test_tools::tt_detail

namespace frugal {

inline std::ostream& operator<<(std::ostream& os, money m)
{
    return os << m.to_string() << " USD";
}

inline std::ostream& operator<<(std::ostream& os, error e)
{
    return os << make_error_code(e).to_string() << " (" << make_error_code(e).message() << ")";
}

} // namespace frugal

#endif // FRUGAL_TESTS_PRINTERS_HPP
