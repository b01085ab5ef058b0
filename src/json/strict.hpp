// A configuration's JSON, read strictly.
#ifndef FRUGAL_SRC_JSON_STRICT_HPP
#define FRUGAL_SRC_JSON_STRICT_HPP

#include <boost/json/value.hpp>
#include <boost/system/error_code.hpp>

#include <string>
#include <string_view>

namespace frugal::detail {

// Parses `text` as boost::json::parse does, and refuses what that would take silently: a
// member written twice in one object (the later one would win, so a cap written twice is a cap
// lost without a word) and a number past a double's range (read as infinity, which no JSON can
// carry on). On failure `ec` is set and `why` says what, naming the member by its path
// (`policies.p.tiers[1]`). The members of the top-level member `hidden`, whose names are
// secrets (the gateway's keys), are named by their place instead: `keys.<member 2>.budget`.
boost::json::value parse_strict(
    std::string_view text,
    boost::system::error_code& ec,
    std::string& why,
    std::string_view hidden = {});

} // namespace frugal::detail

#endif
