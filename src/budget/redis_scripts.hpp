#ifndef FRUGAL_SRC_BUDGET_REDIS_SCRIPTS_HPP
#define FRUGAL_SRC_BUDGET_REDIS_SCRIPTS_HPP

// The Lua scripts the Redis budget store runs, kept apart from the C++ that calls them: each is
// a page of another language with its own argument conventions, reviewed on its own. Their
// texts, arguments and the key layout they share are in redis_scripts.cpp.

#include <string>
#include <vector>

namespace frugal::detail::redis {

// Sent in front of every script below (by EVAL or SCRIPT LOAD): the helpers they share.
extern const char* const lua_prelude;
extern const char* const reserve_lua;
extern const char* const apply_lua;
extern const char* const sweep_lua;
extern const char* const settle_swept_lua;
extern const char* const take_free_lua;
extern const char* const block_free_lua;
extern const char* const take_rated_lua;

// SCRIPT LOAD of `script` after the prelude: a connection sends it once, and afterwards names
// the script by the sha it answers (EVALSHA), not its text.
std::vector<std::string> load_command(const char* script);

} // namespace frugal::detail::redis

#endif // FRUGAL_SRC_BUDGET_REDIS_SCRIPTS_HPP
