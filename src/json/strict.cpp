#include "json/strict.hpp"

#include <boost/json/basic_parser_impl.hpp>
#include <boost/json/parse.hpp>

#include <cmath>
#include <unordered_set>
#include <vector>

namespace frugal::detail {

namespace json = boost::json;
using boost::system::error_code;

namespace {

// Walks the document's events, keeping for each open container where it is (the current key,
// or the index in an array) and, for an object, the keys it has had.
class strict_handler {
public:
    static constexpr std::size_t max_object_size = std::size_t(-1);
    static constexpr std::size_t max_array_size = std::size_t(-1);
    static constexpr std::size_t max_key_size = std::size_t(-1);
    static constexpr std::size_t max_string_size = std::size_t(-1);

    std::string why;
    std::string_view hidden; // see parse_strict

    bool on_document_begin(error_code&) { return true; }
    bool on_document_end(error_code&) { return true; }
    bool on_object_begin(error_code&) { return open(true); }
    bool on_object_end(std::size_t, error_code&) { return close(); }
    bool on_array_begin(error_code&) { return open(false); }
    bool on_array_end(std::size_t, error_code&) { return close(); }
    bool on_key_part(json::string_view s, std::size_t, error_code&)
    {
        key_.append(s.data(), s.size());
        return true;
    }
    bool on_key(json::string_view s, std::size_t, error_code& ec)
    {
        key_.append(s.data(), s.size());
        auto& f = frames_.back();
        ++f.members;
        if (!f.keys.insert(key_).second) {
            f.at = key_;
            why = path() + " is written twice (one of the two would be ignored)";
            ec = json::error::syntax;
            return false;
        }
        f.at = std::move(key_);
        key_.clear();
        return true;
    }
    bool on_string_part(json::string_view, std::size_t, error_code&) { return true; }
    bool on_string(json::string_view, std::size_t, error_code&) { return value(); }
    bool on_number_part(json::string_view, error_code&) { return true; }
    bool on_int64(std::int64_t, json::string_view, error_code&) { return value(); }
    bool on_uint64(std::uint64_t, json::string_view, error_code&) { return value(); }
    bool on_double(double d, json::string_view, error_code& ec)
    {
        if (!std::isfinite(d)) {
            why = (frames_.empty() ? std::string("the document") : path()) +
                  " is a number out of range";
            ec = json::error::syntax;
            return false;
        }
        return value();
    }
    bool on_bool(bool, error_code&) { return value(); }
    bool on_null(error_code&) { return value(); }
    bool on_comment_part(json::string_view, error_code&) { return true; }
    bool on_comment(json::string_view, error_code&) { return true; }

private:
    struct frame {
        bool object = false;
        std::size_t index = 0;   // an array's element being read
        std::size_t members = 0; // an object's members so far
        std::string at;          // the member or element being read
        std::unordered_set<std::string> keys;
    };

    bool open(bool object)
    {
        frames_.push_back({object, 0, 0, object ? std::string() : "[0]", {}});
        return true;
    }
    bool close()
    {
        frames_.pop_back();
        return value();
    }
    // A value ended: an array's next element is the one being read.
    bool value()
    {
        if (!frames_.empty() && !frames_.back().object) {
            auto& f = frames_.back();
            f.at = "[" + std::to_string(++f.index) + "]";
        }
        return true;
    }
    std::string path() const
    {
        std::string p;
        for (std::size_t i = 0; i < frames_.size(); ++i) {
            const auto& f = frames_[i];
            if (f.at.empty())
                break;
            if (f.object && !p.empty())
                p += '.';
            if (i == 1 && f.object && !hidden.empty() && frames_[0].at == hidden)
                p += "<member " + std::to_string(f.members) + ">";
            else
                p += f.at;
        }
        return p;
    }

    std::vector<frame> frames_;
    std::string key_;
};

} // namespace

json::value
parse_strict(std::string_view text, error_code& ec, std::string& why, std::string_view hidden)
{
    ec = {};
    why.clear();
    json::value v = json::parse(text, ec);
    if (ec) {
        why = ec.message();
        return nullptr;
    }
    json::basic_parser<strict_handler> p{json::parse_options{}};
    p.handler().hidden = hidden;
    p.write_some(false, text.data(), text.size(), ec);
    if (ec) {
        why = p.handler().why.empty() ? ec.message() : p.handler().why;
        return nullptr;
    }
    return v;
}

} // namespace frugal::detail
