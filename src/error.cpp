#include <frugal/error.hpp>

#include <string>

namespace frugal {
namespace {

class category final : public boost::system::error_category {
public:
    // A fixed id lets error codes from different shared objects compare equal.
    category() noexcept : boost::system::error_category(0xf20a1c0de5ULL) {}

    const char* name() const noexcept override { return "frugal"; }

    std::string message(int ev) const override { return message(ev, nullptr, 0); }

    const char* message(int ev, char* /*buffer*/, std::size_t /*len*/) const noexcept override
    {
        // No default: a new enumerator without a message is a -Wswitch error.
        switch (static_cast<error>(ev)) {
        case error::sse_line_too_long:
            return "event stream line longer than the parser's max_line_size";
        case error::sse_event_too_large:
            return "event stream event larger than the parser's max_event_size";
        }
        return "unknown frugal error";
    }
};

} // namespace

const boost::system::error_category& error_category() noexcept
{
    static const category instance;
    return instance;
}

} // namespace frugal
