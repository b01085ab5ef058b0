#ifndef FRUGAL_TESTS_CASCADE_PRINTERS_HPP
#define FRUGAL_TESTS_CASCADE_PRINTERS_HPP

// Lets Boost.Test print the cascade's values when an assertion on them fails (apart from
// printers.hpp, which most tests include without the router's header).

#include <frugal/router.hpp>

#include <ostream>

namespace frugal {

inline std::ostream& operator<<(std::ostream& os, escalation_reason r)
{
    return os << to_string(r);
}

inline std::ostream& operator<<(std::ostream& os, attempt_outcome o)
{
    return os << to_string(o);
}

} // namespace frugal

#endif // FRUGAL_TESTS_CASCADE_PRINTERS_HPP
