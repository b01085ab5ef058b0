#define BOOST_TEST_MODULE frugal unit tests
#include <boost/test/unit_test.hpp>
