#include <frugal/money.hpp>

#include <boost/test/unit_test.hpp>

#include <limits>

using frugal::money;

BOOST_AUTO_TEST_SUITE(money_type)

BOOST_AUTO_TEST_CASE(parses_openrouter_price_strings_exactly)
{
    BOOST_TEST(money::parse("0.0000000375")->units() == 37'500);
    BOOST_TEST(money::parse("0.000003")->units() == 3'000'000);
    BOOST_TEST(money::parse("0")->units() == 0);
    BOOST_TEST(money::parse("-1")->units() == -money::units_per_usd);
    BOOST_TEST(money::parse("12.5")->units() == 12'500'000'000'000);
    BOOST_TEST(money::parse("0.000000000001")->units() == 1);
}

BOOST_AUTO_TEST_CASE(parses_json_numbers_with_exponents)
{
    BOOST_TEST(money::parse("4.95e-06")->units() == 4'950'000);
    BOOST_TEST(money::parse("2.415E-5")->units() == 24'150'000);
    BOOST_TEST(money::parse("1e0")->units() == money::units_per_usd);
    BOOST_TEST(money::parse("0.00002415")->units() == 24'150'000);
    BOOST_TEST(money::parse("1E+2")->units() == 100 * money::units_per_usd);
    BOOST_TEST(money::parse("0.0012300000000000000")->units() == 1'230'000'000);
}

BOOST_AUTO_TEST_CASE(refuses_what_it_cannot_hold_exactly)
{
    BOOST_TEST(!money::parse("0.0000000000001")); // a tenth of a picodollar
    BOOST_TEST(!money::parse("1e-13"));
    BOOST_TEST(!money::parse("9300000")); // past 9.2 million USD
    BOOST_TEST(!money::parse(""));
    BOOST_TEST(!money::parse("-"));
    BOOST_TEST(!money::parse("1."));
    BOOST_TEST(!money::parse(".5"));
    BOOST_TEST(!money::parse("1e"));
    BOOST_TEST(!money::parse("cheap"));
    BOOST_TEST(!money::parse("1,5"));
    BOOST_TEST(!money::parse("0x10"));
    BOOST_TEST(!money::parse("1e999999"));
}

BOOST_AUTO_TEST_CASE(formats_as_the_shortest_exact_decimal)
{
    BOOST_TEST(money::from_units(4'950'000).to_string() == "0.00000495");
    BOOST_TEST(money::from_units(0).to_string() == "0");
    BOOST_TEST(money::from_units(-1'500'000'000'000).to_string() == "-1.5");
    BOOST_TEST(money::from_units(1).to_string() == "0.000000000001");
    BOOST_TEST(
        money::from_units(std::numeric_limits<std::int64_t>::min()).to_string() ==
        "-9223372.036854775808");
    for (const char* text : {"0.0000000375", "123.456", "0.5", "7"})
        BOOST_TEST(money::parse(text)->to_string() == text);
}

BOOST_AUTO_TEST_CASE(sums_ten_million_tiny_costs_exactly)
{
    const money price = *money::parse("0.0000000375");
    money total;
    for (int i = 0; i < 10'000'000; ++i)
        total += price;
    BOOST_TEST(total.to_string() == "0.375");
    BOOST_TEST((price * 10'000'000 == total));
}

BOOST_AUTO_TEST_SUITE_END()
