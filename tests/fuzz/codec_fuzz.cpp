// Fuzz target for the hand-written decoders of what a provider sends: the chat response and
// stream chunk decoder (a SAX handler), the catalog, generation, key and error-body decoders.
// The first byte picks the decoder, the rest is the document. Besides not crashing, leaking or
// reading out of bounds, a decoder must never turn hostile bytes into money that lowers the
// books: a reported cost it accepts is never negative, and a model the price catalog calls
// known has no negative price (a free one, none but zeros).
#include <frugal/money.hpp>
#include <frugal/prices.hpp>
#include <frugal/types.hpp>

#include "openrouter/codec.hpp"

#include <cstdint>
#include <cstdlib>
#include <string>
#include <string_view>
#include <vector>

namespace {

void require(bool ok)
{
    if (!ok)
        std::abort();
}

// A decoder that has just decoded `primer` gives for `doc` what a fresh decoder gives: the
// memos save work and change nothing.
void require_memo_changes_nothing(
    frugal::openrouter::chat_decoder& decoder, std::string_view primer, std::string_view doc)
{
    namespace o = frugal::openrouter;
    o::chat_chunk scratch;
    (void)decoder.decode(primer, scratch);
    o::chat_chunk primed;
    const auto ec = decoder.decode(doc, primed);
    o::chat_decoder fresh;
    o::chat_chunk reference;
    require(ec == fresh.decode(doc, reference));
    require(ec || primed == reference);
}

} // namespace

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size)
{
    if (size == 0)
        return 0;
    const std::string_view doc(reinterpret_cast<const char*>(data + 1), size - 1);
    namespace o = frugal::openrouter;
    switch (data[0] % 5) {
    case 0: {
        // One decoder, reused: a second document must not see the first one's fields.
        static o::chat_decoder decoder;
        o::chat_chunk chunk;
        const auto ec = decoder.decode(doc, chunk);
        if (!ec && chunk.usage && chunk.usage->cost)
            require(*chunk.usage->cost >= frugal::money());
        o::chat_chunk again;
        const auto ec2 = decoder.decode(doc, again);
        require(ec == ec2);
        require(ec || again == chunk);
        // Decoded again into the chunk the first decode filled, as a stream reuses one.
        require(decoder.decode(doc, again) == ec);
        // The prefix memo saves work and changes nothing: primed with a document that shares
        // this one's prefix, the decoder gives what a fresh one gives.
        if (const auto cut = doc.find(",\"choices\":"); cut != std::string_view::npos) {
            std::string primer(doc.substr(0, cut + 1));
            primer += "\"choices\":[]}";
            require_memo_changes_nothing(decoder, primer, doc);
        }
        // So does the shape memo: primed with this document, the decoder gives what a fresh
        // one gives for it with one byte changed, or a byte or an escape added (inside its
        // text, now and then).
        for (const std::string_view b :
             {"a", "\"", "\\", "\x01", "\xc3", "}", "\\n", "\\\"", "\\\\", "\\u00e9", "\\ud83d"}) {
            for (const std::size_t at : {doc.size() / 2, doc.size() * 3 / 4}) {
                std::string changed(doc);
                if (at < changed.size())
                    changed[at] = b[0];
                std::string added(doc);
                added.insert(at, b);
                require_memo_changes_nothing(decoder, doc, changed);
                require_memo_changes_nothing(decoder, doc, added);
            }
        }
        break;
    }
    case 1: {
        std::vector<frugal::model_info> models;
        if (o::decode_models(doc, models))
            break;
        const frugal::price_catalog catalog(models);
        for (const auto& m : models) {
            const auto* p = catalog.find(m.id);
            if (p == nullptr || !p->known())
                continue;
            for (const auto price : {p->prompt, p->completion, p->request, p->internal_reasoning,
                     p->cache_read, p->cache_write, p->media_output, p->web_search}) {
                require(price >= frugal::money());
                require(!p->free() || price == frugal::money());
            }
        }
        break;
    }
    case 2: {
        frugal::generation_info g;
        if (!o::decode_generation(doc, g) && g.total_cost)
            require(*g.total_cost >= frugal::money());
        break;
    }
    case 3: {
        frugal::key_info k;
        (void)o::decode_key_info(doc, k);
        break;
    }
    default: {
        o::provider_error_info e;
        (void)o::decode_error_body(doc, e);
        break;
    }
    }
    return 0;
}
