#ifndef FRUGAL_ERROR_HPP
#define FRUGAL_ERROR_HPP

/// @file
/// frugal's error codes and their category.
///
/// frugal reports failures as `boost::system::error_code`. Codes that Asio, Beast or OpenSSL
/// already define (`asio::error::operation_aborted` for cancellation, `beast::error::timeout`
/// for I/O timeouts) are passed through unchanged; this enum holds only the conditions that are
/// frugal's own. Values start at 1 because 0 means success.

#include <boost/system/error_code.hpp>

#include <type_traits>

namespace frugal {

/// Failure conditions specific to frugal.
///
/// @par Stability
/// Enumerators are appended, never renumbered, so values may be logged and compared across
/// versions.
enum class error {
    /// An event stream held a line longer than `sse_parser_params::max_line_size` (line end
    /// not counted). Reported as soon as the unfinished line is known to be too long; the
    /// parser stays failed until `sse_parser::reset()`.
    sse_line_too_long = 1,

    /// An event's data buffer (its data lines and the line feeds joining them) would grow
    /// past `sse_parser_params::max_event_size`. The parser stays failed until
    /// `sse_parser::reset()`.
    sse_event_too_large,
};

/// The category of `frugal::error`; its name is `"frugal"`.
const boost::system::error_category& error_category() noexcept;

/// Makes `e` an `error_code` in frugal's category (found by argument-dependent lookup).
inline boost::system::error_code make_error_code(error e) noexcept
{
    return {static_cast<int>(e), error_category()};
}

} // namespace frugal

template <>
struct boost::system::is_error_code_enum<frugal::error> : std::true_type {
};

#endif // FRUGAL_ERROR_HPP
